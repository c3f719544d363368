"""contract/state/ratelimit.py (GCRA state) and contract/state/cache.py (answer cache)."""

from __future__ import annotations

from redis import Redis

from contract.state import AnswerCache, GcraState
from contract.state.keys import ITUNES_CACHE_PREFIX


def test_gcra_burst_then_spacing_and_refusal_reserves_nothing(raw: Redis) -> None:
    state = GcraState(raw, "t")
    interval_us = 1_000_000
    assert state.acquire(interval_us, 2, -1) == (True, 0)
    assert state.acquire(interval_us, 2, -1) == (True, 0)  # the burst
    granted, wait_us = state.acquire(interval_us, 2, 0)  # would wait: refused
    assert not granted and 0 < wait_us <= interval_us
    tat = raw.get("pv:ratelimit:t")
    assert state.acquire(interval_us, 2, 0)[0] is False
    assert raw.get("pv:ratelimit:t") == tat  # a refusal reserved nothing
    granted, wait_us = state.acquire(interval_us, 2, -1)
    assert granted and 0 < wait_us <= interval_us


def test_gcra_penalty_is_shared_and_reset_forgets(raw: Redis) -> None:
    a, b = GcraState(raw, "p"), GcraState(raw, "p")
    left_us = a.penalize(5_000_000, 1_000_000, 1)
    assert 4_900_000 <= left_us <= 5_000_000
    granted, wait_us = b.acquire(1_000_000, 1, 1_000_000)
    assert not granted and wait_us >= 4_000_000
    b.reset()
    assert b.acquire(1_000_000, 1, 0) == (True, 0)


def test_answer_cache_round_trip_ttl_and_junk(raw: Redis) -> None:
    cache = AnswerCache(raw, ttl_s=60)
    url = "https://itunes.apple.com/lookup?id=1"
    assert cache.get(url) is None
    cache.set(url, {"resultCount": 1})
    assert cache.get(url) == {"resultCount": 1}
    (key,) = raw.keys(ITUNES_CACHE_PREFIX + "*")
    assert 0 < raw.ttl(key) <= 60
    raw.set(key, "[1, 2]")
    assert cache.get(url) is None  # not an object
    raw.set(key, "{not json")
    assert cache.get(url) is None
