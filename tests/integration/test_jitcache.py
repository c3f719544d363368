"""numba's compile cache under concurrent cold starts (workers/jitcache.py).

Given an empty cache, when several processes (plain ones, and Celery workers with two pool
children each) start at the same instant, expect: each entry compiled and saved once, no
process crashing, and a batch through the workers with no pool child lost. Given a cache
whose files are garbage (with or without the marker of a warm-up that died), expect it to
be rebuilt; given the marker over a cache that loads, expect it kept as it is.

All real processes; each scenario starts from its own empty cache folder.
"""

from __future__ import annotations

import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.settings import Settings
from tests.harness.pipeline import (
    REPO,
    ClipServer,
    Pipeline,
    catalog_line,
    clean_env,
    make_clips,
)
from workers import jitcache

pytestmark = pytest.mark.slow

WARM = ("from contract.settings import Settings; from workers import jitcache; "
        "jitcache.warm(Settings.from_env())")
N_PROCESSES = 3
N_WORKERS, WORKER_CONCURRENCY, N_ROUNDS = 3, 2, 2
# Billiard's line for a pool child that died: "... exited with 'signal 11 (SIGSEGV)'".
CHILD_DIED = re.compile(r"exited with 'signal \d+|WorkerLostError")


def _env(cache_dir: Path) -> dict[str, str]:
    # NUMBA_DEBUG_CACHE makes numba print "[cache] data saved to ..." for every entry saved.
    return {**clean_env(), "PREVIEWVEC_CACHE_DIR": str(cache_dir), "NUMBA_DEBUG_CACHE": "1",
            "PYTHONUNBUFFERED": "1"}


def _start_warm(cache_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WARM], env=_env(cache_dir), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(procs: list[subprocess.Popen[str]], timeout_s: float = 900.0) -> list[str]:
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=timeout_s)
        assert proc.returncode == 0, f"warm-up exited with {proc.returncode}:\n{out[-3000:]}"
        outputs.append(out)
    return outputs


def _saved(output: str) -> list[str]:
    return re.findall(r"\[cache\] data saved to '([^']+)'", output)


def _index_consistent(folder: Path) -> None:
    """Every index entry of every cached function names a data file that exists."""
    indexes = list(folder.rglob("*.nbi"))
    assert indexes, f"no numba index in {folder}"
    for index in indexes:
        with open(index, "rb") as fh:
            pickle.load(fh)  # numba's version
            _stamp, overloads = pickle.loads(fh.read())
        for data_name in overloads.values():
            assert (index.parent / data_name).exists(), f"{index} -> missing {data_name}"
        assert len(set(overloads.values())) == len(overloads), f"{index}: a data file reused"


