"""tests/unit mirrors the code: tests/unit/<package>/test_<module>[_<aspect>].py tests
<package>/<module>.py, so a module's tests are found from its name (and a moved or renamed
module cannot leave its tests behind under a stale name)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "tests" / "unit"


def module_of(test_file: Path) -> Path | None:
    """The module a unit test file is named after, or None when there is none."""
    package = REPO / test_file.parent.relative_to(UNIT)
    stem = test_file.stem.removeprefix("test_")
    modules = {p.stem for p in package.glob("*.py")} | {
        p.name for p in package.iterdir() if (p / "__init__.py").exists()}
    for name in sorted(modules, key=len, reverse=True):
        if stem == name or stem.startswith(name + "_"):
            return package / name
    return None


def test_every_unit_test_file_is_named_after_a_module_of_its_package() -> None:
    files = sorted(UNIT.rglob("test_*.py"))
    assert files
    orphans = [str(f.relative_to(REPO)) for f in files if module_of(f) is None]
    assert orphans == [], "unit tests named after no module: " + ", ".join(orphans)


def test_every_unit_test_folder_is_a_package_of_the_code() -> None:
    folders = {f.parent for f in UNIT.rglob("test_*.py")}
    missing = [str(d.relative_to(REPO)) for d in folders
               if not (REPO / d.relative_to(UNIT) / "__init__.py").exists()
               or not (d / "__init__.py").exists()]
    assert missing == []
