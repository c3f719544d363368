"""reducer/reduce.py ``Reducer.follow``: Redis refusing commands (at its maxmemory) is
waited out like Redis away, with the heartbeat beating, and the batch reduced once memory
is freed; an error reply of our own making is not swallowed.

Real Redis (a private redis-server), real store (a folder), real index (embedded LanceDB).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import ResponseError

from contract.layout import VECTOR_DIM
from contract.records import encode_record
from contract.retry import Backoff
from contract.settings import Settings
from contract.state import Runs, connect
from contract.store.local import LocalStore
from reducer.index.embedded import EmbeddedIndex
from reducer.reduce import Reducer
from testkit.records import synthetic_record
from tests.harness.faults import redis_out_of_memory


class Stop(Exception):
    """Raised by the test's heartbeat to end the follow loop (which has no stop call)."""


class Beats:
    """A heartbeat that counts the loop's passes and stops it when told."""

    def __init__(self) -> None:
        self.count = 0
        self.stop = threading.Event()

    def beat(self) -> None:
        self.count += 1
        if self.stop.is_set():
            raise Stop


@pytest.fixture
def raw(redis_url: str) -> Redis:
    client = connect(redis_url)
    client.flushdb()
    return client


@pytest.fixture
def reducer(tmp_path: Path, redis_url: str, raw: Redis,
            monkeypatch: pytest.MonkeyPatch) -> Reducer:
    monkeypatch.setattr("reducer.reduce.OUTAGE_BACKOFF", Backoff(base_s=0.05, cap_s=0.05))
    settings = Settings(store=str(tmp_path / "store"), index=str(tmp_path / "index"),
                        broker_url=redis_url)
    return Reducer(settings=settings, store=LocalStore(settings.store),
                   index=EmbeddedIndex(settings.index, VECTOR_DIM),
                   runs=Runs.from_url(redis_url, retry=False))


def poll(condition: Callable[[], bool], what: str, tries: int = 600) -> None:
    for _ in range(tries):  # a bound on polls, not a timing claim
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")


def test_a_redis_at_its_maxmemory_is_waited_out_and_the_batch_then_reduced(
        reducer: Reducer, raw: Redis, caplog: pytest.LogCaptureFixture) -> None:
    """Given records ready and Redis refusing writes (the audit: ``reduce --follow``
    exited 3, "refused the command: … maxmemory"), expect the loop to keep passing and
    beating, logging the refusal, and to index the records once memory is freed."""
    records = [synthetic_record(i) for i in range(3)]
    for record in records:
        reducer.store.put(record.key, encode_record(record))
        reducer.runs.push_ready(record.key)
    beats = Beats()
    ended: list[BaseException] = []

    def follow() -> None:
        try:
            reducer.follow(batch_size=10, idle_sleep_s=0.05, heartbeat=beats)
        except BaseException as exc:  # handed to the test: Stop, or what broke the loop
            ended.append(exc)

    thread = threading.Thread(target=follow, daemon=True)
    with caplog.at_level(logging.WARNING, logger="reducer.reduce"), \
            redis_out_of_memory(raw):
        thread.start()
        poll(lambda: beats.count >= 5 or bool(ended), "five passes while refused")
        assert not ended, ended
        assert reducer.index.count() == 0 and reducer.runs.ready_depth() == 3
    poll(lambda: reducer.runs.ready_depth() == 0 or bool(ended), "the batch reduced")
    beats.stop.set()
    thread.join(timeout=60)

    assert [type(e) for e in ended] == [Stop]
    assert reducer.index.count() == 3
    assert "reduce failed (OutOfMemoryError" in caplog.text


def test_an_error_reply_of_our_own_making_still_ends_the_loop(
        reducer: Reducer, monkeypatch: pytest.MonkeyPatch) -> None:
    def wrong_type(batch_size: int | None = None) -> int:
        raise ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")

    monkeypatch.setattr(reducer, "reduce_once", wrong_type)
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        reducer.follow(heartbeat=Beats())
