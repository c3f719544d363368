"""Helpers shared by the hostile-input and security tests (plain functions, no fixtures).

The pipeline harness itself is :mod:`tests.integration.pipeline_helpers`; this adds what
these two modules both need: numba's compiled extractor cache and waiting for a local
HTTP service to answer.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.pipeline_helpers import numba_cache_warmed, worker_cache_location


def worker_cache_dir(request: pytest.FixtureRequest,
                     tmp_path_factory: pytest.TempPathFactory) -> Path:
    """numba's compiled extractor, in the same place tests/integration keeps it (compiled
    once across sessions; ``PREVIEWVEC_TEST_CACHE_DIR`` overrides), warmed before use."""
    path = worker_cache_location(request, tmp_path_factory)
    with numba_cache_warmed(path):
        pass
    return path


def wait_http(url: str, *, timeout_s: float, alive: object = None) -> None:
    """Poll ``url`` until it answers with any HTTP status (a deadline, not a sleep).

    ``alive`` is an optional ``subprocess.Popen``: stop early if it exited.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            pass
        if alive is not None and alive.poll() is not None:  # type: ignore[attr-defined]
            raise AssertionError(f"process serving {url} exited")
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer within {timeout_s:g} s")
        time.sleep(0.1)
