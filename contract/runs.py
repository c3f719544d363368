"""Run bookkeeping in Redis: per-recording state, counters, failures, the reducer's queue.

Every state change goes through one Lua script, so counters stay equal to the number of
recordings in each state however often a job is redelivered or re-run.

A finished run is *closed* (:meth:`Runs.close_finished`, called by the reducer): its
per-recording state hash is dropped, since every recording in it is then done, skipped or
failed, and the failed ones are also the keys of its ``failures`` hash. Its counters,
meta and failures stay, with a time to live (``PREVIEWVEC_RUN_TTL_S``). What a closed run
keeps is therefore bounded by its failures, not by its recordings.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

PREFIX = "pv"
STATES = ("queued", "done", "skipped", "failed")
READY_QUEUE = f"{PREFIX}:ready"
RUNS_INDEX = f"{PREFIX}:runs"
# A ready entry with this prefix is a record key the reducer upserts only if its vector is
# not in the index yet (a skipped job: its record was stored earlier, and was indexed
# unless the worker that stored it died before pushing its key). "?" cannot start a
# record key ("features/…").
IF_ABSENT = "?"
# The keys of one run (pv:run:<id>:<part>), in the order the close script takes them;
# all of them expire together once the run is closed. A new per-run key belongs here.
RUN_PARTS = ("meta", "counts", "state", "failures")
# A run with nothing queued is closed once none of its recordings changed state for this
# long: a producer still adding to it, or republishing a batch after a crash, does so
# into an open run (exact per-recording state), not into a closed one.
RUN_SETTLE_S = 300.0
# Resolution states (run meta, written by producers) in which a producer may still add
# recordings: such a run is only closed once it has been quiet for the whole TTL (an
# abandoned producer). So is a "failed" dump run (meta `cursor`): it may be resumed into
# the same run, redoing the line it broke off in.
PRODUCER_ACTIVE_STATES = ("pending", "running")
# Retries of a Redis command on connection errors: 0.05 s doubling to 1 s, ≈ 30 s in all.
REDIS_RETRIES = 35
REDIS_RETRY_CAP_S = 1.0
_SCAN_CHUNK = 500
# How long a job's crash count outlives its last delivery: longer than any wait for a
# redelivery (a requeued job behind a backlog, a visibility timeout), short enough that
# the count of a job whose message vanished (a hard time limit acks it) goes away.
CRASH_COUNT_TTL_S = 7 * 86_400

# KEYS: state, counts, meta, failures of the run.
# ARGV: recording id, new state, delivered ("1": the outcome of a delivered job, "0": a
# producer's), failure entry JSON ("" unless the new state is "failed").
# Moves the recording to its new state and keeps the counters consistent; writes or
# removes its failure entry in the same step, so `failures` holds exactly the failed
# recordings (plus re-queued ones being retried). Rules:
# - a repeated transition is a no-op (a failure's entry is refreshed);
# - "done" is never downgraded to "skipped": that is a redelivered job (its worker died
#   after storing the record, before the ack) finding the record this run computed;
# - a delivered job of a run that no longer exists (expired) changes nothing (-1), so a
#   very late delivery cannot resurrect run keys that would then never expire;
# - in a compacted run (meta `compacted_at`) a recording missing from the state hash was
#   failed if `failures` lists it, and otherwise either succeeded before the compaction
#   or is new: a delivered job's outcome for it is a redelivery of a counted success, a
#   no-op (0); a producer's is a new recording, counted;
# - a transition to "queued" reopens a closed run: its keys stop expiring until it is
#   closed again.
_TRANSITION = """
local rid, new, delivered, failure = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4]
if delivered and redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local old = redis.call('HGET', KEYS[1], rid)
if not old and redis.call('HEXISTS', KEYS[3], 'compacted_at') == 1 then
  if redis.call('HEXISTS', KEYS[4], rid) == 1 then
    old = 'failed'
  elseif delivered then
    return 0
  end
end
if old == new then
  if new == 'failed' and failure ~= '' then redis.call('HSET', KEYS[4], rid, failure) end
  return 0
end
if old == 'done' and new == 'skipped' then return 0 end
-- a failure never overrides a completed recording: it comes from a second execution
-- of a job another one completed (its first holder stalled past the visibility timeout)
if new == 'failed' and (old == 'done' or old == 'skipped') then return 0 end
redis.call('HSET', KEYS[1], rid, new)
redis.call('HINCRBY', KEYS[2], new, 1)
if old then redis.call('HINCRBY', KEYS[2], old, -1) end
if new == 'failed' then
  if failure ~= '' then redis.call('HSET', KEYS[4], rid, failure) end
