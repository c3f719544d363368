"""Soak: thousands of jobs through one long-lived worker, and the pool child's memory.

For each configuration asked for, one ``celery -A workers.app worker --concurrency 1``
(one pool child) consumes ``--jobs`` distinct recordings from its own private Redis
(``LocalRedis``); previews are ``--clips`` generated AAC .m4a songs served over HTTP from
127.0.0.1 and reused round-robin; records go to the folder store (or a moto S3 server with
``--store s3``). Jobs are published in blocks of ``--every``; after each block has been
accounted for in the run (Redis counters) and the child has gone idle, the child's RSS and
USS (psutil) are sampled, so every sample is taken at the same point between tasks, not
at a random point inside one.

"start" is the sample after the first ``--warmup`` jobs (the extractor is warmed before
the first job; the first jobs still grow caches legitimately: numba dispatch, FFT plans,
connection pools), "middle" the sample at half the jobs, "end" the last one, "max" the
largest from start on. Flat means end and max within +15 % of start.

Configurations (``--mitigation``, comma-separated; they run side by side, one worker
each, so they see the same machine load):

  none      no recycling, no heap trimming, glibc defaults
  trim      ``malloc_trim(0)`` after every task (``PREVIEWVEC_MALLOC_TRIM_EVERY=1``)
  arena2    ``MALLOC_ARENA_MAX=2`` (fewer glibc arenas), no trimming
  recycle   a fresh pool child every ``--recycle-tasks`` tasks (``--max-tasks-per-child``)
  shipped   the worker exactly as ``workers/app.py`` and the default settings configure it

    python benchmarks/soak.py                      # none vs trim, 2 000 × 10 s clips, ~4 min
    python benchmarks/soak.py --mitigation none,trim,arena2,recycle --jobs 3000
"""

from __future__ import annotations

# pipeline pins BLAS/numba threads when imported, so it goes before anything loads numpy
from _percore import stop_workers  # isort: skip
from pipeline import MotoServer, _machine, _wait_warm, ensure_clips  # isort: skip

# isort: split
import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from contract.settings import Settings
from previewvec.demo import serve_folder
from previewvec.localredis import LocalRedis

TARGET_GROWTH = 0.15  # end and max RSS at most +15 % over start
MB = 1024 * 1024
NO_RECYCLING = ["--max-tasks-per-child", "1000000000", "--max-memory-per-child", "0"]
TRIM_VAR = "PREVIEWVEC_MALLOC_TRIM_EVERY"
MITIGATIONS = ("none", "trim", "arena2", "recycle", "shipped")


@dataclasses.dataclass
class Sample:
    processed: int  # jobs finished (done + skipped + failed) when sampled
    pid: int  # the pool child sampled (a new pid means the child was recycled)
    rss_mb: float
    uss_mb: float
    main_rss_mb: float  # the worker's main (consumer) process
    cpu_s: float  # user+sys of the worker main process and all its children so far


def worker_setup(mitigation: str, recycle_tasks: int) -> tuple[list[str], dict[str, str]]:
    """Extra ``celery worker`` arguments and environment for one configuration."""
    if mitigation == "none":
        return NO_RECYCLING, {TRIM_VAR: "0"}
    if mitigation == "trim":
        return NO_RECYCLING, {TRIM_VAR: "1"}
    if mitigation == "arena2":
        return NO_RECYCLING, {TRIM_VAR: "0", "MALLOC_ARENA_MAX": "2"}
    if mitigation == "recycle":
        return (["--max-tasks-per-child", str(recycle_tasks), "--max-memory-per-child", "0"],
                {TRIM_VAR: "0"})
    if mitigation == "shipped":
        return [], {}
    raise ValueError(f"unknown mitigation {mitigation!r}")


def _tree_cpu_s(main: psutil.Process) -> float:
    """CPU of the main process, its live children and the children it has reaped."""
    t = main.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in main.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            c = child.cpu_times()
            total += c.user + c.system
    return total


