"""workers/heap.py: the malloc arena cap, counted from glibc's own ``malloc_info``."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from workers import heap

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")

# Eight threads allocate and hold at once (contending, so glibc hands out arenas), then
# malloc_info's XML lists one <heap> per arena in use.
COUNT_ARENAS = r'''
import ctypes, ctypes.util, os, sys, tempfile, threading
from workers import heap
print(heap.cap_arenas(int(sys.argv[1]), env={}))
barrier = threading.Barrier(8)
held = []
def work():
    barrier.wait()
    for _ in range(200):
        held.append(bytearray(64 * 1024))
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.fdopen.restype = ctypes.c_void_p
with tempfile.TemporaryFile() as out:
    fp = libc.fdopen(os.dup(out.fileno()), b"w")
    libc.malloc_info(0, ctypes.c_void_p(fp))
    libc.fclose(ctypes.c_void_p(fp))
    out.seek(0)
    print(out.read().decode().count("<heap nr="))
'''


def _arenas(cap: int) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", COUNT_ARENAS, str(cap)], capture_output=True,
                         text=True, check=True, timeout=60).stdout.split()
    return out[0], int(out[1])


def test_the_cap_holds_threads_to_two_arenas() -> None:
    """Given eight threads allocating at once, expect ≤ 2 arenas capped, more without."""
    capped, n_capped = _arenas(2)
    assert capped == "True" and n_capped <= 2
    uncapped, n_default = _arenas(0)
    assert uncapped == "False" and n_default > 2


def test_an_operator_setting_in_the_environment_wins() -> None:
    assert heap.cap_arenas(2, env={"MALLOC_ARENA_MAX": "4"}) is False
    assert heap.cap_arenas(2, env={"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}) is False


def test_malloc_trim_is_glibcs() -> None:
    trim = heap.malloc_trim()
    assert trim is not None and trim(0) in (0, 1)
