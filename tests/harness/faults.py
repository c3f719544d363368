"""Fault injection on real components, for tests/faults/test_scenarios.py.

Built on the pipeline harness (:mod:`tests.harness.pipeline`): a private Redis,
``celery worker`` subprocesses, clips served from 127.0.0.1. Added here: a Redis that
persists (AOF) and restarts on its port, a TCP proxy that takes the S3 endpoint down and
brings it back on the same port (the moto server behind it keeps its objects), a clip
server that turns slow or flaps, ``previewvec reduce --follow`` as a process that can be
SIGKILLed, and the exactly-once audit of store and index that every scenario ends with.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from contract.layout import FEATURE_VERSION
from contract.records import decode_record, record_key
from previewvec.localredis import LocalRedis
from tests.harness.pipeline import (
    REPO,
    WORKER_QUEUES,
    Clip,
    Pipeline,
    WorkerProcess,
    catalog_line,
)
from tests.local_http import start_server, stop_server

RECORD_PREFIX = f"features/{FEATURE_VERSION}/"


# --------------------------------------------------------------------------- Redis refusing


@contextlib.contextmanager
def redis_out_of_memory(client: object) -> Iterator[None]:
    """Redis (reached through ``client``) at its maxmemory, policy noeviction: it refuses
    every command that may grow memory, and every command queued in a MULTI, with
    ``-OOM`` (redis-py's OutOfMemoryError), until the block ends."""
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")
    try:
        yield
    finally:
        client.config_set("maxmemory", "0")


# --------------------------------------------------------------------------- crashing analysis


CRASH_MARKER = b"PV-CRASH"  # a preview starting with these bytes crashes its analysis
CRASHING_APP = "tests.harness.faults:crashing_app"  # for ``celery -A``


def __getattr__(name: str) -> object:
    # Resolved only in a worker started with ``-A CRASHING_APP``: the test process that
    # imports this module keeps the real analysis.
    if name == "crashing_app":
        return _crashing_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _crashing_app() -> object:
    """``workers.app``'s Celery app, unchanged but for one thing: the analysis of a preview
    that starts with :data:`CRASH_MARKER` kills its process with SIGSEGV (native code that
    crashes on one input, every time). The fetch, ahead in the worker's main process or in
    the pool child, is the real one; only the pool child analyses."""
    from workers import featurize
    from workers.app import app  # first: it points numba's cache before librosa loads

    analyze = featurize.analyze

    def crashing(data: bytes, settings: object) -> object:
        if data.startswith(CRASH_MARKER):
            os.kill(os.getpid(), signal.SIGSEGV)
        return analyze(data, settings)

    featurize.analyze = crashing
    return app


# --------------------------------------------------------------------------- S3 outage


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target_port``.

    :meth:`down` closes the listening socket and resets every open connection (clients
    get "connection refused", as when an endpoint or its load balancer is gone);
    :meth:`up` listens on the same port again. The server behind it keeps its state.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        self.up()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            _reset(conn)

    close = down

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._conns.discard(src)


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), not FIN: the peer sees a reset connection."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


# --------------------------------------------------------------------------- preview host


class FaultyClipServer:
    """Serves clips under ``/clips/<name>`` (the query string is ignored, so every job
    can have its own URL) in one of three modes, switchable at any time:

    ``ok``; ``slow`` (headers only after ``slow_s``, longer than the fetch read timeout);
    ``flap`` (requests cycle through: connection reset, 503, a good answer).
    """

    def __init__(self, clips: Iterable[Clip]) -> None:
        self._clips = {c.name: c for c in clips}
        self.mode = "ok"
        self.slow_s = 0.0
        self.hits: Counter[str] = Counter()  # mode → requests served in it
        self._flap_n = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    def set_mode(self, mode: str, slow_s: float = 0.0) -> None:
        assert mode in ("ok", "slow", "flap"), mode
        with self._lock:
            self.mode, self.slow_s = mode, slow_s

    def url(self, clip: Clip, n: int) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/clips/{clip.name}?n={n}"

    def start(self) -> FaultyClipServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle(self) -> None:
                with contextlib.suppress(ConnectionError):
                    super().handle()

            def do_GET(self) -> None:
                with server._lock:
                    mode, slow_s = server.mode, server.slow_s
                    server.hits[mode] += 1
                    turn = server._flap_n % 3
                    if mode == "flap":
                        server._flap_n += 1
                if mode == "flap" and turn == 0:
                    self.close_connection = True
                    _reset(self.connection)
                    return
                if mode == "slow":
                    time.sleep(slow_s)
                clip = self._clips_get(urlsplit(self.path).path)
                if mode == "flap" and turn == 1:
                    status, body, ctype = 503, b"service unavailable\n", "text/plain"
                elif clip is None:
                    status, body, ctype = 404, b"not found\n", "text/plain"
                else:
                    status, body, ctype = 200, clip.data, clip.content_type
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

            def _clips_get(self, path: str) -> Clip | None:
                return server._clips.get(path.removeprefix("/clips/"))

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = start_server(Handler)
        return self

    def stop(self) -> None:
        stop_server(self._httpd)
        self._httpd = None


