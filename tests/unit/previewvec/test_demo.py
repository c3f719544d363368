"""previewvec/demo.py: the demo's songs come from the test kit, a distribution of its own."""

from __future__ import annotations

import subprocess
import sys

import pytest

from contract.errors import ConfigError
from previewvec import demo
from tests.harness.pipeline import REPO, clean_env


def test_the_demo_names_a_missing_test_kit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given no test kit installed, expect a typed error that says how to install it."""
    monkeypatch.setitem(sys.modules, "testkit.songs", None)  # import raises ImportError
    with pytest.raises(ConfigError, match=r"pip install -e \./testkit"):
        demo._song_maker()


def test_the_demo_command_without_the_test_kit_prints_one_line(tmp_path) -> None:
    """Given the CLI run where testkit cannot be imported, expect one line and a non-zero exit."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import sys\nsys.modules['testkit'] = None\n")
    result = subprocess.run(
        [sys.executable, "-m", "previewvec.cli", "demo", "--out", str(tmp_path / "demo")],
        env={**clean_env(), "PYTHONPATH": str(block)}, cwd=REPO, capture_output=True,
        text=True, timeout=120, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "test kit" in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_the_songs_come_through_the_narrow_interface() -> None:
    from testkit.songs import resolve_renderer, write_demo_set

    assert demo._song_maker() == (resolve_renderer, write_demo_set)
