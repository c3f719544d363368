"""Write infra/requirements.lock: the image's exact runtime dependencies, with hashes.

The lock is the transitive closure of ``[project.dependencies]`` in pyproject.toml (plus
the extras named on the command line), pinned to the versions installed in the venv this
script runs in — the venv the test suite passed on — so the image runs what was tested.
Test-only packages (pytest, moto, ...) are not in it.

    .venv/bin/python infra/lock.py            # pins + sha256 hashes (asks the index)
    .venv/bin/python infra/lock.py --no-hashes  # pins only, offline

Hashes come from ``pip install --dry-run --ignore-installed --report``: pip resolves the
pins against the package index for this platform (linux x86_64, CPython 3.11 — the
``python:3.11-slim`` amd64 image) and reports each distribution's sha256 without
installing. Building for another platform (arm64) needs a lock made there.

Markers are evaluated for every Python the image is built on (infra/Dockerfile's two
bases): this venv's, and Debian bookworm's CPython 3.11.2, which needs a few backports
(``redis`` wants ``async-timeout`` before 3.11.3). Such a package must be installed in
this venv too (``pip install async-timeout``), so that its pin is the tested version.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
# The image's Pythons besides this venv's: Debian bookworm's python3 (BASE=debian).
TARGET_PYTHONS = ("3.11.2",)
LOCK = ROOT / "infra" / "requirements.lock"


def project_requirements(extras: list[str]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project.get("optional-dependencies", {})[extra]]
    return reqs


def closure(roots: list[Requirement]) -> dict[str, str]:
    """name -> installed version for every runtime dependency, transitively."""
    here = default_environment()
    envs = [here] + [{**here, "python_full_version": v, "python_version": v[:4]}
                     for v in TARGET_PYTHONS]
    pinned: dict[str, str] = {}
    todo = [(req, ()) for req in roots]
    while todo:
        req, extras = todo.pop()
        if req.marker and not any(req.marker.evaluate({**env, "extra": e})
                                  for env in envs for e in (extras or ("",))):
            continue
        name = canonicalize_name(req.name)
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            raise SystemExit(f"{req} (needed on one of the image's Pythons) is not "
                             f"installed here: pip install '{req.name}{req.specifier}'") from None
        if not req.specifier.contains(dist.version, prereleases=True):
            raise SystemExit(f"installed {req.name} {dist.version} does not satisfy {req}")
        seen = name in pinned
        pinned[name] = dist.version
        if seen and not req.extras:
            continue
        for raw in dist.requires or ():
            todo.append((Requirement(raw), tuple(req.extras)))
    return dict(sorted(pinned.items()))


def hashes(pins: dict[str, str]) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        reqs = Path(tmp, "pins.txt")
        reqs.write_text("".join(f"{n}=={v}\n" for n, v in pins.items()))
        report = Path(tmp, "report.json")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run",
             "--ignore-installed", "--no-deps", "--only-binary=:all:",
             "--report", str(report), "-r", str(reqs)],
            check=True)
        found = json.loads(report.read_text())["install"]
    out = {}
    for item in found:
        name = canonicalize_name(item["metadata"]["name"])
        digests = item["download_info"].get("archive_info", {}).get("hashes", {})
        if "sha256" not in digests:
            raise SystemExit(f"no sha256 for {name} from the index")
        out[name] = digests["sha256"]
    missing = set(pins) - set(out)
    if missing:
        raise SystemExit(f"the index returned no wheel for {sorted(missing)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", action="append", default=[],
                        help="also lock this optional-dependencies group")
    parser.add_argument("--no-hashes", action="store_true")
    parser.add_argument("--output", type=Path, default=LOCK)
    args = parser.parse_args(argv)
    pins = closure(project_requirements(args.extra))
    digests = {} if args.no_hashes else hashes(pins)
    lines = [
        "# infra/requirements.lock — generated by `.venv/bin/python infra/lock.py"
        + (" --no-hashes" if args.no_hashes else "") + "`; do not edit.",
        "# Runtime closure of pyproject [project.dependencies] at the versions the tests",
        "# passed on (linux x86_64, CPython 3.11). The image installs it with",
        "# `pip install --require-hashes --no-deps`, then the project itself with --no-deps.",
    ]
    for name, version in pins.items():
        line = f"{name}=={version}"
        if name in digests:
            line += f" \\\n    --hash=sha256:{digests[name]}"
        lines.append(line)
    args.output.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}: {len(pins)} packages"
          + ("" if args.no_hashes else ", with sha256 hashes"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
