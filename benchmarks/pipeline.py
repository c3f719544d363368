"""Pipeline throughput: the full queue → workers → store → reducer path against its floor.

In one run, on the same N generated clips (AAC .m4a, 44.1 kHz stereo, served over HTTP
from 127.0.0.1), this measures clips/s and CPU seconds per clip for

  (a) floor: ``workers.analysis.analyze(bytes)`` in one process (decode + extract; no
      queue, network or store);
  (b) real path: ``producers.queue.publish`` → private Redis (``LocalRedis``) → W
      ``celery -A workers.app worker --concurrency 1`` processes (fetch over HTTP, decode,
      extract, store to a moto S3 server, or the folder store with ``--store local``) →
      ``Reducer.drain()`` into the embedded LanceDB index; with W = 2 (and W = 1 for the
      scaling line);
  (c) naive baseline: ``librosa.load(path)`` + FMA's feature calls (``fma_reference``)
      in a ``multiprocessing.Pool(2)``. librosa cannot read AAC without ffmpeg, so the
      naive loop gets WAV copies of the clips (written from the same rendered audio).

plus the enqueue rate (20 000 tiny valid jobs through ``publish``) with Redis memory per
queued job, and the reduce rate (50 000 random 530-d vectors upserted into a fresh
``EmbeddedIndex`` in batches of 5 000).

    python benchmarks/pipeline.py                         # 200 × 30 s clips, ~6 minutes
    python benchmarks/pipeline.py --clips 60 --json pipeline.json
"""

from __future__ import annotations

import os
import sys

from _percore import pin_one_thread, stop_workers

from contract.settings import Settings

_NUMBA_CACHE_DIR = pin_one_thread("benchmarks/pipeline.py")

import argparse  # noqa: E402
import ast  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from previewvec.demo import serve_folder  # noqa: E402
from previewvec.localredis import LocalRedis, free_port  # noqa: E402
from workers.app import MAX_TASKS_PER_CHILD  # noqa: E402

NATIVE_SR = 44100
TARGET_FLOOR_FRACTION = 0.90
TARGET_VS_NAIVE = 4.0
TARGET_ENQUEUE = 5000.0
TARGET_REDUCE = 20000.0
ENQUEUE_JOBS = 20_000
IDLE_SAMPLE_S = 5.0
REDUCE_VECTORS = 50_000
REDUCE_BATCH = 5_000
CACHE_ROOT = (Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
              / "previewvec" / "bench-clips")
CLIP_FORMAT_VERSION = "v1"
# Celery's success line carries the task wall and the task's result (the featurize Outcome).
TASK_LINE = re.compile(
    r"Task previewvec\.featurize\[[^\]]+\] succeeded in ([0-9.eE+-]+)s: (\{.*\})$", re.M)


# --------------------------------------------------------------------------- clips


def _clip_dir(seed: int, seconds: float) -> Path:
    return CACHE_ROOT / f"{CLIP_FORMAT_VERSION}-synth-seed{seed}-{seconds:g}s"


def _make_one(args: tuple[int, int, float, str]) -> None:
    i, seed, seconds, folder = args
    from testkit.encode import encode_audio
    from testkit.songs.render import render_synth
    from testkit.songs.score import MODES, STYLES, generate_song, styles_for

    rng = random.Random(seed * 100_003 + i)
    tempo = round(rng.uniform(66, 172), 1)
    candidates = styles_for(tempo) or STYLES
    score = generate_song(seed + i, tonic=rng.randrange(12), mode=MODES[i % 2], tempo_bpm=tempo,
                          drums=i % 4 != 3, duration_s=seconds,
                          style=candidates[i % len(candidates)])
    audio = render_synth(score, NATIVE_SR)[:, : round(seconds * NATIVE_SR)]
    out = Path(folder)
    tmp = out / f".{i:05d}.tmp"
    tmp.write_bytes(encode_audio(audio, NATIVE_SR, "wav"))
    tmp.rename(out / f"{i:05d}.wav")
    tmp.write_bytes(encode_audio(audio, NATIVE_SR, "m4a"))
    tmp.rename(out / f"{i:05d}.m4a")


def ensure_clips(n: int, seed: int, seconds: float) -> tuple[Path, float]:
    """Generate (or reuse) clips 0..n-1; returns the folder and the generation wall time."""
    folder = _clip_dir(seed, seconds)
    folder.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(n) if not (folder / f"{i:05d}.m4a").exists()]
    started = time.perf_counter()
    if missing:
        print(f"generating {len(missing)} clips in {folder} ...", flush=True)
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            pool.map(_make_one, [(i, seed, seconds, str(folder)) for i in missing], chunksize=4)
    return folder, time.perf_counter() - started


