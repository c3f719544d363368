"""Backpressure and retries outside `submit`, against a real Redis: `enqueue` and `retry`
wait at PREVIEWVEC_QUEUE_HIGH_WATER, an interrupted `enqueue` resumes without duplicates,
`retry` re-runs transient failures only (unless --all), the API answers 429 when full."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from contract.errors import TRANSIENT_CODES, is_transient
from contract.jobs import Job
from contract.settings import Settings
from contract.state import Runs, connect, new_run_id
from previewvec.api import QUEUE_FULL_RETRY_AFTER_S, create_app

TOKEN = "backpressure-token-0123456789"
DEADLINE_S = 120


@pytest.fixture
def r(redis_url: str) -> Iterator[Redis]:
    client = connect(redis_url)
    client.flushall()
    yield client
    client.close()


def job_line(i: int) -> str:
    return json.dumps({"recording_id": f"rec-{i:04d}", "source": "itunes",
                       "preview_url": f"https://audio-ssl.itunes.apple.com/{i}.m4a"})


def cli_env(redis_url: str, tmp_path: Path, high_water: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREVIEWVEC_")}
    if "PREVIEWVEC_CACHE_DIR" in os.environ:
        env["PREVIEWVEC_CACHE_DIR"] = os.environ["PREVIEWVEC_CACHE_DIR"]
    env.update({"PREVIEWVEC_BROKER_URL": redis_url, "PREVIEWVEC_STORE": str(tmp_path / "store"),
                "PREVIEWVEC_INDEX": str(tmp_path / "index"),
                "PREVIEWVEC_QUEUE_HIGH_WATER": str(high_water)})
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "previewvec.cli", *args], env=env,
                          capture_output=True, text=True, timeout=DEADLINE_S)


def start_cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "previewvec.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def recording_of(message: str) -> str:
    """The job's recording id in a kombu/Celery message as published."""
    body = json.loads(message)["body"]
    args = json.loads(base64.b64decode(body))[0]
    return args[0]["recording_id"]


def queue_depth(client: Redis, queue: str) -> int:
    """Messages waiting in ``queue`` (every priority list), as producers read it."""
    return Runs(client).queue_depth(queue)


class SlowConsumer:
    """Stands in for workers: takes one message at a time off ``queue`` while
    ``running``, and records every recording taken and the deepest queue it saw."""

    def __init__(self, client: Redis, queue: str = "batch") -> None:
        self.client = client
        self.queue = queue
        self.taken: list[str] = []
        self.max_depth = 0
        self.running = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> SlowConsumer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.max_depth = max(self.max_depth, queue_depth(self.client, self.queue))
            if self.running.is_set():
                message = self.client.rpop(self.queue)
                if message is not None:
                    self.taken.append(recording_of(message))
            self._stop.wait(0.01)

    def drain(self) -> None:
        while (message := self.client.rpop(self.queue)) is not None:
            self.taken.append(recording_of(message))


