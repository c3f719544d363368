"""A hostile HTTP/1.1 server on 127.0.0.1 for the fault and security tests.

Each path gets a *behaviour*: a plain body with any status and headers, or one of the
nasty transports a preview CDN (or an attacker posing as one) can produce — a gzip bomb
declared with ``Content-Encoding``, an endless chunked body, a body that drips a few bytes
at a time, headers that never finish (slowloris), a ``Content-Length`` of gigabytes, a
body shorter than its ``Content-Length``, redirects anywhere. Every endless behaviour
stops when the client hangs up or after :data:`MAX_STREAM_S`, so no thread outlives a test
for long.
"""

from __future__ import annotations

import contextlib
import gzip
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.local_http import serve_in_background, stop_server

MAX_STREAM_S = 30.0  # an endless behaviour gives up after this long even if nobody hangs up
CHUNK = 16 * 1024


@dataclass(frozen=True)
class Behaviour:
    """How one path answers. ``kind`` selects the transport; the rest parameterises it."""

    kind: str  # body | gzip_bomb | endless_chunked | drip_body | drip_headers | huge_length
    #            | short_body | redirect | redirect_bomb | redirect_endless | raw
    status: int = 200
    body: bytes = field(default=b"", repr=False)
    content_type: str = "audio/mp4"
    headers: tuple[tuple[str, str], ...] = ()
    location: str = ""
    declared_bytes: int = 0  # huge_length: the Content-Length it claims
    #                          raw: ``body`` is the whole response, status line included
    interval_s: float = 0.1  # drip_*: pause between writes


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def handle(self) -> None:
        # Hanging up early is what a well-behaved client does to these routes.
        with contextlib.suppress(ConnectionError, TimeoutError):
            super().handle()

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        with self.server.lock:
            self.server.hits[path] += 1
            behaviour = self.server.routes.get(path)
        if behaviour is None:
            behaviour = Behaviour("body", status=404, body=b"not found\n",
                                  content_type="text/plain")
        try:
            _BEHAVIOURS[behaviour.kind](self, behaviour)
        except OSError:
            self.close_connection = True

    # --- helpers ----------------------------------------------------------------------

    def _head(self, b: Behaviour, length: int | None, *extra: tuple[str, str]) -> None:
        self.send_response(b.status)
        self.send_header("Content-Type", b.content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for name, value in (*b.headers, *extra):
            self.send_header(name, value)
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


def _body(h: _Handler, b: Behaviour) -> None:
    h._head(b, len(b.body))
    h.wfile.write(b.body)


def _gzip_bomb(h: _Handler, b: Behaviour) -> None:
    bomb = _bomb()
    h._head(b, len(bomb), ("Content-Encoding", "gzip"))
    h.wfile.write(bomb)


def _endless_chunked(h: _Handler, b: Behaviour) -> None:
    h._head(b, None, ("Transfer-Encoding", "chunked"))
    block = (b.body or b"\xff\xf1") * (CHUNK // max(1, len(b.body or b"\xff\xf1")))
    end = time.monotonic() + MAX_STREAM_S
    while time.monotonic() < end:
        h._chunk(block)
    h.close_connection = True


def _drip_body(h: _Handler, b: Behaviour) -> None:
    h._head(b, None, ("Transfer-Encoding", "chunked"))
    end = time.monotonic() + MAX_STREAM_S
    while time.monotonic() < end:
        h._chunk(b"\x00" * 64)
        time.sleep(b.interval_s)
    h.close_connection = True


def _drip_headers(h: _Handler, b: Behaviour) -> None:
    h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: audio/mp4\r\nX-Slow: ")
    end = time.monotonic() + MAX_STREAM_S
    while time.monotonic() < end:
        h.wfile.write(b"a")
        h.wfile.flush()
        time.sleep(b.interval_s)
    h.close_connection = True


def _huge_length(h: _Handler, b: Behaviour) -> None:
    # Claims gigabytes, sends a little, then stalls: a client that trusts the header
    # would allocate for it or wait for the rest.
    h._head(b, b.declared_bytes)
    h.wfile.write(b.body[:CHUNK])
    h.wfile.flush()
    time.sleep(MAX_STREAM_S)
    h.close_connection = True


def _short_body(h: _Handler, b: Behaviour) -> None:
    h._head(b, len(b.body) + 10_000)  # promises more than it sends, then hangs up
    h.wfile.write(b.body)
    h.close_connection = True


def _redirect(h: _Handler, b: Behaviour) -> None:
    h._head(b, 0, ("Location", b.location))


def _redirect_bomb(h: _Handler, b: Behaviour) -> None:
    # A redirect whose body is a gzip bomb: only a client that reads redirect bodies
    # (decoded) inflates it.
    bomb = _bomb()
    h._head(b, len(bomb), ("Location", b.location), ("Content-Encoding", "gzip"))
    h.wfile.write(bomb)


def _redirect_endless(h: _Handler, b: Behaviour) -> None:
    h._head(b, None, ("Location", b.location), ("Transfer-Encoding", "chunked"))
    block = b"\x00" * CHUNK
    end = time.monotonic() + MAX_STREAM_S
    while time.monotonic() < end:
        h._chunk(block)
    h.close_connection = True


def _raw(h: _Handler, b: Behaviour) -> None:
    # Byte-exact responses http.server would not write: interim 1xx responses, invalid
    # framing headers, non-ASCII headers.
    h.wfile.write(b.body)
    h.wfile.flush()
    h.close_connection = True


_BEHAVIOURS: dict[str, Callable[[_Handler, Behaviour], None]] = {
    "body": _body,
    "gzip_bomb": _gzip_bomb,
    "endless_chunked": _endless_chunked,
    "drip_body": _drip_body,
    "drip_headers": _drip_headers,
    "huge_length": _huge_length,
    "short_body": _short_body,
    "redirect": _redirect,
    "redirect_bomb": _redirect_bomb,
    "redirect_endless": _redirect_endless,
    "raw": _raw,
}

_bomb_lock = threading.Lock()
_bomb_cache: list[bytes] = []


def _bomb() -> bytes:
    """~100 KB of gzip that inflates to 100 MB of zeros (made once per process)."""
    with _bomb_lock:
        if not _bomb_cache:
            _bomb_cache.append(gzip.compress(bytes(100_000_000), compresslevel=9))
        return _bomb_cache[0]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    routes: dict[str, Behaviour]
    hits: Counter[str]
    lock: threading.Lock

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # clients hanging up is the point
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class HostileServer:
    """Start with :meth:`start`, register paths with :meth:`add`, stop with :meth:`stop`."""

    def __init__(self) -> None:
        self._httpd: _Server | None = None

    def start(self) -> HostileServer:
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.routes, httpd.hits, httpd.lock = {}, Counter(), threading.Lock()
        self._httpd = httpd
        serve_in_background(httpd)
        return self

    def stop(self) -> None:
        stop_server(self._httpd)
        self._httpd = None

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start() first"
        return int(self._httpd.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def add(self, path: str, behaviour: Behaviour) -> str:
        """Serve ``behaviour`` at ``path``; returns its URL."""
        assert self._httpd is not None, "start() first"
        with self._httpd.lock:
            self._httpd.routes[path] = behaviour
        return self.url(path)

    def add_body(self, path: str, body: bytes, content_type: str = "audio/mp4",
                 status: int = 200) -> str:
        return self.add(path, Behaviour("body", status=status, body=body,
                                        content_type=content_type))

    def hits(self, path: str) -> int:
        assert self._httpd is not None
        with self._httpd.lock:
            return self._httpd.hits[path]
