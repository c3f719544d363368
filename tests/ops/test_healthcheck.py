"""infra/healthcheck.py, the image's HEALTHCHECK and the k8s liveness probes: a probe asks
the process it watches, and an outage of Redis restarts nothing."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from previewvec.localredis import free_port
from reducer.liveness import HEARTBEAT_FILE, STALE_AFTER_S

INFRA = Path(__file__).resolve().parents[2] / "infra"
FOLLOW_ARGV = ["tini", "--", "previewvec", "reduce", "--follow"]


@pytest.fixture(scope="module")
def healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", INFRA / "healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_worker_is_not_restarted_for_a_broker_outage(
        healthcheck: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREVIEWVEC_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    ok, detail = healthcheck.check_worker(["previewvec", "worker"])
    assert ok, detail
    assert "broker unreachable" in detail


def test_a_worker_that_does_not_answer_a_reachable_broker_is_unhealthy(
        healthcheck: ModuleType, monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.setenv("PREVIEWVEC_BROKER_URL", redis_url)
    ok, detail = healthcheck.check_worker(["previewvec", "worker", "--hostname", "gone@nowhere"])
    assert not ok
    assert "gone@nowhere: no reply" in detail


def test_reducer_liveness_reads_the_follow_loops_heartbeat(
        healthcheck: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PREVIEWVEC_CACHE_DIR", str(tmp_path))
    # A broker that is down is not asked: the loop rides out outages itself.
    monkeypatch.setenv("PREVIEWVEC_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    heartbeat = tmp_path / HEARTBEAT_FILE
    assert healthcheck.check_reducer(["previewvec", "reduce"])[0]  # one-shot: nothing to watch
    ok, detail = healthcheck.check_reducer(FOLLOW_ARGV)
    assert not ok and "no heartbeat" in detail
    heartbeat.touch()
    assert healthcheck.check_reducer(FOLLOW_ARGV)[0]
    old = time.time() - STALE_AFTER_S - 60
    os.utime(heartbeat, (old, old))
    ok, detail = healthcheck.check_reducer(FOLLOW_ARGV)
    assert not ok and "last beat" in detail


@pytest.fixture
def follow_process(tmp_path: Path, redis_url: str) -> Iterator[tuple[subprocess.Popen, Path]]:
    env = {**os.environ, "PREVIEWVEC_BROKER_URL": redis_url,
           "PREVIEWVEC_STORE": str(tmp_path / "store"),
           "PREVIEWVEC_INDEX": str(tmp_path / "index"),
           "PREVIEWVEC_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "previewvec.cli", "reduce", "--follow"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc, tmp_path / "cache" / HEARTBEAT_FILE
    finally:
        proc.kill()
        proc.wait()


def _next_beat(proc: subprocess.Popen, heartbeat: Path, after_ns: int) -> int:
    """The heartbeat's mtime once it is later than ``after_ns`` (the loop is alive)."""
    for _ in range(600):  # a bound on polls, not a timing claim
        if proc.poll() is not None:
            raise AssertionError(f"reduce --follow exited: {proc.stderr.read().decode()}")
        if heartbeat.exists() and heartbeat.stat().st_mtime_ns > after_ns:
            return heartbeat.stat().st_mtime_ns
        time.sleep(0.1)
    raise AssertionError("the follow loop never beat")


def test_reduce_follow_keeps_its_heartbeat_fresh(
        follow_process: tuple[subprocess.Popen, Path], healthcheck: ModuleType,
        monkeypatch: pytest.MonkeyPatch) -> None:
    proc, heartbeat = follow_process
    first = _next_beat(proc, heartbeat, 0)
    _next_beat(proc, heartbeat, first)  # beats again on the next idle pass
    monkeypatch.setenv("PREVIEWVEC_CACHE_DIR", str(heartbeat.parent))
    ok, detail = healthcheck.check_reducer(FOLLOW_ARGV)
    assert ok, detail