def wait_for(predicate, what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# --------------------------------------------------------------------------- enqueue


def test_enqueue_waits_at_the_high_water_mark(redis_url, r, tmp_path: Path) -> None:
    n, high_water = 44, 5
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("\n".join(job_line(i) for i in range(n)) + "\n")
    with SlowConsumer(r) as consumer:
        proc = start_cli(cli_env(redis_url, tmp_path, high_water), "enqueue", str(catalog))
        # No worker yet: the enqueue stops at the mark (plus one chunk of at most the mark).
        wait_for(lambda: queue_depth(r, "batch") >= high_water, "the first chunks")
        assert proc.poll() is None
        consumer.running.set()
        out, err = proc.communicate(timeout=DEADLINE_S)
        assert proc.returncode == 0, err
        consumer.drain()
    assert "waiting for workers" in err
    assert f"queued {n}, invalid lines 0" in err
    assert consumer.max_depth <= 2 * high_water, consumer.max_depth
    assert sorted(consumer.taken) == [f"rec-{i:04d}" for i in range(n)]
    run_id = out.strip()
    status = Runs.from_url(redis_url).status(run_id)
    assert status.counts["queued"] == n and status.meta["submitted"] == str(n)
    assert not r.keys("pv:cursor:*")  # done: a later enqueue of the file is a new run


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_enqueue_resumes_without_duplicates(redis_url, r, tmp_path: Path,
                                                        sig: signal.Signals) -> None:
    n, high_water = 60, 5
    lines = [job_line(i) for i in range(n)]
    lines.insert(7, '{"recording_id": "broken"')  # an invalid line (line 8)
    lines.insert(30, json.dumps({"job": None, "recording_id": "unresolved-1",
                                 "error_code": "no_preview", "match_reason": "no preview"}))
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("\n".join(lines) + "\n")
    env = cli_env(redis_url, tmp_path, high_water)
    with SlowConsumer(r) as consumer:
        first = start_cli(env, "enqueue", str(catalog))
        wait_for(lambda: queue_depth(r, "batch") >= high_water, "the first chunks")
        consumer.running.set()
        wait_for(lambda: len(consumer.taken) >= 15, "a few jobs taken")
        consumer.running.clear()
        first.send_signal(sig)
        out, err = first.communicate(timeout=DEADLINE_S)
        assert first.returncode == 130, err
        run_id = out.strip()
        assert err.splitlines()[-1] == (
            f"previewvec: interrupted: run the same command again to continue run {run_id} "
            "(--restart starts over)")
        assert "Traceback" not in err
        published_first = int(Runs.from_url(redis_url).status(run_id).meta["submitted"])
        assert 0 < published_first < n

        consumer.running.set()
        second = cli(env, "enqueue", str(catalog))
        assert second.returncode == 0, second.stderr
        assert second.stdout.strip() == run_id
        assert f"resuming run {run_id} after catalog line" in second.stderr
        consumer.drain()
    # Every job exactly once across the two commands; the run counts each line once.
    assert sorted(consumer.taken) == [f"rec-{i:04d}" for i in range(n)]
    status = Runs.from_url(redis_url).status(run_id)
    assert status.counts == {"queued": n, "done": 0, "skipped": 0, "failed": 2}
    assert status.meta["submitted"] == str(n)
    failures = dict(Runs.from_url(redis_url).failures(run_id))
    assert {k: v["code"] for k, v in failures.items()} == {
        "line:8": "invalid_job", "unresolved-1": "no_preview"}

    # Done: the cursor is gone, so the same command now starts a new run.
    third = cli(cli_env(redis_url, tmp_path, 10_000), "enqueue", str(catalog))
    assert third.returncode == 0 and third.stdout.strip() != run_id


def test_an_enqueue_stopped_before_its_first_chunk_continues_in_the_same_run(
        redis_url, r, tmp_path: Path) -> None:
    """Given a queue already over its high-water mark, an enqueue that publishes nothing
    and is stopped: the same command again continues that run (it started a new one, and
    the first stayed open and empty for good)."""
    env = cli_env(redis_url, tmp_path, 5)
    filler = tmp_path / "filler.jsonl"
    filler.write_text("\n".join(job_line(i) for i in range(10)) + "\n")
    assert cli({**env, "PREVIEWVEC_QUEUE_HIGH_WATER": "1000"}, "enqueue",
               str(filler)).returncode == 0
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("\n".join(job_line(i) for i in range(100, 110)) + "\n")
    first = start_cli(env, "enqueue", str(catalog))
    wait_for(lambda: bool(r.keys("pv:cursor:*:lock")), "the enqueue to start waiting")
    time.sleep(1.0)  # in its backpressure wait, nothing of this catalog published
    first.send_signal(signal.SIGINT)
    out, _ = first.communicate(timeout=DEADLINE_S)
    assert first.returncode == 130
    r.delete("batch")
    again = cli(env, "enqueue", str(catalog))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == out.strip()


def test_enqueue_restart_starts_a_new_run(redis_url, r, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("\n".join(job_line(i) for i in range(20)) + "\n")
    env = cli_env(redis_url, tmp_path, 5)
    first = start_cli(env, "enqueue", str(catalog))
    wait_for(lambda: queue_depth(r, "batch") >= 5, "the first chunks")
    first.send_signal(signal.SIGINT)
    out, _ = first.communicate(timeout=DEADLINE_S)
    assert first.returncode == 130
    r.delete("batch")
    again = cli({**env, "PREVIEWVEC_QUEUE_HIGH_WATER": "1000"}, "enqueue", str(catalog),
                "--restart")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() != out.strip() and "resuming" not in again.stderr
    assert queue_depth(r, "batch") == 20


def test_a_second_enqueue_of_the_same_catalog_is_refused(redis_url, r, tmp_path: Path) -> None:
    # Given an enqueue held at the high-water mark, when the same catalog is enqueued again,
    # expect one line naming the first run and a non-zero exit; every job goes out once.
    n, high_water = 40, 5
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("\n".join(job_line(i) for i in range(n)) + "\n")
    env = cli_env(redis_url, tmp_path, high_water)
    with SlowConsumer(r) as consumer:
        first = start_cli(env, "enqueue", str(catalog))
        wait_for(lambda: queue_depth(r, "batch") >= high_water, "the first chunks")
        second = cli(env, "enqueue", str(catalog))
        consumer.running.set()
        out, err = first.communicate(timeout=DEADLINE_S)
        consumer.drain()
    run_id = out.strip()
    assert first.returncode == 0, err
    assert second.returncode == 1, second.stderr
    assert second.stdout == "" and "Traceback" not in second.stderr
    assert second.stderr.splitlines() == [
        f"previewvec: an enqueue of this catalog is already running as run {run_id}: wait "
        "for it to finish, or if it died, run again after 30 s"]
    assert sorted(consumer.taken) == [f"rec-{i:04d}" for i in range(n)]
    assert not r.keys("pv:cursor:*")  # the cursor and its lock are gone once done


# --------------------------------------------------------------------------- retry


PERMANENT = ("http_404", "undecodable", "host_not_allowed", "too_large", "invalid_job",
             "http_403", "store_error")
TRANSIENT = ("fetch_failed", "http_503", "http_500", "http_429", "timeout", "worker_crashed",
             "internal_error", "store_unavailable")


def failed_run(redis_url: str) -> str:
    """A run with one failure per code above (with its job), plus two without a job."""
    runs = Runs.from_url(redis_url)
    run_id = new_run_id()
    runs.create(run_id, queue="batch", source="test")
    for code in (*PERMANENT, *TRANSIENT):
        job = Job(recording_id=f"rec-{code}", source="itunes", run_id=run_id,
                  preview_url=f"https://audio-ssl.itunes.apple.com/{code}.m4a")
        runs.mark(run_id, job.recording_id, "queued")
        runs.fail(run_id, job.recording_id, code, f"failed with {code}", job.to_dict())
    runs.fail(run_id, "line:3", "invalid_job", "line 3: not JSON")
    runs.fail(run_id, "unresolved-9", "no_confident_match", "no match")
    return run_id


def test_transient_codes() -> None:
    for code in TRANSIENT:
        assert is_transient(code), code
    for code in (*PERMANENT, "no_confident_match", "http_5", "http_5xx", "http_5000"):
        assert not is_transient(code), code
    assert "worker_crashed" in TRANSIENT_CODES


def test_retry_reruns_transient_failures_unless_all(redis_url, r, tmp_path: Path) -> None:
    run_id = failed_run(redis_url)
    env = cli_env(redis_url, tmp_path, 10_000)
    result = cli(env, "retry", run_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"re-enqueued {len(TRANSIENT)} failed jobs of {run_id}",
        f"skipped {len(PERMANENT)} permanent failures ("
        + ", ".join(f"{code} 1" for code in sorted(PERMANENT)) + "); --all re-runs them too",
        "2 failures have no job to re-run (invalid catalog lines, recordings no source "
        "matched, releases or searches that failed: submit those again)",
    ]
    taken = sorted(recording_of(m) for m in r.lrange("batch", 0, -1))
    assert taken == sorted(f"rec-{code}" for code in TRANSIENT)
    status = Runs.from_url(redis_url).status(run_id)
    assert status.counts["queued"] == len(TRANSIENT)

    r.delete("batch")
    everything = cli(env, "retry", run_id, "--all")
    assert everything.returncode == 0, everything.stderr
    n = len(PERMANENT) + len(TRANSIENT)
    assert everything.stdout.splitlines()[0] == f"re-enqueued {n} failed jobs of {run_id}"
    assert "skipped" not in everything.stdout
    taken = sorted(recording_of(m) for m in r.lrange("batch", 0, -1))
    assert taken == sorted(f"rec-{code}" for code in PERMANENT + TRANSIENT)


def test_retry_waits_at_the_high_water_mark(redis_url, r, tmp_path: Path) -> None:
    run_id = failed_run(redis_url)
    high_water = 2
    with SlowConsumer(r) as consumer:
        proc = start_cli(cli_env(redis_url, tmp_path, high_water), "retry", run_id, "--all")
        wait_for(lambda: queue_depth(r, "batch") >= high_water, "the first chunks")
        assert proc.poll() is None
        consumer.running.set()
        _out, err = proc.communicate(timeout=DEADLINE_S)
        assert proc.returncode == 0, err
        consumer.drain()
    assert consumer.max_depth <= 2 * high_water
    assert sorted(consumer.taken) == sorted(f"rec-{c}" for c in PERMANENT + TRANSIENT)


# --------------------------------------------------------------------------- the API


def test_api_answers_429_above_the_mark(redis_url, r, tmp_path: Path) -> None:
    settings = Settings(broker_url=redis_url, store=str(tmp_path / "store"),
                        index=str(tmp_path / "index"), api_tokens=(TOKEN,),
                        queue_high_water=3)
    app = create_app(settings, resolver_factory=lambda s, **_: None)
    body = json.dumps({"jobs": [json.loads(job_line(i)) for i in range(4)], "queue": "batch"})
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    with TestClient(app, raise_server_exceptions=True) as client:
        r.rpush("batch", *[f"waiting-{i}" for i in range(4)])  # 4 > 3 already queued
        full = client.post("/v1/jobs", content=body, headers=headers)
        assert full.status_code == 429, full.text
        assert full.headers["Retry-After"] == str(QUEUE_FULL_RETRY_AFTER_S)
        assert full.json()["detail"] == (
            "queue 'batch' holds 4 jobs, more than its high-water mark of 3: try again in "
            f"{QUEUE_FULL_RETRY_AFTER_S} s")
        assert not r.keys("pv:run:*")  # nothing accepted, no run created
        # The other queue is not full: on-demand work still goes in.
        on_demand = client.post("/v1/jobs", headers=headers, content=json.dumps(
            {"jobs": [json.loads(job_line(9))], "queue": "ondemand"}))
        assert on_demand.status_code == 202, on_demand.text
        r.delete("batch")
        accepted = client.post("/v1/jobs", content=body, headers=headers)
        assert accepted.status_code == 202, accepted.text
        app.state.background.join()
    assert queue_depth(r, "batch") == 4
