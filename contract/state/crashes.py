"""Crash counts of deliveries, ``pv:crash:<task id>`` (used by workers/crashes.py).

Shared by every worker, so a job that kills whichever worker runs it is still counted
once per crash. One hash per task id (redeliveries keep the id; `retry` publishes a new
one, so a retried job starts from zero). Fields: starts (attempts begun and not yet ended
normally: incremented by the pool child as it starts the job, decremented or deleted when
the job returns), lost (pool-child deaths the worker's main process saw), how (the last
death, e.g. "pool child killed by SIGKILL (signal 9)").
"""

from __future__ import annotations

from dataclasses import dataclass

from contract.state.keys import crash_key
from contract.state.scripts import StateBase

# How long a job's crash count outlives its last delivery: longer than any wait for a
# redelivery (a requeued job behind a backlog, a visibility timeout), short enough that
# the count of a job whose message vanished (a hard time limit acks it) goes away.
CRASH_COUNT_TTL_S = 7 * 86_400


@dataclass(frozen=True)
class CrashCount:
    """A job's crashes before the attempt now starting, and how the last one happened."""

    crashes: int
    how: str  # "" when no worker's main process saw a crash (the whole worker died)


class CrashCounts(StateBase):
    def attempt_started(self, task_id: str) -> CrashCount:
        """Count an attempt beginning; returns the crashes of the attempts before it.

        A crash is an attempt that began and never ended normally, whether only its pool
        child died (then the main process also counted it, see :meth:`attempt_lost`) or
        the whole worker did (then nothing but this start count remembers it).
        """
        starts, lost, how = self._script("crash_started", [crash_key(task_id)],
                                         [CRASH_COUNT_TTL_S])
        return CrashCount(max(int(starts) - 1, int(lost)), str(how))

    def attempt_lost(self, task_id: str, how: str) -> int:
        """Count a pool child's death while running the job; returns its crashes so far."""
        return int(self._script("crash_lost", [crash_key(task_id)], [CRASH_COUNT_TTL_S, how]))

    def attempt_retried(self, task_id: str) -> None:
        """The attempt ended normally but the job runs again (a store-outage retry)."""
        self._script("crash_retried", [crash_key(task_id)])

    def attempts_over(self, task_id: str) -> None:
        """The job ended for good (an outcome was accounted): forget its crash count."""
        self._redis.delete(crash_key(task_id))

    def crash_count_ttl(self, task_id: str) -> int:
        """Seconds the job's crash count has left (-2: none, -1: no TTL)."""
        return int(self._redis.ttl(crash_key(task_id)))

    def crash_counts_left(self) -> list[str]:
        """Task ids that still have a crash count (tests and operators)."""
        prefix = crash_key("")
        return [str(k)[len(prefix):] for k in self._redis.scan_iter(match=prefix + "*",
                                                                    count=1000)]