def _idle_child(main: psutil.Process, log_path: Path, seen: set[int],
                timeout_s: float = 300.0) -> psutil.Process:
    """The pool child once it is warmed and idle (its task and post-run hooks done).

    Warmed: the worker log holds an "extractor warmed" line for every child seen so far (a
    recycled child's replacement warms up before its first task). Idle: the same CPU time
    at three checks 0.1 s apart; one is not enough on a loaded machine, where a runnable
    process that is not scheduled uses no CPU either.
    """
    deadline = time.monotonic() + timeout_s
    last: tuple[int, float] | None = None
    same = 0
    while time.monotonic() < deadline:
        children = []
        for c in main.children():  # a recycled child lingers as a zombie until reaped
            with contextlib.suppress(psutil.NoSuchProcess):
                if c.status() != psutil.STATUS_ZOMBIE:
                    children.append(c)
        if len(children) == 1:
            child = children[0]
            seen.add(child.pid)
            with contextlib.suppress(psutil.NoSuchProcess):
                t = child.cpu_times()
                now = (child.pid, t.user + t.system)
                same = same + 1 if now == last else 0
                last = now
                if same >= 3 and log_path.read_text(errors="replace").count(
                        "extractor warmed") >= len(seen):
                    return child
        time.sleep(0.1)
    raise RuntimeError(f"worker {main.pid}: no warmed, idle pool child in {timeout_s:g} s")


def _sample(main: psutil.Process, processed: int, log_path: Path, seen: set[int]) -> Sample:
    while True:
        child = _idle_child(main, log_path, seen)
        try:
            mem = child.memory_full_info()
        except psutil.NoSuchProcess:  # recycled between the two calls: take the new one
            continue
        if mem.rss:  # 0 once the child has exited
            break
    return Sample(processed, child.pid, mem.rss / MB, mem.uss / MB,
                  main.memory_info().rss / MB, _tree_cpu_s(main))


def soak_one(mitigation: str, args: argparse.Namespace, base_url: str, work: Path,
             moto: MotoServer | None) -> dict:
    """Run ``args.jobs`` jobs through one worker configured for ``mitigation``."""
    from contract.jobs import Job
    from contract.state import Runs, new_run_id
    from producers.queue import publish

    run_dir = work / mitigation
    run_dir.mkdir(parents=True)
    extra_args, extra_env = worker_setup(mitigation, args.recycle_tasks)
    if moto is not None:
        bucket = f"soak-{mitigation}"
        moto.create_bucket(bucket)
        store = f"s3://{bucket}/soak"
    else:
        store = str(run_dir / "store")
    samples: list[Sample] = []
    seen: set[int] = set()  # pool children so far
    with LocalRedis() as local_redis:
        settings = dataclasses.replace(Settings(), broker_url=local_redis.url, store=store,
                                       allowed_audio_hosts=("127.0.0.1",))
        env = {k: v for k, v in os.environ.items() if k not in (TRIM_VAR, "MALLOC_ARENA_MAX")}
        env.update(moto.env if moto else {})
        env.update({"PREVIEWVEC_BROKER_URL": local_redis.url, "PREVIEWVEC_STORE": store,
                    "PREVIEWVEC_ALLOWED_AUDIO_HOSTS": "127.0.0.1", **extra_env})
        log_path = run_dir / "worker.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers.app", "worker",
                 "--concurrency", "1", "--hostname", f"soak-{mitigation}@%h",
                 "--queues", "ondemand,batch", "--loglevel", "info",
                 "--prefetch-multiplier", "1", "--without-gossip", "--without-mingle",
                 "--without-heartbeat", *extra_args],
                env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_warm([log_path], [proc])
            main = psutil.Process(proc.pid)
            runs = Runs.from_url(local_redis.url)
            run_id = new_run_id()
            runs.create(run_id, queue="batch", source="soak")
            samples.append(_sample(main, 0, log_path, seen))
            for start in range(0, args.jobs, args.every):
                block = [Job(recording_id=f"soak-{i:06d}",
                             preview_url=f"{base_url}/{i % args.clips:05d}.m4a", source="soak")
                         for i in range(start, min(start + args.every, args.jobs))]
                publish(block, runs, settings, run_id=run_id, queue="batch")
                target = start + len(block)
                deadline = time.monotonic() + 120 + 20 * len(block)
                while runs.status(run_id).finished < target:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{mitigation}: stuck before {target} jobs; "
                                           f"see {log_path}")
                    time.sleep(0.05)
                samples.append(_sample(main, target, log_path, seen))
                if args.progress:
                    s = samples[-1]
                    print(f"  {mitigation:>8} {target:>6} jobs  RSS {s.rss_mb:7.1f} MB  "
                          f"USS {s.uss_mb:7.1f} MB  pid {s.pid}", flush=True)
            counts = runs.status(run_id).counts
            failures = dict(list(runs.failures(run_id))[:5])
        finally:
            stop_workers([proc])
    return {"mitigation": mitigation, "worker_args": extra_args, "worker_env": extra_env,
            "counts": counts, "failures": failures,
            "samples": [dataclasses.asdict(s) for s in samples], **summarise(samples, args)}


