"""Pointing ``previewvec.cli.main`` (run in the test process) at a test's own services."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.settings import Settings


def point_cli_at(monkeypatch: pytest.MonkeyPatch, settings: Settings, tmp_path: Path) -> None:
    """The CLI's settings come from the environment: this test's Redis and store, and a
    compile cache of its own."""
    monkeypatch.setenv("PREVIEWVEC_BROKER_URL", settings.broker_url)
    monkeypatch.setenv("PREVIEWVEC_STORE", settings.store)
    monkeypatch.setenv("PREVIEWVEC_CACHE_DIR", str(tmp_path / "cache"))