elseif new ~= 'queued' then
  redis.call('HDEL', KEYS[4], rid)
end
redis.call('HSET', KEYS[3], 'changed_at', redis.call('TIME')[1])
if redis.call('HEXISTS', KEYS[3], 'closed_at') == 1 then
  if new == 'queued' then
    for i = 1, #KEYS do redis.call('PERSIST', KEYS[i]) end
    redis.call('HDEL', KEYS[3], 'closed_at', 'expires_at')
  else
    -- a key this created (the state hash of a compacted run) expires with the others
    local ttl = redis.call('TTL', KEYS[3])
    if ttl > 0 then
      for i = 1, #KEYS do
        if redis.call('TTL', KEYS[i]) == -1 then redis.call('EXPIRE', KEYS[i], ttl) end
      end
    end
  end
end
return 1
"""

# KEYS: meta, counts, state, failures (then any other keys of the run).
# ARGV: TTL in s (0: never expire), `changed_at` as read when the run was judged
# finished, compact ("1": drop the state hash; only when nothing is queued).
# Atomic, and O(1) whatever the run's size: UNLINK frees the hash in the background.
# Refuses (0) when the run changed since it was judged, or (compact) has jobs queued.
_CLOSE = """
local compact = ARGV[3] == '1'
if compact and (tonumber(redis.call('HGET', KEYS[2], 'queued')) or 0) > 0 then return 0 end
if (redis.call('HGET', KEYS[1], 'changed_at') or '') ~= ARGV[2] then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local now = tonumber(redis.call('TIME')[1])
if compact then
  redis.call('UNLINK', KEYS[3])
  if redis.call('HEXISTS', KEYS[1], 'compacted_at') == 0 then
    redis.call('HSET', KEYS[1], 'compacted_at', now)
  end
end
redis.call('HSET', KEYS[1], 'closed_at', now)
local ttl = tonumber(ARGV[1])
if ttl > 0 then
  redis.call('HSET', KEYS[1], 'expires_at', now + ttl)
  for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
