"""producers/http.py: the producers' one retrying JSON GET, with fake session and limiter."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from contract.retry import Backoff
from producers.http import JsonGet, UpstreamRejected, UpstreamUnavailable


class _Response:
    def __init__(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None):
        self.status_code = status
        self.content = body
        self.headers = headers or {}


class _Session:
    def __init__(self, answers: list[_Response | Exception]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, Any]] = []

    def get(self, url: str, params: Any = None, timeout: Any = None) -> _Response:
        self.calls.append((url, params))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class _Limiter:
    def __init__(self) -> None:
        self.acquired = 0
        self.penalties: list[float] = []

    def acquire(self) -> float:
        self.acquired += 1
        return 0.0

    def penalize(self, seconds: float) -> float:
        self.penalties.append(seconds)
        return seconds


def _getter(answers: list[_Response | Exception], attempts: int = 4):
    sleeps: list[float] = []
    limiter = _Limiter()
    stats = {"requests": 0, "retries": 0, "throttled": 0}
    get = JsonGet(_Session(answers), limiter, Backoff(base_s=1.0, cap_s=10.0),  # type: ignore[arg-type]
                  attempts, (1.0, 1.0), sleeps.append, stats, label="Test",
                  throttled=lambda status, body: status == 429,
                  check=lambda data: None if isinstance(data, dict) else "not an object")
    return get, limiter, sleeps, stats


def test_throttling_penalises_the_shared_limiter_unjittered_with_retry_after() -> None:
    get, limiter, sleeps, stats = _getter([
        _Response(429), _Response(429, headers={"Retry-After": "7"}),
        _Response(429, headers={"Retry-After": "3600"}), _Response(200, b"\n\n{\"a\": 1}\n")])
    assert get("p", "http://x/p") == {"a": 1}
    assert limiter.penalties == [1.0, 7.0, 10.0]  # step 1 s; Retry-After floor, capped
    assert sleeps == [] and limiter.acquired == 4
    assert stats == {"requests": 4, "retries": 3, "throttled": 3}


def test_5xx_and_network_errors_sleep_locally_and_not_after_the_last_attempt() -> None:
    get, limiter, sleeps, stats = _getter(
        [_Response(502), requests.ConnectionError("reset"),
         _Response(503, headers={"Retry-After": "5"}), _Response(500)])
    with pytest.raises(UpstreamUnavailable, match=r"gave up after 4 attempts \(HTTP 500\)"):
        get("p", "http://x/p")
    assert len(sleeps) == 3 and 0 <= sleeps[0] <= 1.0 and 0 <= sleeps[1] <= 2.0
    assert sleeps[2] == 5.0  # Retry-After above the 4 s step
    assert limiter.penalties == [] and stats["requests"] == 4


def test_other_statuses_and_bad_bodies_are_never_retried() -> None:
    get, *_ = _getter([_Response(404)])
    with pytest.raises(UpstreamRejected) as info:
        get("p", "http://x/p")
    assert info.value.status == 404 and info.value.code == "upstream_rejected"
    get, *_ = _getter([_Response(200, b"<html>")])
    with pytest.raises(UpstreamUnavailable, match="malformed JSON body"):
        get("p", "http://x/p")
    get, *_ = _getter([_Response(200, b"[1]")])
    with pytest.raises(UpstreamUnavailable, match="Test p: not an object"):
        get("p", "http://x/p")


def test_a_body_with_a_utf8_byte_order_mark_is_json() -> None:
    """Written by the API-layer review: a 200 answer that starts with a UTF-8 BOM (some
    proxies and Windows tools add one) was "malformed JSON" before."""
    get, *_ = _getter([_Response(200, b"\xef\xbb\xbf\n{\"a\": \"\xc3\xa9\"}\n")])
    assert get("p", "http://x/p") == {"a": "é"}


class _BoundedLimiter(_Limiter):
    """A limiter under a caller's bound: the first slot is granted, later ones (after a
    penalty) are further away than the bound."""

    def acquire(self) -> float:
        from producers.ratelimit import RateLimitTimeout

        self.acquired += 1
        if self.acquired > 1:
            raise RateLimitTimeout("next slot in 3.00s exceeds timeout 1.0s")
        return 0.0


def test_a_retry_refused_by_a_bounded_limiter_is_unavailable_not_busy() -> None:
    """Written by the API-layer review. Throttled, then the retry's slot is beyond the
    caller's bound: before, RateLimitTimeout escaped, which the resolver reads as "source
    busy, not asked" and so took the other sources' miss as final (no_confident_match,
    remembered). It must be upstream_unavailable (transient). A refused FIRST slot is still
    RateLimitTimeout: nothing was asked."""
    from producers.ratelimit import RateLimitTimeout

    get, _, _, stats = _getter([_Response(429), _Response(200, b"{}")])
    get.limiter = _BoundedLimiter()
    with pytest.raises(UpstreamUnavailable, match=r"HTTP 429 \(throttled\)") as info:
        get("p", "http://x/p")
    assert info.value.code == "upstream_unavailable" and stats["requests"] == 1
    get, _, _, stats = _getter([_Response(200, b"{}")])
    get.limiter = _BoundedLimiter()
    get.limiter.acquired = 1  # the first slot already refused
    with pytest.raises(RateLimitTimeout):
        get("p", "http://x/p")
    assert stats["requests"] == 0


def _streamed(body: bytes) -> requests.Response:
    """A real Response whose body streams in without a Content-Length (chunked)."""
    import io

    import urllib3

    resp = requests.Response()
    resp.status_code = 200
    resp.raw = urllib3.HTTPResponse(body=io.BytesIO(body), preload_content=False)
    return resp


def test_a_body_without_length_is_cut_at_the_cap_as_it_streams() -> None:
    """Written by the API-layer review: a chunked answer larger than the cap is refused
    while it streams in (upstream_unavailable, not retried); one under it is read."""
    get, _, _, stats = _getter([_streamed(b'{"a": "' + b"x" * 5000 + b'"}'),
                                _streamed(b'{"a": 1}')])
    get.max_body_bytes = 1000
    with pytest.raises(UpstreamUnavailable, match="body over 1000 bytes"):
        get("p", "http://x/p")
    assert stats["requests"] == 1
    assert get("p", "http://x/p") == {"a": 1}
