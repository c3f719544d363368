"""The Celery task wrapper accounts for every way a job can end (no broker needed)."""

from types import SimpleNamespace

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

import workers.tasks as tasks
from contract.errors import PreviewvecError
from contract.state import RedisConnectionError


class FakeRuns:
    def __init__(self):
        self.failures = []

    def fail(self, run_id, recording_id, code, message, job=None):
        self.failures.append((run_id, recording_id, code))


class PermanentStoreError(PreviewvecError):
    code = "store_error"


@pytest.mark.parametrize(
    ("raised", "code"),
    [
        (SoftTimeLimitExceeded(), "timeout"),
        (PermanentStoreError("bucket gone"), "store_error"),
        (RuntimeError("boom"), "internal_error"),
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
         "internal_error"),  # an error reply of our own making is a bug, not an outage
    ],
)
def test_unexpected_endings_are_recorded_failures(monkeypatch, raised, code):
    runs = FakeRuns()
    monkeypatch.setattr(tasks, "_context", SimpleNamespace(runs=runs))

    def explode(job, ctx):
        raise raised

    monkeypatch.setattr("workers.featurize.featurize", explode)
    job = {"recording_id": "r1", "preview_url": "https://x.test/a.m4a", "run_id": "run1"}
    result = tasks.featurize_task.run(job)
    assert result["status"] == "failed" and result["error_code"] == code
    assert runs.failures == [("run1", "r1", code)]


@pytest.mark.parametrize("raised", [
    RedisConnectionError("Error 111 connecting to 127.0.0.1:6379."),
    OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
    ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's currently "
                  "unable to persist to disk."),
    ReadOnlyError("You can't write against a read only replica."),
])
def test_a_run_state_outage_is_retried_then_recorded_as_state_unavailable(monkeypatch, raised):
    """Redis away past its client's retries, or refusing commands (maxmemory, a failed
    save, a replica), is no failure of the job (before: it was recorded as internal_error
    at once); after the store's retry budget it is recorded."""
    runs = FakeRuns()
    monkeypatch.setattr(tasks, "_context", SimpleNamespace(runs=runs))

    def redis_away(job, ctx):
        raise raised

    monkeypatch.setattr("workers.featurize.featurize", redis_away)
    job = {"recording_id": "r1", "preview_url": "https://x.test/a.m4a", "run_id": "run1"}
    # Called directly (no worker), Celery's retry raises the exception it would retry on.
    with pytest.raises(type(raised)):
        tasks.featurize_task.run(job)
    assert runs.failures == []

    tasks.featurize_task.push_request(retries=tasks.STORE_RETRIES)
    try:
        result = tasks.featurize_task.run(job)
    finally:
        tasks.featurize_task.pop_request()
    assert result["status"] == "failed" and result["error_code"] == "state_unavailable"
    assert runs.failures == [("run1", "r1", "state_unavailable")]
