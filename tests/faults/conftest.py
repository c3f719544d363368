"""Fixtures of the fault scenarios, and the table of their figures.

``pytest -m faults tests/faults/test_scenarios.py`` ends with a markdown table (one row
per scenario) in the terminal summary: that table is what docs/reliability.md shows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.faults import FAULT_ROW, FaultyClipServer, Row
from tests.harness.pipeline import (
    Clip,
    make_clips,
    numba_cache_warmed,
    worker_cache_location,
)

N_CLIPS = 24  # distinct songs, reused under distinct recording ids and URLs
CLIP_DURATION_S = 6.0  # above the 5 s minimum, short enough for 200-job batches


@dataclass(frozen=True)
class FaultAssets:
    clips: list[Clip]
    cache_dir: Path  # PREVIEWVEC_CACHE_DIR of every worker (numba's compiled extractor)


@pytest.fixture(scope="session")
def fault_assets(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultAssets]:
    """Short clips rendered once, and numba's cache compiled once, in the same folder the
    integration tests use (``.pytest_cache``; ``PREVIEWVEC_TEST_CACHE_DIR`` overrides)."""
    cache_dir = worker_cache_location(request, tmp_path_factory)
    with numba_cache_warmed(cache_dir):  # compiles while the clips render
        clips = make_clips(N_CLIPS, duration_s=CLIP_DURATION_S)
    yield FaultAssets(clips, cache_dir)


@pytest.fixture
def clip_host(fault_assets: FaultAssets) -> Iterator[FaultyClipServer]:
    """The preview host of one scenario (healthy until the scenario says otherwise)."""
    server = FaultyClipServer(fault_assets.clips).start()
    yield server
    server.stop()


@pytest.fixture
def fault_rows(request: pytest.FixtureRequest) -> Iterator[list[Row]]:
    """Scenarios append their row here; the terminal summary prints the table.

    The rows travel on the test's report (``user_properties``), so the table is also
    printed when the tests run in pytest-xdist processes (``./dev test``): the hooks that
    gather and print them are in tests/conftest.py, which the xdist controller loads."""
    rows: list[Row] = []
    yield rows
    request.node.user_properties.extend((FAULT_ROW, dataclasses.asdict(row))
                                        for row in rows)