# --------------------------------------------------------------------------- pipeline


class FaultPipeline(Pipeline):
    """A :class:`Pipeline` whose Redis persists with AOF (``appendfsync everysec``, as in
    the compose stack) and can be restarted on its port, plus a reducer process."""

    def __init__(self, root: Path, *, cache_dir: Path, store: str,
                 extra_env: dict[str, str] | None = None, appendonly: bool = True) -> None:
        super().__init__(root, cache_dir=cache_dir, store=store, extra_env=extra_env)
        if appendonly:  # same port (already in self.env), now with persistence
            port = self.redis.port
            self.redis.cleanup()
            self.redis = LocalRedis(port=port, appendonly=True, data_dir=root / "redis-aof")
            self.redis.start()
        self.reducers: list[ReducerProcess] = []

    def start_app_worker(self, name: str, app: str, *,
                         prefetch: int | None = None) -> WorkerProcess:
        """A ``celery -A <app> worker`` (e.g. :data:`CRASHING_APP`), one pool child,
        otherwise as :meth:`Pipeline.start_worker` starts one; ``prefetch`` None keeps the
        production multiplier."""
        log_path = self.root / f"worker-{name}.log"
        multiplier = [] if prefetch is None else ["--prefetch-multiplier", str(prefetch)]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", app, "worker", "--concurrency", "1",
                 "--hostname", f"{name}@%h", "--queues", WORKER_QUEUES, *multiplier,
                 "--loglevel", "info"],
                env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        worker = WorkerProcess(name, proc, log_path)
        self.workers.append(worker)
        return worker

    def restart_redis(self, down_s: float) -> None:
        """Stop Redis (SIGTERM: with AOF on, it flushes and fsyncs first), stay down for
        ``down_s``, start it again on the same port and data directory."""
        self.redis.stop()
        time.sleep(down_s)
        self.redis.start()

    def start_reducer(self, env: dict[str, str] | None = None,
                      batch_size: int = 50) -> ReducerProcess:
        reducer = ReducerProcess.start(self.root / f"reducer-{len(self.reducers)}.log",
                                       {**self.env, **(env or {})}, batch_size)
        self.reducers.append(reducer)
        return reducer

    def wait_for(self, condition: Callable[[], bool], *, timeout_s: float,
                 what: str | Callable[[], str]) -> None:
        """:meth:`Pipeline.wait_until` without its live-worker requirement: some
        scenarios have no worker for a while."""
        self.wait_until(condition, timeout_s=timeout_s, what=what, require_workers=False)

    def logs(self) -> str:
        """The workers' logs, then the reducers'."""
        return f"{super().logs()}\n{self.reducer_logs()}"

    def reducer_logs(self) -> str:
        return "\n".join(f"--- reducer {r.proc.pid} ---\n{r.log_tail()}" for r in self.reducers)

    def close(self) -> None:
        for reducer in self.reducers:
            reducer.stop()
        super().close()


