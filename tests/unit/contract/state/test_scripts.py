"""contract/state/scripts.py and lua/: every script is a packaged file, and is used."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import contract.state
from contract.state.scripts import source

STATE_DIR = Path(contract.state.__file__).parent
LUA_FILES = sorted(p.stem for p in (STATE_DIR / "lua").glob("*.lua"))


def test_every_script_is_a_packaged_file_with_a_header() -> None:
    assert len(LUA_FILES) >= 11
    packaged = {p.name for p in resources.files("contract.state").joinpath("lua").iterdir()}
    for name in LUA_FILES:
        assert f"{name}.lua" in packaged
        assert source(name).startswith("--"), f"{name}.lua: say what it takes and returns"
        assert "KEYS" in source(name)


def test_every_script_is_called_by_a_state_module() -> None:
    code = "\n".join(p.read_text() for p in STATE_DIR.glob("*.py"))
    unused = [name for name in LUA_FILES if f'"{name}"' not in code]
    assert unused == []


def test_pyproject_ships_the_scripts() -> None:
    pyproject = (STATE_DIR.parents[1] / "pyproject.toml").read_text()
    assert '"contract.state" = ["lua/*.lua"]' in pyproject
