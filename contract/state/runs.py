"""Run bookkeeping: per-recording state, counters, failures (``pv:run:<id>:*``, ``pv:runs``).

Every state change goes through one Lua script (``lua/run_transition.lua``), so counters
stay equal to the number of recordings in each state however often a job is redelivered
or re-run.

A finished run is *closed* (:meth:`Runs.close_finished`, called by the reducer): its
per-recording state hash is dropped, since every recording in it is then done, skipped or
failed, and the failed ones are also the keys of its ``failures`` hash. Its counters,
meta and failures stay, with a time to live (``PREVIEWVEC_RUN_TTL_S``). What a closed run
keeps is therefore bounded by its failures, not by its recordings.

:class:`Runs` is the one handle on previewvec's Redis state: it also carries the ready
queue, the reducer lock, crash counts, cursors, queue depths, lost jobs and pending
recordings (one module each, mixed in here), so a process needs one client for all of it.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from contract.state.connection import connect
from contract.state.crashes import CrashCounts
from contract.state.cursors import Cursors
from contract.state.keys import (
    LEGACY_INDEXED_PATTERN,
    RUNS_INDEX,
    pending_key,
    run_key,
    run_keys,
    run_pattern,
)
from contract.state.lock import CursorLock, ReducerLock
from contract.state.lost import LostJobs
from contract.state.pending import PENDING_TTL_S, Pending
from contract.state.queues import Queues
from contract.state.ready import ReadyQueue

STATES = ("queued", "done", "skipped", "failed")
# A run with nothing queued is closed once none of its recordings changed state for this
# long: a producer still adding to it, or republishing a batch after a crash, does so
# into an open run (exact per-recording state), not into a closed one.
RUN_SETTLE_S = 300.0
# Resolution states (run meta, written by producers) in which a producer may still add
# recordings: such a run is only closed once it has been quiet for the whole TTL (an
# abandoned producer). So is a "failed" dump run (meta `cursor`): it may be resumed into
# the same run, redoing the line it broke off in.
PRODUCER_ACTIVE_STATES = ("pending", "running")
_SCAN_CHUNK = 500


def new_run_id() -> str:
    """Sortable, unique: UTC time plus randomness."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    meta: dict[str, str]
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.get(s, 0) for s in STATES)

    @property
    def finished(self) -> int:
        return sum(self.counts.get(s, 0) for s in ("done", "skipped", "failed"))


@dataclass
class Housekeeping:
    """What one :meth:`Runs.close_finished` pass did."""

    closed: list[str] = field(default_factory=list)  # compacted, expiring
    abandoned: list[str] = field(default_factory=list)  # jobs still queued; expiring as is
    pruned: list[str] = field(default_factory=list)  # expired: removed from pv:runs
    open: int = 0  # runs left open (still running, or not settled yet)