def summarise(samples: list[Sample], args: argparse.Namespace) -> dict:
    """Start, middle, end and max RSS/USS, growth ratios and the slope after start."""
    after = [s for s in samples if s.processed >= args.warmup]
    start = after[0]
    middle = min(after, key=lambda s: abs(s.processed - args.jobs / 2))
    end = after[-1]
    peak = max(after, key=lambda s: s.rss_mb)
    # least-squares slope of RSS over jobs, from start on (MB per 1 000 jobs)
    xs = [s.processed for s in after]
    ys = [s.rss_mb for s in after]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = 1000 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0
    jobs_cpu = samples[-1].cpu_s - samples[0].cpu_s
    return {
        "start": dataclasses.asdict(start), "middle": dataclasses.asdict(middle),
        "end": dataclasses.asdict(end), "max_rss_mb": peak.rss_mb,
        "max_at": peak.processed, "after_warmup_jobs": start.processed,
        "ready_rss_mb": samples[0].rss_mb,
        "end_over_start": end.rss_mb / start.rss_mb, "max_over_start": peak.rss_mb / start.rss_mb,
        "uss_end_over_start": end.uss_mb / start.uss_mb,
        "slope_mb_per_1000_jobs": slope,
        "children": sorted({s.pid for s in samples}),
        "cpu_s_per_job": jobs_cpu / max(1, samples[-1].processed),
    }


def _flat(r: dict) -> bool:
    return r["end_over_start"] <= 1 + TARGET_GROWTH and r["max_over_start"] <= 1 + TARGET_GROWTH


