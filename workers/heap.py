"""glibc heap controls for worker processes: the arena cap and ``malloc_trim``.

With I/O overlapped (workers/overlap.py), a worker's main process runs its fetch and
write-behind threads (16 + 4 per pool child by default). glibc gives threads that allocate
at once arenas of their own, up to 8 per core, and each arena keeps the memory it freed:
the ≈ 0.5 MB previews and their buffers, allocated in one thread and freed in another,
leave every arena holding a few previews' worth. Capping arenas at 2 took the main
process from ≈ 600 to ≈ 360 MB RSS, and a 1-child worker from 1 105 to 665 MB RSS per
core, at the same throughput (docs/benchmarks.md, latency). The cap is set in the main
process before any thread starts; pool children inherit it through fork.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's malloc.h
# An operator's own choice, made in the environment glibc reads at start, wins.
_GLIBC_OWN = ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    libc = _libc()
    return getattr(libc, "malloc_trim", None) if libc is not None else None


def cap_arenas(arenas: int, env: dict[str, str] | None = None) -> bool:
    """Limit this process (and the processes it forks) to ``arenas`` malloc arenas.

    Returns whether the cap was set: not for ``arenas`` ≤ 0 (glibc's default), when the
    environment already sets glibc's own variable, or off glibc.
    """
    env = dict(os.environ) if env is None else env
    if arenas <= 0 or any(name in env for name in _GLIBC_OWN):
        return False
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None or not getattr(libc, "malloc_trim", None):  # not glibc
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))
