"""The delivery heartbeat against a real Redis: it refreshes what is still unacknowledged
and can never bring back a delivery that was acknowledged or restored meanwhile."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import redis

from previewvec.localredis import LocalRedis
from workers.deliveries import heartbeat_interval_s, refresh_deliveries


class Channel:
    """What the heartbeat uses of kombu's Redis channel."""

    unacked_index_key = "unacked_index"

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    @contextlib.contextmanager
    def conn_or_acquire(self) -> Iterator[redis.Redis]:
        yield self.client


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    with LocalRedis() as server:
        yield redis.Redis.from_url(server.url, decode_responses=True)


def test_refresh_moves_held_deliveries_and_never_re_adds_acknowledged_ones(
        client: redis.Redis) -> None:
    client.zadd("unacked_index", {"held": 100.0, "other-worker": 100.0})
    # "acked" was acknowledged (ZREM) between the snapshot of held tags and the beat.
    refreshed = refresh_deliveries(Channel(client), {"held", "acked"}, now=500.0)
    assert refreshed == 1
    assert client.zrange("unacked_index", 0, -1, withscores=True) == [
        ("other-worker", 100.0), ("held", 500.0)]


def test_nothing_held_sends_nothing(client: redis.Redis) -> None:
    assert refresh_deliveries(Channel(client), set()) == 0
    assert not client.exists("unacked_index")


@pytest.mark.parametrize(("visibility_s", "interval_s"), [(40, 5.0), (900, 5.0), (12, 2.0),
                                                          (1, 0.5)])
def test_heartbeat_interval_leaves_several_beats_per_timeout(visibility_s: int,
                                                            interval_s: float) -> None:
    assert heartbeat_interval_s(visibility_s) == interval_s
    assert heartbeat_interval_s(visibility_s) <= visibility_s / 2
