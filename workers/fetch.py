"""Download preview clips: the only module that fetches URLs, SSRF-safe by construction.

:func:`fetch_preview` returns the raw bytes of one preview or raises a typed
:class:`FetchError`. The rules, checked on the first URL and again on every redirect hop:

* **Scheme and host.** http/https only; the host must equal an entry of
  ``settings.allowed_audio_hosts`` or be a subdomain of one on a dot boundary
  (case-insensitive, IDNA/UTS 46 A-labels, trailing dot ignored: :mod:`contract.hosts`,
  the rule producers check before they make a job). URLs with credentials,
  whitespace, control characters or backslashes are refused (parser disagreements about
  those are the classic filter bypass).
* **Addresses.** The host is resolved and *every* address must be public: private,
  loopback, link-local (169.254.169.254 included), multicast, reserved, unspecified,
  shared (100.64/10), site-local, Teredo, and IPv4-mapped / 6to4 / NAT64 forms of those
  are refused. Exempt are only hosts an operator explicitly meant to be private: an IP
  literal listed exactly (tests list ``127.0.0.1``), a name listed exactly in
  ``settings.private_audio_hosts`` (an in-cluster media server), and ``localhost``
  listed exactly, which may resolve to loopback addresses only. Listing a *name* in the
  allowlist does not exempt it: a production CDN name that DNS points at 127.0.0.1 or
  169.254.169.254 is refused. Matching is by name, so ``localhost`` is refused unless
  ``localhost`` itself is listed, whatever it resolves to.
* **DNS pinning.** Resolution and the address check happen inside the connection's
  ``_new_conn`` (urllib3's only socket factory), which connects to exactly the addresses
  it checked: there is no second lookup a rebinding DNS server could answer differently.
  The URL is not rewritten to an IP, so the Host header, SNI and certificate checks still
  use the name. The connection also re-checks the *name* against the allowlist, so a URL
  parser disagreement between this module and urllib3 cannot reach an unlisted host.
  Pooled keep-alive connections stay bound to their checked address. Proxies, ``.netrc``
  and other environment settings are disabled (``trust_env = False``), since a proxy
  would do its own resolution.
* **Limits.** Connect and read timeouts per socket operation, plus a total wall-clock
  budget (``fetch_total_timeout_s``) for the whole call, retries and backoff included. It
  is enforced between reads and by a watchdog timer that shuts the active socket down at
  the deadline, so slow-drip headers or bodies cannot hold a worker; each connect is cut
  to what is left of it too (the watchdog only sees connected sockets). DNS resolution is
  not bounded by it. ``fetch_max_bytes`` is checked against Content-Length up front and
  against bytes received while streaming.
* **Framing.** A body is whole only as its framing says: a short body (Content-Length or
  chunked) is an error, never a shorter clip. Responses whose framing cannot be trusted
  are refused: a Content-Length that is not 1*DIGIT, a header block that does not parse
  (http.client would drop the headers after the bad line). Interim 1xx responses before
  the final one are skipped, at most ``MAX_INTERIM_RESPONSES``.
* **No decompression.** Requests send ``Accept-Encoding: identity`` and bodies are read
  raw (``decode_content=False``). A response that still declares a Content-Encoding
  other than identity is refused at its headers (``fetch_failed``, "compressed response
  refused") before any body byte is read, so a gzip bomb is never inflated; any bytes
  that were read would be counted compressed, as received. So is a Transfer-Encoding
  other than ``chunked``, and a redirect's body is never read at all.
* **Retries.** ``settings.fetch_retries`` is the total number of attempts. Timeouts,
  connection errors, 429 and 5xx are retried under :mod:`contract.retry`'s policy: full
  jitter (``uniform(0, min(cap, base * 2**(attempt-1)))``, base 0.5 s, cap 8 s), raised to
  ``Retry-After`` (seconds or HTTP date) when the server sends one, capped at 8 s; other
  4xx never are. A retry restarts from the original URL. No sleep goes past the total
  budget: a retry whose wait would reach it is not made.

Error codes (stable): ``fetch_failed``, ``host_not_allowed``, ``too_large`` and
``http_<status>`` (e.g. ``http_404``, ``http_503``).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import re
import socket
import sys
import threading
import time
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from http.cookiejar import DefaultCookiePolicy
from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HeaderParsingError,
    NameResolutionError,
    NewConnectionError,
)
from urllib3.util.connection import allowed_gai_family
from urllib3.util.response import assert_header_parsing

from contract import __version__
from contract.errors import PreviewvecError, TooLarge
from contract.hosts import AllowedHosts, is_ip, normalize_host
from contract.retry import Backoff, parse_retry_after, retrying
from contract.settings import Settings

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0
CHUNK_BYTES = 64 * 1024
MAX_URL_CHARS = 2048
MAX_INTERIM_RESPONSES = 10
USER_AGENT = f"previewvec/{__version__}"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
FETCH_ERROR_CODES: tuple[str, ...] = ("fetch_failed", "host_not_allowed", "too_large")
"""Fixed codes; ``http_<status>`` codes come on top."""

_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f-\x9f\\]")
_DIGITS = re.compile(r"[0-9]+")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix: embeds an IPv4 address

# Seams for tests: resolution and sleeping.
_getaddrinfo = socket.getaddrinfo
_sleep = time.sleep


# --------------------------------------------------------------------------- errors


class FetchError(PreviewvecError):
    """A preview could not be fetched. ``url`` is the failing hop; ``attempts`` counts tries;
    ``retryable`` says whether trying again later may help (see :func:`is_retryable`)."""

    code = "fetch_failed"

    def __init__(
        self, reason: str, *, url: str, retryable: bool = False, attempts: int = 1
    ) -> None:
        self.reason = reason
        self.url = url
        self.retryable = retryable
        self.attempts = attempts
        super().__init__(self._format())

    def _format(self) -> str:
        shown = self.url if len(self.url) <= 300 else self.url[:297] + "..."
        text = f"{self.reason}: {shown}"
        if self.attempts > 1:
            text += f" (after {self.attempts} attempts)"
        return text

    def _set_attempts(self, attempts: int) -> None:
        self.attempts = attempts
        self.message = self._format()
        self.args = (self.message,)


class FetchFailed(FetchError):
    """Network failure, timeout or budget exhausted (after retries), or an unusable body."""

    code = "fetch_failed"


class HostNotAllowed(FetchError):
    """Scheme, host or resolved address refused by the SSRF policy."""

    code = "host_not_allowed"


class ResponseTooLarge(FetchError, TooLarge):
    """The body is (or declares itself) larger than ``fetch_max_bytes``."""

    code = "too_large"


class HTTPStatusError(FetchError):
    """An HTTP error status; ``code`` is ``http_<status>``. 429 and 5xx are retryable."""

    code = "http_error"  # placeholder: each instance carries http_<status>

    def __init__(
        self, status: int, *, url: str, retry_after: float | None = None, attempts: int = 1
    ) -> None:
        self.status = status
        self.code = f"http_{status}"
        self.retry_after = retry_after
        retryable = status == 429 or status >= 500
        super().__init__(f"HTTP {status}", url=url, retryable=retryable, attempts=attempts)


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed fetch is worth retrying later (for the Celery task's own retries)."""
    if isinstance(exc, FetchError):
        return exc.retryable
    if isinstance(exc, requests.exceptions.SSLError):
        return False
    return isinstance(exc, requests.Timeout | requests.ConnectionError)