def report(args: argparse.Namespace, results: list[dict], load_before: float) -> str:
    cmd = "python benchmarks/soak.py " + " ".join(shlex.quote(x) for x in args.argv)
    names = [r["mitigation"] for r in results]
    out = [f"```sh\n{cmd.strip()}\n```", "",
           f"{_machine()}; per configuration one worker × concurrency 1, {args.jobs} jobs "
           f"(distinct recordings) over {args.clips} × {args.seconds:g} s AAC .m4a clips, "
           f"store {args.store}; configurations ran side by side; load average before the "
           f"run {load_before:.2f} (shared machine). RSS/USS of the pool child in MB, sampled "
           f"idle after every {args.every} jobs; `*` marks a sample from a recycled child.", "",
           "| jobs | " + " | ".join(f"{n} RSS | {n} USS" for n in names) + " |",
           "|---:|" + "---:|---:|" * len(names)]
    first_pid = {r["mitigation"]: r["samples"][0]["pid"] for r in results}
    rows = zip(*(r["samples"] for r in results), strict=True)
    for row in rows:
        cells = []
        for r, s in zip(results, row, strict=True):
            mark = "*" if s["pid"] != first_pid[r["mitigation"]] else ""
            cells.append(f"{s['rss_mb']:.1f}{mark} | {s['uss_mb']:.1f}")
        label = "0 (warmed, idle)" if row[0]["processed"] == 0 else str(row[0]["processed"])
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += ["", f"start = after {args.warmup} jobs; middle = at {args.jobs // 2}; "
            f"end = at {args.jobs}; max = largest sample from start on. Target: end and max "
            f"≤ +{TARGET_GROWTH:.0%} of start.", "",
            "| configuration | start RSS | middle | end | max | end/start | max/start | "
            "slope MB/1 000 jobs | end/start USS | main process RSS start → end | pool children "
            "| CPU-s/job | done/failed | result |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in results:
        c = r["counts"]
        out.append(
            f"| {r['mitigation']} | {r['start']['rss_mb']:.1f} | {r['middle']['rss_mb']:.1f} | "
            f"{r['end']['rss_mb']:.1f} | {r['max_rss_mb']:.1f} | {r['end_over_start']:.3f} | "
            f"{r['max_over_start']:.3f} | {r['slope_mb_per_1000_jobs']:+.1f} | "
            f"{r['uss_end_over_start']:.3f} | {r['start']['main_rss_mb']:.1f} → "
            f"{r['end']['main_rss_mb']:.1f} | {len(r['children'])} | {r['cpu_s_per_job']:.3f} | "
            f"{c.get('done', 0)}/{c.get('failed', 0)} | {'PASS' if _flat(r) else 'FAIL'} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mitigation", default="none,trim",
                        help=f"comma-separated, from {', '.join(MITIGATIONS)}")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--every", type=int, default=50, help="jobs per block (and sample)")
    parser.add_argument("--warmup", type=int, default=50, help="jobs before the start sample")
    parser.add_argument("--recycle-tasks", type=int, default=500)
    parser.add_argument("--store", choices=("local", "s3"), default="local")
    parser.add_argument("--progress", action="store_true", help="print every sample")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    mitigations = [m.strip() for m in args.mitigation.split(",") if m.strip()]
    if not mitigations or any(m not in MITIGATIONS for m in mitigations):
        parser.error(f"--mitigation: choose from {', '.join(MITIGATIONS)}")
    if not 0 < args.warmup < args.jobs or args.warmup % args.every:
        parser.error("--warmup must be a multiple of --every and below --jobs")

    folder, _ = ensure_clips(args.clips, args.seed, args.seconds)
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="previewvec-soak-"))
    moto = MotoServer(work) if args.store == "s3" else None
    results: dict[str, dict] = {}
    errors: dict[str, BaseException] = {}

    def run(m: str, base_url: str) -> None:
        try:
            results[m] = soak_one(m, args, base_url, work, moto)
        except BaseException as exc:  # reported after the other configurations finish
            errors[m] = exc

    try:
        with serve_folder(folder) as base_url:
            print(f"soak: {', '.join(mitigations)} × {args.jobs} jobs ...", flush=True)
            threads = [threading.Thread(target=run, args=(m, base_url)) for m in mitigations]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        if moto:
            moto.stop()
    ordered = [results[m] for m in mitigations if m in results]
    if ordered:
        print()
        print(report(args, ordered, load_before))
    if errors:
        for m, exc in errors.items():
            print(f"{m}: FAILED: {exc}", file=sys.stderr)
        print(f"logs kept in {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": _machine(), "args": vars(args),
                                               "results": ordered,
                                               "errors": {m: str(e) for m, e in errors.items()}},
                                              indent=2, default=str))
    complete = not errors and all(
        r["counts"].get("done") == args.jobs and not r["counts"].get("failed") for r in ordered)
    if not complete:
        print("not every job was done: see the counts above", file=sys.stderr)
    return 0 if complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
