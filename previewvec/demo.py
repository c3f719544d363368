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
import signal
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from previewvec.localredis import LocalRedis
from previewvec.settings import Settings

DEMO_FORMATS = ("m4a", "mp3", "ogg", "flac", "wav")
N_WORKERS = 2
RUN_TIMEOUT_S = 600


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


def _songs(out_dir: Path, renderer: str) -> list[tuple[str, dict]]:
    from previewvec.songs import build_set, demo_specs

    files = []
    specs = demo_specs()
    for i, fmt in enumerate(DEMO_FORMATS):
        subset = specs[i :: len(DEMO_FORMATS)]
        if subset:
            rows = build_set(subset, out_dir / "songs" / fmt, fmt=fmt, renderer=renderer)
            files.extend((f"{fmt}/{row['file']}", row) for row in rows)
    return files


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


def run_demo(settings: Settings, *, out_dir: Path, renderer: str = "auto") -> int:
    """Run the full pipeline on generated songs and print what came out."""
    from previewvec.records import decode_record, record_key
    from previewvec.runs import Runs
    from previewvec.songs import resolve_renderer
    from producers.queue import enqueue_catalog
    from workers.features.layout import FEATURE_VERSION
    from workers.reducer import Reducer

    out_dir = out_dir.resolve()
    chosen = resolve_renderer(renderer)
    print(f"1. generating songs with known tempo and key ({chosen}) in {out_dir}/songs")
    files = _songs(out_dir, chosen)

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
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while runs.status(report.run_id).counts["queued"] > 0:
                if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
                    print("   workers stopped or timed out; see the worker logs")
                    return 1
                time.sleep(0.5)
            status = runs.status(report.run_id)
            print(f"   done {status.counts['done']}, skipped {status.counts['skipped']}, "
                  f"failed {status.counts['failed']}")
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
                rec = decode_record(reducer.store.get(record_key(FEATURE_VERSION, rid)))
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
