"""workers/redeliver.py: the sweep publishes lost jobs again on their run's queue, only
when the broker is empty, and gives a job up as ``job_lost`` past the cap."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from contract.broker import queue_keys
from contract.state import Runs, connect
from previewvec.localredis import LocalRedis
from workers.redeliver import sweep_lost_jobs


@pytest.fixture
def redis_url() -> Iterator[str]:
    with LocalRedis() as server:
        yield server.url


@pytest.fixture
def runs(redis_url: str) -> Runs:
    return Runs.from_url(redis_url)


def queued(runs: Runs, run_id: str, ids: list[str], queue: str = "batch") -> None:
    runs.create(run_id, queue=queue)
    runs.mark_many_queued(run_id, {
        rid: json.dumps({"recording_id": rid, "preview_url": f"https://x.test/{rid}.m4a",
                         "run_id": run_id}) for rid in ids})


def test_sweep_publishes_lost_jobs_on_their_runs_queue(runs: Runs) -> None:
    queued(runs, "r1", ["a", "b"], queue="ondemand")
    sent: list[tuple[str, str]] = []

    def send(job: dict[str, Any], queue: str) -> None:
        sent.append((job["recording_id"], queue))

    time.sleep(1.1)  # changed_at has a resolution of one second
    assert sweep_lost_jobs(runs, send, quiet_s=1.0, lock_ttl_s=0.05) == (2, 0)
    assert sorted(sent) == [("a", "ondemand"), ("b", "ondemand")]


def test_sweep_does_nothing_while_the_broker_holds_messages(runs: Runs,
                                                           redis_url: str) -> None:
    queued(runs, "r1", ["a"])
    client = connect(redis_url)
    client.lpush(queue_keys("batch")[0], "someone else's job")
    time.sleep(1.1)
    assert sweep_lost_jobs(runs, lambda *_: pytest.fail("sent"), quiet_s=1.0,
                           lock_ttl_s=0.05) == (0, 0)


def test_a_job_lost_past_the_cap_is_recorded_as_job_lost(runs: Runs) -> None:
    queued(runs, "r1", ["a"])
    time.sleep(1.1)
    sent: list[dict[str, Any]] = []
    outcomes = []
    for _ in range(4):
        outcomes.append(sweep_lost_jobs(runs, lambda job, q: sent.append(job), quiet_s=1.0,
                                        lock_ttl_s=0.001, max_redeliveries=2))
        time.sleep(0.01)  # the lock expires
    assert outcomes == [(1, 0), (1, 0), (0, 1), (0, 0)]
    assert len(sent) == 2
    assert runs.status("r1").counts["failed"] == 1
    (rid, entry), = runs.failures("r1")
    assert rid == "a" and entry["code"] == "job_lost" and entry["job"]["recording_id"] == "a"

