"""Real-component harness of the integration and fault tests: processes, servers, waits.

Everything here is real: a private ``redis-server`` (:class:`~previewvec.localredis.LocalRedis`),
``celery -A workers.app worker`` subprocesses, preview clips served over HTTP from
127.0.0.1, the folder store or an S3 API (moto), the embedded LanceDB index. Nothing is
mocked; the only test-specific things are short timeouts and the served content.

Synchronisation is by polling Redis (run counters) with deadlines, never by sleeping a
guessed amount of time.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from contract.settings import Settings
from contract.state import READY_QUEUE, Runs, RunStatus, connect
from previewvec.localredis import LocalRedis
from tests.local_http import start_server, stop_server

REPO = Path(__file__).resolve().parents[2]
CLIP_FORMATS = ("m4a", "mp3", "ogg", "flac", "wav")
CONTENT_TYPES = {
    "m4a": "audio/mp4",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "flac": "audio/flac",
    "wav": "audio/wav",
}
# Small enough that a test can serve a too_large body cheaply; every clip is below it
# (10 s of 16-bit stereo WAV at 22.05 kHz is ~0.9 MB).
FETCH_MAX_BYTES = 1_500_000
WORKER_QUEUES = "ondemand,batch"


# --------------------------------------------------------------------------- clips


@dataclass(frozen=True)
class Clip:
    """One generated, encoded preview clip."""

    name: str  # file name served under /clips/
    fmt: str
    data: bytes = field(repr=False)
    tonic: int
    mode: str
    tempo_bpm: float
    style: str

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.fmt]


def make_clips(n: int, *, duration_s: float = 10.0, sr: int = 22_050) -> list[Clip]:
    """``n`` distinct songs (keys, modes, tempos, styles vary), encoded in a format mix.

    Rendered with the built-in numpy synth (no fluidsynth needed).
    """
    from testkit.encode import encode_audio
    from testkit.songs import STYLES, generate_song, render_synth

    clips = []
    for i in range(n):
        tonic = (i * 7) % 12  # walks the circle of fifths: 12 distinct keys
        mode = ("major", "minor")[i % 2]
        tempo = float(72 + (i * 37) % 90)  # 72–161 BPM, scattered
        style = STYLES[i % len(STYLES)]
        fmt = CLIP_FORMATS[i % len(CLIP_FORMATS)]
        score = generate_song(
            1000 + i, tonic=tonic, mode=mode, tempo_bpm=tempo, drums=style != "ambient",
            duration_s=duration_s, style=style,
        )
        samples = render_synth(score, sr=sr)
        data = encode_audio(samples, sr, fmt)
        clips.append(Clip(f"clip-{i:02d}-{style}.{fmt}", fmt, data, tonic, mode, tempo, style))
    return clips


def warm_numba_cache(cache_dir: Path) -> subprocess.Popen[bytes]:
    """Start a process that compiles the extractor once into the compile cache below
    ``cache_dir`` (``PREVIEWVEC_CACHE_DIR``), the way workers do, so every worker of the
    session loads compiled code instead of paying the JIT (~60 s cold). Returns the
    process; the caller waits for it."""
    env = clean_env()
    env["PREVIEWVEC_CACHE_DIR"] = str(cache_dir)
    return subprocess.Popen(
        [sys.executable, "-c",
         "from contract.settings import Settings; from workers import jitcache; "
         "print(round(jitcache.warm(Settings.from_env()), 1))"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def worker_cache_location(request: Any, tmp_path_factory: Any) -> Path:
    """Where every test session keeps numba's compiled extractor: pytest's cache folder
    (``.pytest_cache``), so later sessions skip the ~60 s compilation (numba recompiles by
    itself when the source changes); ``PREVIEWVEC_TEST_CACHE_DIR`` overrides it."""
    override = os.environ.get("PREVIEWVEC_TEST_CACHE_DIR")
    if override:
        return Path(override)
    if getattr(request.config, "cache", None) is not None:
        return Path(request.config.cache.mkdir("previewvec-worker-cache"))
    return Path(tmp_path_factory.mktemp("worker-cache"))


@contextlib.contextmanager
def numba_cache_warmed(cache_dir: Path, timeout_s: float = 400.0) -> Iterator[None]:
    """Compile the extractor into ``cache_dir`` while the body runs (e.g. renders clips);
    on exit, wait for the compilation and fail loudly if it failed."""
    warm = warm_numba_cache(cache_dir)
    try:
        yield
        output, _ = warm.communicate(timeout=timeout_s)
        assert warm.returncode == 0, f"extractor warm-up failed:\n{output.decode()}"
    finally:
        if warm.poll() is None:
            os.killpg(warm.pid, signal.SIGKILL)
            warm.wait()


@dataclass(frozen=True)
class Assets:
    """Clips to serve, and the numba cache every worker shares."""

    clips: list[Clip]
    cache_dir: Path  # PREVIEWVEC_CACHE_DIR of every worker: numba's cache is below it


def prepare_assets(request: Any, tmp_path_factory: Any, n_clips: int, *,
                   duration_s: float = 10.0) -> Assets:
    """``n_clips`` rendered clips, and the extractor compiled into the shared cache while
    they render (:func:`worker_cache_location`)."""
    cache_dir = worker_cache_location(request, tmp_path_factory)
    with numba_cache_warmed(cache_dir):
        clips = make_clips(n_clips, duration_s=duration_s)
    return Assets(clips, cache_dir)


# --------------------------------------------------------------------------- HTTP


@dataclass
class _Route:
    status: int
    body: bytes
    content_type: str
    # A route that signals whoever fetches it: given the peer's pid, returns the pid or
    # process group to signal (negative: a group), or None to refuse (answers 500).
    killer: Callable[[int], int | None] | None = None
    signal: int = signal.SIGKILL


def peer_pid(conn: socket.socket) -> int | None:
    """The pid of the process at the other end of an accepted 127.0.0.1 connection: the
    one holding a TCP socket whose own address is this connection's peer address."""
    import psutil

    peer, me = conn.getpeername()[:2], conn.getsockname()[:2]
    for found in psutil.net_connections(kind="tcp"):
        if (found.pid and found.pid != os.getpid() and found.laddr and found.raddr
                and tuple(found.laddr) == tuple(peer) and tuple(found.raddr) == tuple(me)):
            return int(found.pid)
    return None


