"""Test HTTP servers on 127.0.0.1: one place for the serving thread and the teardown."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def start_server(handler: type[BaseHTTPRequestHandler], port: int = 0) -> ThreadingHTTPServer:
    """A threading server for ``handler`` on 127.0.0.1 (a free port by default), serving."""
    httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
    httpd.daemon_threads = True
    serve_in_background(httpd)
    return httpd


def serve_in_background(httpd: ThreadingHTTPServer, *,
                        poll_interval: float = 0.5) -> threading.Thread:
    """Run ``httpd.serve_forever`` in a daemon thread; returns the thread."""
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": poll_interval},
                              daemon=True)
    thread.start()
    return thread


def stop_server(httpd: ThreadingHTTPServer | None) -> None:
    """Stop serving and close the socket (no-op for None)."""
    if httpd is not None:
        httpd.shutdown()
        httpd.server_close()
