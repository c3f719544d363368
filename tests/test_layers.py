"""Imports point one way: entry points → stages → contract (docs/architecture.md).

Read from the source with ``ast`` (nothing is imported), so a wrong-way import fails here
even inside a function body, where it would otherwise hide until that code path runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CONTRACT, STAGE, ENTRY, TOOLING = "contract", "stage", "entry point", "tooling"
LAYER_OF = {
    "contract": CONTRACT,
    "producers": STAGE,
    "workers": STAGE,
    "reducer": STAGE,
    "previewvec": ENTRY,
    "testkit": TOOLING,
}
# What each layer may import besides itself (its own package) and third-party code.
ALLOWED = {
    CONTRACT: set(),
    STAGE: {CONTRACT},  # stages never import each other
    ENTRY: {CONTRACT, STAGE},
    TOOLING: {CONTRACT, STAGE},  # test songs are decoded by the product's decoder
}
# The demo makes its songs through testkit's one narrow call (test tooling, not product).
EXCEPTIONS = {("previewvec.demo", "testkit")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def _sources() -> list[Path]:
    return sorted(p for package in LAYER_OF for p in (REPO / package).rglob("*.py"))


def wrong_way_imports() -> list[str]:
    """Every import of a first-party package that its importer's layer may not use."""
    problems = []
    for path in _sources():
        importer = _module_name(path)
        package = importer.split(".")[0]
        for line, module in _imports(path):
            target = module.split(".")[0]
            if target not in LAYER_OF or target == package:
                continue
            if (importer, target) in EXCEPTIONS:
                continue
            if LAYER_OF[target] not in ALLOWED[LAYER_OF[package]]:
                problems.append(f"{path.relative_to(REPO)}:{line}: {LAYER_OF[package]} "
                                f"{package} imports {LAYER_OF[target]} {module}")
    return problems


def test_every_package_has_a_layer() -> None:
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert packages == set(LAYER_OF)


def test_imports_point_one_way() -> None:
    assert wrong_way_imports() == []


@pytest.mark.parametrize(("importer", "source", "allowed"), [
    ("contract/jobs.py", "from workers.fetch import fetch_preview\n", False),
    ("producers/queue.py", "import workers.app\n", False),
    ("reducer/reduce.py", "def f():\n    from producers import submit\n", False),
    ("workers/fetch.py", "from contract.settings import Settings\n", True),
    ("previewvec/cli.py", "from reducer.reduce import Reducer\n", True),
])
def test_the_check_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, importer: str,
                          source: str, allowed: bool) -> None:
    """Given one module with a given import, expect the check to flag it or not."""
    fake_repo = tmp_path / "repo"
    for package in LAYER_OF:
        (fake_repo / package).mkdir(parents=True)
        (fake_repo / package / "__init__.py").write_text("")
    (fake_repo / importer).write_text(source)
    monkeypatch.setattr(__import__(__name__, fromlist=["REPO"]), "REPO", fake_repo)
    assert (wrong_way_imports() == []) == allowed


def test_test_tooling_is_not_in_the_product() -> None:
    """testkit/ is a distribution of its own: the product's wheel and image hold none of it,
    and its dependencies (mido) are not the product's (issue 13, point 4)."""
    import tomllib

    from setuptools import find_packages

    product = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = product["tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = set(find_packages(str(REPO), include=include))
    assert shipped and not {p for p in shipped if p.split(".")[0] in ("testkit", "tests")}
    assert {p.split(".")[0] for p in shipped} == set(LAYER_OF) - {"testkit"}
    assert not any(dep.startswith("mido") for dep in product["project"]["dependencies"])
    kit = tomllib.loads((REPO / "testkit" / "pyproject.toml").read_text())["project"]
    assert kit["name"] == "previewvec-testkit" and "previewvec" in kit["dependencies"]
    dockerfile = (REPO / "infra" / "Dockerfile").read_text()
    assert "testkit" not in dockerfile
    assert "testkit" in (REPO / ".dockerignore").read_text().split()
    assert "mido" not in (REPO / "infra" / "requirements.lock").read_text()
