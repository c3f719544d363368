"""Shared GCRA rate-limit state, ``pv:ratelimit:<name>`` (producers/ratelimit.py holds
the policy: rates, sleeping, timeouts).

Redis holds, per name, the *theoretical arrival time* (TAT) of the next request, in µs of
the Redis server's clock (``TIME``, so processes on different machines share one clock).
"""

from __future__ import annotations

from typing import Any

from contract.state.keys import ratelimit_key
from contract.state.scripts import StateBase


class GcraState(StateBase):
    """The TAT of one named limiter; every instance with the same name shares it."""

    def __init__(self, client: Any, name: str) -> None:
        super().__init__(client)
        self.key = ratelimit_key(name)

    def acquire(self, interval_us: int, burst: int, max_wait_us: int) -> tuple[bool, int]:
        """Reserve the next slot unless its wait exceeds ``max_wait_us`` (-1: unbounded);
        returns (granted, wait in µs)."""
        granted, wait_us = self._script("gcra_acquire", [self.key],
                                        [interval_us, burst, max_wait_us])
        return bool(int(granted)), int(wait_us)

    def peek(self, interval_us: int, burst: int) -> int:
        """µs until the next slot would be granted, reserving nothing (to pick the least
        busy of several limits)."""
        return int(self._script("gcra_peek", [self.key], [interval_us, burst]))

    def penalize(self, penalty_us: int, interval_us: int, burst: int) -> int:
        """Push the next-allowed time to at least now + ``penalty_us``; returns µs left."""
        return int(self._script("gcra_penalize", [self.key], [penalty_us, interval_us, burst]))

    def reset(self) -> None:
        self._redis.delete(self.key)
