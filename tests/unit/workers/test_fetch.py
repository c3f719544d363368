"""workers.fetch against a real HTTP server on 127.0.0.1: SSRF policy, limits, retries."""

from __future__ import annotations

import contextlib
import functools
import gzip
import socket
import ssl
import sys
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests

from contract import __version__
from contract.errors import PreviewvecError, TooLarge
from contract.hosts import is_ip
from contract.settings import Settings
from tests.local_http import serve_in_background, stop_server
from workers import fetch
from workers.fetch import (
    FetchError,
    FetchFailed,
    HostNotAllowed,
    HostPolicy,
    HTTPStatusError,
    ResponseTooLarge,
    is_public_address,
    is_retryable,
    make_session,
    normalize_host,
)

CAP = 200_000
AUDIO = bytes(range(256)) * 256  # 64 KiB stand-in for an .m4a

pytestmark = pytest.mark.timeout(60)


@functools.cache
def _gzip_bomb() -> bytes:
    return gzip.compress(bytes(50_000_000), compresslevel=9)  # ~50 KB → 50 MB


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: Counter[str]
    seen: list[tuple[str, dict[str, str]]]
    lock: threading.Lock

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def do_GET(self) -> None:
        with self.lock:
            self.hits[self.path] += 1
            n = self.hits[self.path]
            self.seen.append((self.path, dict(self.headers)))
        path = urlsplit(self.path).path
        parts = path.strip("/").split("/")
        try:
            self._route(parts, n)
        except OSError:  # the client hung up (as it should, for the nasty routes)
            self.close_connection = True

    def _route(self, parts: list[str], n: int) -> None:
        head = parts[0]
        if head == "audio":
            self._send(200, AUDIO, Content_Type="audio/mp4")
        elif head == "status":
            self._send(int(parts[1]), b"nope")
        elif head == "flaky":  # 500, then 200
            self._send(500, b"oops") if n == 1 else self._send(200, AUDIO)
        elif head == "ratelimit":  # 429 + Retry-After, then 200
            self._send(429, b"slow down", Retry_After="1") if n == 1 else self._send(200, AUDIO)
        elif head == "redirect":  # /redirect/3 → /redirect/2 → … → /redirect/0 (audio)
            k = int(parts[1])
            if k == 0:
                self._send(200, AUDIO)
            else:
                self._send(302, Location=f"/redirect/{k - 1}")
        elif head == "to":
            self._send(302, Location=parse_qs(urlsplit(self.path).query)["u"][0])
        elif head == "to-utf8":  # a Location with raw UTF-8 bytes, as servers send them
            self._send(302, Location="/caf\u00e9/x".encode().decode("latin-1"))
        elif head == "caf%C3%A9":
            self._send(200, AUDIO)
        elif head == "cl-invalid":  # a Content-Length that is not 1*DIGIT, body to EOF
            self.send_response(200)
            self.send_header("Content-Length", parse_qs(urlsplit(self.path).query)["v"][0])
            self.end_headers()
            self.wfile.write(AUDIO)
            self.close_connection = True
        elif head == "te-gzip":  # a compressing transfer coding: framing + gzip, to EOF
            packed = gzip.compress(AUDIO)
            self.send_response(200)
            self.send_header("Transfer-Encoding", "gzip, chunked")
            self.end_headers()
            self._chunk(packed)
            self._chunk(b"")
            self.close_connection = True
        elif head == "hidden-length":  # a malformed header line, then the real framing
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: audio/mp4\r\nX-Bad header\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(AUDIO))
            self.wfile.write(AUDIO[: len(AUDIO) // 2])  # half of it, then hang up
            self.close_connection = True
        elif head == "set-cookie":  # cookies for this host and, by Domain, for others
            self.send_response(302 if "redirect" in self.path else 200)
            self.send_header("Set-Cookie", "sid=secret; Path=/")
            self.send_header("Set-Cookie", "wide=1; Domain=127.0.0.1; Path=/")
            self.send_header("Set-Cookie", "other=1; Domain=localhost; Path=/")
            if "redirect" in self.path:
                self.send_header("Location", "/audio")
            self.send_header("Content-Length", str(len(AUDIO)))
            self.end_headers()
            self.wfile.write(AUDIO)
        elif head == "echo-host":
            self._send(200, self.headers["Host"].encode())
        elif head == "empty":
            self._send(200)
        elif head == "cl-huge":  # declares 10× the cap, sends a little, hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(10 * CAP))
            self.end_headers()
            self.wfile.write(b"x" * 1024)
            self.close_connection = True
        elif head == "chunked-huge":  # 4× the cap, no Content-Length
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(4 * CAP // 16384):
                self._chunk(b"y" * 16384)
            self._chunk(b"")
        elif head == "drip":  # an endless slow chunked body: 100 B every 50 ms
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            end = time.monotonic() + 15
            while time.monotonic() < end:
                self._chunk(b"z" * 100)
                time.sleep(0.05)
            self.close_connection = True
        elif head == "drip-headers":  # slowloris headers: one byte every 50 ms
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            end = time.monotonic() + 15
            while time.monotonic() < end:
                self.wfile.write(b"a")
                time.sleep(0.05)
            self.close_connection = True
        elif head == "gzip-bomb":
            self._send(200, _gzip_bomb(), Content_Encoding="gzip", Content_Type="audio/mp4")
        elif head == "redirect-bomb":  # a 302 whose body is a gzip bomb
            self._send(302, _gzip_bomb(), Location="/audio", Content_Encoding="gzip")
        elif head == "redirect-endless":  # a 302 followed by an endless chunked body
            self.send_response(302)
            self.send_header("Location", "/audio")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            end = time.monotonic() + 15
            while time.monotonic() < end:
                self._chunk(b"r" * 65536)
            self.close_connection = True
        elif head == "early-hints":  # interim responses before the final one
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n"
                             b"HTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload\r\n\r\n"
                             b"HTTP/1.1 102 Processing\r\n\r\n")
            self._send(200, AUDIO, Content_Type="audio/mp4")
        elif head == "interim-flood":  # 1xx responses for ever, as fast as possible
            end = time.monotonic() + 15
            while time.monotonic() < end:
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n" * 64)
            self.close_connection = True
        elif head == "slow-first-byte":
            time.sleep(1.0)
            self._send(200, AUDIO)
        else:
            self._send(404, b"no route")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # clients hanging up is the point
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Server:
    def __init__(self) -> None:
        handler = type(
            "Handler",
            (_Handler,),
            {"hits": Counter(), "seen": [], "lock": threading.Lock()},
        )
        self.handler = handler
        self.httpd = _QuietServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        serve_in_background(self.httpd)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def hits(self, path: str) -> int:
        return self.handler.hits[path]

    def headers_of(self, path: str) -> dict[str, str]:
        return next(h for p, h in reversed(self.handler.seen) if p == path)

    def close(self) -> None:
        stop_server(self.httpd)


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    srv = _Server()
    yield srv
    srv.close()


def _settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "allowed_audio_hosts": ("127.0.0.1",),
        "fetch_connect_timeout_s": 1.0,
        "fetch_read_timeout_s": 1.0,
        "fetch_total_timeout_s": 5.0,
        "fetch_max_bytes": CAP,
        "fetch_max_redirects": 3,
        "fetch_retries": 3,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


# Tiny backoff so retry tests take milliseconds.
fetch_preview = functools.partial(fetch.fetch_preview, backoff_base_s=0.01, backoff_cap_s=0.05)


def _unique(prefix: str) -> str:
    return f"/{prefix}/{uuid.uuid4().hex}"


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every host name the fetcher resolves (real resolution still happens)."""
    seen: list[str] = []
    real = socket.getaddrinfo

    def spy(host: str, *args: object, **kwargs: object) -> object:
        seen.append(host)
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fetch, "_getaddrinfo", spy)
    return seen


def _fake_dns(monkeypatch: pytest.MonkeyPatch, table: dict[str, list[str]]) -> list[str]:
    """Resolve names in ``table`` to the given addresses (others for real); log lookups."""
    seen: list[str] = []
    real = socket.getaddrinfo

    def fake(host: str, port: int, *args: object, **kwargs: object) -> object:
        seen.append(host)
        if host in table:
            out = []
            for address in table[host]:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
                out.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
            return out
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fetch, "_getaddrinfo", fake)
    return seen


# --------------------------------------------------------------------------- success


def test_fetches_audio_bytes(server: _Server) -> None:
    result = fetch_preview(server.url("/audio"), _settings())
    assert result.data == AUDIO
    assert result.final_url == server.url("/audio")
    assert result.content_type == "audio/mp4"
    assert result.attempts == 1
    assert 0 < result.elapsed_s < 2
    sent = server.headers_of("/audio")
    assert sent["User-Agent"] == f"previewvec/{__version__}"
    assert sent["Accept-Encoding"] == "identity"


def test_session_pools_connections_and_resolves_once(server: _Server, lookups: list[str]) -> None:
    settings = _settings()
    session = make_session(settings)
    for _ in range(3):
        assert fetch_preview(server.url("/audio"), settings, session=session).data == AUDIO
    assert lookups == ["127.0.0.1"]  # one connection, checked once, reused


def test_cookies_are_never_kept_or_sent(server: _Server) -> None:
    settings = _settings(allowed_audio_hosts=("127.0.0.1", "localhost"))
    session = make_session(settings)
    fetch_preview(server.url("/set-cookie/a"), settings, session=session)
    fetch_preview(server.url("/set-cookie/redirect"), settings, session=session)
    assert fetch_preview(server.url("/audio"), settings, session=session).data == AUDIO
    assert "Cookie" not in server.headers_of("/audio")
    path = _unique("audio")
    fetch_preview(server.url(path, host="localhost"), settings, session=session)
    assert "Cookie" not in server.headers_of(path)
    assert len(session.cookies) == 0


def test_plain_session_is_refused(server: _Server) -> None:
    with pytest.raises(TypeError):
        fetch_preview(server.url("/audio"), _settings(), session=requests.Session())
    other = make_session(_settings(allowed_audio_hosts=("127.0.0.1", "example.org")))
    with pytest.raises(ValueError):
        fetch_preview(server.url("/audio"), _settings(), session=other)


# --------------------------------------------------------------------------- HTTP errors, retries


def test_404_is_not_retried(server: _Server) -> None:
    with pytest.raises(HTTPStatusError) as info:
        fetch_preview(server.url("/status/404"), _settings())
    err = info.value
    assert (err.code, err.status, err.attempts) == ("http_404", 404, 1)
    assert server.url("/status/404") in err.message
    assert not is_retryable(err)
    assert err.to_dict()["code"] == "http_404"


def test_403_is_not_retried(server: _Server) -> None:
    path = "/status/403"
    before = server.hits(path)
    with pytest.raises(HTTPStatusError) as info:
        fetch_preview(server.url(path), _settings())
    assert info.value.code == "http_403"
    assert server.hits(path) - before == 1


def test_500_then_200_retries(server: _Server) -> None:
    path = _unique("flaky")
    result = fetch_preview(server.url(path), _settings())
    assert result.data == AUDIO
    assert result.attempts == 2
    assert server.hits(path) == 2


def test_persistent_503_gives_up_after_all_attempts(server: _Server) -> None:
    path = "/status/503"
    before = server.hits(path)
    with pytest.raises(HTTPStatusError) as info:
        fetch_preview(server.url(path), _settings(fetch_retries=3))
    err = info.value
    assert (err.code, err.attempts) == ("http_503", 3)
    assert "after 3 attempts" in err.message
    assert server.hits(path) - before == 3
    assert is_retryable(err)


def test_429_honours_retry_after_up_to_the_cap(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    delays: list[float] = []
    monkeypatch.setattr(fetch, "_sleep", delays.append)
    path = _unique("ratelimit")
    result = fetch.fetch_preview(server.url(path), _settings(), backoff_cap_s=5.0)
    assert (result.attempts, delays) == (2, [1.0])  # Retry-After: 1

    delays.clear()
    result = fetch_preview(server.url(_unique("ratelimit")), _settings())
    assert (result.attempts, delays) == (2, [0.05])  # capped at backoff_cap_s


def test_slow_first_byte_times_out_then_fails(server: _Server) -> None:
    path = "/slow-first-byte"
    before = server.hits(path)
    settings = _settings(fetch_read_timeout_s=0.3, fetch_retries=2)
    start = time.monotonic()
    with pytest.raises(FetchFailed) as info:
        fetch_preview(server.url(path), settings)
    err = info.value
    assert err.code == "fetch_failed"
    assert err.attempts == 2
    assert "timed out" in err.message and "after 2 attempts" in err.message
    assert is_retryable(err)
    assert server.hits(path) - before == 2
    assert time.monotonic() - start < 2.0


# --------------------------------------------------------------------------- redirects


def test_redirect_chain_is_followed(server: _Server) -> None:
    result = fetch_preview(server.url("/redirect/3"), _settings(fetch_max_redirects=3))
    assert result.data == AUDIO
    assert result.final_url == server.url("/redirect/0")


def test_too_many_redirects(server: _Server) -> None:
    with pytest.raises(FetchFailed, match="more than 2 redirects") as info:
        fetch_preview(server.url("/redirect/3"), _settings(fetch_max_redirects=2))
    assert not info.value.retryable


def test_redirect_to_allowed_absolute_url(server: _Server) -> None:
    target = server.url("/audio")
    result = fetch_preview(server.url(f"/to?u={quote(target, safe='')}"), _settings())
    assert (result.data, result.final_url) == (AUDIO, target)


def test_redirect_location_in_utf8_is_followed_as_sent(server: _Server) -> None:
    result = fetch_preview(server.url("/to-utf8"), _settings())
    assert result.data == AUDIO and result.final_url == server.url("/caf\u00e9/x")


@pytest.mark.parametrize(
    "location", ["http://[127.0.0.1]/", "http://[", "https://]%5b", "http://[]x/"]
)
def test_unparsable_redirect_location_is_a_typed_failure(server: _Server, location: str) -> None:
    # urljoin raises ValueError on these; it must not escape as an untyped error.
    with pytest.raises(FetchFailed, match="invalid redirect Location") as info:
        fetch_preview(server.url("/to?u=" + quote(location, safe="")), _settings())
    assert info.value.code == "fetch_failed" and not info.value.retryable


@pytest.mark.parametrize(
    "target",
    [
        "http://evil.example/steal",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://localhost/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO",
        "http://user:pw@127.0.0.1/",
    ],
)
def test_redirect_to_forbidden_target_is_refused_before_connecting(
    server: _Server, lookups: list[str], target: str
) -> None:
    with pytest.raises(HostNotAllowed) as info:
        fetch_preview(server.url(f"/to?u={quote(target, safe='')}"), _settings())
    err = info.value
    assert err.code == "host_not_allowed"
    assert err.url == target  # names the hop that was refused
    assert not is_retryable(err)
    assert lookups == ["127.0.0.1"]  # only the first hop was ever resolved


# --------------------------------------------------------------------------- URL and host policy


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "ftp://127.0.0.1/x.m4a",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/a.m4a",
        "http://user:secret@127.0.0.1/a.m4a",
        "http://127.0.0.1.evil.example/a.m4a",
    ],
)
def test_refused_urls(lookups: list[str], url: str) -> None:
    with pytest.raises(HostNotAllowed):
        fetch_preview(url, _settings())
    assert lookups == []


@pytest.mark.parametrize("url", ["", "http://127.0.0.1/a b", "http://127.0.0.1\\@evil/"])
def test_malformed_urls(url: str) -> None:
    with pytest.raises(FetchFailed) as info:
        fetch_preview(url, _settings())
    assert not info.value.retryable


def test_localhost_refused_unless_listed(server: _Server) -> None:
    with pytest.raises(HostNotAllowed, match="localhost"):
        fetch_preview(server.url("/audio", host="localhost"), _settings())
    listed = _settings(allowed_audio_hosts=("localhost",))
    assert fetch_preview(server.url("/audio", host="localhost"), listed).data == AUDIO


def test_exactly_listed_name_pins_to_checked_address(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cdn.test does not exist: the request can only work by connecting to the address the
    # policy resolved, while Host (and SNI, for https) keep the name. (It resolves to
    # 127.0.0.1, which a listed name may only do when it is also named private.)
    seen = _fake_dns(monkeypatch, {"cdn.test": ["127.0.0.1"]})
    result = fetch_preview(
        server.url("/echo-host", host="cdn.test"),
        _settings(allowed_audio_hosts=("cdn.test",), private_audio_hosts=("cdn.test",)),
    )
    assert result.data == f"cdn.test:{server.port}".encode()
    assert seen == ["cdn.test"]  # exactly one lookup: nothing for a rebinding DNS to swap


@pytest.mark.parametrize(
    "addresses",
    [["169.254.169.254"], ["10.0.0.1"], ["127.0.0.1"], ["8.8.8.8", "10.0.0.1"], ["::1"]],
)
def test_exactly_listed_name_resolving_to_private_address_is_refused(
    server: _Server, monkeypatch: pytest.MonkeyPatch, addresses: list[str]
) -> None:
    """Given the production allowlist (every CDN name listed exactly) and DNS pointing
    those names at private addresses, expect every one refused before any connection:
    listing a name says where previews come from, not that it may be internal."""
    production = Settings()
    names = [h for h in production.allowed_audio_hosts if not is_ip(h)]
    assert "audio-ssl.itunes.apple.com" in names and "dzcdn.net" in names
    seen = _fake_dns(monkeypatch, {name: addresses for name in names})
    path = _unique("audio")
    for name in names:
        with pytest.raises(HostNotAllowed, match="non-public address"):
            fetch_preview(f"http://{name}:{server.port}{path}", production)
    assert seen == names  # each resolved once, never retried
    assert server.hits(path) == 0  # nothing reached the server


def test_private_audio_hosts_exempts_only_that_exact_allowed_name(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given media.internal named private (an in-cluster media server), expect it fetched
    from 127.0.0.1; its subdomains, and the name when it is not allowed, still refused."""
    _fake_dns(monkeypatch, {"media.internal": ["127.0.0.1"], "a.media.internal": ["127.0.0.1"]})
    settings = _settings(allowed_audio_hosts=("media.internal",),
                         private_audio_hosts=("media.internal",))
    assert fetch_preview(server.url("/audio", host="media.internal"), settings).data == AUDIO
    with pytest.raises(HostNotAllowed, match="non-public address"):
        fetch_preview(server.url("/audio", host="a.media.internal"), settings)
    with pytest.raises(HostNotAllowed, match="not in allowed_audio_hosts"):
        fetch_preview(server.url("/audio", host="media.internal"),
                      _settings(private_audio_hosts=("media.internal",)))


def test_listed_localhost_may_resolve_to_loopback_only(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = _settings(allowed_audio_hosts=("localhost",))
    _fake_dns(monkeypatch, {"localhost": ["169.254.169.254"]})
    with pytest.raises(HostNotAllowed, match=r"non-public address 169\.254\.169\.254"):
        fetch_preview(server.url("/audio", host="localhost"), listed)


def test_session_made_with_other_private_hosts_is_refused(server: _Server) -> None:
    other = make_session(_settings(private_audio_hosts=("media.internal",)))
    with pytest.raises(ValueError, match="private_audio_hosts"):
        fetch_preview(server.url("/audio"), _settings(), session=other)


@pytest.mark.parametrize(
    "addresses",
    [["169.254.169.254"], ["10.0.0.1"], ["127.0.0.1"], ["8.8.8.8", "10.0.0.1"], ["::1"]],
)
def test_suffix_matched_name_resolving_to_private_address_is_refused(
    monkeypatch: pytest.MonkeyPatch, addresses: list[str]
) -> None:
    _fake_dns(monkeypatch, {"a.cdn.test": addresses})
    start = time.monotonic()
    with pytest.raises(HostNotAllowed, match="non-public address") as info:
        fetch_preview("http://a.cdn.test/x.m4a", _settings(allowed_audio_hosts=("cdn.test",)))
    assert info.value.url == "http://a.cdn.test/x.m4a"
    assert time.monotonic() - start < 0.5  # refused before any connect attempt


def test_host_policy_matching() -> None:
    policy = HostPolicy(["mzstatic.com", "Bücher.example", "127.0.0.1"])
    assert policy.check_name("mzstatic.com", "u") is True
    assert policy.check_name("IS1-SSL.MZSTATIC.COM.", "u") is False  # suffix, not exact
    assert policy.check_name("xn--bcher-kva.example", "u") is True
    assert policy.check_name("cdn.bücher.example", "u") is False
    for host in ("evilmzstatic.com", "mzstatic.com.evil.net", "1.127.0.0.1", "localhost"):
        with pytest.raises(HostNotAllowed):
            policy.check_name(host, "u")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("Example.COM.", "example.com"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("[::1]", "::1"),
        ("127.0.0.1", "127.0.0.1"),
    ],
)
def test_normalize_host(host: str, expected: str) -> None:
    assert normalize_host(host) == expected


@pytest.mark.parametrize("host", ["", "a b", "exa%6dple.com", "a..b"])
def test_normalize_host_rejects(host: str) -> None:
    with pytest.raises(ValueError):
        normalize_host(host)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("::ffff:8.8.8.8", True),
        ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),  # shared address space (CGNAT)
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("fec0::1", False),  # site-local
        ("ff02::1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("2002:a00:1::", False),  # 6to4 of 10.0.0.1
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(address) is public


# --------------------------------------------------------------------------- size, time, encoding


def test_content_length_over_cap_is_refused_up_front(server: _Server) -> None:
    with pytest.raises(ResponseTooLarge) as info:
        fetch_preview(server.url("/cl-huge"), _settings())
    err = info.value
    assert err.code == "too_large" and isinstance(err, TooLarge)
    assert "Content-Length" in err.message
    assert not is_retryable(err)


@pytest.mark.parametrize("value", ["-1", "+65536", "abc", "6_5536", "1e5"])
def test_invalid_content_length_is_refused(server: _Server, value: str) -> None:
    with pytest.raises(FetchFailed, match="invalid Content-Length") as info:
        fetch_preview(server.url("/cl-invalid?v=" + quote(value)), _settings())
    assert not info.value.retryable


def test_chunked_body_over_cap_is_cut(server: _Server) -> None:
    with pytest.raises(ResponseTooLarge, match="body exceeds"):
        fetch_preview(server.url("/chunked-huge"), _settings())


def test_endless_slow_body_stops_at_total_budget(server: _Server) -> None:
    start = time.monotonic()
    with pytest.raises(FetchFailed, match="budget") as info:
        fetch_preview(server.url("/drip"), _settings(fetch_total_timeout_s=2.0))
    elapsed = time.monotonic() - start
    assert 1.8 < elapsed < 3.0
    assert info.value.attempts == 1  # no budget left for a retry


def test_a_budget_shorter_than_the_settings_ends_the_fetch_at_it(server: _Server) -> None:
    """Given ``budget_s`` (what a job's first fetch left of its budget, for the second
    fetch of an expired preview), expect the fetch to stop there, not at the settings'."""
    with pytest.raises(FetchFailed, match="total time budget of 1 s exceeded"):
        fetch_preview(server.url("/drip"), _settings(fetch_total_timeout_s=30.0),
                      budget_s=1.0)


def test_no_budget_left_makes_no_request(server: _Server) -> None:
    path = _unique("no-budget")
    with pytest.raises(FetchFailed):
        fetch_preview(server.url(path), _settings(), budget_s=0.0)
    assert server.hits(path) == 0


def test_slow_drip_headers_stop_at_total_budget(server: _Server) -> None:
    start = time.monotonic()
    with pytest.raises(FetchFailed, match="budget"):
        fetch_preview(server.url("/drip-headers"), _settings(fetch_total_timeout_s=1.0))
    assert time.monotonic() - start < 2.0


def test_gzip_bomb_is_never_inflated(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    inflaters: list[object] = []
    real = zlib.decompressobj
    monkeypatch.setattr(zlib, "decompressobj", lambda *a: inflaters.append(a) or real(*a))
    with pytest.raises(FetchFailed, match="compressed response refused") as info:
        fetch_preview(server.url("/gzip-bomb"), _settings())
    assert not info.value.retryable
    assert inflaters == []
    assert server.headers_of("/gzip-bomb")["Accept-Encoding"] == "identity"


def test_redirect_body_is_never_read_or_inflated(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests' own redirect handling reads (and decodes) a redirect's body even with
    # allow_redirects=False; the fetcher must drop it unread, compressed or not.
    inflaters: list[object] = []
    real = zlib.decompressobj
    monkeypatch.setattr(zlib, "decompressobj", lambda *a: inflaters.append(a) or real(*a))
    result = fetch_preview(server.url("/redirect-bomb"), _settings())
    assert result.data == AUDIO and result.final_url == server.url("/audio")
    assert inflaters == []


def test_redirect_with_endless_body_is_followed_without_reading_it(server: _Server) -> None:
    # The body streams for longer than the budget: reading it would end in a budget error
    # (after buffering everything received, uncapped).
    result = fetch_preview(server.url("/redirect-endless"), _settings(fetch_total_timeout_s=3.0))
    assert result.data == AUDIO and result.final_url == server.url("/audio")


def test_interim_responses_are_skipped(server: _Server) -> None:
    result = fetch_preview(server.url("/early-hints"), _settings())
    assert result.data == AUDIO and result.attempts == 1


def test_interim_response_flood_fails_without_waiting_for_the_budget(server: _Server) -> None:
    with pytest.raises(FetchFailed, match=r"interim \(1xx\) responses") as info:
        fetch_preview(server.url("/interim-flood"), _settings(fetch_total_timeout_s=5.0))
    assert info.value.code == "fetch_failed"


def test_other_transfer_codings_are_refused(server: _Server) -> None:
    with pytest.raises(FetchFailed, match="unsupported Transfer-Encoding") as info:
        fetch_preview(server.url("/te-gzip"), _settings())
    assert not info.value.retryable


def test_malformed_header_line_is_refused(
    server: _Server, caplog: pytest.LogCaptureFixture
) -> None:
    # http.client ignores every header after the bad line, the Content-Length included:
    # the half body would pass as a whole clip.
    with pytest.raises(FetchFailed, match="malformed response headers"):
        fetch_preview(server.url("/hidden-length"), _settings())
    assert "Traceback" not in caplog.text and "Failed to parse headers" not in caplog.text


def test_empty_body_fails(server: _Server) -> None:
    with pytest.raises(FetchFailed, match="empty body"):
        fetch_preview(server.url("/empty"), _settings())


def test_connects_to_many_black_holed_addresses_stay_within_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A listener whose accept queue is full drops further SYNs: a local black hole.
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(0)
        port = hole.getsockname()[1]
        fillers = [socket.socket() for _ in range(4)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
            entry = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                     ("127.0.0.1", port))
            monkeypatch.setattr(fetch, "_getaddrinfo", lambda *a, **k: [entry] * 8)
            settings = _settings(fetch_connect_timeout_s=1.0, fetch_total_timeout_s=1.5)
            start = time.monotonic()
            with pytest.raises(FetchFailed):  # budget or connect timeout, by a hair
                fetch_preview(f"http://127.0.0.1:{port}/a.m4a", settings)
            # Before: each of the 8 addresses got the full connect timeout (8 s).
            assert time.monotonic() - start < 3 * settings.fetch_total_timeout_s
        finally:
            for filler in fillers:
                filler.close()


def test_connection_refused_is_retried() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FetchFailed, match="connection failed") as info:
        fetch_preview(f"http://127.0.0.1:{port}/a.m4a", _settings(fetch_retries=2))
    assert info.value.attempts == 2 and is_retryable(info.value)


# --------------------------------------------------------------------------- helpers


def test_error_types_and_codes() -> None:
    errors: list[FetchError] = [
        FetchFailed("x", url="u"),
        HostNotAllowed("x", url="u"),
        ResponseTooLarge("x", url="u"),
        HTTPStatusError(418, url="u"),
    ]
    assert [e.code for e in errors] == ["fetch_failed", "host_not_allowed", "too_large", "http_418"]
    assert all(isinstance(e, PreviewvecError) for e in errors)
    assert HTTPStatusError(503, url="u").code == "http_503"  # per instance, not per class
    assert is_retryable(requests.ConnectTimeout()) and not is_retryable(ValueError())


# --------------------------------------------------------------------------- TLS


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[_Server, Path, list[str]]]:
    cert, key = _self_signed(tmp_path, "cdn.test")
    srv = _Server()
    sni: list[str] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: sni.append(name)  # type: ignore[assignment,misc]
    srv.httpd.socket = context.wrap_socket(srv.httpd.socket, server_side=True)
    yield srv, cert, sni
    srv.close()


def test_https_pinned_address_keeps_sni_and_certificate_name(
    tls_server: tuple[_Server, Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, cert, sni = tls_server
    _fake_dns(monkeypatch, {"cdn.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    settings = _settings(allowed_audio_hosts=("cdn.test", "other.test"),
                         private_audio_hosts=("cdn.test", "other.test"))
    session = make_session(settings)
    session.verify = str(cert)  # trust the self-signed test certificate only
    url = f"https://cdn.test:{srv.port}/echo-host"
    result = fetch_preview(url, settings, session=session)
    assert result.data == f"cdn.test:{srv.port}".encode()
    assert sni == ["cdn.test"]  # SNI carries the name although we connected to an IP

    # Same address, name not on the certificate: verification must still fail.
    with pytest.raises(FetchFailed, match="TLS failure") as info:
        fetch_preview(f"https://other.test:{srv.port}/audio", settings, session=session)
    assert not info.value.retryable and info.value.attempts == 1


# --------------------------------------------------------------------------- SSRF: other spellings

# Loopback, link-local and metadata addresses spelt every way URL parsers and resolvers
# accept: decimal, hex and octal integers, short dotted forms, IPv4-mapped IPv6, zone ids,
# Unicode full stops (UTS 46 maps them to "."), upper case and trailing dots. Only the
# exact spelling "127.0.0.1" is listed; none of these may reach it or anything else.
_ADDRESS_SPELLINGS = [
    "http://2130706433/a.m4a",  # 127.0.0.1 as one decimal integer
    "http://0x7f000001/a.m4a",
    "http://017700000001/a.m4a",
    "http://0177.0.0.1/a.m4a",
    "http://0x7f.0.0.1/a.m4a",
    "http://127.1/a.m4a",
    "http://127.0.0.01/a.m4a",
    "http://[::1]/a.m4a",
    "http://[::ffff:127.0.0.1]/a.m4a",
    "http://[0:0:0:0:0:ffff:7f00:1]/a.m4a",
    "http://[::127.0.0.1]/a.m4a",
    "http://[fe80::1]/a.m4a",
    "http://[fe80::1%25lo]/a.m4a",
    "http://0.0.0.0/a.m4a",
    "http://[::]/a.m4a",
    "http://169.254.169.254/latest/meta-data/",
    "http://2852039166/latest/meta-data/",  # 169.254.169.254 in decimal
    "http://0xa9fea9fe/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",  # AWS's IPv6 metadata endpoint
    "http://169。254。169。254/latest/meta-data/",
    "http://１６９.２５４.１６９.２５４/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://localhost/a.m4a",
    "http://LOCALHOST./a.m4a",
    "http://localhost.localdomain/a.m4a",
]


@pytest.mark.parametrize("url", _ADDRESS_SPELLINGS)
def test_other_spellings_of_private_addresses_are_refused_unresolved(
    lookups: list[str], url: str
) -> None:
    with pytest.raises(HostNotAllowed) as info:
        fetch_preview(url, _settings())
    assert info.value.code == "host_not_allowed" and not info.value.retryable
    assert lookups == []  # refused on the name, before any resolution or connection


@pytest.mark.parametrize(
    "url",
    [
        "file:/etc/passwd",
        "file://localhost/etc/passwd",
        "FILE:///etc/passwd",
        "data:audio/mp4;base64,AAAAIGZ0eXBNNEEg",
        "dict://127.0.0.1:11211/stats",
        "ldap://127.0.0.1/",
        "sftp://127.0.0.1/a.m4a",
        "tftp://127.0.0.1/a.m4a",
        "jar:http://127.0.0.1/a.jar!/",
        "netdoc:///etc/passwd",
        "gopher://127.0.0.1:6379/_FLUSHALL",
        "//127.0.0.1/a.m4a",  # scheme-relative
        "127.0.0.1/a.m4a",
    ],
)
def test_non_http_schemes_are_refused(lookups: list[str], url: str) -> None:
    with pytest.raises(HostNotAllowed, match="scheme"):
        fetch_preview(url, _settings())
    assert lookups == []


@pytest.mark.parametrize(
    "addresses",
    [
        ["::ffff:127.0.0.1"],
        ["::ffff:169.254.169.254"],
        ["fe80::1"],
        ["fd12:3456::1"],
        ["0.0.0.0"],
        ["100.64.0.1"],
        ["64:ff9b::a9fe:a9fe"],  # NAT64 of the metadata address
        ["224.0.0.1"],
        ["93.184.216.34", "169.254.169.254"],  # one bad answer among good ones
    ],
)
def test_allowed_name_resolving_to_other_private_forms_is_refused(
    monkeypatch: pytest.MonkeyPatch, addresses: list[str]
) -> None:
    seen = _fake_dns(monkeypatch, {"edge.cdn.test": addresses})
    with pytest.raises(HostNotAllowed, match="non-public address"):
        fetch_preview("http://edge.cdn.test/x.m4a", _settings(allowed_audio_hosts=("cdn.test",)))
    assert seen == ["edge.cdn.test"]


@pytest.mark.parametrize(
    ("name", "addresses"),
    [
        ("meta.cdn.test", ["169.254.169.254"]),
        ("intranet.cdn.test", ["10.1.2.3"]),
        ("loop.cdn.test", ["127.0.0.1"]),
        ("v6.cdn.test", ["::1"]),
        ("mixed.cdn.test", ["93.184.216.34", "192.168.0.10"]),
    ],
)
def test_redirect_to_allowed_name_resolving_to_private_address_is_refused(
    server: _Server, monkeypatch: pytest.MonkeyPatch, name: str, addresses: list[str]
) -> None:
    """The first hop is allowed; the redirect target is an allowed *name* that resolves to
    a private address: refused at resolution, before any connection to it."""
    seen = _fake_dns(monkeypatch, {name: addresses})
    target = f"http://{name}:{server.port}/latest/meta-data/"
    settings = _settings(allowed_audio_hosts=("127.0.0.1", "cdn.test"))
    with pytest.raises(HostNotAllowed, match="non-public address") as info:
        fetch_preview(server.url(f"/to?u={quote(target, safe='')}"), settings)
    assert info.value.url == target
    assert seen == ["127.0.0.1", name]  # each hop resolved once; the bad one not retried


@pytest.mark.parametrize(
    "target",
    [
        "http://2130706433/",
        "http://0x7f.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fe80::1%25eth0]/",
        "http://169%2e254%2e169%2e254/latest/meta-data/",  # percent-encoded dots
        "//169.254.169.254/latest/meta-data/",  # scheme-relative Location
        "data:audio/mp4;base64,AAAA",
    ],
)
def test_redirect_to_other_spellings_is_refused(
    server: _Server, lookups: list[str], target: str
) -> None:
    with pytest.raises(HostNotAllowed):
        fetch_preview(server.url(f"/to?u={quote(target, safe='')}"), _settings())
    assert lookups == ["127.0.0.1"]  # only the first hop was ever resolved


def test_exactly_listed_private_address_is_the_explicit_exception(server: _Server) -> None:
    """Listing an address exactly is the (documented) way to allow a private host: tests
    list 127.0.0.1. The same server under another spelling stays refused."""
    assert fetch_preview(server.url("/audio"), _settings()).data == AUDIO
    with pytest.raises(HostNotAllowed):
        fetch_preview(server.url("/audio"), _settings(allowed_audio_hosts=("mzstatic.com",)))
    with pytest.raises(HostNotAllowed):
        fetch_preview(f"http://2130706433:{server.port}/audio", _settings())
