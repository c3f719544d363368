"""contract/state/pending.py: the pending fact of a queued recording, across runs."""

from __future__ import annotations

from redis import Redis

from contract.state import Runs
from contract.state.pending import PENDING_TTL_S


def test_a_queued_recording_is_pending_until_its_job_finishes(runs: Runs, raw: Redis) -> None:
    runs.create("A")
    runs.mark_many_queued("A", {"r1": "{}", "r2": "{}"})
    assert runs.pending_run("r1") == "A"
    assert 0 < raw.ttl("pv:pending:r1") <= PENDING_TTL_S  # an abandoned run's fact expires
    # another run's producer: queued elsewhere; the run itself: already in it
    assert runs.handled("B", ["r1", "r2", "r3"]) == {"r1": "queued", "r2": "queued"}
    assert runs.handled("A", ["r1", "r3"]) == {"r1": "in_run"}
    runs.succeed("A", "r1", "done")
    runs.fail("A", "r2", "undecodable", "not audio", {"recording_id": "r2"})
    assert runs.pending_run("r1") is None and runs.pending_run("r2") is None
    assert raw.keys("pv:pending:*") == []
    assert runs.handled("B", ["r1", "r2"]) == {}


def test_the_latest_run_to_queue_owns_the_fact(runs: Runs) -> None:
    runs.create("A")
    runs.create("B")
    runs.mark_many_queued("A", ["r1"])
    runs.mark_many_queued("B", ["r1"])
    assert runs.pending_run("r1") == "B"
    runs.succeed("A", "r1", "done")  # A's job ends: B's is still queued
    assert runs.pending_run("r1") == "B"
    runs.succeed("B", "r1", "skipped")
    assert runs.pending_run("r1") is None


def test_a_recording_failed_for_good_in_the_run_is_handled_a_transient_one_not(
        runs: Runs) -> None:
    runs.create("A")
    runs.fail("A", "r1", "no_confident_match", "title=0.40")
    runs.fail("A", "r2", "upstream_unavailable", "503 from Deezer")
    runs.mark_many_queued("A", ["r3"])
    runs.succeed("A", "r3", "skipped", delivered=False)
    assert runs.handled("A", ["r1", "r2", "r3", "r4"]) == {"r1": "in_run", "r3": "in_run"}
    assert runs.handled(None, ["r1", "r3"]) == {}


def test_a_late_outcome_for_an_expired_run_drops_its_fact(runs: Runs, raw: Redis) -> None:
    runs.create("A")
    runs.mark_many_queued("A", ["r1"])
    raw.delete(*raw.keys("pv:run:A:*"))  # the run expired, its job still out
    assert runs.succeed("A", "r1", "done") is False  # changes nothing in the run
    assert runs.pending_run("r1") is None
    assert raw.keys("pv:run:A:*") == []
