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

# KEYS: state hash, counters hash, failures hash. ARGV: recording id, failure entry (JSON).
# Records a failure, unless the recording is already done or skipped: then the failure
# comes from a second execution of a job another one completed (a redelivery after the
# first holder stalled past the visibility timeout), and the record it wrote stands.
_FAIL = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old == 'done' or old == 'skipped' then return 0 end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
if old == 'failed' then return 1 end
redis.call('HSET', KEYS[1], ARGV[1], 'failed')
redis.call('HINCRBY', KEYS[2], 'failed', 1)
if old then redis.call('HINCRBY', KEYS[2], old, -1) end
return 1
"""


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
        self._fail = client.register_script(_FAIL)

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
        """Record a failure; a recording already done or skipped in the run stays so."""
        entry = {"code": code, "message": message, "job": dict(job) if job else None,
                 "at": time.time()}
        keys = [_key(run_id, "state"), _key(run_id, "counts"), _key(run_id, "failures")]
        self._fail(keys=keys, args=[recording_id, json.dumps(entry)])

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