# --------------------------------------------------------------------------- (a) floor


def measure_floor(folder: Path, n: int) -> dict:
    from workers.analysis import analyze
    from workers.features.extractor import warm_up

    settings = Settings()
    warm_up()
    blobs = [(folder / f"{i:05d}.m4a").read_bytes() for i in range(n)]
    stages: dict[str, float] = defaultdict(float)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for data in blobs:
        for k, v in analyze(data, settings).timings_s.items():
            stages[k] += v
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"clips": n, "wall_s": wall, "cpu_s": cpu, "clips_per_s": n / wall,
            "cpu_s_per_clip": cpu / n, "stage_s_per_clip": {k: v / n for k, v in stages.items()}}


def _floor_init() -> None:
    from workers.features.extractor import warm_up

    warm_up()


def _floor_one(path: str) -> float:
    from workers.analysis import analyze

    data = Path(path).read_bytes()
    c0 = time.process_time()
    analyze(data, Settings())
    return time.process_time() - c0


def measure_floor_parallel(folder: Path, n: int, processes: int) -> dict:
    """(a) in ``processes`` concurrent processes: what the cores of this machine give to
    decode + extract alone, with no queue, network or store (shared caches, SMT and
    other tenants included), i.e. the fair wall-clock yardstick for (b)."""
    paths = [str(folder / f"{i:05d}.m4a") for i in range(n)]
    with multiprocessing.get_context("spawn").Pool(processes, initializer=_floor_init) as pool:
        pool.map(_floor_one, paths[:processes])  # untimed: first call per child
        wall0 = time.perf_counter()
        cpus = pool.map(_floor_one, paths, chunksize=1)
        wall = time.perf_counter() - wall0
    return {"clips": n, "processes": processes, "wall_s": wall, "cpu_s": sum(cpus),
            "clips_per_s": n / wall, "cpu_s_per_clip": sum(cpus) / n}


# --------------------------------------------------------------------------- (c) naive


def _naive_one(path: str) -> float:
    import librosa

    from testkit.fma_reference import fma_reference

    c0 = time.process_time()
    y, sr = librosa.load(path)  # what a user writes: 22.05 kHz mono, soxr resampling
    fma_reference(y, sr)
    return time.process_time() - c0


def measure_naive(folder: Path, n: int) -> dict:
    paths = [str(folder / f"{i:05d}.wav") for i in range(n)]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_naive_one, paths[:2])  # imports + numba JIT in both children, untimed
        wall0 = time.perf_counter()
        cpus = pool.map(_naive_one, paths, chunksize=1)
        wall = time.perf_counter() - wall0
    return {"clips": n, "wall_s": wall, "cpu_s": sum(cpus), "clips_per_s": n / wall,
            "cpu_s_per_clip": sum(cpus) / n, "processes": 2}


# --------------------------------------------------------------------------- (b) real path


class MotoServer:
    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log = open(log_dir / "moto.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start; see moto.log") from None
                time.sleep(0.1)
        self.env = {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{self.port}",
                    "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                    "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}

    def create_bucket(self, name: str) -> None:
        import boto3

        client = boto3.client("s3", endpoint_url=self.env["AWS_ENDPOINT_URL_S3"],
                              aws_access_key_id="bench", aws_secret_access_key="bench",
                              region_name="us-east-1")
        client.create_bucket(Bucket=name)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _cpu(pid: int) -> float:
    """user+sys CPU seconds of one process (0 once it is gone)."""
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return t.user + t.system


def _tree_cpu(pids: list[int]) -> float:
    """user+sys CPU seconds of each worker main process and its live pool children."""
    return sum(_cpu(pid) + sum(_cpu(c) for c in _child_pids([pid])) for pid in pids)


