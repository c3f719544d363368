"""Run bookkeeping in Redis: per-recording state, counters, failures, the reducer's queue.

Every state change goes through one Lua script, so counters stay equal to the number of
recordings in each state however often a job is redelivered or re-run.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

PREFIX = "pv"
STATES = ("queued", "done", "skipped", "failed")
READY_QUEUE = f"{PREFIX}:ready"
RUNS_INDEX = f"{PREFIX}:runs"
# Retries of a Redis command on connection errors: 0.05 s doubling to 1 s, ≈ 30 s in all.
REDIS_RETRIES = 35
REDIS_RETRY_CAP_S = 1.0
# How long a job's crash count outlives its last delivery: longer than any wait for a
# redelivery (a requeued job behind a backlog, a visibility timeout), short enough that
# the count of a job whose message vanished (a hard time limit acks it) goes away.
CRASH_COUNT_TTL_S = 7 * 86_400

# KEYS: state hash, counters hash. ARGV: recording id, new state.
# Moves the recording to its new state and keeps the counters consistent. "done" is never
# downgraded to "skipped": that is a redelivered job (its worker died after storing the
# record, before the ack) finding the record this run already computed.
_TRANSITION = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old == ARGV[2] then return 0 end
if old == 'done' and ARGV[2] == 'skipped' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
if old then redis.call('HINCRBY', KEYS[2], old, -1) end
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


class Runs:
    """Run state for producers, workers, the reducer and the CLI."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._transition = client.register_script(_TRANSITION)
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

    def exists(self, run_id: str) -> bool:
        return bool(self.redis.exists(_key(run_id, "meta")))

    def mark(self, run_id: str, recording_id: str, state: str) -> bool:
        """Set a recording's state in a run; returns False when it already was."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        keys = [_key(run_id, "state"), _key(run_id, "counts")]
        return bool(self._transition(keys=keys, args=[recording_id, state]))

    def mark_many_queued(self, run_id: str, recording_ids: Iterable[str]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        keys = [_key(run_id, "state"), _key(run_id, "counts")]
        for recording_id in recording_ids:
            self._transition(keys=keys, args=[recording_id, "queued"], client=pipe)
        pipe.execute()

    def fail(self, run_id: str, recording_id: str, code: str, message: str,
             job: Mapping[str, Any] | None = None) -> None:
        entry = {"code": code, "message": message, "job": dict(job) if job else None,
                 "at": time.time()}
        self.redis.hset(_key(run_id, "failures"), recording_id, json.dumps(entry))
        self.mark(run_id, recording_id, "failed")

    def succeed(self, run_id: str, recording_id: str, state: str) -> None:
        """done or skipped: also forget an earlier failure of the same recording."""
        self.redis.hdel(_key(run_id, "failures"), recording_id)
        self.mark(run_id, recording_id, state)

    def status(self, run_id: str) -> RunStatus:
        meta = self.redis.hgetall(_key(run_id, "meta"))
        counts = {k: int(v) for k, v in self.redis.hgetall(_key(run_id, "counts")).items()}
        return RunStatus(run_id, meta, {s: max(counts.get(s, 0), 0) for s in STATES})

    def failures(self, run_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for recording_id, raw in self.redis.hscan_iter(_key(run_id, "failures"), count=500):
            yield recording_id, json.loads(raw)

    def recent_runs(self, limit: int = 20) -> list[str]:
        return list(self.redis.zrevrange(RUNS_INDEX, 0, limit - 1))

    # The reducer's queue: record keys whose vectors are not yet in the index.
    def push_ready(self, record_key: str) -> None:
        self.redis.rpush(READY_QUEUE, record_key)

    def peek_ready(self, n: int) -> list[str]:
        return list(self.redis.lrange(READY_QUEUE, 0, n - 1))

    def drop_ready(self, n: int) -> None:
        """Remove the first ``n`` entries, after they were upserted."""
        self.redis.ltrim(READY_QUEUE, n, -1)

    def ready_depth(self) -> int:
        return int(self.redis.llen(READY_QUEUE))

    # Which recordings' vectors are in the index: a skipped job whose record exists but was
    # never indexed (its worker died between the store write and the ready push) is pushed
    # again, so a crash at that instant loses nothing.
    def _indexed_key(self, feature_version: str) -> str:
        return f"{PREFIX}:indexed:{feature_version}"

    def is_indexed(self, feature_version: str, recording_id: str) -> bool:
        return bool(self.redis.sismember(self._indexed_key(feature_version), recording_id))

    def mark_indexed(self, feature_version: str, recording_ids: Iterable[str]) -> None:
        ids = list(recording_ids)
        if ids:
            self.redis.sadd(self._indexed_key(feature_version), *ids)

    def indexed_count(self, feature_version: str) -> int:
        return int(self.redis.scard(self._indexed_key(feature_version)))

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
