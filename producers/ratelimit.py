"""A global rate limiter shared by every producer process through Redis.

The limiter is GCRA (the "generic cell rate algorithm", a token bucket expressed as one
timestamp): Redis holds, per name (``musicbrainz``, ``itunes``), the *theoretical arrival
time* (TAT) of the next request (contract/state/ratelimit.py owns that key and its
scripts). One Lua script reads the Redis server's clock (``TIME``,
so processes on different machines share one clock), and either

* reserves the next slot and returns how long the caller must sleep before using it, or
* refuses (reserving nothing) when that wait would exceed the caller's timeout.

Because a grant is a *reservation*, :meth:`RateLimiter.acquire` sleeps exactly the
computed wait once and never polls: N processes calling at once get slots T, 2T, 3T… apart
(T = 1 / rate). ``burst`` slots may be used back to back after an idle period.

:meth:`RateLimiter.penalize` pushes the shared next-allowed time forward, so when one
process sees a 503 / throttle answer every process backs off. The backoff policy itself
(how long a penalty or a retry waits) lives in :mod:`contract.retry`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from contract.errors import UpstreamError
from contract.state.keys import RATELIMIT_PREFIX
from contract.state.ratelimit import GcraState

# The shared state (the TAT key, pv:ratelimit:<name>, and its two Lua scripts) is
# contract/state/ratelimit.py's; this module holds the policy.
KEY_PREFIX = RATELIMIT_PREFIX


class RateLimitTimeout(UpstreamError):
    """No slot could be granted within the caller's timeout."""

    code = "rate_limited"


class RateLimiter:
    """``RateLimiter(redis_client, "musicbrainz", rate_per_s=1.0).acquire()``.

    Every instance with the same ``name`` on the same Redis shares one budget, whatever
    process it lives in. ``sleep`` is injectable for tests.
    """

    def __init__(self, redis_client, name: str, rate_per_s: float, burst: int = 1, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be > 0")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self._state = GcraState(redis_client, name)
        self.name = name
        self.key = self._state.key
        self.rate_per_s = float(rate_per_s)
        self.burst = int(burst)
        self.interval_us = max(1, round(1_000_000 / self.rate_per_s))
        self._sleep = sleep
        self.waited_s = 0.0  # total time this instance slept in acquire()
        self.grants = 0
        self._local = threading.local()  # this thread's bound on waits (see bounded())

    @contextmanager
    def bounded(self, max_wait_s: float | None) -> Iterator[None]:
        """Within the block, this thread's first acquire() without a timeout refuses
        (:class:`RateLimitTimeout`, nothing reserved) a slot further than ``max_wait_s``
        away: a caller with another source to ask does not queue behind this one. Once a
        slot is granted the work has started, and the block's further acquire() calls
        wait their turn: a step of several calls (an album search, then the album's
        tracks) refused its second slot would throw away the first call's answer."""
        previous = getattr(self._local, "bound", None)
        self._local.bound = max_wait_s
        try:
            yield
        finally:
            self._local.bound = previous

    def acquire(self, timeout_s: float | None = None) -> float:
        """Block until a slot is granted; return the seconds slept.

        Raises :class:`RateLimitTimeout` (reserving nothing) if the wait would exceed
        ``timeout_s``.
        """
        from_block = timeout_s is None
        if from_block:
            timeout_s = getattr(self._local, "bound", None)
        max_wait = -1 if timeout_s is None else max(0, round(timeout_s * 1_000_000))
        granted, wait_us = self._state.acquire(self.interval_us, self.burst, max_wait)
        wait = wait_us / 1_000_000
        if not granted:
            raise RateLimitTimeout(
                f"rate limiter {self.name!r}: next slot in {wait:.2f}s exceeds timeout "
                f"{timeout_s}s")
        if from_block and timeout_s is not None:
            self._local.bound = None  # started: the rest of the block waits its turn
        if wait > 0:
            self._sleep(wait)
        self.waited_s += wait
        self.grants += 1
        return wait

    def next_wait_s(self) -> float:
        """Seconds until the next slot (nothing reserved): how busy this limit is now."""
        return self._state.peek(self.interval_us, self.burst) / 1_000_000

    def penalize(self, seconds: float) -> float:
        """Push the shared next-allowed time to at least now + ``seconds`` (for everyone).

        Returns the seconds until the next slot."""
        left_us = self._state.penalize(max(0, round(seconds * 1_000_000)), self.interval_us,
                                       self.burst)
        return left_us / 1_000_000

    def reset(self) -> None:
        """Forget the shared state (tests, or after changing the rate)."""
        self._state.reset()
