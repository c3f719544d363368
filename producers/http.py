"""The producers' one retrying JSON GET, shared by the MusicBrainz and iTunes clients.

Every try first takes a slot from the shared :class:`~producers.ratelimit.RateLimiter`.
Then, under the policy of :mod:`contract.retry`:

* throttling (the caller's ``throttled(status, body)``, asked first: an upstream may
  say "over quota" in a 200 body): the shared limiter is penalised by the un-jittered
  step (:meth:`~contract.retry.Backoff.penalty`, Retry-After as a floor), so *every*
  producer process backs off; the next slot comes after it.
* 200: the body (a UTF-8 byte order mark and blank lines stripped) is decoded as JSON
  and checked by the caller's ``check``; a malformed answer is
  :class:`UpstreamUnavailable` at once, never retried.
* other 5xx and network errors: this process sleeps the full-jitter delay
  (:meth:`~contract.retry.Backoff.delay`, Retry-After as a floor).
* any other status: :class:`UpstreamRejected` (``.status``), never retried.

A body larger than :data:`MAX_BODY_BYTES` is :class:`UpstreamUnavailable` at once (read as
it streams in, never held whole); one that takes longer than :data:`MAX_READ_S` to arrive
is a network error (retried). When the attempts run out: :class:`UpstreamUnavailable`.
There is no sleep after the last attempt. A retry whose slot the limiter refuses
(:class:`~producers.ratelimit.RateLimitTimeout` under a caller's
:meth:`~producers.ratelimit.RateLimiter.bounded` wait, typically right after a throttling
penalty) is :class:`UpstreamUnavailable` too: the upstream was asked and did not answer,
which is not the same as "busy, not asked" (a refused *first* slot, re-raised).
``stats`` counts ``requests``, ``retries`` and ``throttled``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import requests
import urllib3

from contract.errors import UpstreamError
from contract.retry import Backoff, parse_retry_after
from producers.ratelimit import RateLimiter, RateLimitTimeout

BOM = b"\xef\xbb\xbf"
# The largest body read (a 100-disc box set with its ISRCs is a few MB): past it the
# answer is refused as it streams in, never held whole in memory.
MAX_BODY_BYTES = 64 * 1024 * 1024
_CHUNK = 256 * 1024
MAX_READ_S = 120.0  # the longest a body may take to arrive, once its headers have


class UpstreamUnavailable(UpstreamError):
    """The upstream kept failing (5xx, throttling, network) after every retry."""

    code = "upstream_unavailable"


class UpstreamRejected(UpstreamError):
    """The upstream answered a non-retryable error status (4xx): ``status`` says which."""

    code = "upstream_rejected"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "status": str(self.status)}


@dataclass
class JsonGet:
    """How one upstream is called: ``label`` names it in errors; ``throttled`` tells its
    "slow down" answers; ``check`` returns a problem with a decoded body, or ``None``."""

    session: requests.Session
    limiter: RateLimiter
    backoff: Backoff
    attempts: int
    timeout: tuple[float, float]
    sleep: Callable[[float], None]
    stats: MutableMapping[str, int]
    label: str
    throttled: Callable[[int, bytes], bool]
    check: Callable[[Any], str | None]
    max_body_bytes: int = MAX_BODY_BYTES
    max_read_s: float = MAX_READ_S

    def __post_init__(self) -> None:
        # Stream every answer (a Session default, so an injected session's get() is
        # called as before): the body is read in chunks and refused past max_body_bytes.
        self.session.stream = True

    def __call__(self, path: str, url: str, params: dict[str, Any] | None = None) -> Any:
        """GET ``url`` (``path`` names it in errors) and return the checked JSON."""
        last = ""
        for failures in range(self.attempts):
            if failures:
                self.stats["retries"] += 1
            try:
                self.limiter.acquire()
            except RateLimitTimeout as exc:
                if not failures:
                    raise  # busy before any call: the caller may ask another source
                # Asked, and told to slow down or failed: this is no answer, and must not
                # read as "not asked" (a caller would take the other sources' miss as final).
                raise UpstreamUnavailable(
                    f"{self.label} {path}: gave up after {failures} attempts ({last}; "
                    f"{exc.message})") from None
            self.stats["requests"] += 1
            try:
                resp = self.session.get(url, params=params, timeout=self.timeout)
                body = self._read(resp)
            except requests.RequestException as exc:
                last = f"network error: {exc.__class__.__name__}: {exc}"
                self._pause(failures + 1, None, shared=False)
                continue
            if body is None:  # the same answer again would be as large: not retried
                raise UpstreamUnavailable(f"{self.label} {path}: HTTP {resp.status_code} "
                                          f"body over {self.max_body_bytes} bytes")
            status = resp.status_code
            if body.startswith(BOM):  # JSON text may not carry one (RFC 8259), some do
                body = body[len(BOM):]
            body = body.strip()
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            # Before the 200 branch: Deezer says "over quota" in a 200 body.
            if self.throttled(status, body):
                self.stats["throttled"] += 1
                last = f"HTTP {status} (throttled)"
                self._pause(failures + 1, retry_after, shared=True)
                continue
            if status == 200:
                return self._decode(path, body)
            if status >= 500:
                last = f"HTTP {status}"
                self._pause(failures + 1, retry_after, shared=False)
                continue
            raise UpstreamRejected(f"{self.label} {path}: HTTP {status}", status)
        raise UpstreamUnavailable(
            f"{self.label} {path}: gave up after {self.attempts} attempts ({last})")

    def _read(self, resp: Any) -> bytes | None:
        """The whole body, or None past ``max_body_bytes`` (the connection closed)."""
        if not isinstance(resp, requests.Response):
            return resp.content  # a test double: already whole
        try:
            declared = int(resp.headers.get("Content-Length") or 0)
        except ValueError:
            declared = 0
        if declared > self.max_body_bytes:
            resp.close()
            return None
        chunks: list[bytes] = []
        size = 0
        # The read timeout bounds each wait for bytes, not the whole body: an answer that
        # trickles in (a byte every few seconds) would hold this producer for hours.
        deadline = time.monotonic() + self.max_read_s
        try:
            while True:
                if time.monotonic() > deadline:
                    raise requests.ConnectionError(
                        f"body not read within {self.max_read_s:g} s ({size} bytes)")
                try:
                    # read1: whatever has arrived (decoded), so the deadline is checked
                    chunk = resp.raw.read1(_CHUNK, decode_content=True)
                except urllib3.exceptions.HTTPError as exc:  # cut off, timed out
                    raise requests.ConnectionError(f"{type(exc).__name__}: {exc}") from None
                if not chunk:
                    break
                size += len(chunk)
                if size > self.max_body_bytes:
                    return None
                chunks.append(chunk)
        finally:
            resp.close()
        return b"".join(chunks)

    def _pause(self, failures: int, retry_after_s: float | None, *, shared: bool) -> None:
        if shared:  # every process waits, the next acquire() included
            self.limiter.penalize(self.backoff.penalty(failures, retry_after_s=retry_after_s))
        elif failures < self.attempts:  # no sleep after the last attempt
            self.sleep(self.backoff.delay(failures, retry_after_s=retry_after_s))

    def _decode(self, path: str, body: bytes) -> Any:
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise UpstreamUnavailable(
                f"{self.label} {path}: malformed JSON body ({exc})") from None
        problem = self.check(data)
        if problem:
            raise UpstreamUnavailable(f"{self.label} {path}: {problem}")
        return data