@pytest.fixture(scope="module")
def cold_started(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """``N_PROCESSES`` warm-ups started at the same instant on one empty cache."""
    cache_dir = tmp_path_factory.mktemp("cold-cache")
    return cache_dir, _finish([_start_warm(cache_dir) for _ in range(N_PROCESSES)])


def _copy_of(cache_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of a warm cache (numba keys entries by source, not by cache path)."""
    copy = tmp_path / "cache"
    shutil.copytree(cache_dir, copy)
    return copy, jitcache.cache_dir_for(Settings.from_env(_env(copy)))


def test_concurrent_cold_starts_compile_each_entry_once(
        cold_started: tuple[Path, list[str]]) -> None:
    cache_dir, outputs = cold_started
    saved = [path for out in outputs for path in _saved(out)]
    assert saved, "nothing was compiled into an empty cache"
    assert len(saved) == len(set(saved)), "an entry was compiled and saved more than once"
    compilers = [out for out in outputs if _saved(out)]
    assert len(compilers) == 1, "more than one process compiled"
    folder = jitcache.cache_dir_for(Settings.from_env(_env(cache_dir)))
    _index_consistent(folder)
    assert (folder / jitcache.WARM_MARKER).exists()
    assert not (folder / jitcache.WARMING_MARKER).exists()
    # A later process loads everything: it saves nothing.
    assert not _saved(_finish([_start_warm(cache_dir)])[0])


def test_a_warm_up_that_died_is_rebuilt(cold_started: tuple[Path, list[str]],
                                        tmp_path: Path) -> None:
    cache_dir, folder = _copy_of(cold_started[0], tmp_path)
    # As a crash half-way through compiling leaves it: the marker, and entries that may
    # point at anything (here: garbage, which would crash or fail every loader).
    (folder / jitcache.WARMING_MARKER).write_text("12345\n")
    for data in folder.rglob("*.nbc"):
        data.write_bytes(b"\x00garbage")

    out = _finish([_start_warm(cache_dir)])[0]
    assert "rebuilding the compile cache" in out
    assert _saved(out), "the cache was not compiled afresh"
    _index_consistent(folder)
    assert not (folder / jitcache.WARMING_MARKER).exists()


def test_a_warm_up_that_died_over_a_cache_that_loads_keeps_the_cache(
        cold_started: tuple[Path, list[str]], tmp_path: Path) -> None:
    """A worker killed while it loaded a warm cache leaves the marker and a cache that
    loads: wiping it would pull it from under every process loading from it."""
    cache_dir, folder = _copy_of(cold_started[0], tmp_path)
    (folder / jitcache.WARMING_MARKER).write_text("12345\n")
    before = {path: path.stat().st_ino for path in folder.rglob("*.nb[ic]")}
    assert before

    out = _finish([_start_warm(cache_dir)])[0]
    assert "loads whole in a fresh process: keeping it" in out
    assert "rebuilding the compile cache" not in out
    assert not _saved(out), "an entry of a cache that loads was compiled again"
    assert {path: path.stat().st_ino for path in folder.rglob("*.nb[ic]")} == before
    assert (folder / jitcache.WARM_MARKER).exists()
    assert not (folder / jitcache.WARMING_MARKER).exists()


# A warm-up that fails for a reason of its own (here: patched to), in the parent only.
FAIL_WARM = ("from contract.settings import Settings; from workers import jitcache; "
             "settings = Settings.from_env(); jitcache.prepare(settings); "
             "import workers.features.extractor as extractor\n"
             "def warm_up(sr): raise RuntimeError('not the cache')\n"
             "extractor.warm_up = warm_up; jitcache.warm(settings)")


def test_a_warm_up_that_fails_over_a_cache_that_loads_says_why_and_keeps_the_cache(
        cold_started: tuple[Path, list[str]], tmp_path: Path) -> None:
    cache_dir, folder = _copy_of(cold_started[0], tmp_path)
    before = {path: path.stat().st_ino for path in folder.rglob("*.nb[ic]")}

    proc = subprocess.run([sys.executable, "-c", FAIL_WARM], env=_env(cache_dir), cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "RuntimeError: not the cache" in out
    assert "loads whole in a fresh process: keeping it" in out
    assert "rebuilding the compile cache" not in out
    assert {path: path.stat().st_ino for path in folder.rglob("*.nb[ic]")} == before


def test_garbage_cache_files_without_a_marker_are_rebuilt(
        cold_started: tuple[Path, list[str]], tmp_path: Path) -> None:
    """A file left half written (by an old numba without atomic writes, a full disk)."""
    cache_dir, folder = _copy_of(cold_started[0], tmp_path)
    for data in folder.rglob("*.nbc"):
        data.write_bytes(b"\x80\x05truncated")

    out = _finish([_start_warm(cache_dir)])[0]
    assert "rebuilding the compile cache" in out
    assert _saved(out), "the cache was not compiled afresh"
    _index_consistent(folder)


# numba issue #10128, made to happen on purpose: two processes compile one gufunc at once
# into an empty cache. A gufunc is two cache entries, its kernel and its wrapper, and the
# wrapper finds the kernel by a name numba numbers per process in compilation order.
# Process "late-kernel" compiles two other functions first (its numbers differ), and the
# saves are ordered so that its kernel overwrites the other's but its wrapper is
# overwritten: without one compiler at a time, the cache ends with a kernel and a wrapper
# of different processes, and every process that loads both dies with SIGSEGV.
GUFUNC_MODULE = """
from numba import guvectorize


@guvectorize(["void(float64[:], float64[:])"], "(n)->(n)", cache=True, nopython=True)
def double(x, out):
    for i in range(x.shape[0]):
        out[i] = 2.0 * x[i]
"""
COMPILE = """
import os, sys, time
import numpy as np
from contract.settings import Settings
from workers import jitcache

jitcache.prepare(Settings.from_env())
from numba import njit
from numba.core import caching

role, other, rendezvous = sys.argv[1], sys.argv[2], sys.argv[3]
# (save number, whose save of that number must come first) for this role
WAIT_FOR = {"late-kernel": {1: other}, "late-wrapper": {2: other}}[role]
original = caching.IndexDataCacheFile._save_data
saves = 0


def save_data(self, name, data):
    global saves
    saves += 1
    first = WAIT_FOR.get(saves)
    if first:  # wait (at most 5 s: a process that holds the compile lock never arrives)
        deadline = time.monotonic() + 5
        while (not os.path.exists(f"{rendezvous}/{first}-{saves}")
               and time.monotonic() < deadline):
            time.sleep(0.02)
    original(self, name, data)
    open(f"{rendezvous}/{role}-{saves}", "w").close()


caching.IndexDataCacheFile._save_data = save_data
if role == "late-kernel":
    @njit
    def shift(x):
        return x + 1
    shift(1), shift(1.0)
# Both start compiling together, so both miss the cache.
open(f"{rendezvous}/{role}-ready", "w").close()
while not os.path.exists(f"{rendezvous}/{other}-ready"):
    time.sleep(0.02)
sys.path.insert(0, rendezvous)
import gufmod
print(gufmod.double(np.arange(3.0)).tolist(), "saves", saves, flush=True)
"""
LOAD = ("import sys; import numpy as np; from contract.settings import Settings; "
        "from workers import jitcache; jitcache.prepare(Settings.from_env()); "
        "sys.path.insert(0, sys.argv[1]); import gufmod; "
        "print(gufmod.double(np.arange(3.0)).tolist())")


def test_one_gufunc_compiled_by_two_processes_at_once_loads_whole(tmp_path: Path) -> None:
    cache_dir, work = tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    (work / "gufmod.py").write_text(GUFUNC_MODULE)
    procs = [subprocess.Popen([sys.executable, "-c", COMPILE, role, other, str(work)],
                              env=_env(cache_dir), cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for role, other in (("late-kernel", "late-wrapper"),
                                 ("late-wrapper", "late-kernel"))]
    outputs = _finish(procs, timeout_s=300)
    assert all("[0.0, 2.0, 4.0]" in out for out in outputs), outputs

    loader = subprocess.run([sys.executable, "-c", LOAD, str(work)], env=_env(cache_dir),
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert loader.returncode == 0, f"exit {loader.returncode}: {loader.stderr[-2000:]}"
    assert "[0.0, 2.0, 4.0]" in loader.stdout
    # One process compiled and saved both entries; the other loaded them.
    assert sorted(re.findall(r"saves (\d+)", "".join(outputs))) == ["0", "2"], outputs


def test_a_rebuild_keeps_the_compile_lock(cold_started: tuple[Path, list[str]],
                                          tmp_path: Path) -> None:
    """Deleting the lock file would let a process holding the old one and a process
    locking a new one compile into the cache at once."""
    cache_dir, folder = _copy_of(cold_started[0], tmp_path)
    lock_file = folder / jitcache.COMPILE_LOCK_NAME
    assert lock_file.exists()
    inode = lock_file.stat().st_ino
    (folder / jitcache.WARMING_MARKER).write_text("12345\n")
    for data in folder.rglob("*.nbc"):  # broken, so that it is rebuilt
        data.write_bytes(b"\x00garbage")

    out = _finish([_start_warm(cache_dir)])[0]
    assert "rebuilding the compile cache" in out
    assert lock_file.stat().st_ino == inode
    _index_consistent(folder)


# --------------------------------------------------------------------------- workers


@pytest.fixture(scope="module")
def clip_server() -> Iterator[tuple[ClipServer, list[str]]]:
    server = ClipServer().start()
    urls = [server.add_clip(clip) for clip in make_clips(6, duration_s=8.0)]
    yield server, urls
    server.stop()


@pytest.mark.parametrize("round_no", range(N_ROUNDS))
def test_workers_started_together_on_an_empty_cache_lose_no_child(
        tmp_path: Path, clip_server: tuple[ClipServer, list[str]], round_no: int) -> None:
    _, urls = clip_server
    pipeline = Pipeline(tmp_path / "pipeline", cache_dir=tmp_path / "empty-cache",
                        store=str(tmp_path / "store"))
    try:
        workers = [pipeline.start_worker(f"cold{round_no}-{i}", concurrency=WORKER_CONCURRENCY)
                   for i in range(N_WORKERS)]
        lines = [catalog_line(f"cold-{round_no}-{i:02d}", urls[i % len(urls)])
                 for i in range(4 * N_WORKERS)]
        report = pipeline.enqueue(lines)
        for worker in workers:
            worker.wait_warm(timeout_s=900, count=WORKER_CONCURRENCY)
        status = pipeline.wait_run(report.run_id, expected_total=len(lines), timeout_s=300)

        assert status.counts["done"] == len(lines), status.counts
        for worker in workers:
            assert worker.alive(), worker.log_tail()
            assert not CHILD_DIED.search(worker.log()), worker.log_tail()
        warm_lines = [w.log().count("extractor warm in") for w in workers]
        assert warm_lines == [1] * N_WORKERS, "each main process warms once, before forking"
    finally:
        pipeline.close()
