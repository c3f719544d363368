"""``previewvec demo``: the whole path on embedded defaults, with nothing installed by hand.

A private Redis, two local Celery worker processes, generated songs served over HTTP from
127.0.0.1, the local feature store and the embedded vector index: enqueue → fetch →
decode → extract → store → reduce → index, then a similarity query.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from contract.errors import ConfigError
from contract.settings import Settings
from contract.state import Runs
from previewvec.localredis import LocalRedis

DEMO_FORMATS = ("m4a", "mp3", "ogg", "flac", "wav")
N_WORKERS = 2
RUN_TIMEOUT_S = 600
PROGRESS_EVERY_S = 10.0


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve_folder(folder: Path):
    """Serve ``folder`` over HTTP on a free 127.0.0.1 port; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _start_workers(env: dict[str, str], log_dir: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(N_WORKERS):
        log = open(log_dir / f"worker-{i + 1}.log", "wb")  # noqa: SIM115 - closed with proc
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--concurrency",
             "1", "--hostname", f"demo{i + 1}@%h", "--queues", "ondemand,batch",
             "--loglevel", "warning", "--prefetch-multiplier", "1"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        ))
    return procs


# Billiard's line when a pool child dies: "Process 'ForkPoolWorker-1' pid:123 exited with
# 'signal 11 (SIGSEGV)'".
_CHILD_DIED = re.compile(r"exited with 'signal (\d+) \((\w+)\)'")
WARMING, WARM = "warming the extractor", "extractor warm in"  # workers/tasks.py logs these


