"""Throughput with the network put back: the same worker deployment with and without
internet-like latency on the preview host and the feature store, in one run.

The worker deployment is what production runs (``previewvec worker`` with its defaults,
one process per core, pinned to its cores with ``sched_setaffinity``); everything else
(Redis, the S3 server, the clip host, the latency proxy, this process) is pinned to the
other cores. Latency is injected outside the product, never by sleeping in product code:

* the clip host (a threaded HTTP server in this process) answers ``--first-byte-ms``
  (300) after the request and streams the body at ``--mbit-s`` (8 Mbit/s) per
  connection;
* a TCP proxy in front of the moto S3 server delays everything the worker sends by
  ``--s3-ms`` (80): every request (HEAD, PUT, GET) arrives that much later.

Both are switched between phases, so the zero-latency phases run through the same
proxy and server with no delay. Phases alternate (zero, latency, zero, latency, …) to
spread the noise of a shared machine over both. Each phase publishes fresh jobs (new
recording ids) into one run and times publish → last job accounted.

Reported per phase: clips/s per worker core, CPU utilisation of the worker processes
(main + pool children), their RSS and PSS per core (sampled every second; RSS counts
pages the forked processes share once per process, PSS splits them), the stage timings
from every task's outcome and how much of the fetch was overlapped with other jobs'
compute (done ahead by the worker's prefetcher).

    python benchmarks/latency.py                       # 2 × (zero, latency), 80 clips each
    python benchmarks/latency.py --clips 60 --rounds 3 --json latency.json
    python benchmarks/latency.py -- --concurrency 2     # extra args for ``previewvec worker``
    python benchmarks/latency.py --worker-env PREVIEWVEC_PREFETCH_MULTIPLIER=1   # before
"""

from __future__ import annotations

from _percore import pin_one_thread, stop_workers

_NUMBA_CACHE_DIR = pin_one_thread("benchmarks/latency.py")

import argparse  # noqa: E402
import ast  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from pathlib import Path  # noqa: E402

import psutil  # noqa: E402
from pipeline import MotoServer, _machine, ensure_clips  # noqa: E402

from contract.settings import Settings  # noqa: E402
from previewvec.localredis import LocalRedis  # noqa: E402

SUCCEEDED = re.compile(
    r"Task previewvec\.featurize\[([^\]]+)\] succeeded in [0-9.eE+-]+s: (\{.*\})$", re.M)
WRITTEN = re.compile(r"Task previewvec\.featurize\[([^\]]+)\] written behind: (\{.*\})$",
                     re.M)
TARGET_RATIO = 0.90
TARGET_RSS_MB_PER_CORE = 600.0
MEMORY_SAMPLE_S = 1.0
STREAM_CHUNK = 16 * 1024


# --------------------------------------------------------------------------- latency


@dataclasses.dataclass
class Latency:
    """What the servers add now; switched between phases (read by their threads)."""

    first_byte_s: float = 0.0
    bytes_per_s: float = 0.0  # 0: as fast as the socket takes it
    s3_s: float = 0.0


class ClipHost:
    """The preview CDN: serves a folder, holding each response ``first_byte_s`` before its
    headers and pacing its body at ``bytes_per_s`` per connection."""

    def __init__(self, folder: Path, latency: Latency) -> None:
        self.bodies = {f"/{p.name}": p.read_bytes() for p in folder.glob("*.m4a")}
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                body = host.bodies.get(self.path.split("?")[0])
                first, rate = latency.first_byte_s, latency.bytes_per_s
                if first:
                    time.sleep(first)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "audio/mp4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                start = time.perf_counter()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    for at in range(0, len(body), STREAM_CHUNK):
                        if rate:  # the chunk may leave once the line has carried the last
                            wait = start + at / rate - time.perf_counter()
                            if wait > 0:
                                time.sleep(wait)
                        self.wfile.write(body[at:at + STREAM_CHUNK])

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class DelayProxy:
    """A TCP proxy that delivers what clients send ``latency.s3_s`` late (in order), so
    every request through it costs that much more; answers pass straight back."""

    def __init__(self, upstream_port: int, latency: Latency) -> None:
        self.upstream_port = upstream_port
        self.latency = latency
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer, delayed=True),
                             self._pipe(up_reader, writer, delayed=False),
                             return_exceptions=True)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    delayed: bool) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def pump() -> None:
            while True:
                chunk = await src.read(65536)
                due = self.loop.time() + (self.latency.s3_s if delayed else 0.0)
                queue.put_nowait((due, chunk))
                if not chunk:
                    return

        pumping = asyncio.ensure_future(pump())
        try:
            while True:
                due, chunk = await queue.get()
                wait = due - self.loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    break
                dst.write(chunk)
                await dst.drain()
        finally:
            pumping.cancel()
            with contextlib.suppress(Exception):
                dst.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# --------------------------------------------------------------------------- workers