# --------------------------------------------------------------------------- host policy


def is_public_address(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True only for globally routable unicast addresses (see the module docstring)."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        if ip in _NAT64:  # DNS64 networks reach public IPv4 this way; judge the embedded v4
            return is_public_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None and not is_public_address(ip.sixtofour):
            return False
        if ip.teredo is not None or ip.is_site_local:
            return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


class HostPolicy(AllowedHosts):
    """The allowlist (:class:`contract.hosts.AllowedHosts`, the rule producers check
    too); decides names and resolved addresses.

    ``private_hosts``: names (matched exactly) that may resolve to non-public addresses
    when they are allowed; see "Addresses" in the module docstring.
    """

    def __init__(self, allowed_hosts: Iterable[str], private_hosts: Iterable[str] = ()) -> None:
        super().__init__(allowed_hosts)
        self.private: frozenset[str] = frozenset(normalize_host(h) for h in private_hosts)

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy:
        return cls(settings.allowed_audio_hosts, settings.private_audio_hosts)

    def check_name(self, host: str, url: str) -> bool:
        """Raise :class:`HostNotAllowed` unless allowed; return whether listed exactly."""
        try:
            name = normalize_host(host)
        except ValueError as exc:
            raise HostNotAllowed(str(exc), url=url) from None
        listing = self.listing(name)
        if not listing:
            raise HostNotAllowed(f"host {name!r} is not in allowed_audio_hosts", url=url)
        return listing == "exact"

    def resolve(self, host: str, port: int, dns_host: str | None = None) -> list[Any]:
        """Check the name, resolve it once and check every address; return getaddrinfo
        entries to connect to. Raises :class:`HostNotAllowed` or ``socket.gaierror``."""
        where = f"//{host}:{port}"
        exact = self.check_name(host, where)
        name = normalize_host(host)  # check_name has parsed it
        lookup = (dns_host or host).strip("[]")  # as urllib3 does for IPv6 literals
        infos = _getaddrinfo(lookup, port, allowed_gai_family(), socket.SOCK_STREAM)
        if exact and (is_ip(name) or name in self.private):
            return infos  # the operator listed this very address, or named it private
        loopback_only = exact and name == "localhost"
        for info in infos:
            address = str(info[4][0])
            if loopback_only and _is_loopback(address):
                continue
            # Refuse if *any* answer is non-public: a mixed answer is an attack signal.
            if not is_public_address(address):
                raise HostNotAllowed(
                    f"host {host!r} resolves to non-public address {address}", url=where
                )
        return infos


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _check_url(url: str, policy: HostPolicy) -> None:
    """Static checks on one hop's URL (before any network I/O)."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise FetchFailed(f"invalid URL (empty or over {MAX_URL_CHARS} chars)", url=str(url))
    if _URL_FORBIDDEN.search(url):
        raise FetchFailed("invalid URL (whitespace, control character or backslash)", url=url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise FetchFailed(f"invalid URL ({exc})", url=url) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise HostNotAllowed(f"scheme {scheme!r} is not allowed (http/https only)", url=url)
    if "@" in parts.netloc:
        raise HostNotAllowed("URL with credentials refused", url=url)
    if not parts.hostname:
        raise FetchFailed("invalid URL (no host)", url=url)
    policy.check_name(parts.hostname, url)


# --------------------------------------------------------------------------- watchdog

_WATCHDOG: ContextVar[_Watchdog | None] = ContextVar("previewvec_fetch_watchdog", default=None)


class _Watchdog:
    """Enforces the total budget on blocking socket reads: at the deadline it shuts down the
    socket currently in use, so whatever read is blocked returns at once."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.expired = False
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self.expired and sock is not None:
                _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                _shutdown(self._sock)

    def cancel(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._sock = None


def _shutdown(sock: socket.socket) -> None:
    # The plain-socket method even for TLS sockets: it only touches the fd, never the SSL
    # object another thread is blocked in.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _watch(sock: socket.socket | None) -> None:
    watchdog = _WATCHDOG.get()
    if watchdog is not None:
        watchdog.watch(sock)


# --------------------------------------------------------------------------- pinned session


class _PinnedConnectionMixin:
    """Resolve, check and connect in one place (see "DNS pinning" in the module docstring)."""

    policy: ClassVar[HostPolicy]
    # Provided by urllib3's HTTPConnection:
    host: str
    port: int
    timeout: Any
    source_address: tuple[str, int] | None
    socket_options: Any
    sock: socket.socket | None
    _dns_host: str

    def _new_conn(self) -> socket.socket:
        try:
            infos = self.policy.resolve(self.host, self.port, self._dns_host)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        error: OSError | None = None
        watchdog = _WATCHDOG.get()
        for family, socktype, proto, _canon, sockaddr in infos:
            timeout = self.timeout if isinstance(self.timeout, int | float) else None
            if watchdog is not None:
                # The watchdog cannot interrupt a connect (it only sees connected sockets),
                # and every address would get the full connect timeout: a name with many
                # black-holed addresses would overrun the total budget. Cap each connect.
                left = watchdog.deadline - time.monotonic()
                if left <= 0 or watchdog.expired:
                    error = TimeoutError("total time budget exhausted while connecting")
                    break
                timeout = left if timeout is None else min(timeout, left)
            sock = None
            try:
                sock = socket.socket(family, socktype, proto)
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                if timeout is not None:
                    sock.settimeout(timeout)
                if self.source_address:
                    sock.bind(self.source_address)
                sock.connect(sockaddr)  # the address just checked, never a fresh lookup
            except OSError as exc:
                error = exc
                if sock is not None:
                    sock.close()
                continue
            sys.audit("http.client.connect", self, self.host, self.port)
            _watch(sock)
            return sock
        if isinstance(error, TimeoutError):
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out (connect timeout={self.timeout})"
            ) from error
        raise NewConnectionError(  # type: ignore[arg-type]
            self, f"Failed to establish a new connection: {error or 'no addresses'}"
        ) from error

    def getresponse(self) -> Any:
        _watch(self.sock)  # reused keep-alive connections never pass through _new_conn
        return super().getresponse()  # type: ignore[misc]


class _Response(http.client.HTTPResponse):
    """Skips informational (1xx) responses before the final one, as RFC 9110 §15.2 asks of
    clients: http.client skips only 100 Continue, so a ``103 Early Hints`` was taken for
    the final response. At most :data:`MAX_INTERIM_RESPONSES` (100s included), so a flood
    of them fails at once rather than at the total budget."""

    _interim = 0

    def begin(self) -> None:
        super().begin()
        # http.client stops parsing headers at the first malformed line and drops the rest
        # (a Content-Length or Transfer-Encoding after it, so a cut body would pass as
        # whole); urllib3 only logs that, with a traceback. Refuse such a response.
        try:
            assert_header_parsing(self.msg)
        except HeaderParsingError as exc:
            detail = str(exc)
            detail = detail if len(detail) <= 120 else detail[:117] + "..."
            raise http.client.HTTPException(f"malformed response headers ({detail})") from None

    def _read_status(self) -> tuple[str, int, str]:
        while True:
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if not 100 <= status < 200 or status == 101:  # 101: a protocol switch, refused
                return version, status, reason
            self._interim += 1
            if self._interim > MAX_INTERIM_RESPONSES:
                raise http.client.HTTPException(
                    f"more than {MAX_INTERIM_RESPONSES} interim (1xx) responses"
                )
            http.client.parse_headers(self.fp)  # the interim response's headers, skipped


def _pool_classes(policy: HostPolicy) -> dict[str, type[HTTPConnectionPool]]:
    attrs = {"policy": policy, "response_class": _Response}
    http_conn = type("PinnedHTTPConnection", (_PinnedConnectionMixin, HTTPConnection), attrs)
    https_conn = type("PinnedHTTPSConnection", (_PinnedConnectionMixin, HTTPSConnection), attrs)
    http_pool = type(
        "PinnedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}
    )
    https_pool = type(
        "PinnedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}
    )
    return {"http": http_pool, "https": https_pool}


class _PinnedAdapter(HTTPAdapter):
    __attrs__: ClassVar[list[str]] = [*HTTPAdapter.__attrs__, "policy"]

    def __init__(self, policy: HostPolicy, **kwargs: Any) -> None:
        self.policy = policy  # before super().__init__, which builds the pool manager
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self.policy)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        # A proxy resolves names itself, which would bypass the address checks: fail closed.
        raise HostNotAllowed("proxies are not allowed for preview fetching", url=proxy)