class WorkerWatch:
    """Says at once why demo workers cannot finish: a worker process gone, or a pool child
    killed by a signal, and in which phase (warming the extractor, or running jobs)."""

    def __init__(self, procs: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
        self.procs, self.logs = procs, logs

    def _log(self, i: int) -> str:
        try:
            return self.logs[i].read_text(errors="replace")
        except OSError:
            return ""

    def phase(self, i: int) -> str:
        text = self._log(i)
        if WARM in text:
            return "while running jobs"
        return "while warming the extractor" if WARMING in text else "while starting"

    def problem(self) -> str | None:
        """The first fault seen, as one sentence naming its log, or None."""
        for i, proc in enumerate(self.procs):
            name = f"worker demo{i + 1}"
            code = proc.poll()
            if code is not None:
                how = (f"killed by {signal.Signals(-code).name}" if code < 0
                       else f"exited with status {code}")
                return f"{name} {how} {self.phase(i)} (log: {self.logs[i]})"
            died = _CHILD_DIED.search(self._log(i))
            if died:
                return (f"{name}: pool child killed by {died.group(2)} (signal "
                        f"{died.group(1)}) {self.phase(i)} (log: {self.logs[i]})")
        return None

    def tail(self, lines: int = 8) -> str:
        """The last lines of every worker log, indented, for the report of a fault."""
        parts = []
        for i in range(len(self.procs)):
            last = self._log(i).splitlines()[-lines:]
            parts.append("\n".join(f"   | {line}" for line in last))
        return "\n".join(parts)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # warm shutdown: finish the current task
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_run(runs: Runs, run_id: str, watch: WorkerWatch) -> bool:
    """Wait until no job of the run is queued; stop at the first worker fault (within a
    second) or at the deadline, saying which. Prints progress every few seconds."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    next_report = time.monotonic() + PROGRESS_EVERY_S
    while True:
        status = runs.status(run_id)
        if status.counts["queued"] == 0:
            return True
        problem = watch.problem()
        if problem is None and time.monotonic() > deadline:
            problem = (f"the run did not finish within {RUN_TIMEOUT_S} s "
                       f"({status.finished}/{status.total} jobs finished)")
        if problem:
            print(f"   stopped: {problem}\n{watch.tail()}", file=sys.stderr)
            return False
        if time.monotonic() >= next_report:
            print(f"   {status.finished}/{status.total} finished; worker demo1 "
                  f"{watch.phase(0).removeprefix('while ')}", flush=True)
            next_report += PROGRESS_EVERY_S
        time.sleep(0.5)


def _song_maker() -> tuple[Callable[[str], str], Callable[..., list[tuple[str, dict[str, Any]]]]]:
    """The test kit's two demo calls. The kit is a distribution of its own (testkit/),
    installed by ./dev next to the product but never part of its wheel or image."""
    try:
        from testkit.songs import resolve_renderer, write_demo_set
    except ImportError as exc:
        raise ConfigError(
            f"the demo makes its songs with previewvec's test kit, which is not installed "
            f"here ({exc}): run ./dev demo from the repository, or pip install -e ./testkit"
        ) from None
    return resolve_renderer, write_demo_set


def run_demo(settings: Settings, *, out_dir: Path, renderer: str = "auto") -> int:
    """Run the full pipeline on generated songs and print what came out."""
    from contract.records import decode_record, record_key
    from producers.queue import enqueue_catalog
    from reducer.reduce import Reducer

    resolve_renderer, write_demo_set = _song_maker()

    out_dir = out_dir.resolve()
    chosen = resolve_renderer(renderer)
    print(f"1. generating songs with known tempo and key ({chosen}) in {out_dir}/songs")
    files = write_demo_set(out_dir / "songs", DEMO_FORMATS, chosen)

    with LocalRedis() as local_redis, serve_folder(out_dir / "songs") as base_url:
        demo_settings = dataclasses.replace(
            settings, broker_url=local_redis.url, store=str(out_dir / "store"),
            index=str(out_dir / "index"), allowed_audio_hosts=("127.0.0.1",),
        )
        env = {**os.environ, "PREVIEWVEC_BROKER_URL": local_redis.url,
               "PREVIEWVEC_STORE": demo_settings.store, "PREVIEWVEC_INDEX": demo_settings.index,
               "PREVIEWVEC_ALLOWED_AUDIO_HOSTS": "127.0.0.1"}
        print(f"2. private Redis at {local_redis.url}; songs served at {base_url}")
        print(f"3. starting {N_WORKERS} worker processes (logs in {out_dir})")
        workers = _start_workers(env, out_dir)
        watch = WorkerWatch(workers, [out_dir / f"worker-{i + 1}.log" for i in range(N_WORKERS)])
        try:
            catalog = [
                json.dumps({"recording_id": f"demo-{fmt}-{Path(name).stem}",
                            "preview_url": f"{base_url}/{name}", "source": "demo",
                            "title": f"{row['style']} in {row['key']} at {row['tempo_bpm']} BPM"})
                for name, row in files for fmt in [name.split("/")[0]]
            ]
            report = enqueue_catalog(catalog, demo_settings, source="demo")
            print(f"4. enqueued {report.queued} jobs as run {report.run_id}")
            runs = Runs.from_url(local_redis.url)
            if not _wait_for_run(runs, report.run_id, watch):
                return 1
            status = runs.status(report.run_id)
            print(f"   done {status.counts['done']}, skipped {status.counts['skipped']}, "
                  f"failed {status.counts['failed']}")
            for recording_id, failure in runs.failures(report.run_id):
                print(f"   failed {recording_id}: {failure['code']}: {failure['message']}")
            reducer = Reducer.build(demo_settings)
            reduced = reducer.drain()
            reducer.index.wait_for_writes()
            print(f"5. reduced {reduced} records into the embedded index "
                  f"({reducer.index.count()} vectors)")
        finally:
            _stop(workers)

        print()
        header = (f"{'recording':<24}{'truth':>22}{'tempo':>8}{'key':>10}{'LUFS':>7}"
                  f"{'energy':>8}{'dance':>7}{'fetch+extract ms':>18}")
        print(header)
        print("-" * len(header))
        for name, row in files:
            rid = f"demo-{name.split('/')[0]}-{Path(name).stem}"
            try:
                rec = decode_record(reducer.store.get(record_key(reducer.version, rid)))
            except FileNotFoundError:
                print(f"{rid:<24} (failed: see `previewvec failures {report.run_id}`)")
                continue
            d, t = rec.descriptors, rec.timings_s
            busy = 1000 * sum(v for k, v in t.items() if k not in ("store", "check"))
            print(f"{rid:<24}{row['tempo_bpm']:>8.1f} {row['key']:>13}{d['tempo_bpm']:>8.1f}"
                  f"{d['key'] + ' ' + d['mode'][:3]:>10}{d['loudness_lufs']:>7.1f}"
                  f"{d['energy']:>8.2f}{d['danceability']:>7.2f}{busy:>18.0f}")
        first = f"demo-{files[0][0].split('/')[0]}-{Path(files[0][0]).stem}"
        print(f"\n6. tracks that sound like {first} ({files[0][1]['key']}, "
              f"{files[0][1]['tempo_bpm']} BPM):")
        for match in reducer.similar(first, k=3):
            m = match.metadata
            print(f"   {m.get('recording_id', match.id):<24} score {match.score:.3f}  "
                  f"{m.get('tempo_bpm')} BPM  {m.get('key')} {m.get('mode')}")
    print("\nall services stopped.")
    return 0 if status.counts["failed"] == 0 else 1