class Runs(ReadyQueue, ReducerLock, CursorLock, CrashCounts, Cursors, Queues, LostJobs, Pending):
    """Run state for producers, workers, the reducer and the CLI."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Runs:
        """A handle on Redis at ``url`` (:func:`contract.state.connection.connect`; by
        default it retries a command for ≈ 30 s, riding out a Redis restart)."""
        return cls(connect(url, **options))

    # --- a run's meta -------------------------------------------------------------------
    def create(self, run_id: str, **meta: str | int) -> None:
        self._redis.hset(run_key(run_id, "meta"), mapping={"created_at": time.time(), **meta})
        self._redis.zadd(RUNS_INDEX, {run_id: time.time()})

    def exists(self, run_id: str) -> bool:
        return bool(self._redis.exists(run_key(run_id, "meta")))

    def update_meta(self, run_id: str, *, drop: Iterable[str] = (), **fields: str | int) -> None:
        """Set meta fields of a run (and delete those in ``drop``)."""
        if fields:
            self._redis.hset(run_key(run_id, "meta"), mapping=fields)
        dropped = list(drop)
        if dropped:
            self._redis.hdel(run_key(run_id, "meta"), *dropped)

    def count(self, run_id: str, name: str, n: int = 1) -> None:
        """Add ``n`` to a counter in the run's meta (``resolved``, ``unresolved``, …)."""
        self._redis.hincrby(run_key(run_id, "meta"), name, n)

    def set_producing(self, run_id: str, producing: bool) -> None:
        """Say whether a producer is still adding jobs to the run (its meta
        ``resolution_state``): a run being added to is never closed by housekeeping, so an
        interrupted ``enqueue`` can be resumed into the same, uncompacted run."""
        self.update_meta(run_id, resolution_state="running" if producing else "finished")

    # --- recordings' states -------------------------------------------------------------
    def _move(self, run_id: str, recording_id: str, state: str, *, delivered: bool,
              failure: str = "", job: str = "", client: Any = None) -> Any:
        """Run the transition script: 1 moved, 0 no change, -1 run gone (or, with a
        pipeline as ``client``, the pipeline)."""
        keys = [*(run_key(run_id, part)
                  for part in ("state", "counts", "meta", "failures", "jobs", "lost")),
                pending_key(recording_id)]
        args = [recording_id, state, "1" if delivered else "0", failure, job, run_id,
                PENDING_TTL_S]
        return self._script("run_transition", keys, args, client=client)

    def mark(self, run_id: str, recording_id: str, state: str, *,
             delivered: bool = False) -> bool:
        """Set a recording's state in a run; returns False when nothing changed.

        ``delivered``: the outcome of a delivered job (a worker), as opposed to a
        producer's; it decides what a compacted run does with a recording it no longer
        lists (see the transition script). Failures go through :meth:`fail`.
        """
        if state not in STATES or state == "failed":
            raise ValueError(f"cannot mark {state!r}" + (" (use fail())"
                                                        if state == "failed" else ""))
        return self._move(run_id, recording_id, state, delivered=delivered) == 1

    def mark_many_queued(self, run_id: str, jobs: Mapping[str, str] | Iterable[str]) -> None:
        """Mark recordings queued: recording id → the JSON of the job about to be
        published (kept until the recording leaves "queued", so that a job the broker
        loses is published again, see :mod:`contract.state.lost`), or bare recording ids
        (then nothing can republish them)."""
        pairs = jobs.items() if isinstance(jobs, Mapping) else ((rid, "") for rid in jobs)
        pipe = self._redis.pipeline(transaction=False)
        for recording_id, job in pairs:
            self._move(run_id, recording_id, "queued", delivered=False, job=job, client=pipe)
        pipe.execute()

    def fail(self, run_id: str, recording_id: str, code: str, message: str,
             job: Mapping[str, Any] | None = None, *, delivered: bool | None = None) -> bool:
        """Record a failure (entry and state in one step); False when nothing changed.

        ``delivered`` defaults to whether a ``job`` is given: workers record their jobs'
        failures with the job, producers record items that never became a job without.
        """
        entry = {"code": code, "message": message, "job": dict(job) if job else None,
                 "at": time.time()}
        was_delivered = job is not None if delivered is None else delivered
        return self._move(run_id, recording_id, "failed", delivered=was_delivered,
                          failure=json.dumps(entry)) == 1

    def succeed(self, run_id: str, recording_id: str, state: str, *,
                delivered: bool = True) -> bool:
        """done or skipped; also forgets an earlier failure of the same recording.

        ``delivered=False`` for a producer's own "skipped" (the record already exists).
        """
        if state not in ("done", "skipped"):
            raise ValueError(f"not a success state: {state!r}")
        return self._move(run_id, recording_id, state, delivered=delivered) == 1

    # --- reading ------------------------------------------------------------------------
    def status(self, run_id: str) -> RunStatus:
        meta = self._redis.hgetall(run_key(run_id, "meta"))
        counts = {k: int(v) for k, v in self._redis.hgetall(run_key(run_id, "counts")).items()}
        return RunStatus(run_id, meta, {s: max(counts.get(s, 0), 0) for s in STATES})

    def states(self, run_id: str) -> dict[str, str]:
        """Recording id → state, as the run's state hash holds it (empty once compacted)."""
        return dict(self._redis.hgetall(run_key(run_id, "state")))

    def failures(self, run_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for recording_id, raw in self._redis.hscan_iter(run_key(run_id, "failures"),
                                                        count=500):
            yield recording_id, json.loads(raw)

    def failures_page(self, run_id: str, cursor: int, count: int) -> tuple[int, dict[str, str]]:
        """One HSCAN page of the run's failures: (next cursor, 0 at the end; recording id
        → raw JSON entry)."""
        next_cursor, page = self._redis.hscan(run_key(run_id, "failures"), cursor=cursor,
                                              count=count)
        return int(next_cursor), dict(page)

    def recent_runs(self, limit: int = 20) -> list[str]:
        return list(self._redis.zrevrange(RUNS_INDEX, 0, limit - 1))

    def key_ttls(self, run_id: str) -> dict[str, int]:
        """Each existing key of the run → its TTL in s (-1: none)."""
        return {key: int(self._redis.ttl(key))
                for key in self._redis.scan_iter(match=run_pattern(run_id))}

    # --- closing finished runs ----------------------------------------------------------
    def close(self, run_id: str, *, ttl_s: int, changed_at: str = "",
              compact: bool = True) -> bool:
        """Close one run now: drop its state hash (``compact``; refused while anything is
        queued) and let all its keys expire in ``ttl_s`` (0: never). Refused when the run
        changed since ``changed_at`` (its meta field) was read; True when closed."""
        return bool(self._script("run_close", run_keys(run_id),
                                 [int(ttl_s), changed_at, "1" if compact else "0"]))

    def close_finished(self, *, ttl_s: int, settle_s: float = RUN_SETTLE_S,
                       now: float | None = None) -> Housekeeping:
        """One housekeeping pass over ``pv:runs`` (cost: one round trip per 500 runs).

        - a run with nothing queued, no producer adding to it, and no change for
          ``settle_s`` is closed: compacted and set to expire in ``ttl_s``;
        - a run quiet for ``ttl_s`` (abandoned: a producer or a job that never came back)
          expires as it is, compacted only if nothing is queued;
        - runs whose keys have expired leave ``pv:runs``.

        Safe to run from several processes at once: each step is one atomic script that
        re-checks what it relies on.
        """
        now = time.time() if now is None else now
        report = Housekeeping()
        run_ids = [run_id for run_id, _ in self._redis.zscan_iter(RUNS_INDEX, count=_SCAN_CHUNK)]
        for start in range(0, len(run_ids), _SCAN_CHUNK):
            self._close_chunk(run_ids[start:start + _SCAN_CHUNK], report, ttl_s=ttl_s,
                              settle_s=settle_s, now=now)
        return report

    def _close_chunk(self, chunk: list[str], report: Housekeeping, *, ttl_s: int,
                     settle_s: float, now: float) -> None:
        fields = ("created_at", "changed_at", "closed_at", "resolution_state", "cursor")
        pipe = self._redis.pipeline(transaction=False)
        for run_id in chunk:
            pipe.hmget(run_key(run_id, "meta"), fields)
            pipe.hget(run_key(run_id, "counts"), "queued")
        replies = pipe.execute()
        gone = []
        for i, run_id in enumerate(chunk):
            created_at, changed_at, closed_at, resolution, cursor = replies[2 * i]
            queued = int(replies[2 * i + 1] or 0)
            if created_at is None and changed_at is None:
                gone.append(run_id)  # meta expired (or deleted): the run is gone
                continue
            if closed_at is not None:
                continue
            quiet_s = now - float(changed_at or created_at or now)
            abandoned = ttl_s > 0 and quiet_s >= ttl_s
            producing = resolution in PRODUCER_ACTIVE_STATES or (
                resolution == "failed" and cursor is not None)
            if queued == 0 and (abandoned or (not producing and quiet_s >= settle_s)):
                if self.close(run_id, ttl_s=ttl_s, changed_at=changed_at or ""):
                    report.closed.append(run_id)
                    continue
            elif queued > 0 and abandoned and self.close(
                    run_id, ttl_s=ttl_s, changed_at=changed_at or "", compact=False):
                report.abandoned.append(run_id)
                continue
            report.open += 1
        if gone:
            # Re-checked in one step, so a run created again meanwhile stays listed.
            metas = [run_key(run_id, "meta") for run_id in gone]
            self._script("runs_prune", [RUNS_INDEX, *metas], gone)
            report.pruned.extend(gone)

    def drop_legacy_indexed_sets(self) -> int:
        """Delete ``pv:indexed:*`` sets left by versions before the index itself was asked
        (≈ 90 B per indexed recording); returns how many were deleted."""
        keys = list(self._redis.scan_iter(match=LEGACY_INDEXED_PATTERN, count=1000))
        return int(self._redis.unlink(*keys)) if keys else 0