class ClipServer:
    """Serves generated clips and special bodies over HTTP on a free 127.0.0.1 port.

    ``?delay_ms=N`` on any path holds the response N ms before its headers (a slow CDN),
    so tests can keep workers busy long enough to act mid-task.
    """

    def __init__(self) -> None:
        self._routes: dict[str, _Route] = {}
        self.hits: Counter[str] = Counter()
        # path → what its killer route signalled (negative: a process group)
        self.killed: defaultdict[str, list[int]] = defaultdict(list)
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    def add(self, path: str, body: bytes, content_type: str, status: int = 200) -> str:
        with self._lock:
            self._routes[path] = _Route(status, body, content_type)
        return self.url(path)

    def add_clip(self, clip: Clip) -> str:
        return self.add(f"/clips/{clip.name}", clip.data, clip.content_type)

    def add_killer(self, path: str, target: Callable[[int], int | None],
                   sig: int = signal.SIGKILL) -> str:
        """A preview whose fetch SIGKILLs the fetching process (a job that crashes native
        code every time), or sends it ``sig`` (SIGSTOP: a job stuck beyond any time
        limit). ``target(peer pid)`` picks whom: the pid itself, a negative process-group
        id, or None to refuse (then the fetch gets a 500)."""
        with self._lock:
            self._routes[path] = _Route(500, b"refused to kill\n", "text/plain", target, sig)
        return self.url(path)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        assert self._httpd is not None, "start() first"
        return f"http://{host}:{self._httpd.server_address[1]}{path}"

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return int(self._httpd.server_address[1])

    def start(self) -> ClipServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle(self) -> None:
                # Clients hang up early on purpose (a refused oversized body, a kill).
                with contextlib.suppress(ConnectionError):
                    super().handle()

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                delay_ms = int(parse_qs(parts.query).get("delay_ms", ["0"])[0])
                with server._lock:
                    server.hits[parts.path] += 1
                    route = server._routes.get(parts.path)
                if delay_ms:
                    time.sleep(delay_ms / 1000)
                if route is not None and route.killer is not None:
                    pid = peer_pid(self.connection)
                    victim = route.killer(pid) if pid is not None else None
                    if victim is not None:
                        with server._lock:
                            server.killed[parts.path].append(victim)
                        if victim < 0:
                            os.killpg(-victim, route.signal)
                        else:
                            os.kill(victim, route.signal)
                        self.close_connection = True
                        return
                if route is None:
                    route = _Route(404, b"not found\n", "text/plain")
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(route.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = start_server(Handler)
        return self

    def stop(self) -> None:
        stop_server(self._httpd)
        self._httpd = None


# --------------------------------------------------------------------------- processes


def clean_env() -> dict[str, str]:
    """This process's environment without any previewvec, AWS or numba-cache settings."""
    return {
        k: v for k, v in os.environ.items()
        if not k.startswith(("PREVIEWVEC_", "AWS_")) and k != "NUMBA_CACHE_DIR"
    }


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc (no psutil)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        # Field 4 is the parent pid; the command (field 2) may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().decode(errors="replace")
    except OSError:
        return False
    return state[state.rfind(")") + 2 :].split()[0] != "Z"  # a zombie is dead


@dataclass
class WorkerProcess:
    """One ``celery -A workers.app worker`` in its own session (process group = its pid),
    so the main process and its pool children can be signalled and cleaned up together."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def pool_children(self) -> list[int]:
        return [pid for pid in _children(self.pid) if _alive(pid)]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_warm(self, timeout_s: float = 120.0, count: int = 1) -> None:
        """Until ``count`` pool children have reported their warm-up (ready to run tasks)."""
        deadline = time.monotonic() + timeout_s
        while self.log().count("extractor warmed") < count:
            if not self.alive():
                raise AssertionError(f"worker {self.name} exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {self.name} not warm in {timeout_s:g} s:\n"
                                     f"{self.log_tail()}")
            time.sleep(0.2)

    def kill_pool_child(self) -> int:
        """SIGKILL one pool child (the process running tasks); returns its pid."""
        children = self.pool_children()
        assert children, f"worker {self.name} has no pool child"
        os.kill(children[0], signal.SIGKILL)
        return children[0]

    def kill_hard(self) -> None:
        """SIGKILL the main process and its pool children at once (an OOM kill, a lost
        node): nothing gets to acknowledge or restore anything."""
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL whatever is left of the process group."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # also orphaned pool children
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


class Pipeline:
    """A private Redis + Celery workers + a store, wired through environment variables
    exactly as a deployment would be; the test process is the producer and the reducer."""

    def __init__(self, root: Path, *, cache_dir: Path, store: str,
                 extra_env: dict[str, str] | None = None) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.cache_dir = cache_dir
        self.store_url = store
        self.redis = LocalRedis(data_dir=root / "redis").start()
        self.workers: list[WorkerProcess] = []
        self.env = clean_env()
        self.env.update({
            "PREVIEWVEC_BROKER_URL": self.redis.url,
            "PREVIEWVEC_STORE": store,
            "PREVIEWVEC_INDEX": str(root / "worker-index"),  # unused by workers; explicit
            "PREVIEWVEC_ALLOWED_AUDIO_HOSTS": "127.0.0.1",
            "PREVIEWVEC_FETCH_CONNECT_TIMEOUT_S": "2",
            "PREVIEWVEC_FETCH_READ_TIMEOUT_S": "5",
            "PREVIEWVEC_FETCH_TOTAL_TIMEOUT_S": "10",
            "PREVIEWVEC_FETCH_RETRIES": "2",
            "PREVIEWVEC_FETCH_MAX_BYTES": str(FETCH_MAX_BYTES),
            "PREVIEWVEC_CACHE_DIR": str(cache_dir),
            "PYTHONUNBUFFERED": "1",
            # Never pick up a developer's real AWS configuration.
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
            **(extra_env or {}),
        })
        self.settings = Settings.from_env(self.env)
        self.runs = Runs.from_url(self.redis.url)
        # For inspection only: kombu's keys (queues, unacked) and raw pv: keys.
        self.raw = connect(self.redis.url)

    # --- workers ------------------------------------------------------------------------

    def start_worker(self, name: str, *, concurrency: int = 1, prefetch: int | None = 1,
                     extra_env: dict[str, str] | None = None) -> WorkerProcess:
        """A ``celery worker``. ``prefetch`` 1 (the default here) is plain Celery, one job
        per child, which the kill and crash-cap tests count on; None keeps the configured
        multiplier (``PREVIEWVEC_PREFETCH_MULTIPLIER``), the production path with I/O
        overlapped, as the fault scenarios run it; another number is passed as is."""
        log_path = self.root / f"worker-{name}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - the child owns it; closed below
        multiplier = [] if prefetch is None else ["--prefetch-multiplier", str(prefetch)]
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers.app", "worker",
                 "--concurrency", str(concurrency), "--hostname", f"{name}@%h",
                 "--queues", WORKER_QUEUES, *multiplier, "--loglevel", "info"],
                env={**self.env, **(extra_env or {})}, cwd=REPO,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            log.close()
        worker = WorkerProcess(name, proc, log_path)
        self.workers.append(worker)
        return worker

    def live_workers(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive()]

    def logs(self) -> str:
        return "\n".join(f"--- worker {w.name} (pid {w.pid}) ---\n{w.log_tail()}"
                         for w in self.workers)

    # --- producing and waiting ----------------------------------------------------------

    def enqueue(self, lines: Iterable[str], *, queue: str = "batch", source: str = "test"):
        from producers.queue import enqueue_catalog

        return enqueue_catalog(list(lines), self.settings, queue=queue, source=source)

    def wait_until(self, condition: Callable[[], bool], *, timeout_s: float,
                   what: str | Callable[[], str], interval_s: float = 0.2,
                   require_workers: bool = True) -> None:
        """Poll ``condition`` with a deadline. ``require_workers``: fail at once when no
        worker is alive (off for fault scenarios that have none for a while). ``what``
        may be a callable, to describe the state at the moment of the failure."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if require_workers and not self.live_workers():
                raise AssertionError(f"no live worker while waiting for {_said(what)}\n"
                                     f"{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:g} s waiting for "
                                     f"{_said(what)}\n{self.logs()}")
            time.sleep(interval_s)

    def wait_run(self, run_id: str, *, expected_total: int | None = None,
                 timeout_s: float = 120.0) -> RunStatus:
        """Until no recording of the run is queued any more; returns the final status."""
        def finished() -> bool:
            status = self.runs.status(run_id)
            if expected_total is not None and status.total != expected_total:
                return False
            return status.total > 0 and status.counts["queued"] == 0

        self.wait_until(finished, timeout_s=timeout_s, what=f"run {run_id} to finish "
                        f"(now {self.runs.status(run_id).counts})")
        return self.runs.status(run_id)

    def ready_keys(self) -> list[str]:
        return list(self.raw.lrange(READY_QUEUE, 0, -1))

    def unacked(self) -> dict[str, tuple[float, dict[str, Any]]]:
        """kombu's Redis ack emulation: delivery tag → (delivered at, as ``time.time()``;
        the job) of every delivered but not yet acknowledged message."""
        raw = self.raw.hgetall("unacked")  # tag → [message, exchange, routing key]
        out = {}
        for tag, value in raw.items():
            message = json.loads(value)[0]
            body = message["body"]
            if message.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            args = json.loads(body)[0]  # Celery protocol 2: [args, kwargs, embed]
            delivered = self.raw.zscore("unacked_index", tag) or 0.0
            out[tag] = (float(delivered), args[0])
        return out

    def queue_depth(self, queue: str) -> int:
        return int(self.raw.llen(queue))

    # --- reducer and CLI ----------------------------------------------------------------

    def reducer(self, index: str | Path):
        import dataclasses

        from reducer.reduce import Reducer

        # boto3 reads endpoint and credentials from the environment when the S3 client is
        # made; give it the same AWS_* values the workers got, only for that moment.
        with environ({k: v for k, v in self.env.items() if k.startswith("AWS_")}):
            return Reducer.build(dataclasses.replace(self.settings, index=str(index)))

    def drain_leftovers(self) -> None:
        """Reduce whatever an earlier test left in the ready queue into a scratch index,
        so the next test's reduce sees only its own records."""
        if self.runs.ready_depth():
            self.reducer(self.root / "scratch-index").drain()

    def cli(self, *args: str, env: dict[str, str] | None = None,
            timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run the real ``previewvec`` command line with this pipeline's environment."""
        return subprocess.run(
            [sys.executable, "-m", "previewvec.cli", *args],
            env={**self.env, **(env or {})}, cwd=REPO, capture_output=True, text=True,
            timeout=timeout_s, check=False,
        )

    # --- teardown -----------------------------------------------------------------------

    def close(self) -> None:
        for worker in self.workers:  # SIGTERM all first: they shut down in parallel
            if worker.alive():
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signal.SIGTERM)
        for worker in self.workers:
            worker.stop()
        self.redis.cleanup()


@contextlib.contextmanager
def running_clip_server(clips: Iterable[Clip] = ()) -> Iterator[ClipServer]:
    """A :class:`ClipServer` serving ``clips`` (more can be added), stopped on exit."""
    server = ClipServer().start()
    try:
        for clip in clips:
            server.add_clip(clip)
        yield server
    finally:
        server.stop()


def catalog_line(recording_id: str, url: str, **extra: Any) -> str:
    return json.dumps({"recording_id": recording_id, "preview_url": url, "source": "test",
                       **extra})


STATUS_RE = re.compile(
    r"(?P<finished>\d+)/(?P<total>\d+)\s+queued (?P<queued>\d+)\s+done (?P<done>\d+)\s+"
    r"skipped (?P<skipped>\d+)\s+failed (?P<failed>\d+)"
)


def parse_status_line(text: str) -> dict[str, int]:
    """Counts from ``previewvec status`` output."""
    match = STATUS_RE.search(text)
    assert match, f"unexpected status output: {text!r}"
    return {k: int(v) for k, v in match.groupdict().items()}


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """Temporarily set environment variables in this process (for boto3 in the reducer)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _said(what: str | Callable[[], str]) -> str:
    return what() if callable(what) else what


def worker_cache_dir(request: Any, tmp_path_factory: Any) -> Path:
    """numba's compiled extractor at :func:`worker_cache_location`, warmed before use."""
    path = worker_cache_location(request, tmp_path_factory)
    with numba_cache_warmed(path):
        pass
    return path


def wait_http(url: str, *, timeout_s: float, alive: object = None) -> None:
    """Poll ``url`` until it answers with any HTTP status (a deadline, not a sleep).

    ``alive`` is an optional ``subprocess.Popen``: stop early if it exited.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            pass
        if alive is not None and alive.poll() is not None:  # type: ignore[attr-defined]
            raise AssertionError(f"process serving {url} exited")
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer within {timeout_s:g} s")
        time.sleep(0.1)