class _PreviewSession(requests.Session):
    """A session that never looks at redirects: :func:`_attempt` follows them by hand.

    Even with ``allow_redirects=False``, ``Session.send`` prepares ``Response.next`` through
    ``resolve_redirects``, which reads a redirect's whole body into memory first, uncapped
    and *decoded* (a 302 carrying a gzip bomb or an endless body would be inflated or
    buffered before this module sees its status). With no redirect target that never runs;
    the unread body is dropped with its connection.
    """

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        return None


def make_session(settings: Settings) -> requests.Session:
    """A pooled session that enforces the host/address policy on every connection.

    Build one per worker process and pass it to :func:`fetch_preview`.
    """
    policy = HostPolicy.from_settings(settings)
    session = _PreviewSession()
    session.trust_env = False  # no proxies, .netrc credentials or CA overrides from env
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # stateless fetches
    session.headers.update(
        {
            "User-Agent": USER_AGENT,
            "Accept": "audio/*, application/octet-stream;q=0.9, */*;q=0.5",
            "Accept-Encoding": "identity",
        }
    )
    session.adapters.clear()
    adapter = _PinnedAdapter(policy, pool_connections=8, pool_maxsize=8, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _check_session(session: requests.Session, policy: HostPolicy) -> None:
    if not isinstance(session, _PreviewSession):
        raise TypeError("session must come from workers.fetch.make_session()")
    for prefix in ("http://", "https://"):
        adapter = session.adapters.get(prefix)
        if not isinstance(adapter, _PinnedAdapter) or len(session.adapters) != 2:
            raise TypeError("session must come from workers.fetch.make_session()")
        if (adapter.policy.allowed, adapter.policy.private) != (policy.allowed, policy.private):
            raise ValueError("session was made with different allowed_audio_hosts or "
                             "private_audio_hosts")


# --------------------------------------------------------------------------- fetching


@dataclass(frozen=True)
class FetchResult:
    data: bytes = field(repr=False)
    final_url: str
    content_type: str
    elapsed_s: float
    attempts: int


def fetch_preview(
    url: str,
    settings: Settings,
    *,
    session: requests.Session | None = None,
    backoff_base_s: float = BACKOFF_BASE_S,
    backoff_cap_s: float = BACKOFF_CAP_S,
    budget_s: float | None = None,
) -> FetchResult:
    """Download one preview under the SSRF policy, limits and retries of the module docstring.

    ``session`` should be the worker's :func:`make_session` (same settings); without one a
    throw-away session is used. ``budget_s`` shortens the total budget below
    ``settings.fetch_total_timeout_s`` (what is left of it after an earlier fetch of the
    same job, so that the two stay inside one budget). Raises :class:`FetchError`
    subclasses only.
    """
    policy = HostPolicy.from_settings(settings)
    _check_url(url, policy)  # refuse bad URLs before building anything
    own_session = session is None
    if session is None:
        session = make_session(settings)
    else:
        _check_session(session, policy)
    start = time.monotonic()
    if budget_s is not None:  # the shorter budget is the one every message names
        settings = replace(settings, fetch_total_timeout_s=max(
            0.0, min(settings.fetch_total_timeout_s, budget_s)))
    deadline = start + settings.fetch_total_timeout_s
    watchdog = _Watchdog(deadline)
    token = _WATCHDOG.set(watchdog)
    tries = retrying(
        Backoff(backoff_base_s, backoff_cap_s),
        attempts=max(1, settings.fetch_retries),
        retryable=lambda exc: isinstance(exc, FetchError) and exc.retryable,
        retry_after=lambda exc: exc.retry_after if isinstance(exc, HTTPStatusError) else None,
        deadline=deadline,
        sleep=_sleep,  # read now, so tests can replace it
    )
    attempt = 0
    try:
        for try_ in tries:
            with try_:
                attempt = try_.retry_state.attempt_number
                data, final_url, content_type = _attempt(
                    url, session, policy, settings, deadline, watchdog
                )
        return FetchResult(
            data=data,
            final_url=final_url,
            content_type=content_type,
            elapsed_s=time.monotonic() - start,
            attempts=attempt,
        )
    except FetchError as exc:
        exc._set_attempts(attempt)
        raise
    finally:
        watchdog.cancel()
        _WATCHDOG.reset(token)
        if own_session:
            session.close()


def _attempt(
    url: str,
    session: requests.Session,
    policy: HostPolicy,
    settings: Settings,
    deadline: float,
    watchdog: _Watchdog,
) -> tuple[bytes, str, str]:
    """One try: follow up to ``fetch_max_redirects`` redirects by hand, then read the body."""
    current = url
    redirects = 0
    while True:
        _check_url(current, policy)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or watchdog.expired:
            raise _budget_exceeded(current, settings)
        try:
            response = session.get(
                current,
                stream=True,
                allow_redirects=False,
                timeout=(
                    min(settings.fetch_connect_timeout_s, remaining),
                    min(settings.fetch_read_timeout_s, remaining),
                ),
            )
        except HostNotAllowed as exc:  # raised by the pinned connection; name the real URL
            raise HostNotAllowed(exc.reason, url=current) from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _network_error(exc, current, settings, watchdog) from exc
        try:
            status = response.status_code
            if status in REDIRECT_STATUSES:
                redirects += 1
                if redirects > settings.fetch_max_redirects:
                    raise FetchFailed(
                        f"more than {settings.fetch_max_redirects} redirects", url=current
                    )
                location = _header_text(response.headers.get("Location", "")).strip()
                if not location:
                    raise FetchFailed(f"HTTP {status} redirect without Location", url=current)
                try:
                    current = urljoin(current, location)
                except ValueError as exc:  # e.g. "http://[127.0.0.1]/": urlsplit refuses it
                    shown = location if len(location) <= 100 else location[:97] + "..."
                    raise FetchFailed(
                        f"invalid redirect Location {shown!r} ({exc})", url=current
                    ) from None
                continue
            if status >= 300:
                raise HTTPStatusError(
                    status,
                    url=current,
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                )
            if status not in (200, 203):
                raise FetchFailed(f"unexpected HTTP {status}", url=current)
            _check_codings(response, current)
            data = _read_body(response, current, settings, deadline, watchdog)
            return data, current, response.headers.get("Content-Type", "")
        finally:
            response.close()  # drops the connection unless the body was read to the end
            watchdog.watch(None)


def _check_codings(response: requests.Response, url: str) -> None:
    """Refuse, at the headers, a body this module would not read as sent (see "No
    decompression" in the module docstring)."""
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise FetchFailed(
            f"compressed response refused (Content-Encoding: {encoding[:40]})", url=url
        )
    # http.client de-chunks only a Transfer-Encoding of exactly "chunked"; with any other
    # (e.g. "gzip, chunked") it reads to EOF, and the chunk framing and the compressed
    # bytes would be taken for the clip.
    transfer = response.headers.get("Transfer-Encoding")
    if transfer is not None and transfer.strip().lower() not in ("chunked", "identity"):
        raise FetchFailed(f"unsupported Transfer-Encoding {transfer[:40]!r}", url=url)


def _header_text(value: str) -> str:
    """A header as sent: http.client decodes header bytes as Latin-1, but non-ASCII in a
    Location is UTF-8 in practice (requests re-decodes it the same way); undecodable
    bytes stay as they were."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _read_body(
    response: requests.Response,
    url: str,
    settings: Settings,
    deadline: float,
    watchdog: _Watchdog,
) -> bytes:
    cap = settings.fetch_max_bytes
    declared = response.headers.get("Content-Length")
    if declared is not None:
        # 1*DIGIT only (RFC 9110 §8.6): int() would also take "-1" (which urllib3 then
        # ignores, reading to EOF, so a truncated body passes as whole), "+5" or "1_0".
        if not _DIGITS.fullmatch(declared.strip()):
            raise FetchFailed(f"invalid Content-Length {declared[:40]!r}", url=url)
        size = int(declared)
        if size > cap:
            raise ResponseTooLarge(f"Content-Length {size} exceeds {cap} bytes", url=url)
    body = bytearray()
    try:
        while True:
            if watchdog.expired or time.monotonic() >= deadline:
                raise _budget_exceeded(url, settings)
            # read1: return what has arrived rather than wait for a full chunk, so the
            # budget is checked at the pace bytes arrive; raw bytes, never decoded.
            chunk = response.raw.read1(CHUNK_BYTES, decode_content=False)
            if not chunk:
                break
            body += chunk
            if len(body) > cap:
                raise ResponseTooLarge(f"body exceeds {cap} bytes", url=url)
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
        raise _network_error(exc, url, settings, watchdog) from exc
    if watchdog.expired:  # an EOF forced by the watchdog is not a complete body
        raise _budget_exceeded(url, settings)
    if not body:
        raise FetchFailed("empty body", url=url)
    return bytes(body)


def _budget_exceeded(url: str, settings: Settings) -> FetchFailed:
    return FetchFailed(
        f"total time budget of {settings.fetch_total_timeout_s:g} s exceeded",
        url=url,
        retryable=True,
    )


def _network_error(
    exc: BaseException, url: str, settings: Settings, watchdog: _Watchdog
) -> FetchFailed:
    if watchdog.expired:
        return _budget_exceeded(url, settings)
    detail = f"{type(exc).__name__}: {exc}"
    detail = detail if len(detail) <= 200 else detail[:197] + "..."
    if isinstance(exc, requests.exceptions.SSLError | urllib3.exceptions.SSLError):
        return FetchFailed(f"TLS failure ({detail})", url=url)  # certificates do not heal
    if isinstance(exc, requests.Timeout | urllib3.exceptions.TimeoutError | TimeoutError):
        return FetchFailed(f"timed out ({detail})", url=url, retryable=True)
    if isinstance(
        exc,
        requests.ConnectionError
        | requests.exceptions.ChunkedEncodingError
        | urllib3.exceptions.ProtocolError,
    ):
        return FetchFailed(f"connection failed ({detail})", url=url, retryable=True)
    # Checked before OSError: every requests exception is an OSError (IOError) too.
    if isinstance(exc, requests.RequestException | urllib3.exceptions.HTTPError):
        return FetchFailed(f"request failed ({detail})", url=url)
    return FetchFailed(f"connection failed ({detail})", url=url, retryable=True)