def _tree(pids: list[int]) -> list[psutil.Process]:
    out = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            out += [proc, *proc.children(recursive=True)]
    return out


def _cpu_s(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = proc.cpu_times()
            out[proc.pid] = t.user + t.system
    return out


def _sched(procs: list[psutil.Process]) -> dict[int, tuple[float, float]]:
    """Per process, seconds on a CPU and seconds runnable but waiting for one, summed over
    its threads (/proc/PID/task/TID/schedstat); what is left of the wall is blocked time
    (network, sockets, locks): the I/O a core cannot overlap."""
    out = {}
    for proc in procs:
        run = wait = 0
        for stat in Path(f"/proc/{proc.pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, ValueError):
                fields = stat.read_text().split()
                run, wait = run + int(fields[0]), wait + int(fields[1])
        out[proc.pid] = (run / 1e9, wait / 1e9)
    return out


def _memory(pids: list[int]) -> tuple[float, ...]:
    """MB summed over the worker processes: RSS, PSS, USS of all (main + pool children),
    then RSS and PSS of the main processes alone."""
    rss = pss = uss = main_rss = main_pss = 0
    for proc in _tree(pids):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            info = proc.memory_full_info()
            rss, pss, uss = rss + info.rss, pss + info.pss, uss + info.uss
            if proc.pid in pids:
                main_rss, main_pss = main_rss + info.rss, main_pss + info.pss
    return tuple(v / 2**20 for v in (rss, pss, uss, main_rss, main_pss))


class MemorySampler(threading.Thread):
    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.samples = pids, []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.samples.append(_memory(self.pids))
            self.stopped.wait(MEMORY_SAMPLE_S)

    def stop(self) -> list[tuple[float, float, float]]:
        self.stopped.set()
        self.join(10)
        return self.samples


def start_workers(n: int, env: dict[str, str], cpus: list[int], run_dir: Path,
                  extra: list[str], nice: int = 0) -> tuple[list[subprocess.Popen], list[Path]]:
    """``n`` ``previewvec worker`` processes (production defaults but ``extra``), all pinned
    to ``cpus``; the concurrency defaults to the cores given (as ``previewvec worker``'s)."""
    procs, logs = [], []
    for i in range(n):
        log_path = run_dir / f"worker-{i + 1}.log"
        logs.append(log_path)
        argv = [sys.executable, "-m", "previewvec.cli", "worker", "--hostname",
                f"lat{i + 1}@%h", "--loglevel", "info", *extra]
        if "--concurrency" not in extra:
            argv += ["--concurrency", str(max(1, len(cpus) // n))]
        procs.append(subprocess.Popen(
            argv, env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
            preexec_fn=lambda: (os.sched_setaffinity(0, cpus), os.nice(nice))))
    return procs, logs


def _wait_warm(logs: list[Path], procs: list[subprocess.Popen], children: int,
               timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        texts = [p.read_text(errors="replace") for p in logs]
        if all(t.count("pool child ready") >= children for t in texts):
            return
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise RuntimeError(f"workers did not warm up; see {logs}")
        time.sleep(0.2)


# --------------------------------------------------------------------------- phases


def run_phase(tag: str, n: int, runs, settings: Settings, host: ClipHost,
              worker_pids: list[int], procs: list[subprocess.Popen], cores: int) -> dict:
    from contract.jobs import Job
    from contract.state import new_run_id
    from producers.queue import publish

    names = sorted(host.bodies)
    run_id = new_run_id()
    runs.create(run_id, queue="batch", source="bench")
    jobs = [Job(recording_id=f"{tag}-{i:05d}", source="bench",
                preview_url=f"{host.base_url}{names[i % len(names)]}") for i in range(n)]
    tree = _tree(worker_pids)
    sampler = MemorySampler(worker_pids)
    cpu0 = _cpu_s(tree)
    main0 = sum(cpu0.get(pid, 0.0) for pid in worker_pids)
    sched0 = _sched(tree)
    sampler.start()
    t0_epoch, t0 = time.time(), time.perf_counter()
    publish(jobs, runs, settings, run_id=run_id, queue="batch")
    deadline = t0 + 120 + 10 * n
    while runs.status(run_id).counts["queued"] > 0:
        if time.perf_counter() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError(f"phase {tag} did not finish")
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    cpu1 = _cpu_s(_tree(worker_pids))
    sched1 = _sched(tree)
    child_run = sum(sched1[p][0] - sched0[p][0] for p in sched0 if p not in worker_pids)
    child_wait = sum(sched1[p][1] - sched0[p][1] for p in sched0 if p not in worker_pids)
    main_run = sum(sched1[p][0] - sched0[p][0] for p in worker_pids if p in sched0)
    memory = sampler.stop()
    # Processes that left during the phase (a recycled child) count up to their last sample.
    cpu = sum(cpu1.get(pid, cpu0[pid]) - cpu0[pid] for pid in cpu0)
    cpu += sum(v for pid, v in cpu1.items() if pid not in cpu0)
    main_cpu = sum(cpu1.get(pid, 0.0) for pid in worker_pids) - main0
    counts = runs.status(run_id).counts
    memory = memory or [(0.0,) * 5]
    top = [max(m[i] for m in memory) for i in range(5)]
    return {"tag": tag, "clips": n, "wall_s": wall, "clips_per_s": n / wall,
            "clips_per_s_per_core": n / wall / cores, "worker_cpu_s": cpu,
            "main_cpu_s": main_cpu, "cpu_utilisation": cpu / (wall * cores),
            "child_run_s": child_run, "child_runq_wait_s": child_wait, "main_run_s": main_run,
            "counts": counts, "rss_mb_max": top[0], "pss_mb_max": top[1], "uss_mb_max": top[2],
            "main_rss_mb_max": top[3], "main_pss_mb_max": top[4],
            "rss_mb_mean": statistics.fmean(m[0] for m in memory),
            "started_epoch": t0_epoch, "ended_epoch": time.time(), "recording_prefix": tag}


def parse_outcomes(log: str) -> list[dict]:
    """Each task's outcome: Celery's success line (the pool child's part), completed by
    the main process's "written behind" line (store and account) where there is one."""
    by_id: dict[str, dict] = {}
    for task_id, result in SUCCEEDED.findall(log):
        with contextlib.suppress(ValueError, SyntaxError):
            by_id[task_id] = ast.literal_eval(result)
    for task_id, result in WRITTEN.findall(log):
        with contextlib.suppress(ValueError, SyntaxError):
            by_id[task_id] = ast.literal_eval(result)
    return [o for o in by_id.values() if isinstance(o, dict) and "wall_s" in o]


def dedicated_core_rate(phase: dict, children: int, cores: int) -> float:
    """Clips/s per core this deployment would reach with its cores to itself: each pool
    child cycles through its CPU and its blocked time per clip (both measured; the time it
    waited for a CPU, i.e. other tenants, left out), and the core also carries the main
    process's CPU per clip."""
    n, wall = phase["clips"], phase["wall_s"]
    child_cpu = phase["child_run_s"] / n  # child-seconds per clip
    blocked = (wall * children - phase["child_run_s"] - phase["child_runq_wait_s"]) / n
    per_child = 1 / (child_cpu + max(0.0, blocked))
    per_core_cpu = 1 / ((phase["child_run_s"] + phase["main_run_s"]) / n / cores)
    return min(per_child * children / cores, per_core_cpu)


def stage_summary(tasks: list[dict], phase: dict) -> dict:
    """Per-clip means of the outcomes of one phase's tasks (matched by recording id)."""
    mine = [t for t in tasks if str(t.get("recording_id", "")).startswith(phase["tag"] + "-")]
    done = [t for t in mine if t.get("status") == "done"]
    nd = max(1, len(done))
    stages: dict[str, float] = defaultdict(float)
    overlapped: dict[str, float] = defaultdict(float)
    for t in done:
        for k, v in t.get("timings_s", {}).items():
            stages[k] += v
        for k, v in t.get("overlapped_s", {}).items():
            overlapped[k] += v
    waits = sorted(t["started_at"] - phase["started_epoch"] for t in mine if "started_at" in t)
    busy = sum(t["wall_s"] for t in mine if "wall_s" in t)  # pool-child seconds on jobs
    # Steady state: jobs started by the pool between the 10th and the 90th percentile of
    # start times, over that span; leaves out the pipeline's fill (the first fetches
    # ahead) and drain (the last writes behind), one-off costs per phase, not per clip.
    starts = sorted(t["started_at"] for t in mine if "started_at" in t)
    lo, hi = len(starts) // 10, (9 * len(starts)) // 10
    steady = (hi - lo) / (starts[hi] - starts[lo]) if hi > lo and starts[hi] > starts[lo] else 0
    return {"tasks": len(mine), "done": len(done),
            "stage_ms": {k: 1000 * v / nd for k, v in sorted(stages.items())},
            "overlapped_ms": {k: 1000 * v / nd for k, v in sorted(overlapped.items())},
            "stage_wall_ms": 1000 * sum(t["wall_s"] for t in done) / nd,
            "stage_cpu_ms": 1000 * sum(t.get("cpu_s", 0.0) for t in done) / nd,
            "queue_wait_s_median": waits[len(waits) // 2] if waits else None,
            "child_busy_s": busy, "steady_clips_per_s": steady,
            "held_ms": 1000 * sum(t.get("held_s", 0.0) for t in done) / nd}


# --------------------------------------------------------------------------- report


def _mean(phases: list[dict], key: str) -> float:
    return statistics.fmean(p[key] for p in phases)


def report(args: argparse.Namespace, res: dict) -> str:
    cmd = "python benchmarks/latency.py " + " ".join(shlex.quote(x) for x in args.argv)
    zero = [p for p in res["phases"] if p["kind"] == "zero"]
    lat = [p for p in res["phases"] if p["kind"] == "latency"]
    ratio = _mean(lat, "clips_per_s_per_core") / _mean(zero, "clips_per_s_per_core")
    steady = (statistics.fmean(p["stages"]["steady_clips_per_s"] for p in lat)
              / statistics.fmean(p["stages"]["steady_clips_per_s"] for p in zero))
    rss = max(p["rss_mb_max"] for p in res["phases"]) / res["cores"]
    pss = max(p["pss_mb_max"] for p in res["phases"]) / res["cores"]
    out = [f"```sh\n{cmd.strip()}\n```", "",
           f"{res['machine']}; worker deployment: {res['workers']} × `{res['worker_cmd']}` "
           f"on {res['cores']} core(s) (cpus {res['worker_cpus']}); servers on cpus "
           f"{res['server_cpus']}; {args.clips} × {args.seconds:g} s AAC clips per phase; "
           f"latency: first byte {args.first_byte_ms:g} ms, {args.mbit_s:g} Mbit/s per "
           f"connection, S3 +{args.s3_ms:g} ms per request; workers at nice {args.nice}; "
           f"load average before "
           f"{res['load_average_before'][0]:.2f}.", "",
           "| phase | clips/s per core (steady) | worker CPU utilisation (main) "
           "| pool children busy | RSS MB per core (main) | PSS MB per core (main) "
           "| fetch ms per clip (overlapped) | store ms (overlapped) | done |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in res["phases"]:
        s, cores = p["stages"], res["cores"]
        fetch = s["stage_ms"].get("fetch", 0.0)
        over = s["overlapped_ms"].get("fetch", 0.0)
        put = s["stage_ms"].get("store", 0.0)
        put_over = s["overlapped_ms"].get("store", 0.0)
        busy = s["child_busy_s"] / (p["wall_s"] * res["children"])
        out.append(f"| {p['kind']} #{p['round']} | {p['clips_per_s_per_core']:.2f} "
                   f"({s['steady_clips_per_s'] / cores:.2f}) | "
                   f"{100 * p['cpu_utilisation']:.0f} % "
                   f"({100 * p['main_cpu_s'] / (p['wall_s'] * cores):.0f} %) | "
                   f"{100 * busy:.0f} % | "
                   f"{p['rss_mb_max'] / cores:.0f} ({p['main_rss_mb_max'] / cores:.0f}) | "
                   f"{p['pss_mb_max'] / cores:.0f} ({p['main_pss_mb_max'] / cores:.0f}) | "
                   f"{fetch:.0f} ({over:.0f}) | {put:.0f} ({put_over:.0f}) | "
                   f"{p['counts'].get('done', 0)}/{p['clips']} |")
    mark = "PASS" if ratio >= TARGET_RATIO else "BELOW"
    mem_mark = "PASS" if rss <= TARGET_RSS_MB_PER_CORE else "BELOW"
    steady_mark = "PASS" if steady >= TARGET_RATIO else "BELOW"
    for p in res["phases"]:
        p["dedicated_core_clips_per_s"] = dedicated_core_rate(p, res["children"], res["cores"])
    projected = (_mean(lat, "dedicated_core_clips_per_s")
                 / _mean(zero, "dedicated_core_clips_per_s"))
    out += ["", f"**latency / zero-latency throughput per core: {ratio:.2f}** publish → last "
            f"job accounted (fill and drain of each phase included), **{steady:.2f} in steady "
            f"state** (target ≥ {TARGET_RATIO:.2f}: {mark} / {steady_mark}); worker RSS per "
            f"core {rss:.0f} MB, PSS {pss:.0f} MB "
            f"(target RSS ≤ {TARGET_RSS_MB_PER_CORE:.0f} MB: {mem_mark}).", "",
            "With the worker's cores to itself (no other tenant; from each phase's CPU and "
            "blocked time, see `dedicated_core_rate`): "
            + ", ".join(f"{p['kind']} #{p['round']} {p['dedicated_core_clips_per_s']:.2f}"
                        for p in res["phases"])
            + f" clips/s per core; **latency / zero-latency {projected:.2f}**.", "",
            "| phase | pool child on CPU | waiting for a CPU (other tenants) | blocked "
            "(I/O) | main process on CPU |", "|---|---:|---:|---:|---:|"]
    for p in res["phases"]:
        span = p["wall_s"] * res["children"]
        blocked = span - p["child_run_s"] - p["child_runq_wait_s"]
        out.append(f"| {p['kind']} #{p['round']} | {100 * p['child_run_s'] / span:.0f} % | "
                   f"{100 * p['child_runq_wait_s'] / span:.0f} % | {100 * blocked / span:.0f} % "
                   f"| {100 * p['main_run_s'] / (p['wall_s'] * res['cores']):.0f} % |")
    out += ["",
            "Stage timings per clip (ms, means over each kind's done jobs; `overlapped` is "
            "the part of a stage done ahead, while other jobs computed):", "",
            "| stage | zero | latency |", "|---|---:|---:|"]
    keys = sorted({k for p in res["phases"] for k in p["stages"]["stage_ms"]})
    for k in keys:
        z = statistics.fmean(p["stages"]["stage_ms"].get(k, 0.0) for p in zero)
        la = statistics.fmean(p["stages"]["stage_ms"].get(k, 0.0) for p in lat)
        out.append(f"| {k} | {z:.1f} | {la:.1f} |")
    for k in sorted({k for p in res["phases"] for k in p["stages"]["overlapped_ms"]}):
        z = statistics.fmean(p["stages"]["overlapped_ms"].get(k, 0.0) for p in zero)
        la = statistics.fmean(p["stages"]["overlapped_ms"].get(k, 0.0) for p in lat)
        out.append(f"| of which overlapped: {k} | {z:.1f} | {la:.1f} |")
    for k, label in (("stage_wall_ms", "job wall in the pool child"),
                     ("stage_cpu_ms", "job CPU in the pool child")):
        z = statistics.fmean(p["stages"][k] for p in zero)
        la = statistics.fmean(p["stages"][k] for p in lat)
        out.append(f"| {label} | {z:.1f} | {la:.1f} |")
    z = statistics.fmean(p["stages"]["held_ms"] for p in zero)
    la = statistics.fmean(p["stages"]["held_ms"] for p in lat)
    out.append(f"| held in the worker, received → pool child (fetch ahead) | {z:.1f} | {la:.1f} |")
    z = statistics.fmean(p["stages"]["queue_wait_s_median"] or 0 for p in zero)
    la = statistics.fmean(p["stages"]["queue_wait_s_median"] or 0 for p in lat)
    out.append(f"| queue wait, publish → job start, median (s) | {z:.2f} | {la:.2f} |")
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def _cpus(spec: str | None, default: list[int]) -> list[int]:
    return [int(c) for c in spec.split(",")] if spec else default


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=80, help="jobs per phase")
    parser.add_argument("--distinct", type=int, default=24, help="distinct clips served")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--worker-cpus", help="cpus for the workers (default: cpu 0)")
    parser.add_argument("--server-cpus", help="cpus for everything else (default: the rest)")
    parser.add_argument("--first-byte-ms", type=float, default=300.0)
    parser.add_argument("--mbit-s", type=float, default=8.0)
    parser.add_argument("--s3-ms", type=float, default=80.0)
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness of the workers (negative needs root): on a shared "
                             "machine, keeps other tenants from deciding the result")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the workers, e.g. PREVIEWVEC_PREFETCH_MULTIPLIER=1 "
                             "(plain Celery: the deployment before overlapping)")
    parser.add_argument("worker_args", nargs="*", help="after --: extra `previewvec worker` args")
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])

    # SIGTERM unwinds like Ctrl-C, so the finally below stops the workers and servers.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    allowed = sorted(os.sched_getaffinity(0))
    worker_cpus = _cpus(args.worker_cpus, allowed[:1])
    server_cpus = _cpus(args.server_cpus, [c for c in allowed if c not in worker_cpus] or allowed)
    folder, _ = ensure_clips(args.distinct, args.seed, args.seconds)
    os.sched_setaffinity(0, server_cpus)  # children (moto, redis) inherit it
    latency = Latency()
    target = Latency(args.first_byte_ms / 1000, args.mbit_s * 1e6 / 8, args.s3_ms / 1000)
    work = Path(tempfile.mkdtemp(prefix="previewvec-latency-"))
    moto = MotoServer(work)
    proxy = DelayProxy(moto.port, latency)
    host = ClipHost(folder, latency)
    res: dict = {"machine": _machine(), "load_average_before": os.getloadavg(),
                 "cores": len(worker_cpus), "worker_cpus": worker_cpus,
                 "server_cpus": server_cpus, "workers": args.workers, "phases": []}
    procs: list[subprocess.Popen] = []
    try:
        moto.create_bucket("latency")
        with LocalRedis() as local_redis:
            from contract.state import Runs

            store = "s3://latency/x"
            s3_env = {**moto.env, "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{proxy.port}"}
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("PREVIEWVEC_", "AWS_"))}
            env.update({**s3_env, "PREVIEWVEC_BROKER_URL": local_redis.url,
                        "PREVIEWVEC_STORE": store, "PREVIEWVEC_ALLOWED_AUDIO_HOSTS": "127.0.0.1",
                        "NUMBA_CACHE_DIR": _NUMBA_CACHE_DIR,
                        "PREVIEWVEC_CACHE_DIR": str(Settings.from_env().cache_dir)})
            env.update(item.split("=", 1) for item in args.worker_env)
            settings = dataclasses.replace(Settings(), broker_url=local_redis.url, store=store,
                                           allowed_audio_hosts=("127.0.0.1",))
            procs, logs = start_workers(args.workers, env, worker_cpus, work, args.worker_args,
                                        args.nice)
            res["worker_cmd"] = " ".join([*args.worker_env, "previewvec worker",
                                          *args.worker_args]).strip()
            children = max(1, len(worker_cpus) // args.workers)
            if "--concurrency" in args.worker_args:
                children = int(args.worker_args[args.worker_args.index("--concurrency") + 1])
            res["children"] = children * args.workers
            _wait_warm(logs, procs, children)
            pids = [p.pid for p in procs]
            runs = Runs.from_url(local_redis.url)
            # Warm-up phase (not reported): first connections, first pages touched.
            run_phase("warm", 2 * children, runs, settings, host, pids, procs, len(worker_cpus))
            for r in range(1, args.rounds + 1):
                for kind in ("zero", "latency"):
                    for field in dataclasses.fields(Latency):
                        value = getattr(target, field.name) if kind == "latency" else 0.0
                        setattr(latency, field.name, value)
                    print(f"round {r}: {kind} ...", flush=True)
                    phase = run_phase(f"{kind}{r}", args.clips, runs, settings, host, pids,
                                      procs, len(worker_cpus))
                    phase.update(kind=kind, round=r)
                    res["phases"].append(phase)
                    print(f"    {phase['clips_per_s_per_core']:.2f} clips/s per core, CPU "
                          f"{100 * phase['cpu_utilisation']:.0f} %", flush=True)
    finally:
        stop_workers(procs)
        host.stop()
        proxy.stop()
        moto.stop()
    tasks = [t for log in sorted(work.glob("worker-*.log"))
             for t in parse_outcomes(log.read_text(errors="replace"))]
    for phase in res["phases"]:
        phase["stages"] = stage_summary(tasks, phase)
    text = report(args, res)
    print()
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
