"""Prove that a container loads the numba cache baked into the image instead of compiling.

    python /opt/previewvec/cachecheck.py record   # at build time, right after the warm-up
    python /opt/previewvec/cachecheck.py verify   # in a running container, after clips

``record`` writes the manifest of every compiled-code file (numba's ``*.nbi`` index and
``*.nbc`` object files: path, size, mtime) next to the cache. ``verify`` compares the
cache with it: numba writes or rewrites a file for every function it compiles, so an
unchanged cache after the container's first clips means nothing was recompiled. Exit 0
and ``numba cache: N files as built, nothing recompiled``; exit 1 listing what changed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

MANIFEST = "baked-manifest.json"
SUFFIXES = (".nbi", ".nbc")


def cache_root() -> Path:
    return Path(os.environ.get("PREVIEWVEC_CACHE_DIR", "/app/.cache")) / "numba"


def snapshot(root: Path) -> dict[str, list[int]]:
    return {str(p.relative_to(root)): [p.stat().st_size, p.stat().st_mtime_ns]
            for p in sorted(root.rglob("*")) if p.suffix in SUFFIXES}


def main(args: list[str]) -> int:
    root = cache_root()
    if args == ["record"]:
        files = snapshot(root)
        if not files:
            print(f"numba cache: no compiled files under {root}")
            return 1
        (root / MANIFEST).write_text(json.dumps(files, indent=0, sort_keys=True))
        print(f"numba cache: recorded {len(files)} files")
        return 0
    if args == ["verify"]:
        baked = json.loads((root / MANIFEST).read_text())
        now = snapshot(root)
        changed = sorted(k for k in now if baked.get(k) != now[k])
        gone = sorted(set(baked) - set(now))
        if changed or gone:
            print(f"numba cache: RECOMPILED {len(changed)} files, lost {len(gone)}: "
                  f"{(changed + gone)[:10]}")
            return 1
        print(f"numba cache: {len(now)} files as built, nothing recompiled")
        return 0
    print("usage: cachecheck.py record|verify", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
