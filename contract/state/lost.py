"""Jobs the broker lost, and the one sweep that publishes them again.

Redis pops a message for a worker (``BRPOP``) in one command and kombu records it as
delivered (``unacked``) in a second one. A broker restart or a dropped connection between
the two, or a ``BRPOP`` reply Redis had not yet written when it shut down, loses the
message: it is on no queue, in no worker and in no ``unacked`` hash, while its recording
stays "queued" in its run for ever. Acknowledgements cannot help; the run's own record of
what it still waits for can.

Every queued recording keeps its job in ``pv:run:<id>:jobs`` (written with "queued" by the
transition script, dropped when the recording leaves "queued"). A job is *lost* when the
broker holds nothing at all (every queue list and ``unacked`` empty) while its run has
been quiet for a while: then no worker runs it, no worker holds it and no queue has it.
The sweep (run by workers, ``workers/redeliver.py``) publishes such jobs again, each at
most :data:`MAX_REDELIVERIES` times (``pv:run:<id>:lost`` counts them), then records it as
failed with code ``job_lost``: a message that keeps vanishing must not loop for ever.

Checking that the broker is empty rather than searching the queues for one job keeps the
sweep O(1) while a backlog exists; a job lost under a backlog is found when the backlog
drains. Racing a worker that has popped the job but not yet recorded it costs a duplicate
delivery, never a duplicate vector: every step of a job is idempotent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from contract.broker import DEFAULT_QUEUE, QUEUES, UNACKED_KEY, queue_keys
from contract.state.keys import REDELIVER_LOCK, RUNS_INDEX, run_key
from contract.state.scripts import StateBase

MAX_REDELIVERIES = 3
_SCAN_CHUNK = 500


@dataclass(frozen=True)
class LostJob:
    run_id: str
    recording_id: str
    job: str  # the job's JSON, as published
    queue: str  # the run's queue


class LostJobs(StateBase):
    def broker_idle(self) -> bool:
        """True when no queue list holds a message and no delivery is unacknowledged."""
        pipe = self._redis.pipeline(transaction=False)
        for queue in QUEUES:
            for key in queue_keys(queue):
                pipe.llen(key)
        pipe.hlen(UNACKED_KEY)
        return not any(int(n) for n in pipe.execute())

    def take_redeliver_lock(self, token: str, ttl_s: float) -> bool:
        """One sweeping worker at a time (the lock expires by itself; no release)."""
        return bool(self._redis.set(REDELIVER_LOCK, token, nx=True, px=int(ttl_s * 1000)))

    def lost_jobs(self, *, quiet_s: float, now: float | None = None) -> list[LostJob]:
        """Queued recordings (with their jobs) of the open runs unchanged for ``quiet_s``.

        Lost only if the broker is idle too (:meth:`broker_idle`), which the caller checks
        first; a run still changing may have jobs being published or popped right now.
        """
        now = time.time() if now is None else now
        run_ids = [run_id for run_id, _ in self._redis.zscan_iter(RUNS_INDEX, count=_SCAN_CHUNK)]
        lost: list[LostJob] = []
        for start in range(0, len(run_ids), _SCAN_CHUNK):
            for run_id, queue in self._quiet_runs(run_ids[start:start + _SCAN_CHUNK],
                                                  quiet_s, now):
                lost.extend(self._queued_jobs(run_id, queue))
        return lost

    def _quiet_runs(self, chunk: list[str], quiet_s: float,
                    now: float) -> list[tuple[str, str]]:
        pipe = self._redis.pipeline(transaction=False)
        for run_id in chunk:
            pipe.hmget(run_key(run_id, "meta"), ("created_at", "changed_at", "closed_at",
                                                 "queue"))
            pipe.hget(run_key(run_id, "counts"), "queued")
        replies = pipe.execute()
        quiet = []
        for i, run_id in enumerate(chunk):
            created_at, changed_at, closed_at, queue = replies[2 * i]
            queued = int(replies[2 * i + 1] or 0)
            since = changed_at or created_at
            if queued > 0 and closed_at is None and since and now - float(since) >= quiet_s:
                quiet.append((run_id, queue if queue in QUEUES else DEFAULT_QUEUE))
        return quiet

    def _queued_jobs(self, run_id: str, queue: str) -> list[LostJob]:
        jobs = dict(self._redis.hscan_iter(run_key(run_id, "jobs"), count=_SCAN_CHUNK))
        if not jobs:
            return []
        ids = list(jobs)
        states = self._redis.hmget(run_key(run_id, "state"), ids)
        return [LostJob(run_id, rid, jobs[rid], queue)
                for rid, state in zip(ids, states, strict=True) if state == "queued"]

    def count_redelivery(self, run_id: str, recording_id: str) -> int:
        """Count a redelivery of the recording's job: how many so far, this one included
        (-1: the run is closed or gone, or the recording no longer queued)."""
        keys = [run_key(run_id, part) for part in ("meta", "lost", "state")]
        return int(self._script("run_redelivered", keys, [recording_id]))
