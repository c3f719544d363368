"""Runs.fail on a real Redis: a failure from a second execution of a job that another
execution completed (a redelivery after its first holder stalled) must not undo it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from contract.runs import Runs
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
