"""The follow loop's heartbeat file (reducer/liveness.py)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from contract.settings import Settings
from reducer.liveness import HEARTBEAT_FILE, Heartbeat, heartbeat_age_s, heartbeat_path


def test_heartbeat_lives_in_the_cache_folder(tmp_path: Path) -> None:
    settings = Settings.from_env({"PREVIEWVEC_CACHE_DIR": str(tmp_path / "cache")})
    assert heartbeat_path(settings) == tmp_path / "cache" / HEARTBEAT_FILE


def test_a_beat_creates_the_file_and_resets_its_age(tmp_path: Path) -> None:
    path = tmp_path / "missing-folder" / HEARTBEAT_FILE
    assert heartbeat_age_s(path) is None
    Heartbeat(path).beat()
    assert path.exists()
    os.utime(path, (1_000_000.0, 1_000_000.0))
    assert heartbeat_age_s(path, now=1_000_090.0) == pytest.approx(90.0)
    Heartbeat(path).beat()
    assert heartbeat_age_s(path, now=1_000_090.0) == 0.0  # mtime is now: far past the fixed clock


def test_an_unwritable_heartbeat_is_logged_once_and_never_raised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    heartbeat = Heartbeat(blocker / HEARTBEAT_FILE)
    with caplog.at_level(logging.WARNING, logger="reducer.liveness"):
        heartbeat.beat()
        heartbeat.beat()
    warnings = [r for r in caplog.records if "liveness heartbeat" in r.getMessage()]
    assert len(warnings) == 1
