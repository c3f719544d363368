"""A local stand-in for MusicBrainz and the iTunes Search API, serving RECORDED answers.

``UpstreamServer`` is a :class:`ThreadingHTTPServer` on 127.0.0.1 (free port) that routes
``GET path?query`` to files under ``tests/fixtures/upstream`` using ``routes.json``: the
first route whose path matches (exactly, or as a prefix with ``"prefix": true``) and whose
listed query parameters are all present with those values wins; unlisted parameters
(``fmt``, ``limit``, ``country``, ...) are ignored. Files are served byte for byte (some
start with blank lines, as iTunes answers do). Unrouted paths answer 404.

It records every request (monotonic timestamp, path, query, User-Agent) and has fault
knobs: ``fail_next(n, status, body=b"", path_prefix=None)`` makes the next ``n`` matching
requests answer ``status`` (e.g. 503, or 403 with an empty body = iTunes throttling).

Run standalone: ``python -m tests.upstream_server [port]``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.local_http import serve_in_background, stop_server

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"


@dataclass(frozen=True)
class RecordedRequest:
    t: float  # time.monotonic() when the request arrived (system-wide clock on Linux)
    path: str
    query: dict[str, str]
    user_agent: str
    status: int


@dataclass
class _Fault:
    remaining: int
    status: int
    body: bytes
    path_prefix: str | None
    headers: dict[str, str]


class UpstreamServer:
    def __init__(self, fixtures: Path = FIXTURES, port: int = 0) -> None:
        self.fixtures = fixtures
        self.routes = json.loads((fixtures / "routes.json").read_text("utf-8"))["routes"]
        self.requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> UpstreamServer:
        serve_in_background(self.httpd)
        return self

    def stop(self) -> None:
        stop_server(self.httpd)

    def __enter__(self) -> UpstreamServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- knobs and records -------------------------------------------------------------
    def fail_next(self, n: int, status: int, body: bytes = b"", path_prefix: str | None = None,
                  headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self._faults.append(_Fault(n, status, body, path_prefix, headers or {}))

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self._faults.clear()

    def requests_to(self, prefix: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    # -- serving -----------------------------------------------------------------------
    def _route(self, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        for route in self.routes:
            if route.get("prefix"):
                if not path.startswith(route["path"]):
                    continue
            elif path != route["path"]:
                continue
            if any(query.get(k) != v for k, v in (route.get("query") or {}).items()):
                continue
            return int(route.get("status", 200)), (self.fixtures / route["file"]).read_bytes()
        return 404, b'{"error": "no route"}'

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        now = time.monotonic()
        parts = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        extra: dict[str, str] = {}
        with self._lock:
            fault = next((f for f in self._faults if f.remaining > 0 and (
                f.path_prefix is None or parts.path.startswith(f.path_prefix))), None)
            if fault is not None:
                fault.remaining -= 1
                status, body, extra = fault.status, fault.body, fault.headers
        if fault is None:
            status, body = self._route(parts.path, query)
        with self._lock:
            self.requests.append(RecordedRequest(now, parts.path, query,
                                                 handler.headers.get("User-Agent", ""), status))
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        for k, v in extra.items():
            handler.send_header(k, v)
        handler.end_headers()
        handler.wfile.write(body)


if __name__ == "__main__":
    srv = UpstreamServer(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0).start()
    print(srv.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()
