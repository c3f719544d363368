"""contract/state/lock.py: the reducer lock and the trim under it."""

from __future__ import annotations

from redis import Redis

from contract.state import LOCK_KEY, Runs
from contract.state.keys import cursor_lock_key


def test_one_holder_at_a_time_with_a_ttl(runs: Runs, raw: Redis) -> None:
    assert runs.acquire_reducer_lock("a", 10)
    assert not runs.acquire_reducer_lock("b", 10)
    assert runs.reducer_lock_holder() == "a"
    assert 0 < raw.pttl(LOCK_KEY) <= 10_000


def test_only_the_holder_renews_or_releases(runs: Runs, raw: Redis) -> None:
    runs.acquire_reducer_lock("a", 1)
    assert not runs.renew_reducer_lock("b", 30)
    assert runs.renew_reducer_lock("a", 30)
    assert raw.pttl(LOCK_KEY) > 1_000
    assert not runs.release_reducer_lock("b")
    assert runs.reducer_lock_holder() == "a"
    assert runs.release_reducer_lock("a")
    assert runs.reducer_lock_holder() is None
    assert not runs.renew_reducer_lock("a", 30)  # gone: nothing to renew


def test_trim_only_the_holders_own_batch(runs: Runs) -> None:
    for i in range(6):
        runs.push_ready(f"k{i}")
    batch = runs.peek_ready(3)
    assert runs.trim_ready_if_owner("a", batch) == 0  # no lock held: not ours
    runs.acquire_reducer_lock("a", 10)
    assert runs.trim_ready_if_owner("b", batch) == 0
    assert runs.trim_ready_if_owner("a", batch) == 1
    assert runs.peek_ready(10) == ["k3", "k4", "k5"]
    # A retried trim (its first reply lost) finds another head and drops nothing.
    assert runs.trim_ready_if_owner("a", batch) == -1
    assert runs.trim_ready_if_owner("a", ["k3", "k4", "k5", "k6"]) == -1  # longer than queue
    assert runs.ready_depth() == 3


def test_a_cursor_lock_has_one_holder_per_cursor(runs: Runs, raw: Redis) -> None:
    assert runs.acquire_cursor_lock("enqueue:abc", "run-1 t1", 10)
    assert not runs.acquire_cursor_lock("enqueue:abc", "run-2 t2", 10)
    assert runs.acquire_cursor_lock("enqueue:other", "run-2 t2", 10)  # another cursor
    assert runs.cursor_lock_holder("enqueue:abc") == "run-1 t1"
    assert 0 < raw.pttl(cursor_lock_key("enqueue:abc")) <= 10_000
    assert not runs.renew_cursor_lock("enqueue:abc", "run-2 t2", 30)
    assert runs.renew_cursor_lock("enqueue:abc", "run-1 t1", 30)
    assert raw.pttl(cursor_lock_key("enqueue:abc")) > 10_000
    assert not runs.release_cursor_lock("enqueue:abc", "run-2 t2")
    assert runs.release_cursor_lock("enqueue:abc", "run-1 t1")
    assert runs.cursor_lock_holder("enqueue:abc") is None
    assert runs.reducer_lock_holder() is None  # the reducer's lock is another key
