"""contract/state/lost.py: which queued recordings count as lost, and the redelivery cap
(the jobs a run keeps come from the transition script, tested here through Runs)."""

from __future__ import annotations

import json
import time

from redis import Redis

from contract.broker import UNACKED_KEY, queue_keys
from contract.state import Runs
from contract.state.keys import run_key

QUIET_S = 30.0


def job(rid: str, run_id: str = "r1") -> str:
    return json.dumps({"recording_id": rid, "preview_url": f"https://x.test/{rid}.m4a",
                       "run_id": run_id})


def queued_run(runs: Runs, run_id: str, ids: list[str], queue: str = "batch") -> None:
    runs.create(run_id, queue=queue)
    runs.mark_many_queued(run_id, {rid: job(rid, run_id) for rid in ids})


def test_a_queued_recording_keeps_its_job_until_it_leaves_queued(runs: Runs,
                                                                raw: Redis) -> None:
    queued_run(runs, "r1", ["a", "b", "c"])
    assert sorted(raw.hkeys(run_key("r1", "jobs"))) == ["a", "b", "c"]
    runs.succeed("r1", "a", "done")
    runs.fail("r1", "b", "http_404", "gone", json.loads(job("b")))
    assert raw.hkeys(run_key("r1", "jobs")) == ["c"]
    runs.succeed("r1", "c", "skipped")
    assert not raw.exists(run_key("r1", "jobs"))


def test_lost_only_in_quiet_open_runs_and_only_queued_recordings(runs: Runs) -> None:
    queued_run(runs, "quiet", ["a", "b"], queue="ondemand")
    runs.succeed("quiet", "a", "done")
    queued_run(runs, "busy", ["c"])
    later = time.time() + QUIET_S + 1
    lost = runs.lost_jobs(quiet_s=QUIET_S, now=later)
    assert {(j.run_id, j.recording_id, j.queue) for j in lost} == {
        ("quiet", "b", "ondemand"), ("busy", "c", "batch")}
    assert json.loads(next(j.job for j in lost if j.recording_id == "b"))["recording_id"] == "b"
    # nothing is lost in a run that changed within the quiet period
    assert runs.lost_jobs(quiet_s=QUIET_S) == []


def test_a_closed_run_has_no_lost_jobs(runs: Runs) -> None:
    queued_run(runs, "r1", ["a"])
    assert runs.close("r1", ttl_s=60, changed_at=runs.status("r1").meta["changed_at"],
                      compact=False)
    assert runs.lost_jobs(quiet_s=QUIET_S, now=time.time() + QUIET_S + 1) == []
    assert runs.count_redelivery("r1", "a") == -1


def test_redeliveries_are_counted_per_recording_and_forgotten_with_it(runs: Runs,
                                                                      raw: Redis) -> None:
    queued_run(runs, "r1", ["a"])
    assert [runs.count_redelivery("r1", "a") for _ in range(3)] == [1, 2, 3]
    assert runs.count_redelivery("r1", "nope") == -1
    runs.succeed("r1", "a", "done")
    assert not raw.exists(run_key("r1", "lost"))
    assert runs.count_redelivery("r1", "a") == -1


def test_broker_idle_means_no_queued_and_no_unacked_message(runs: Runs, raw: Redis) -> None:
    assert runs.broker_idle()
    raw.lpush(queue_keys("batch")[2], "m")
    assert not runs.broker_idle()
    raw.delete(queue_keys("batch")[2])
    raw.hset(UNACKED_KEY, "tag", "m")
    assert not runs.broker_idle()


def test_redeliver_lock_is_taken_once(runs: Runs) -> None:
    assert runs.take_redeliver_lock("w1", 5.0)
    assert not runs.take_redeliver_lock("w2", 5.0)


def test_closing_a_finished_run_drops_its_jobs_and_counts(runs: Runs, raw: Redis) -> None:
    queued_run(runs, "r1", ["a"])
    runs.count_redelivery("r1", "a")
    # a race lost to a redelivery: the recording finished, the counter was written after
    raw.hset(run_key("r1", "lost"), "a", 1)
    runs.succeed("r1", "a", "done")
    raw.hset(run_key("r1", "lost"), "a", 1)
    assert runs.close("r1", ttl_s=60, changed_at=runs.status("r1").meta["changed_at"])
    assert not raw.exists(run_key("r1", "jobs")) and not raw.exists(run_key("r1", "lost"))
