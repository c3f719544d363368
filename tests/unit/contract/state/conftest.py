"""A private redis-server for the contract/state tests (one per module, flushed per test)."""

from __future__ import annotations

import pytest
from redis import Redis

from contract.state import Runs, connect


@pytest.fixture
def raw(redis_url: str) -> Redis:
    """A separate client, to look at the keys the state modules write."""
    client = connect(redis_url)
    client.flushdb()
    return client


@pytest.fixture
def runs(redis_url: str, raw: Redis) -> Runs:
    return Runs.from_url(redis_url)
