"""Redis memory left once jobs have run and been reduced (issue 12, point 6).

What stays in Redis after a run is finished and its records are in the index, measured
on a private ``redis-server`` (``LocalRedis``): ``INFO memory`` ``used_memory`` before
and after, the number of keys, and ``MEMORY USAGE`` (exact: ``SAMPLES 0``) of every
``pv:`` key, grouped by kind.

The real code paths run, without audio: each job goes through
``workers.featurize.featurize`` (the store check, the record write to a folder store, the
ready push and the run accounting), with only the fetch and the analysis replaced by a
precomputed vector (a real run does ~20 jobs/s on a shared 2-core machine; this does the
same Redis work in a few minutes). Jobs are marked queued first, as
``producers.queue.publish`` does. Every ``--failed-every``-th job fails (``undecodable``).
A second run then re-enqueues ``--rerun`` of the recordings (already stored: skipped, the
path that used the ``pv:indexed`` set). ``Reducer.drain`` reduces everything into an
embedded LanceDB index after each run. Finally, if the code has it, the reducer's
housekeeping closes the finished runs as it would once they have been quiet for
``RUN_SETTLE_S`` (here at once: ``settle_s=0``).

``--code DIR`` imports previewvec from another checkout, to measure the code before the
change with the same script::

    python benchmarks/redis_memory.py --jobs 20000                    # this checkout
    mkdir -p /tmp/pv-main && git archive main | tar -x -C /tmp/pv-main
    python benchmarks/redis_memory.py --jobs 20000 --code /tmp/pv-main  # before
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def key_kind(key: str) -> str:
    """A key's group in the report (run keys by part, other keys by prefix)."""
    parts = key.split(":")
    if key.startswith("pv:run:") and len(parts) >= 4:
        return "pv:run:<id>:" + ":".join(parts[3:])
    if key.startswith("pv:indexed:"):
        return "pv:indexed:<version>"
    return key


def memory_report(client: Any) -> dict[str, Any]:
    """used_memory, key count, and MEMORY USAGE of every key by kind."""
    deadline = time.monotonic() + 30
    while int(client.info("memory").get("lazyfree_pending_objects", 0)) and \
            time.monotonic() < deadline:
        time.sleep(0.05)  # UNLINKed hashes are freed in the background
    kinds: dict[str, dict[str, int]] = defaultdict(lambda: {"keys": 0, "bytes": 0})
    for key in client.scan_iter(count=1000):
        kind = kinds[key_kind(key)]
        kind["keys"] += 1
        kind["bytes"] += int(client.memory_usage(key, samples=0) or 0)
    info = client.info("memory")
    return {"used_memory": int(info["used_memory"]), "dbsize": int(client.dbsize()),
            "by_kind": dict(sorted(kinds.items()))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--failed-every", type=int, default=100,
                        help="every N-th job fails (default 100: 1 %%)")
    parser.add_argument("--rerun", type=int, default=2_000,
                        help="recordings re-enqueued in a second run (skipped)")
    parser.add_argument("--code", type=Path, default=ROOT,
                        help="checkout whose previewvec is measured (default: this one)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    sys.dont_write_bytecode = True  # never write into the measured checkout
    sys.path.insert(0, str(args.code.resolve()))
    import numpy as np

    import workers.featurize as featurize_mod
    from contract.errors import Undecodable
    from contract.layout import VECTOR_DIM
    from contract.settings import Settings
    from contract.state import Runs, connect
    from previewvec.localredis import LocalRedis
    from reducer.reduce import Reducer

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((64, VECTOR_DIM)).astype(np.float32)
    calls = {"n": 0}

    def fake_fetch(url: str, settings: Settings, **_: Any) -> SimpleNamespace:
        return SimpleNamespace(data=url.encode())

    def fake_analyze(data: bytes, settings: Settings) -> SimpleNamespace:
        calls["n"] += 1
        n = int(data.rsplit(b"/", 1)[-1].split(b".")[0])
        if n % args.failed_every == args.failed_every - 1:
            raise Undecodable("benchmark: every N-th job fails")
        features = SimpleNamespace(vector=vectors[n % len(vectors)] + np.float32(n % 7),
                                   descriptors={"tempo_bpm": 60.0 + n % 120, "key": "C",
                                                "mode": "major", "duration_s": 30.0})
        return SimpleNamespace(features=features, audio_sha256=f"{n:064x}",
                               timings_s={"decode": 0.0})

    featurize_mod.fetch_preview = fake_fetch
    featurize_mod.analyze = fake_analyze

    def run(runs: Runs, ctx: Any, run_id: str, numbers: range) -> float:
        started = time.perf_counter()
        runs.create(run_id, queue="batch", source="redis_memory")
        jobs = {f"bench-{n:07d}": {"recording_id": f"bench-{n:07d}", "run_id": run_id,
                                   "source": "bench",
                                   "preview_url": f"https://audio-ssl.itunes.apple.com/{n}.m4a"}
                for n in numbers}
        # Marked queued with their jobs, as producers do (kept until each is done).
        runs.mark_many_queued(run_id, {rid: json.dumps(job) for rid, job in jobs.items()})
        for job in jobs.values():
            featurize_mod.featurize(job, ctx)
        return time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="pv-redis-memory-") as tmp, \
            LocalRedis(data_dir=Path(tmp) / "redis") as server:
        settings = Settings(broker_url=server.url, store=str(Path(tmp) / "store"),
                            index=str(Path(tmp) / "index"), cache_dir=Path(tmp) / "cache")
        runs = Runs.from_url(server.url)
        baseline = memory_report(connect(server.url))
        ctx = featurize_mod.WorkerContext.build(settings)
        reducer = Reducer.build(settings)
        timings = {"run 1": run(runs, ctx, "bench-run-1", range(args.jobs))}
        started = time.perf_counter()
        reduced = reducer.drain()
        timings["reduce 1"] = time.perf_counter() - started
        timings["run 2"] = run(runs, ctx, "bench-run-2", range(min(args.rerun, args.jobs)))
        started = time.perf_counter()
        reduced += reducer.drain()
        timings["reduce 2"] = time.perf_counter() - started
        reduced_report = memory_report(connect(server.url))
        closed: list[str] = []
        if hasattr(runs, "close_finished"):
            ttl_s = settings.run_ttl_s
            closed = runs.close_finished(ttl_s=ttl_s, settle_s=0).closed
        after = memory_report(connect(server.url))
        statuses = {r: runs.status(r).counts for r in ("bench-run-1", "bench-run-2")}
        figures = {
            "code": str(args.code.resolve()), "jobs": args.jobs, "rerun": args.rerun,
            "failed_every": args.failed_every, "reduced": reduced,
            "index_count": reducer.index.count(), "counts": statuses, "closed": closed,
            "timings_s": {k: round(v, 1) for k, v in timings.items()},
            "baseline": baseline, "reduced_open": reduced_report, "after": after,
        }
    print(json.dumps(figures, indent=1))
    base = baseline["used_memory"]
    print(f"\nused_memory: baseline {base / 1024:.0f} KiB; after the runs were reduced "
          f"{(reduced_report['used_memory'] - base) / 1024:.0f} KiB above it; after "
          f"closing {(after['used_memory'] - base) / 1024:.0f} KiB above it "
          f"({after['dbsize']} keys)")
    for kind, usage in after["by_kind"].items():
        print(f"  {kind:32s} {usage['keys']:4d} keys {usage['bytes'] / 1024:10.1f} KiB")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
