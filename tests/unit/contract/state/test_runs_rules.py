"""contract/state/runs.py on a real, private redis-server: the transition rules of run state,
closing and compaction, cursors and the reducer's queue, through the public Runs API only.

A failure from a second execution of a job that another execution completed (a
redelivery after its first holder stalled) must not undo it. The lifecycle over time
(housekeeping, expiry, pruning, with the reducer) is in
tests/integration/test_runs_lifecycle.py.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from contract.state import STATES, Runs, parse_ready_entry
from previewvec.localredis import LocalRedis


@pytest.fixture
def runs() -> Iterator[Runs]:
    with LocalRedis() as server:
        yield Runs.from_url(server.url)


def test_fail_records_a_queued_recording_and_updates_a_failed_one(runs: Runs) -> None:
    runs.mark_many_queued("r", ["a"])
    runs.fail("r", "a", "timeout", "first")
    runs.fail("r", "a", "http_503", "second")
    assert runs.status("r").counts == {"queued": 0, "done": 0, "skipped": 0, "failed": 1}
    assert dict(runs.failures("r"))["a"]["code"] == "http_503"


@pytest.mark.parametrize("finished", ["done", "skipped"])
def test_fail_leaves_a_finished_recording_alone(runs: Runs, finished: str) -> None:
    runs.mark_many_queued("r", ["a"])
    runs.succeed("r", "a", finished)
    runs.fail("r", "a", "timeout", "a stale execution's soft time limit")
    assert runs.status("r").counts[finished] == 1
    assert runs.status("r").counts["failed"] == 0
    assert dict(runs.failures("r")) == {}


def test_fail_of_an_unknown_recording_counts_it(runs: Runs) -> None:
    runs.fail("r", "line:3", "invalid_job", "not an object")
    assert runs.status("r").counts["failed"] == 1


# ----------------------------------------------------- the transition rules, one by one


@pytest.fixture
def run(runs: Runs) -> str:
    runs.create("r", queue="batch")
    return "r"


def test_counts_follow_each_recording_to_its_new_state(runs: Runs, run: str) -> None:
    runs.mark_many_queued(run, ["a", "b", "c"])
    assert runs.status(run).counts == {"queued": 3, "done": 0, "skipped": 0, "failed": 0}
    assert runs.succeed(run, "a", "done")
    assert runs.succeed(run, "b", "skipped")
    assert runs.status(run).counts == {"queued": 1, "done": 1, "skipped": 1, "failed": 0}
    assert runs.status(run).total == 3 and runs.status(run).finished == 2


def test_a_repeated_transition_changes_nothing(runs: Runs, run: str) -> None:
    assert runs.mark(run, "a", "queued")
    assert not runs.mark(run, "a", "queued")
    assert runs.succeed(run, "a", "done")
    assert not runs.succeed(run, "a", "done")  # a redelivered job's second "done"
    assert runs.status(run).counts == {"queued": 0, "done": 1, "skipped": 0, "failed": 0}


def test_done_is_never_downgraded_to_skipped(runs: Runs, run: str) -> None:
    runs.mark_many_queued(run, ["a"])
    runs.succeed(run, "a", "done")
    # A redelivery whose worker died after storing: it finds the record this run made.
    assert not runs.succeed(run, "a", "skipped")
    assert runs.status(run).counts["done"] == 1 and runs.status(run).counts["skipped"] == 0


def test_skipped_can_still_become_done(runs: Runs, run: str) -> None:
    runs.mark_many_queued(run, ["a"])
    runs.succeed(run, "a", "skipped")
    assert runs.succeed(run, "a", "done")
    assert runs.status(run).counts == {"queued": 0, "done": 1, "skipped": 0, "failed": 0}


def test_a_success_forgets_the_failure_and_a_requeue_keeps_it(runs: Runs, run: str) -> None:
    runs.mark_many_queued(run, ["a", "b"])
    runs.fail(run, "a", "timeout", "slow", {"recording_id": "a"})
    runs.fail(run, "b", "timeout", "slow", {"recording_id": "b"})
    assert runs.mark(run, "a", "queued")  # `retry`: re-queued, its failure still listed
    assert {rid for rid, _ in runs.failures(run)} == {"a", "b"}
    assert runs.status(run).counts == {"queued": 1, "done": 0, "skipped": 0, "failed": 1}
    assert runs.succeed(run, "a", "done")
    assert runs.succeed(run, "b", "skipped")
    assert dict(runs.failures(run)) == {}
    assert runs.status(run).counts == {"queued": 0, "done": 1, "skipped": 1, "failed": 0}


def test_a_failure_entry_holds_the_code_message_and_job(runs: Runs, run: str) -> None:
    job = {"recording_id": "a", "run_id": run, "preview_url": "https://p.example/a.m4a"}
    assert runs.fail(run, "a", "http_404", "gone", job)
    entry = dict(runs.failures(run))["a"]
    assert (entry["code"], entry["message"], entry["job"]) == ("http_404", "gone", job)
    assert isinstance(entry["at"], float)


def test_a_delivered_outcome_for_a_run_that_is_gone_changes_nothing(runs: Runs) -> None:
    assert not runs.exists("expired")
    assert not runs.succeed("expired", "a", "done")
    assert not runs.fail("expired", "a", "timeout", "late", {"recording_id": "a"})
    assert not runs.mark("expired", "a", "skipped", delivered=True)
    assert not runs.exists("expired")
    assert runs.status("expired").counts == {"queued": 0, "done": 0, "skipped": 0,
                                             "failed": 0}
    # A producer's outcome is not a late delivery: it is counted (the run is being made).
    assert runs.succeed("expired", "a", "skipped", delivered=False)
    assert runs.status("expired").counts["skipped"] == 1


@pytest.mark.parametrize("state", ["failed", "running", ""])
def test_mark_refuses_failed_and_unknown_states(runs: Runs, run: str, state: str) -> None:
    with pytest.raises(ValueError, match=repr(state)):
        runs.mark(run, "a", state)


@pytest.mark.parametrize("state", ["queued", "failed", "ok"])
def test_succeed_refuses_what_is_not_a_success(runs: Runs, run: str, state: str) -> None:
    with pytest.raises(ValueError, match="not a success state"):
        runs.succeed(run, "a", state)


def test_counts_match_a_model_of_the_rules_under_any_order_of_outcomes(runs: Runs) -> None:
    """Redeliveries, retries and producers in random order: counters always equal the
    number of recordings in each state, and ``failures`` lists the failed (and retried)."""
    rng = random.Random(13)
    ids = [f"rec-{i}" for i in range(6)]
    for run_id in ("m1", "m2", "m3"):
        runs.create(run_id)
        state: dict[str, str] = {}
        failures: set[str] = set()
        for _ in range(120):
            rid, new = rng.choice(ids), rng.choice(STATES)
            old = state.get(rid)
            expected = not (old == new or (old == "done" and new == "skipped")
                            or (new == "failed" and old in ("done", "skipped")))
            if new == "failed":
                moved = runs.fail(run_id, rid, "timeout", "t", {"recording_id": rid})
            elif new == "queued":
                moved = runs.mark(run_id, rid, "queued")
            else:
                moved = runs.succeed(run_id, rid, new, delivered=rng.random() < 0.5)
            assert moved == expected, (old, new)
            if expected:
                state[rid] = new
            if new == "failed" and old not in ("done", "skipped"):
                failures.add(rid)
            elif expected and new != "queued":
                failures.discard(rid)
        assert runs.status(run_id).counts == {s: sum(v == s for v in state.values())
                                              for s in STATES}
        assert {rid for rid, _ in runs.failures(run_id)} == failures


# --------------------------------------------------------------- closed, compacted runs


def closed_run(runs: Runs, run_id: str = "c") -> str:
    """A finished run, closed and compacted: a done, b failed, c skipped."""
    runs.create(run_id)
    runs.mark_many_queued(run_id, ["a", "b", "c"])
    runs.succeed(run_id, "a", "done")
    runs.fail(run_id, "b", "http_404", "gone", {"recording_id": "b"})
    runs.succeed(run_id, "c", "skipped")
    assert runs.close(run_id, ttl_s=3600, changed_at=runs.status(run_id).meta["changed_at"])
    meta = runs.status(run_id).meta
    assert "compacted_at" in meta and "closed_at" in meta
    return run_id


def test_close_is_refused_while_jobs_are_queued_or_after_a_change(runs: Runs, run: str) -> None:
    runs.mark_many_queued(run, ["a", "b"])
    runs.succeed(run, "a", "done")
    changed_at = runs.status(run).meta["changed_at"]
    assert not runs.close(run, ttl_s=60, changed_at=changed_at)  # b is still queued
    runs.succeed(run, "b", "done")
    # Judged on an older `changed_at` than the run's: it changed since, so not closed.
    assert not runs.close(run, ttl_s=60, changed_at=str(int(changed_at) - 1))
    assert runs.close(run, ttl_s=60, changed_at=runs.status(run).meta["changed_at"])
    assert runs.status(run).counts["done"] == 2


def test_a_compacted_run_keeps_its_counts_and_failures(runs: Runs) -> None:
    run_id = closed_run(runs)
    assert runs.status(run_id).counts == {"queued": 0, "done": 1, "skipped": 1, "failed": 1}
    assert [rid for rid, _ in runs.failures(run_id)] == ["b"]


def test_a_redelivery_into_a_compacted_run_is_a_no_op(runs: Runs) -> None:
    run_id = closed_run(runs)
    before = runs.status(run_id).counts
    assert not runs.succeed(run_id, "a", "done")
    assert not runs.succeed(run_id, "a", "skipped")
    assert not runs.succeed(run_id, "c", "done")  # counted as skipped before compaction
    assert not runs.fail(run_id, "a", "timeout", "stale", {"recording_id": "a"})
    assert runs.status(run_id).counts == before
    assert "closed_at" in runs.status(run_id).meta


def test_a_failed_recording_of_a_compacted_run_can_still_succeed(runs: Runs) -> None:
    run_id = closed_run(runs)
    assert runs.succeed(run_id, "b", "done")
    assert runs.status(run_id).counts == {"queued": 0, "done": 2, "skipped": 1, "failed": 0}
    assert dict(runs.failures(run_id)) == {}


def test_queueing_reopens_a_closed_run(runs: Runs) -> None:
    run_id = closed_run(runs)
    assert runs.mark(run_id, "b", "queued")  # `retry` of its failure
    assert runs.mark(run_id, "new", "queued")  # a producer's new recording
    status = runs.status(run_id)
    assert "closed_at" not in status.meta and "expires_at" not in status.meta
    assert status.counts == {"queued": 2, "done": 1, "skipped": 1, "failed": 0}
    assert runs.succeed(run_id, "new", "done") and runs.succeed(run_id, "b", "done")
    assert runs.status(run_id).counts == {"queued": 0, "done": 3, "skipped": 1, "failed": 0}


# ------------------------------------------------------ runs index, cursors, ready queue


def test_created_runs_are_listed_newest_first(runs: Runs) -> None:
    for run_id in ("old", "mid", "new"):
        runs.create(run_id, queue="batch")
    assert runs.recent_runs()[:3] == ["new", "mid", "old"]
    assert runs.recent_runs(limit=1) == ["new"]
    assert runs.exists("mid") and runs.status("mid").meta["queue"] == "batch"


def test_set_producing_keeps_a_finished_run_open(runs: Runs, run: str) -> None:
    runs.set_producing(run, True)
    assert runs.status(run).meta["resolution_state"] == "running"
    runs.set_producing(run, False)
    assert runs.status(run).meta["resolution_state"] == "finished"


def test_published_chunks_and_the_cursor_move_together(runs: Runs, run: str) -> None:
    assert runs.cursor("catalog") is None and runs.cursor_run("catalog") is None
    runs.chunk_published(run, 5, cursor_name="catalog", line=12)
    runs.chunk_published(run, 3, cursor_name="catalog", line=20)
    runs.chunk_published(run, 2)  # no cursor: only counted
    assert runs.status(run).meta["submitted"] == "10"
    assert (runs.cursor("catalog"), runs.cursor_run("catalog")) == (20, run)
    runs.clear_cursor("catalog")
    assert runs.cursor("catalog") is None and runs.cursor_run("catalog") is None


def test_ready_entries_say_whether_to_upsert_only_if_absent(runs: Runs) -> None:
    depth = runs.ready_depth()
    runs.push_ready("features/pv2/ab/a.json")
    runs.push_ready_if_absent("features/pv2/cd/b.json")
    assert runs.ready_depth() == depth + 2
    entries = runs.peek_ready(depth + 2)[depth:]
    assert [parse_ready_entry(e) for e in entries] == [
        ("features/pv2/ab/a.json", False), ("features/pv2/cd/b.json", True)]