def _role_cpu(roles: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each role's processes (a role: name → pids)."""
    return {name: sum(_cpu(pid) for pid in pids) for name, pids in roles.items()}


def _child_pids(pids: list[int]) -> set[int]:
    out = set()
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            out.update(c.pid for c in psutil.Process(pid).children(recursive=True))
    return out


def _wait_warm(logs: list[Path], procs: list[subprocess.Popen], timeout_s: float = 300) -> None:
    """Until every worker's pool child has warmed its extractor (numba loaded, clients
    built): Celery prints "ready" before that, and a run started then would count the
    warm-up as per-clip work."""
    deadline = time.monotonic() + timeout_s
    while True:
        if all("extractor warmed" in p.read_text(errors="replace") for p in logs):
            return
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise RuntimeError(f"workers did not warm up; see {logs}")
        time.sleep(0.2)


def measure_path(folder: Path, n: int, workers: int, store_kind: str, work: Path,
                 moto: MotoServer | None, tag: str) -> dict:
    from contract.jobs import Job
    from contract.layout import FEATURE_VERSION
    from contract.records import record_key
    from contract.state import Runs, new_run_id
    from producers.queue import publish
    from reducer.reduce import Reducer

    run_dir = work / tag
    run_dir.mkdir(parents=True)
    if store_kind == "s3":
        assert moto is not None
        bucket = f"bench-{tag}"
        moto.create_bucket(bucket)
        store = f"s3://{bucket}/x"
        os.environ.update(moto.env)
    else:
        store = str(run_dir / "store")
    with LocalRedis() as local_redis, serve_folder(folder) as base_url:
        settings = dataclasses.replace(Settings(), broker_url=local_redis.url, store=store,
                                       index=str(run_dir / "index"),
                                       allowed_audio_hosts=("127.0.0.1",))
        env = {**os.environ, **(moto.env if moto else {}),
               "PREVIEWVEC_BROKER_URL": local_redis.url, "PREVIEWVEC_STORE": store,
               "PREVIEWVEC_INDEX": settings.index, "PREVIEWVEC_ALLOWED_AUDIO_HOSTS": "127.0.0.1"}
        logs, procs = [], []
        for i in range(workers):
            log_path = run_dir / f"worker-{i + 1}.log"
            logs.append(log_path)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--concurrency",
                 "1", "--hostname", f"bench{i + 1}@%h", "--queues", "ondemand,batch",
                 "--loglevel", "info", "--prefetch-multiplier", "1", "--without-gossip",
                 "--without-mingle", "--without-heartbeat"],
                env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT))  # noqa: SIM115
        try:
            started_boot = time.perf_counter()
            _wait_warm(logs, procs)
            boot_s = time.perf_counter() - started_boot
            pids = [p.pid for p in procs]
            startup_cpu = _tree_cpu(pids)  # imports, numba cache load, clients: per process
            children_before = _child_pids(pids)
            roles = {
                "worker pool children": sorted(children_before),
                "worker main processes": pids,
                "redis-server": [local_redis.process.pid] if local_redis.process else [],
                "S3 server (moto)": [moto.proc.pid] if moto else [],
                # this process: the clip HTTP server's threads, publishing, status polls
                "benchmark process (clip server, producer, polling)": [os.getpid()],
            }
            runs = Runs.from_url(local_redis.url)
            run_id = new_run_id()
            runs.create(run_id, queue="batch", source="bench")
            jobs = [Job(recording_id=f"bench-{i:05d}", preview_url=f"{base_url}/{i:05d}.m4a",
                        source="bench") for i in range(n)]
            # Idle sample: the same processes and status polling with no jobs, so the CPU
            # per clip below can be split into per-job work and time-based idle cost.
            idle0, idle_t0 = _role_cpu(roles), time.perf_counter()
            while time.perf_counter() - idle_t0 < IDLE_SAMPLE_S:
                runs.status(run_id)
                time.sleep(0.05)
            idle1, idle_wall = _role_cpu(roles), time.perf_counter() - idle_t0
            idle_rate = {k: (idle1[k] - idle0[k]) / idle_wall for k in roles}
            cpu0 = _role_cpu(roles)
            t0_epoch, t0 = time.time(), time.perf_counter()
            publish(jobs, runs, settings, run_id=run_id, queue="batch")
            t_published = time.perf_counter()
            deadline = t0 + 60 + 10 * n
            while runs.status(run_id).counts["queued"] > 0:
                if time.perf_counter() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"run did not finish; see logs in {run_dir}")
                time.sleep(0.05)
            t_featurized, t_end_epoch = time.perf_counter(), time.time()
            cpu1 = _role_cpu(roles)
            cpu_roles = {k: cpu1[k] - cpu0[k] for k in roles}
            cpu_workers = (cpu_roles["worker pool children"]
                           + cpu_roles["worker main processes"])
            status = runs.status(run_id).counts
            if _child_pids(pids) != children_before:
                print(f"  warning: pool children were replaced during {tag}; CPU undercounted")
            red_cpu0 = time.process_time()
            red_t0 = time.perf_counter()
            reducer = Reducer.build(settings)
            red_t1 = time.perf_counter()
            reducer.normalizer()  # fitted once per feature version, from the stored records
            red_t2 = time.perf_counter()
            reduced = reducer.drain()
            reducer.index.wait_for_writes()
            t_indexed = time.perf_counter()
            red_cpu = time.process_time() - red_cpu0
            servers = ("redis-server", "S3 server (moto)")
            cpu2 = _role_cpu({k: roles[k] for k in servers})
            red_cpu_servers = sum(cpu2[k] - cpu1[k] for k in servers)
            indexed = reducer.index.count()
            sizes = [len(reducer.store.get(record_key(FEATURE_VERSION, f"bench-{i:05d}")))
                     for i in range(n)]
        finally:
            stop_workers(procs, timeout_s=30)
    per_worker = [_parse_tasks(log_path.read_text(errors="replace")) for log_path in logs]
    tasks = [t for w in per_worker for t in w]
    feat_wall = t_featurized - t0
    total_wall = t_indexed - t0
    done = [t for t in tasks if t["status"] == "done"]
    stages: dict[str, float] = defaultdict(float)
    for t in done:
        for k, v in t["timings_s"].items():
            stages[k] += v
    nd = max(1, len(done))
    stage_total = sum(stages.values())
    task_wall = sum(t["task_wall_s"] for t in tasks)
    stage_wall = sum(t["wall_s"] for t in tasks)
    # Per worker process: featurize-window time = before its first task + in tasks +
    # between tasks + after its last task (idle while the other worker finishes).
    head = tail = between = 0.0
    for w in per_worker:
        if not w:
            continue
        w.sort(key=lambda t: t["started_at"])
        head += w[0]["started_at"] - t0_epoch
        tail += t_end_epoch - (w[-1]["started_at"] + w[-1]["wall_s"])
        between += sum(b["started_at"] - (a["started_at"] + a["wall_s"])
                       for a, b in itertools.pairwise(w))
    celery_in_task = task_wall - stage_wall
    queue_waits = sorted(t["started_at"] - t0_epoch for t in tasks)
    return {
        "workers": workers, "clips": n, "store": store_kind, "worker_boot_s": boot_s,
        "worker_startup_cpu_s": startup_cpu / workers,
        "publish_s": t_published - t0, "featurize_wall_s": feat_wall,
        "reduce_wall_s": t_indexed - red_t0, "reduce_cpu_s": red_cpu,
        "reduce_phases_s": {"open store and index": red_t1 - red_t0,
                            "fit normaliser (once)": red_t2 - red_t1,
                            "drain (GET, decode, upsert)": t_indexed - red_t2},
        "reduce_cpu_s_servers": red_cpu_servers,
        "wall_s": total_wall, "clips_per_s": n / total_wall,
        "featurize_clips_per_s": n / feat_wall,
        "worker_cpu_s": cpu_workers, "cpu_s_per_clip": cpu_workers / n,
        "cpu_by_process_s": cpu_roles,
        "idle_cpu_per_s": idle_rate,
        "counts": status, "reduced": reduced, "indexed": indexed,
        "tasks_logged": len(tasks),
        "stage_s_per_clip": {k: v / nd for k, v in sorted(stages.items())},
        "stages_sum_s_per_clip": stage_total / nd,
        "stage_cpu_s_per_clip": sum(t["cpu_s"] for t in done) / nd,
        "stage_wall_s_per_clip": stage_wall / max(1, len(tasks)),
        "task_wall_s_per_clip": task_wall / max(1, len(tasks)),
        # worker-seconds per clip, summing to featurize wall × workers / n
        "split_s_per_clip": {
            "stages (fetch … account)": stage_total / n,
            "inside featurize, outside the timed stages": (stage_wall - stage_total) / n,
            "Celery inside the task (trace, result, signals)": celery_in_task / n,
            "between tasks (ack, next message, pool dispatch)": (between - celery_in_task) / n,
            "before a worker's first task (publish, first fetch)": head / n,
            "after a worker's last task (tail: the other worker finishing)": tail / n,
        },
        "queue_wait_s": {"first": queue_waits[0], "median": queue_waits[len(queue_waits) // 2],
                         "last": queue_waits[-1]} if queue_waits else {},
        "record_bytes_mean": sum(sizes) / len(sizes), "record_bytes_max": max(sizes),
    }


def _parse_tasks(log: str) -> list[dict]:
    """Celery's success lines of one worker's log → the featurize outcomes, each with the
    task wall Celery measured (``task_wall_s``)."""
    out = []
    for wall, result in TASK_LINE.findall(log):
        try:
            outcome = ast.literal_eval(result)
        except (ValueError, SyntaxError):  # a result Celery truncated in its log line
            continue
        if isinstance(outcome, dict) and "wall_s" in outcome:
            out.append({**outcome, "task_wall_s": float(wall)})
    return out


# --------------------------------------------------------------------------- enqueue / reduce


def measure_enqueue(n: int) -> dict:
    from contract.jobs import Job
    from contract.state import Runs, connect, new_run_id
    from producers.queue import TASK_NAME, make_client, publish

    with LocalRedis() as local_redis:
        assert local_redis.process is not None
        redis_pid = local_redis.process.pid
        settings = dataclasses.replace(Settings(), broker_url=local_redis.url)
        runs = Runs.from_url(local_redis.url)
        raw = connect(local_redis.url)  # measuring: memory, raw LPUSH baseline
        run_id = new_run_id()
        runs.create(run_id, queue="batch", source="bench")
        jobs = [Job(recording_id=f"enqueue-{i:06d}",
                    preview_url=f"https://audio-ssl.itunes.apple.com/itunes-assets/x/{i}.m4a",
                    source="bench") for i in range(n)]
        publish(jobs[:10], runs, settings, run_id=new_run_id(), queue="ondemand")  # connect
        raw.delete("ondemand")
        mem0 = int(raw.info("memory")["used_memory"])
        redis_cpu0 = _cpu(redis_pid)
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        report = publish(jobs, runs, settings, run_id=run_id, queue="batch")
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        redis_cpu = _cpu(redis_pid) - redis_cpu0
        mem1 = int(raw.info("memory")["used_memory"])
        depth = int(raw.llen("batch"))
        message = raw.lindex("batch", 0) or b""
        msg_bytes = len(message)
        # Baseline: what publish did before batching, one send_task (two Redis round
        # trips) per message, without the run bookkeeping.
        m = min(n, 5_000)
        client = make_client(settings)
        with client.producer_pool.acquire(block=True) as producer:
            payloads = [job.to_dict() for job in jobs[:m]]
            client.send_task(TASK_NAME, args=[payloads[0]], queue="ondemand", producer=producer)
            t1 = time.perf_counter()
            for payload in payloads:
                client.send_task(TASK_NAME, args=[payload], queue="ondemand", producer=producer)
            one_wall = time.perf_counter() - t1
        # Upper bound for any publisher: the same message bytes LPUSHed in pipelines of
        # 500 (no message building at all).
        raw.delete("bench-raw")
        t2 = time.perf_counter()
        for start in range(0, n, 500):
            pipe = raw.pipeline(transaction=False)
            for _ in range(min(500, n - start)):
                pipe.lpush("bench-raw", message)
            pipe.execute()
        raw_wall = time.perf_counter() - t2
    return {"jobs": report.queued, "queue_depth": depth, "wall_s": wall, "cpu_s": cpu,
            "jobs_per_s": report.queued / wall, "producer_cpu_us_per_job": 1e6 * cpu / n,
            "redis_cpu_us_per_job": 1e6 * redis_cpu / n,
            "redis_bytes_per_job": (mem1 - mem0) / report.queued, "message_bytes": msg_bytes,
            "one_by_one_jobs": m, "one_by_one_per_s": m / one_wall,
            "raw_pipelined_per_s": n / raw_wall}


def measure_reduce(n: int, batch: int, work: Path) -> dict:
    from contract.layout import VECTOR_DIM
    from reducer.index import IndexItem
    from reducer.index.embedded import EmbeddedIndex

    rng = np.random.default_rng(7)
    index = EmbeddedIndex(work / "reduce-index", VECTOR_DIM)
    batches = []
    for start in range(0, n, batch):
        values = rng.standard_normal((min(batch, n - start), VECTOR_DIM)).astype(np.float32)
        batches.append([IndexItem(f"vec-{start + j:07d}", values[j],
                                  {"recording_id": f"vec-{start + j:07d}",
                                   "tempo_bpm": float(100 + j % 60), "key": "C", "mode": "major"})
                        for j in range(len(values))])
    t0, cpu0 = time.perf_counter(), time.process_time()
    per_batch = []
    for items in batches:
        b0 = time.perf_counter()
        index.upsert(items)
        per_batch.append(time.perf_counter() - b0)
    index.wait_for_writes()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    count = index.count()
    return {"vectors": n, "batch": batch, "count": count, "wall_s": wall, "cpu_s": cpu,
            "vectors_per_s": n / wall, "first_batch_s": per_batch[0],
            "last_batch_s": per_batch[-1], "dim": VECTOR_DIM}


# --------------------------------------------------------------------------- report


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _mark(ok: bool) -> str:
    return "PASS" if ok else "BELOW"


def report(args: argparse.Namespace, res: dict) -> str:
    a, b, c = res["floor"], res["path"], res.get("naive")
    b1 = res.get("path_1worker")
    cores = b["workers"]
    cmd = "python benchmarks/pipeline.py " + " ".join(shlex.quote(x) for x in args.argv)
    out = [f"```sh\n{cmd.strip()}\n```", "",
           f"{_machine()}; {b['clips']} clips × {args.seconds:g} s AAC .m4a (synth renderer), "
           f"store {b['store']}, {cores} worker processes × concurrency 1; load average "
           f"before the run {res['load_average_before'][0]:.2f} (shared machine).", "",
           "| measurement | clips/s (or rate) | CPU-s per clip | ratio | target | result |",
           "|---|---:|---:|---:|---|---|"]
    floor_x = a["clips_per_s"] * cores
    r1 = b["clips_per_s"] / floor_x
    eff = a["cpu_s_per_clip"] / b["cpu_s_per_clip"]
    all_cpu = (sum(b["cpu_by_process_s"].values()) + b["reduce_cpu_s"]
               + b["reduce_cpu_s_servers"]) / b["clips"]
    eff_all = a["cpu_s_per_clip"] / all_cpu
    out.append(f"| (a) floor: analyze(bytes), 1 process | {a['clips_per_s']:.2f} | "
               f"{a['cpu_s_per_clip']:.3f} | — | — | — |")
    out.append(f"| (b) real path, {cores} workers (publish → indexed), by wall | "
               f"{b['clips_per_s']:.2f} | {b['cpu_s_per_clip']:.3f} | {r1:.2f} of (a)×{cores} | "
               f"≥ 0.90 | {_mark(r1 >= TARGET_FLOOR_FRACTION)} |")
    out.append(f"| (b) by CPU, workers: (a) CPU-s ÷ worker CPU-s per clip | — | — | "
               f"{eff:.2f} | ≥ 0.90 | {_mark(eff >= TARGET_FLOOR_FRACTION)} |")
    out.append(f"| (b) by CPU, whole pipeline: (a) CPU-s ÷ CPU-s of every process per clip | "
               f"— | {all_cpu:.3f} | {eff_all:.2f} | ≥ 0.90 | "
               f"{_mark(eff_all >= TARGET_FLOOR_FRACTION)} |")
    ap = res.get("floor_parallel")
    if ap:
        rp = b["clips_per_s"] / ap["clips_per_s"]
        out.append(f"| (a′) floor in {ap['processes']} concurrent processes (what {cores} cores "
                   f"give here) | {ap['clips_per_s']:.2f} | {ap['cpu_s_per_clip']:.3f} | "
                   f"{ap['clips_per_s'] / floor_x:.2f} of (a)×{cores} | (info) | — |")
        out.append(f"| (b) by wall against (a′) | — | — | {rp:.2f} of (a′) | (info) | — |")
    r1f = b["featurize_clips_per_s"] / floor_x
    out.append(f"| (b) workers only (publish → last record stored) | "
               f"{b['featurize_clips_per_s']:.2f} | — | {r1f:.2f} of (a)×{cores} | (info) | — |")
    if c:
        r2 = b["clips_per_s"] / c["clips_per_s"]
        out.append(f"| (c) naive librosa.load(WAV) + FMA calls, Pool(2) | {c['clips_per_s']:.2f} | "
                   f"{c['cpu_s_per_clip']:.3f} | (b)/(c) = {r2:.2f}× | ≥ 4× | "
                   f"{_mark(r2 >= TARGET_VS_NAIVE)} |")
    if b1:
        sc = b["clips_per_s"] / b1["clips_per_s"]
        out.append(f"| scaling: real path, 1 worker ({b1['clips']} clips) | "
                   f"{b1['clips_per_s']:.2f} | {b1['cpu_s_per_clip']:.3f} | "
                   f"2 workers / 1 = {sc:.2f}× | (info; ideal 2×) | — |")
    e, r = res.get("enqueue"), res.get("reduce")
    if e:
        out.append(f"| enqueue: publish {e['jobs']} jobs (batched, run bookkeeping included) | "
                   f"{e['jobs_per_s']:.0f} jobs/s | — | "
                   f"{e['jobs_per_s'] / TARGET_ENQUEUE:.2f} of target | ≥ 5 000/s | "
                   f"{_mark(e['jobs_per_s'] >= TARGET_ENQUEUE)} |")
        cpu_rate = 1e6 / (e["producer_cpu_us_per_job"] + e["redis_cpu_us_per_job"])
        out.append("| (info) producer CPU / Redis CPU per published job; rate with no wait "
                   f"for a core | {e['producer_cpu_us_per_job']:.0f} µs / "
                   f"{e['redis_cpu_us_per_job']:.0f} µs | — | {cpu_rate:.0f} jobs/s | — | — |")
        out.append(f"| (info) before batching: send_task one by one ({e['one_by_one_jobs']} jobs) "
                   f"| {e['one_by_one_per_s']:.0f} jobs/s | — | — | — | — |")
        out.append(f"| (info) same messages, raw pipelined LPUSH ×500 | "
                   f"{e['raw_pipelined_per_s']:.0f} msgs/s | — | — | — | — |")
        out.append(f"| Redis memory per queued job | {e['redis_bytes_per_job']:.0f} B "
                   f"(message {e['message_bytes']} B) | — | — | — | — |")
    if r:
        out.append(f"| reduce: upsert {r['vectors']} × {r['dim']}-d, batches of {r['batch']} | "
                   f"{r['vectors_per_s']:.0f} vectors/s | — | "
                   f"{r['vectors_per_s'] / TARGET_REDUCE:.2f} of target | ≥ 20 000/s | "
                   f"{_mark(r['vectors_per_s'] >= TARGET_REDUCE)} |")
        out.append(f"| (info) reduce CPU (this process, LanceDB's threads included) | "
                   f"{r['vectors'] / r['cpu_s']:.0f} vectors per CPU-s | — | — | — | — |")

    out += ["", f"Real path, {cores} workers: stage timings per clip, from each task's outcome "
            "(logged by Celery with its task wall), against the floor's:", "",
            "| stage | ms per clip | (a) floor ms |", "|---|---:|---:|"]
    for k, v in b["stage_s_per_clip"].items():
        fv = a["stage_s_per_clip"].get(k)
        out.append(f"| {k} | {1000 * v:.1f} | {'' if fv is None else f'{1000 * fv:.1f}'} |")
    out.append(f"| **sum of stages** | **{1000 * b['stages_sum_s_per_clip']:.1f}** | "
               f"**{1000 * sum(a['stage_s_per_clip'].values()):.1f}** |")
    out.append(f"| featurize wall / CPU of the worker (wall − CPU = waiting for a core or "
               f"I/O) | {1000 * b['stage_wall_s_per_clip']:.1f} / "
               f"{1000 * b['stage_cpu_s_per_clip']:.1f} | "
               f"{1000 * a['wall_s'] / a['clips']:.1f} / {1000 * a['cpu_s_per_clip']:.1f} |")
    out.append(f"| Celery task wall (\"succeeded in\") | {1000 * b['task_wall_s_per_clip']:.1f} "
               "| |")

    window = b["featurize_wall_s"] * cores / b["clips"]
    out += ["", f"Where each worker's time went, worker-ms per clip (sums to featurize wall × "
            f"{cores} workers ÷ clips = {1000 * window:.1f} ms):", "",
            "| part | worker-ms per clip | share |", "|---|---:|---:|"]
    for k, v in b["split_s_per_clip"].items():
        out.append(f"| {k} | {1000 * v:.1f} | {100 * v / window:.1f} % |")

    out += ["", "CPU by process during the featurize window (publish → last record stored), "
            "then the reduce; the idle CPU of the same processes (measured for "
            f"{IDLE_SAMPLE_S:g} s before the run, same status polling) is subtracted in the "
            "last column:", "",
            "| process | CPU-s | CPU-ms per clip | of which idle-rate CPU-ms | per-job CPU-ms |",
            "|---|---:|---:|---:|---:|"]
    for k, v in b["cpu_by_process_s"].items():
        idle = b["idle_cpu_per_s"][k] * b["featurize_wall_s"]
        out.append(f"| {k} | {v:.1f} | {1000 * v / b['clips']:.1f} | "
                   f"{1000 * idle / b['clips']:.1f} | {1000 * (v - idle) / b['clips']:.1f} |")
    out.append(f"| reducer (drain: GETs, decode, normaliser, LanceDB upsert) | "
               f"{b['reduce_cpu_s']:.1f} | {1000 * b['reduce_cpu_s'] / b['clips']:.1f} | | |")
    out.append(f"| redis-server + S3 server during the reduce | {b['reduce_cpu_s_servers']:.1f} | "
               f"{1000 * b['reduce_cpu_s_servers'] / b['clips']:.1f} | | |")
    qw = b.get("queue_wait_s") or {}
    out += ["", f"Worker start-up, not counted above: {b['worker_boot_s']:.1f} s wall, "
            f"{b['worker_startup_cpu_s']:.1f} CPU-s per worker (main process + pool child: "
            f"imports, numba cache load, clients; a pool child is recycled after "
            f"{MAX_TASKS_PER_CHILD} tasks, i.e. "
            f"{1000 * b['worker_startup_cpu_s'] / MAX_TASKS_PER_CHILD:.1f} CPU-ms per clip).", "",
            f"Wall: publish {b['publish_s']:.2f} s, featurize {b['featurize_wall_s']:.1f} s, "
            f"reduce after the run {b['reduce_wall_s']:.2f} s ("
            + ", ".join(f"{k} {v:.2f} s" for k, v in b["reduce_phases_s"].items())
            + f"); queue wait (publish "
            f"→ stage start) first {qw.get('first', 0):.2f} s, median "
            f"{qw.get('median', 0):.1f} s; outcome counts {b['counts']}, indexed "
            f"{b['indexed']}; stored record {b['record_bytes_mean']:.0f} B mean, "
            f"{b['record_bytes_max']} B max."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--store", choices=("s3", "local"), default="s3")
    parser.add_argument("--scaling-clips", type=int, default=None,
                        help="clips for the 1-worker run (default: --clips); 0 skips it")
    parser.add_argument("--naive-clips", type=int, default=None,
                        help="clips for the naive baseline (default: --clips); 0 skips it")
    parser.add_argument("--enqueue-jobs", type=int, default=ENQUEUE_JOBS)
    parser.add_argument("--reduce-vectors", type=int, default=REDUCE_VECTORS)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if not 12 <= args.seconds <= 30:
        parser.error("--seconds must be 12..30")

    folder, gen_s = ensure_clips(args.clips, args.seed, args.seconds)
    res: dict = {"clip_generation_s": gen_s, "clip_dir": str(folder), "machine": _machine(),
                 "load_average_before": os.getloadavg()}
    work = Path(tempfile.mkdtemp(prefix="previewvec-bench-"))
    moto = MotoServer(work) if args.store == "s3" else None
    try:
        print(f"(b) real path, {args.workers} workers ...", flush=True)
        res["path"] = measure_path(folder, args.clips, args.workers, args.store, work, moto,
                                   f"w{args.workers}")
        print(f"    {res['path']['clips_per_s']:.2f} clips/s", flush=True)
        n1 = args.clips if args.scaling_clips is None else min(args.scaling_clips, args.clips)
        if n1 and args.workers != 1:
            print(f"(b) real path, 1 worker, {n1} clips ...", flush=True)
            res["path_1worker"] = measure_path(folder, n1, 1, args.store, work, moto, "w1")
            print(f"    {res['path_1worker']['clips_per_s']:.2f} clips/s", flush=True)
    finally:
        if moto:
            moto.stop()
    print("(a) floor ...", flush=True)
    res["floor"] = measure_floor(folder, args.clips)
    print(f"    {res['floor']['clips_per_s']:.2f} clips/s", flush=True)
    print(f"(a) floor in {args.workers} concurrent processes ...", flush=True)
    res["floor_parallel"] = measure_floor_parallel(folder, args.clips, args.workers)
    print(f"    {res['floor_parallel']['clips_per_s']:.2f} clips/s", flush=True)
    nn = args.clips if args.naive_clips is None else min(args.naive_clips, args.clips)
    if nn:
        print(f"(c) naive, {nn} clips ...", flush=True)
        res["naive"] = measure_naive(folder, nn)
        print(f"    {res['naive']['clips_per_s']:.2f} clips/s", flush=True)
    if args.enqueue_jobs:
        print("enqueue ...", flush=True)
        res["enqueue"] = measure_enqueue(args.enqueue_jobs)
    if args.reduce_vectors:
        print("reduce ...", flush=True)
        res["reduce"] = measure_reduce(args.reduce_vectors, REDUCE_BATCH, work)
    shutil.rmtree(work, ignore_errors=True)
    text = report(args, res)
    print()
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
