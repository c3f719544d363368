"""One backoff policy and one ``Retry-After`` parser for every client.

**Policy (full jitter, AWS style).** After the n-th failed attempt (n = 1, 2, …) a client
waits ``uniform(0, min(cap_s, base_s * 2**(n-1)))``: :meth:`Backoff.delay`. Spreading the
whole interval is what de-synchronises many clients retrying against one recovering
server. A ``Retry-After`` from the server is a floor on that wait, itself capped at
``cap_s``, so a server cannot park a client for an hour.

One exception, by design: a *shared* pause (the producers' rate-limiter penalty, which
every producer process obeys through Redis) uses the un-jittered step
:meth:`Backoff.step`. The limiter already spaces the processes one slot apart; jittering
a pause everybody shares would only shorten it at random.

**Retry-After** (RFC 9110 §10.2.3): :func:`parse_retry_after` reads delta-seconds or an
HTTP-date. An HTTP-date is always GMT, so a date without a zone (asctime form) is GMT too;
a date in the past means "now" (0 s). Garbage is ``None``; huge values are capped at
``RETRY_AFTER_MAX_S``.

:func:`retrying` builds the tenacity loop for clients whose attempts raise exceptions
(the preview fetch, Vectorize). The producers' JSON GET (:mod:`producers.http`) and the
Celery/reducer retries use :class:`Backoff` directly, because their waits happen elsewhere
(the shared limiter, Celery's countdown, the reducer's loop).

This module is part of the contract layer: it imports no stage.
"""

from __future__ import annotations

import email.utils
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import tenacity

RETRY_AFTER_MAX_S = 86_400.0
"""Largest Retry-After honoured (one day); clients cap it again at their own ``cap_s``."""

# delta-seconds is 1*DIGIT; a decimal fraction is accepted too (some servers send "0.5").
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: ``Backoff(base_s, cap_s).delay(failures)``."""

    base_s: float = 1.0
    cap_s: float = 60.0

    def step(self, failures: int) -> float:
        """The un-jittered ceiling after ``failures`` failed attempts (1-based):
        ``min(cap_s, base_s * 2**(failures-1))``."""
        exponent = min(max(failures, 1) - 1, 60)  # 2**60 already dwarfs any cap
        return min(self.cap_s, self.base_s * 2.0**exponent)

    def delay(
        self,
        failures: int,
        *,
        retry_after_s: float | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """Seconds to wait after ``failures`` failed attempts: full jitter over
        :meth:`step`, raised to the server's Retry-After (capped at ``cap_s``) if given."""
        jitter = (rng or random).uniform(0.0, self.step(failures))
        return self._honour(jitter, retry_after_s)

    def penalty(self, failures: int, *, retry_after_s: float | None = None) -> float:
        """The un-jittered :meth:`step` raised to Retry-After: for a pause every process
        shares (the rate limiter's penalty), where jitter would only shorten it."""
        return self._honour(self.step(failures), retry_after_s)

    def _honour(self, delay: float, retry_after_s: float | None) -> float:
        if retry_after_s is None:
            return delay
        return max(delay, min(self.cap_s, max(0.0, retry_after_s)))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from ``now``: delta-seconds or an HTTP-date (GMT, also when
    no zone is written); past dates are 0; ``None`` if absent or unreadable; at most
    ``RETRY_AFTER_MAX_S``."""
    if not value:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # RFC 9110: an HTTP-date is always GMT
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(RETRY_AFTER_MAX_S, max(0.0, seconds))


def retrying(
    backoff: Backoff,
    *,
    attempts: int,
    retryable: Callable[[BaseException], bool],
    retry_after: Callable[[BaseException], float | None] = lambda exc: None,
    deadline: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    before_sleep: Callable[[tenacity.RetryCallState], None] | None = None,
) -> tenacity.Retrying:
    """A tenacity loop under this module's policy: at most ``attempts`` tries, retrying the
    exceptions ``retryable`` accepts, waiting :meth:`Backoff.delay` (with the exception's
    ``retry_after`` seconds as a floor). With ``deadline`` (a ``time.monotonic()`` value)
    it gives up rather than sleep up to or past it. The last exception is re-raised.

    Use as ``for attempt in retrying(...): with attempt: ...``.
    """

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = retry_after(exc) if exc is not None else None
        return backoff.delay(state.attempt_number, retry_after_s=after)

    def out_of_time(state: tenacity.RetryCallState) -> bool:
        # tenacity computes the wait before asking stop: upcoming_sleep is this delay.
        return deadline is not None and time.monotonic() + state.upcoming_sleep >= deadline

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, attempts)) | tenacity.stop_any(out_of_time),
        wait=wait,
        retry=tenacity.retry_if_exception(retryable),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
