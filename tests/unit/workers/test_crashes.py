"""The crash cap's counting (workers/crashes.py, the crash keys of contract/state/crashes.py)
against a real, private ``redis-server``; no broker or worker processes.

The real-process scenarios (a preview that SIGKILLs its fetcher's pool child, or its
whole worker) are in tests/integration/test_pipeline.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from billiard.exceptions import WorkerLostError
from celery.exceptions import Retry

import workers.tasks as tasks
from contract.settings import Settings
from contract.state import CRASH_COUNT_TTL_S, CrashCount, Runs, connect, new_run_id
from contract.store import StoreUnavailable
from workers import crashes
from workers.featurize import Outcome

CAP = 3


@pytest.fixture
def runs(redis_url: str) -> Iterator[Runs]:
    runs = Runs.from_url(redis_url)
    connect(redis_url).flushdb()
    yield runs


def test_pool_child_crashes_are_counted_once_each(runs: Runs) -> None:
    """Child counts the start, main process the death: each crash counts once, and the
    (cap + 1)th is over the cap."""
    seen = []
    for attempt in range(1, CAP + 2):
        before = runs.attempt_started("t1")
        assert before.crashes == attempt - 1
        assert crashes.over_cap(before, CAP) is None
        seen.append(runs.attempt_lost("t1", "pool child killed by SIGKILL (signal 9)"))
    assert seen == [1, 2, 3, 4]
    message = crashes.over_cap(CrashCount(seen[-1], "pool child killed by SIGKILL (signal 9)"),
                               CAP)
    assert message == ("pool child killed by SIGKILL (signal 9); 4 crashes, not redelivered "
                       "again (at most 3 redeliveries after a crash)")
    assert runs.attempt_started("other").crashes == 0  # counts are per task id


def test_whole_worker_deaths_are_counted_by_starts_alone(runs: Runs) -> None:
    """No main process saw the deaths: the starts that never ended are the count."""
    for attempt in range(CAP + 1):
        assert runs.attempt_started("t2").crashes == attempt
    count = runs.attempt_started("t2")
    assert count == CrashCount(CAP + 1, "")
    assert crashes.over_cap(count, CAP) == (
        f"{crashes.WHOLE_WORKER_LOST}; 4 crashes, not redelivered again "
        "(at most 3 redeliveries after a crash)")


def test_a_death_before_the_start_is_counted_too(runs: Runs) -> None:
    """A child lost before it counted its start: the main process's count stands."""
    assert runs.attempt_lost("t3", "pool child killed by SIGSEGV (signal 11)") == 1
    assert runs.attempt_started("t3") == CrashCount(1, "pool child killed by SIGSEGV (signal 11)")


def test_a_retry_is_no_crash_but_keeps_earlier_ones(runs: Runs) -> None:
    runs.attempt_started("t4")
    runs.attempt_lost("t4", "pool child killed by SIGKILL (signal 9)")
    runs.attempt_started("t4")
    runs.attempt_retried("t4")  # a store-outage retry ended that attempt normally
    assert runs.attempt_started("t4").crashes == 1
    runs.attempt_retried("never-started")  # creates nothing (no key without a TTL)
    assert runs.crash_count_ttl("never-started") == -2  # no key


def test_counts_expire_and_are_forgotten_when_the_job_ends(runs: Runs) -> None:
    runs.attempt_started("t5")
    assert 0 < runs.crash_count_ttl("t5") <= CRASH_COUNT_TTL_S
    runs.attempt_lost("t5", "x")
    assert 0 < runs.crash_count_ttl("t5") <= CRASH_COUNT_TTL_S
    runs.attempts_over("t5")
    assert runs.attempt_started("t5").crashes == 0


@pytest.mark.parametrize(("exc", "how"), [
    (WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL) Job: 3."),
     "pool child killed by SIGKILL (signal 9)"),
    (WorkerLostError("Worker exited prematurely: signal 11 (SIGSEGV) Job: 0."),
     "pool child killed by SIGSEGV (signal 11)"),
    (WorkerLostError("Worker exited prematurely: signal 64 Job: 0."),
     "pool child killed by signal (signal 64)"),
    (WorkerLostError("Worker exited prematurely: exitcode 70 Job: 1."),
     "pool child exited with code 70"),
    (WorkerLostError("gone"), "pool child lost (gone)"),
    (SystemExit(3), "pool child exited with 3"),
    (KeyboardInterrupt(), "pool child lost (KeyboardInterrupt)"),
])
def test_describe_exit(exc: BaseException, how: str) -> None:
    assert crashes.describe_exit(exc) == how