@dataclass
class ReducerProcess:
    """``previewvec reduce --follow`` in its own process group."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, log_path: Path, env: dict[str, str], batch_size: int) -> ReducerProcess:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "previewvec.cli", "reduce", "--follow",
                 "--batch-size", str(batch_size)],
                env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        return cls(proc, log_path)

    def kill_hard(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self.kill_hard()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def batch_catalog(server: FaultyClipServer, clips: list[Clip], prefix: str,
                  n: int) -> tuple[list[str], list[str]]:
    """``n`` jobs (distinct recording ids and URLs) over the given clips: (ids, lines)."""
    ids = [f"{prefix}-{i:03d}" for i in range(n)]
    lines = [catalog_line(rid, server.url(clips[i % len(clips)], i))
             for i, rid in enumerate(ids)]
    return ids, lines


# --------------------------------------------------------------------------- the audit


@dataclass
class Audit:
    """Where every recording of a batch ended up."""

    jobs: int
    in_store: int  # recordings with a (decodable, matching) record in the store
    in_index: int  # recordings with a vector in the index
    duplicates: int  # extra copies: index rows beyond one per id, or foreign store keys
    lost: int  # neither complete (store + index, done/skipped) nor failed with a code
    failed: Counter[str] = field(default_factory=Counter)  # code → recordings
    problems: list[str] = field(default_factory=list)

    def failed_text(self) -> str:
        if not self.failed:
            return "0"
        codes = ", ".join(f"{code} {n}" for code, n in sorted(self.failed.items()))
        return f"{sum(self.failed.values())} ({codes})"


def audit(pipeline: Pipeline, run_id: str, ids: list[str], store_keys: list[str],
          index_ids: list[str], read_record: Callable[[str], bytes]) -> Audit:
    """Compare the run's bookkeeping with what the store and the index hold.

    ``store_keys`` are the keys under ``features/<version>/`` (relative to the store);
    ``index_ids`` every id the index holds, one entry per row (duplicates included).
    """
    expected = {record_key(FEATURE_VERSION, rid): rid for rid in ids}
    key_counts = Counter(store_keys)
    row_counts = Counter(index_ids)
    state = pipeline.raw.hgetall(f"pv:run:{run_id}:state")
    failures = dict(pipeline.runs.failures(run_id))
    result = Audit(jobs=len(ids), in_store=0, in_index=0, duplicates=0, lost=0)
    result.duplicates += sum(n - 1 for n in row_counts.values() if n > 1)
    result.duplicates += sum(n - 1 for n in key_counts.values() if n > 1)
    foreign = [k for k in key_counts if k not in expected]
    result.duplicates += len(foreign)
    if foreign:
        result.problems.append(f"store keys outside the batch: {foreign[:5]}")
    extra_rows = set(row_counts) - set(ids)
    if extra_rows:
        result.problems.append(f"index ids outside the batch: {sorted(extra_rows)[:5]}")
        result.duplicates += len(extra_rows)
    for key, rid in expected.items():
        stored = key in key_counts
        if stored:
            record = decode_record(read_record(key))
            if record.recording_id != rid:
                result.problems.append(f"{key} holds {record.recording_id}")
                stored = False
        indexed = rid in row_counts
        result.in_store += stored
        result.in_index += indexed
        if state.get(rid) == "failed" and rid in failures:
            code = failures[rid].get("code")
            if code:
                result.failed[code] += 1
            else:
                result.lost += 1
                result.problems.append(f"{rid}: failed without a code")
            if indexed:
                result.problems.append(f"{rid}: failed ({code}) but in the index")
        elif state.get(rid) in ("done", "skipped") and stored and indexed:
            pass
        else:
            result.lost += 1
            result.problems.append(f"{rid}: state {state.get(rid)}, stored {stored}, "
                                   f"indexed {indexed}")
    return result


def s3_listing(client, bucket: str, prefix: str) -> list[str]:
    """Every key under ``prefix`` (list_objects_v2 pages), relative to ``prefix``'s store
    root (the part before ``features/``)."""
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [obj["Key"] for obj in page.get("Contents", [])]
    root = prefix[: prefix.index("features/")]
    return [k[len(root):] for k in keys]


def lance_ids(index_path: Path) -> list[str]:
    """Every id row of the embedded index, read with LanceDB directly."""
    import lancedb

    try:
        table = lancedb.connect(str(index_path)).open_table("vectors")
    except (FileNotFoundError, ValueError):  # nothing was ever reduced
        return []
    return table.to_arrow().column("id").to_pylist()


# --------------------------------------------------------------------------- the figures


@dataclass
class Row:
    """One line of the scenario table in docs/reliability.md."""

    scenario: str
    jobs: int
    faults: str
    in_store: int
    in_index: int
    duplicates: int
    lost: int
    failed: str
    recover: str

    HEADER = ("scenario", "jobs", "faults injected", "vectors in store", "vectors in index",
              "duplicates", "lost", "failed (code)", "time to recover")

    def cells(self) -> tuple[str, ...]:
        return (self.scenario, str(self.jobs), self.faults, str(self.in_store),
                str(self.in_index), str(self.duplicates), str(self.lost), self.failed,
                self.recover)


def row_from(scenario: str, result: Audit, faults: str, recover: str) -> Row:
    return Row(scenario, result.jobs, faults, result.in_store, result.in_index,
               result.duplicates, result.lost, result.failed_text(), recover)


FAULT_ROW = "fault_scenario_row"  # the name of a Row in a test report's user_properties


def markdown_table(rows: list[Row]) -> str:
    align = ("---", "---:", "---", "---:", "---:", "---:", "---:", "---", "---")
    lines = ["| " + " | ".join(Row.HEADER) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)
