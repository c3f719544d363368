"""contract/state/crashes.py: crash counts of deliveries."""

from __future__ import annotations

from contract.state import CRASH_COUNT_TTL_S, CrashCount, Runs


def test_starts_losses_and_the_end_of_a_job(runs: Runs) -> None:
    assert runs.attempt_started("t1") == CrashCount(0, "")
    assert runs.attempt_lost("t1", "SIGKILL") == 1
    assert runs.attempt_started("t1") == CrashCount(1, "SIGKILL")
    assert 0 < runs.crash_count_ttl("t1") <= CRASH_COUNT_TTL_S
    assert runs.crash_counts_left() == ["t1"]
    runs.attempts_over("t1")
    assert runs.crash_count_ttl("t1") == -2
    assert runs.crash_counts_left() == []


def test_a_retry_is_no_crash_and_never_creates_a_key(runs: Runs) -> None:
    runs.attempt_retried("never-started")
    assert runs.crash_count_ttl("never-started") == -2
    runs.attempt_started("t2")
    runs.attempt_retried("t2")
    assert runs.attempt_started("t2") == CrashCount(0, "")