def test_cap_zero_gives_up_at_the_first_crash() -> None:
    assert crashes.over_cap(CrashCount(0, ""), 0) is None
    assert crashes.over_cap(CrashCount(1, "x"), 0) is not None
    assert crashes.over_cap(CrashCount(1, "x"), -5) is not None  # nonsense means none


# ----------------------------------------------------------------- the task wrapper


@pytest.fixture
def task_ctx(monkeypatch: pytest.MonkeyPatch, runs: Runs, redis_url: str) -> SimpleNamespace:
    ctx = SimpleNamespace(runs=runs, settings=Settings(broker_url=redis_url,
                                                       max_crash_redeliveries=CAP))
    monkeypatch.setattr(tasks, "_context", ctx)
    return ctx


def run_task(job: dict, task_id: str) -> dict:
    """Run the task body as a worker's pool child would, under delivery ``task_id``."""
    tasks.featurize_task.push_request(id=task_id, retries=0)
    try:
        return tasks.featurize_task.run(job)
    finally:
        tasks.featurize_task.pop_request()


def _job(runs: Runs, rid: str) -> dict:
    run_id = new_run_id()
    runs.create(run_id)
    runs.mark_many_queued(run_id, [rid])
    return {"recording_id": rid, "preview_url": "http://127.0.0.1:9/x.m4a", "run_id": run_id}


def test_task_past_the_cap_records_worker_crashed_without_running(
        monkeypatch: pytest.MonkeyPatch, task_ctx: SimpleNamespace) -> None:
    """Its whole worker died cap + 1 times running it: the next delivery records the
    failure in the run (exactly as other failures) and does not run the job."""
    runs = task_ctx.runs
    job = _job(runs, "r-crash")
    for _ in range(CAP + 1):
        runs.attempt_started("d1")

    def must_not_run(job: dict, ctx: object) -> Outcome:
        raise AssertionError("ran a job past its crash cap")

    monkeypatch.setattr("workers.featurize.featurize", must_not_run)
    result = run_task(job, "d1")
    assert result["status"] == "failed" and result["error_code"] == "worker_crashed"
    assert runs.status(job["run_id"]).counts == {"queued": 0, "done": 0, "skipped": 0,
                                                  "failed": 1}
    (rid, entry), = runs.failures(job["run_id"])
    assert rid == "r-crash" and entry["code"] == "worker_crashed"
    assert entry["message"].startswith(crashes.WHOLE_WORKER_LOST + "; 4 crashes")
    assert entry["job"] == job  # what `retry` re-enqueues
    assert runs.crash_count_ttl("d1") == -2  # no key


def test_task_that_returns_forgets_its_count(monkeypatch: pytest.MonkeyPatch,
                                             task_ctx: SimpleNamespace) -> None:
    runs = task_ctx.runs
    job = _job(runs, "r-ok")
    runs.attempt_started("d2")  # one earlier crash: under the cap, so it runs
    monkeypatch.setattr("workers.featurize.featurize",
                        lambda job, ctx: Outcome(job["recording_id"], job["run_id"], "done"))
    assert run_task(job, "d2")["status"] == "done"
    assert runs.crash_count_ttl("d2") == -2  # no key


def test_task_retried_for_a_store_outage_keeps_only_earlier_crashes(
        monkeypatch: pytest.MonkeyPatch, task_ctx: SimpleNamespace) -> None:
    runs = task_ctx.runs
    job = _job(runs, "r-retry")
    runs.attempt_started("d3")  # one earlier crash

    def outage(job: dict, ctx: object) -> Outcome:
        raise StoreUnavailable("store down")

    monkeypatch.setattr("workers.featurize.featurize", outage)
    monkeypatch.setattr(tasks.featurize_task, "retry", lambda **_: Retry("later"))
    with pytest.raises(Retry):
        run_task(job, "d3")
    assert runs.attempt_started("d3").crashes == 1  # the retry itself was no crash