end
return 1
"""


# Crash counts, one hash per task id (redeliveries keep the id; `retry` publishes a new
# one, so a retried job starts from zero). Fields: starts (attempts begun and not yet
# ended normally: incremented by the pool child as it starts the job, decremented or
# deleted when the job returns), lost (pool-child deaths the worker's main process saw),
# how (the last death, e.g. "pool child killed by SIGKILL (signal 9)").
# KEYS: crash hash. ARGV: TTL s. Returns {starts, lost, how} after counting this start.
_ATTEMPT_STARTED = """
local starts = redis.call('HINCRBY', KEYS[1], 'starts', 1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
local lost = tonumber(redis.call('HGET', KEYS[1], 'lost') or '0')
return {starts, lost, redis.call('HGET', KEYS[1], 'how') or ''}
"""
# KEYS: crash hash. ARGV: TTL s, how. Returns the crashes so far, this one included.
_ATTEMPT_LOST = """
local lost = redis.call('HINCRBY', KEYS[1], 'lost', 1)
redis.call('HSET', KEYS[1], 'how', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[1])
local starts = tonumber(redis.call('HGET', KEYS[1], 'starts') or '0')
return math.max(lost, starts)
"""
# KEYS: crash hash. An attempt that ended normally but will run again (a retry): it was
# no crash, but earlier crashes still count. Never creates the hash (no TTL-less key).
_ATTEMPT_RETRIED = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HINCRBY', KEYS[1], 'starts', -1)
end
return 0
"""


@dataclass(frozen=True)
class CrashCount:
    """A job's crashes before the attempt now starting, and how the last one happened."""

    crashes: int
    how: str  # "" when no worker's main process saw a crash (the whole worker died)


def new_run_id() -> str:
    """Sortable, unique: UTC time plus randomness."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def _key(run_id: str, part: str) -> str:
    return f"{PREFIX}:run:{run_id}:{part}"


def _run_keys(run_id: str) -> list[str]:
    """The run's keys in the order the close script expects (:data:`RUN_PARTS`)."""
    return [_key(run_id, part) for part in RUN_PARTS]


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


class Runs:
    """Run state for producers, workers, the reducer and the CLI."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._transition = client.register_script(_TRANSITION)
        self._close = client.register_script(_CLOSE)
        self._attempt_started = client.register_script(_ATTEMPT_STARTED)
        self._attempt_lost = client.register_script(_ATTEMPT_LOST)
        self._attempt_retried = client.register_script(_ATTEMPT_RETRIED)

    @classmethod
    def from_url(cls, url: str) -> Runs:
        # Ride out a Redis restart (seconds): a worker that cannot record "done" or push
        # its record key would otherwise ack a job whose bookkeeping is lost. Every command
        # here is idempotent or harmless when repeated (a ready key pushed twice is
        # deduplicated by the reducer).
        retry = Retry(ExponentialBackoff(cap=REDIS_RETRY_CAP_S, base=0.05), REDIS_RETRIES)
        return cls(redis.Redis.from_url(url, decode_responses=True, health_check_interval=30,
                                        retry=retry))

    def create(self, run_id: str, **meta: str | int) -> None:
        self.redis.hset(_key(run_id, "meta"), mapping={"created_at": time.time(), **meta})
        self.redis.zadd(RUNS_INDEX, {run_id: time.time()})

    def set_producing(self, run_id: str, producing: bool) -> None:
        """Say whether a producer is still adding jobs to the run (its meta
        ``resolution_state``): a run being added to is never closed by housekeeping, so an
        interrupted ``enqueue`` can be resumed into the same, uncompacted run."""
        self.redis.hset(_key(run_id, "meta"), "resolution_state",
                        "running" if producing else "finished")

    def exists(self, run_id: str) -> bool:
        return bool(self.redis.exists(_key(run_id, "meta")))

    def _move(self, run_id: str, recording_id: str, state: str, *, delivered: bool,
              failure: str = "", client: Any = None) -> Any:
        """Run the transition script: 1 moved, 0 no change, -1 run gone (or, with a
        pipeline as ``client``, the pipeline)."""
        keys = [_key(run_id, part) for part in ("state", "counts", "meta", "failures")]
        args = [recording_id, state, "1" if delivered else "0", failure]
        return self._transition(keys=keys, args=args, client=client)

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

    def mark_many_queued(self, run_id: str, recording_ids: Iterable[str]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for recording_id in recording_ids:
            self._move(run_id, recording_id, "queued", delivered=False, client=pipe)
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

    def status(self, run_id: str) -> RunStatus:
        meta = self.redis.hgetall(_key(run_id, "meta"))
        counts = {k: int(v) for k, v in self.redis.hgetall(_key(run_id, "counts")).items()}
        return RunStatus(run_id, meta, {s: max(counts.get(s, 0), 0) for s in STATES})

    def failures(self, run_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for recording_id, raw in self.redis.hscan_iter(_key(run_id, "failures"), count=500):
            yield recording_id, json.loads(raw)

    def recent_runs(self, limit: int = 20) -> list[str]:
        return list(self.redis.zrevrange(RUNS_INDEX, 0, limit - 1))

    # --- closing finished runs ----------------------------------------------------------
    def close(self, run_id: str, *, ttl_s: int, changed_at: str = "",
              compact: bool = True) -> bool:
        """Close one run now: drop its state hash (``compact``; refused while anything is
        queued) and let all its keys expire in ``ttl_s`` (0: never). Refused when the run
        changed since ``changed_at`` (its meta field) was read; True when closed."""
        keys = _run_keys(run_id)
        return bool(self._close(keys=keys, args=[int(ttl_s), changed_at,
                                                 "1" if compact else "0"]))

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
        run_ids = [run_id for run_id, _ in self.redis.zscan_iter(RUNS_INDEX, count=_SCAN_CHUNK)]
        fields = ("created_at", "changed_at", "closed_at", "resolution_state", "cursor")
        for start in range(0, len(run_ids), _SCAN_CHUNK):
            chunk = run_ids[start:start + _SCAN_CHUNK]
            pipe = self.redis.pipeline(transaction=False)
            for run_id in chunk:
                pipe.hmget(_key(run_id, "meta"), fields)
                pipe.hget(_key(run_id, "counts"), "queued")
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
                metas = [_key(run_id, "meta") for run_id in gone]
                self.redis.eval(_PRUNE, 1 + len(gone), RUNS_INDEX, *metas, *gone)
                report.pruned.extend(gone)
        return report

    def drop_legacy_indexed_sets(self) -> int:
        """Delete ``pv:indexed:*`` sets left by versions before the index itself was asked
        (≈ 90 B per indexed recording); returns how many were deleted."""
        keys = list(self.redis.scan_iter(match=f"{PREFIX}:indexed:*", count=1000))
        return int(self.redis.unlink(*keys)) if keys else 0

    # The reducer's queue: record keys whose vectors are not yet in the index.
    def push_ready(self, record_key: str) -> None:
        """A freshly written record: the reducer always upserts it."""
        self.redis.rpush(READY_QUEUE, record_key)

    def push_ready_if_absent(self, record_key: str) -> None:
        """A record found already stored: the reducer upserts it only if the index does
        not hold its vector (its writer may have died before pushing it)."""
        self.redis.rpush(READY_QUEUE, IF_ABSENT + record_key)

    def peek_ready(self, n: int) -> list[str]:
        return list(self.redis.lrange(READY_QUEUE, 0, n - 1))

    def drop_ready(self, n: int) -> None:
        """Remove the first ``n`` entries, after they were upserted."""
        self.redis.ltrim(READY_QUEUE, n, -1)

    def ready_depth(self) -> int:
        return int(self.redis.llen(READY_QUEUE))

    # Crash counts of deliveries (workers/crashes.py): shared by every worker, so a job
    # that kills whichever worker runs it is still counted once per crash.
    def _crash_key(self, task_id: str) -> str:
        return f"{PREFIX}:crash:{task_id}"

    def attempt_started(self, task_id: str) -> CrashCount:
        """Count an attempt beginning; returns the crashes of the attempts before it.

        A crash is an attempt that began and never ended normally, whether only its pool
        child died (then the main process also counted it, see :meth:`attempt_lost`) or
        the whole worker did (then nothing but this start count remembers it).
        """
        starts, lost, how = self._attempt_started(keys=[self._crash_key(task_id)],
                                                  args=[CRASH_COUNT_TTL_S])
        return CrashCount(max(int(starts) - 1, int(lost)), str(how))

    def attempt_lost(self, task_id: str, how: str) -> int:
        """Count a pool child's death while running the job; returns its crashes so far."""
        return int(self._attempt_lost(keys=[self._crash_key(task_id)],
                                      args=[CRASH_COUNT_TTL_S, how]))

    def attempt_retried(self, task_id: str) -> None:
        """The attempt ended normally but the job runs again (a store-outage retry)."""
        self._attempt_retried(keys=[self._crash_key(task_id)])

    def attempts_over(self, task_id: str) -> None:
        """The job ended for good (an outcome was accounted): forget its crash count."""
        self.redis.delete(self._crash_key(task_id))

    # Resume cursors of producers: the last input line whose jobs are all published, and
    # the run that line belongs to (`pv:cursor:<name>`, `pv:cursor:<name>:run`).
    def cursor(self, name: str) -> int | None:
        raw = self.redis.get(f"{PREFIX}:cursor:{name}")
        return None if raw is None else int(raw)

    def cursor_run(self, name: str) -> str | None:
        raw = self.redis.get(f"{PREFIX}:cursor:{name}:run")
        return None if raw is None else str(raw)

    def clear_cursor(self, name: str) -> None:
        self.redis.delete(f"{PREFIX}:cursor:{name}", f"{PREFIX}:cursor:{name}:run")

    def chunk_published(self, run_id: str, n: int, *, cursor_name: str | None = None,
                        line: int | None = None) -> None:
        """Count ``n`` more published jobs in the run's ``submitted`` and, with a cursor,
        move it to ``line``, in one transaction: the count and the cursor always agree."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(_key(run_id, "meta"), "submitted", n)
        if cursor_name is not None and line is not None:
            pipe.set(f"{PREFIX}:cursor:{cursor_name}", line)
            pipe.set(f"{PREFIX}:cursor:{cursor_name}:run", run_id)
        pipe.execute()


def parse_ready_entry(entry: str) -> tuple[str, bool]:
    """A ``pv:ready`` entry → (record key, upsert only if absent from the index)."""
    if entry.startswith(IF_ABSENT):
        return entry[len(IF_ABSENT):], True
    return entry, False


# KEYS: pv:runs, then the meta key of each run in ARGV. ARGV: run ids whose meta was
# found gone. Removes from pv:runs those whose meta is still gone.
_PRUNE = """
local n = 0
for i, run_id in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then n = n + redis.call('ZREM', KEYS[1], run_id) end
end
return n
"""
