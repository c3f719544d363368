"""contract/retry.py: the one backoff policy, the one Retry-After parser, the tenacity loop."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from email.utils import formatdate

import pytest

from contract.retry import RETRY_AFTER_MAX_S, Backoff, parse_retry_after, retrying

NOW = datetime(2026, 12, 2, 8, 0, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- backoff


def test_backoff_is_full_jitter_and_capped() -> None:
    backoff = Backoff(base_s=0.5, cap_s=8.0)  # the preview fetch's policy
    for attempt in range(1, 10):
        bound = min(8.0, 0.5 * 2 ** (attempt - 1))
        delays = [backoff.delay(attempt) for _ in range(50)]
        assert all(0 <= d <= bound for d in delays)
    assert backoff.delay(1, retry_after_s=3) == 3
    assert backoff.delay(1, retry_after_s=120) == 8.0


def test_backoff_bounds_with_a_seeded_rng() -> None:
    backoff = Backoff(base_s=1.0, cap_s=30.0)
    rng = random.Random(13)
    for failures, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (99, 30.0)]:
        assert backoff.step(failures) == ceiling
        delays = [backoff.delay(failures, rng=rng) for _ in range(2000)]
        assert all(0.0 <= d <= ceiling for d in delays)
        # Full jitter spreads over the whole interval, not only its upper half.
        assert min(delays) < 0.1 * ceiling and max(delays) > 0.9 * ceiling
    # Same seed, same delays: the policy draws from the rng it is given, nothing else.
    a = [backoff.delay(3, rng=random.Random(7)) for _ in range(3)]
    b = [backoff.delay(3, rng=random.Random(7)) for _ in range(3)]
    assert a == b


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert Backoff(base_s=0.5, cap_s=8.0).step(10_000) == 8.0
    assert 0 <= Backoff(base_s=0.5, cap_s=8.0).delay(10_000) <= 8.0


def test_retry_after_is_a_capped_floor() -> None:
    backoff = Backoff(base_s=0.01, cap_s=5.0)
    rng = random.Random(1)
    assert backoff.delay(1, retry_after_s=1.0, rng=rng) == 1.0  # above the jitter: wins
    assert backoff.delay(1, retry_after_s=1e9, rng=rng) == 5.0  # capped
    assert backoff.delay(1, retry_after_s=-3.0, rng=rng) <= 0.01  # nonsense: jitter only
    assert backoff.delay(1, retry_after_s=0.0, rng=rng) <= 0.01


def test_penalty_is_the_unjittered_step() -> None:
    backoff = Backoff(base_s=0.2, cap_s=0.2)
    assert [backoff.penalty(n) for n in (1, 2, 3)] == [0.2, 0.2, 0.2]
    assert Backoff(base_s=1.0, cap_s=60.0).penalty(3) == 4.0
    assert Backoff(base_s=1.0, cap_s=60.0).penalty(1, retry_after_s=9.0) == 9.0
    assert Backoff(base_s=1.0, cap_s=60.0).penalty(1, retry_after_s=3600.0) == 60.0


# --------------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("0.05", 0.05),  # not RFC delta-seconds, but servers send it; read leniently
        ("Wed, 02 Dec 2026 08:01:30 GMT", 90.0),  # IMF-fixdate
        ("Wednesday, 02-Dec-26 08:00:10 GMT", 10.0),  # obsolete RFC 850 form
        ("Wed Dec  2 08:00:20 2026", 20.0),  # asctime: no zone written, and still GMT
        ("Wed, 02 Dec 2026 08:00:30", 30.0),  # no zone: GMT (RFC 9110), not local time
        ("Wed, 02 Dec 2026 09:00:30 +0100", 30.0),  # a stray offset is still honoured
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: now
        ("99999999999999999999", RETRY_AFTER_MAX_S),  # huge: capped
        ("Fri, 31 Dec 9999 23:59:59 GMT", RETRY_AFTER_MAX_S),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1e3", None),
        ("inf", None),
        ("nan", None),
        ("3 seconds", None),
        ("Wed, 32 Dec 2026 08:00:00 GMT", None),
        ("٣", None),  # a non-ASCII digit is not a digit here
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    got = parse_retry_after(value, now=NOW)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_parse_retry_after_against_the_clock() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    soon = formatdate(time.time() + 60, usegmt=True)
    assert 50 < parse_retry_after(soon) <= 60  # type: ignore[operator]
    later = (datetime.now(UTC) + timedelta(hours=2)).strftime("%a, %d %b %Y %H:%M:%S")
    assert 7000 < parse_retry_after(later) <= 7200  # type: ignore[operator]


# --------------------------------------------------------------------------- tenacity loop


class _Flaky(Exception):
    def __init__(self, retry_after_s: float | None = None) -> None:
        super().__init__("flaky")
        self.retry_after_s = retry_after_s


def _run(tries, outcomes: list[BaseException | str]) -> tuple[str, int]:
    count = 0
    for attempt in tries:
        with attempt:
            count += 1
            outcome = outcomes.pop(0)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome, count
    raise AssertionError("unreachable")


def test_retrying_retries_then_succeeds_with_policy_waits() -> None:
    sleeps: list[float] = []
    tries = retrying(
        Backoff(base_s=0.5, cap_s=8.0),
        attempts=5,
        retryable=lambda exc: isinstance(exc, _Flaky),
        retry_after=lambda exc: getattr(exc, "retry_after_s", None),
        sleep=sleeps.append,
    )
    assert _run(tries, [_Flaky(), _Flaky(2.0), _Flaky(100.0), "ok"]) == ("ok", 4)
    assert 0 <= sleeps[0] <= 0.5 and sleeps[1:] == [2.0, 8.0]


def test_retrying_gives_up_with_the_last_exception() -> None:
    sleeps: list[float] = []
    tries = retrying(Backoff(0.1, 1.0), attempts=3, retryable=lambda e: True,
                     sleep=sleeps.append)
    last = _Flaky()
    with pytest.raises(_Flaky) as info:
        _run(tries, [_Flaky(), _Flaky(), last, "never"])
    assert info.value is last and len(sleeps) == 2  # no sleep after the last attempt


def test_retrying_never_retries_what_is_not_retryable() -> None:
    sleeps: list[float] = []
    tries = retrying(Backoff(0.1, 1.0), attempts=5,
                     retryable=lambda e: isinstance(e, _Flaky), sleep=sleeps.append)
    with pytest.raises(KeyError):
        _run(tries, [_Flaky(), KeyError("x"), "never"])
    assert len(sleeps) == 1


def test_retrying_never_sleeps_up_to_the_deadline() -> None:
    sleeps: list[float] = []
    tries = retrying(Backoff(0.1, 1.0), attempts=10, retryable=lambda e: True,
                     retry_after=lambda e: 5.0, deadline=time.monotonic() + 0.5,
                     sleep=sleeps.append)
    with pytest.raises(_Flaky):
        _run(tries, [_Flaky(), "never"])
    assert sleeps == []  # the 1 s wait (Retry-After 5 s, capped) does not fit in 0.5 s
    tries = retrying(Backoff(0.1, 1.0), attempts=10, retryable=lambda e: True,
                     retry_after=lambda e: 5.0, deadline=time.monotonic() + 30.0,
                     sleep=sleeps.append)
    assert _run(tries, [_Flaky(), "ok"]) == ("ok", 2)
    assert sleeps == [1.0]
