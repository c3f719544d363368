"""numba's compile cache under concurrent cold starts (workers/jitcache.py).

Given an empty cache, when several processes (plain ones, and Celery workers with two pool
children each) start at the same instant, expect: each entry compiled and saved once, no
process crashing, and a batch through the workers with no pool child lost. Given a cache
whose last warm-up died half-way, or whose files are garbage, expect it to be rebuilt.

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


# Loads one cached kernel of librosa's (a gufunc, as the one a CI run crashed in), after
# saying "loading" on its own line; prints "loaded" when done.
LOAD_ONE = ("import numpy as np; from contract.settings import Settings; "
            "from workers import jitcache; jitcache.prepare(Settings.from_env()); "
            "import librosa; print('loading', flush=True); "
            "librosa.feature.zero_crossing_rate(np.ones(4096, dtype=np.float32)); "
            "print('loaded', flush=True)")


def test_loads_wait_while_the_cache_is_changed(cold_started: tuple[Path, list[str]],
                                                tmp_path: Path) -> None:
    """A rebuild (or any save) holds the access lock exclusively: no process reads an index
    and then a data file that was rewritten for another signature in between."""
    cache_dir, folder = _copy_of(cold_started[0], tmp_path)
    with jitcache.access(folder, exclusive=True):  # as a wipe or a save holds it
        proc = subprocess.Popen([sys.executable, "-c", LOAD_ONE], env=_env(cache_dir),
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            while first and not first.startswith("loading"):
                first = proc.stdout.readline()
            assert first.startswith("loading"), proc.communicate()[0]
            # Loading a warm entry takes well under a second; held off, it waits.
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(timeout=3)
        except BaseException:
            proc.kill()
            raise
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "loaded" in out
    assert "data loaded from" in out and not _saved(out), "the warm entry was not loaded"


def test_a_rebuild_keeps_the_access_lock(cold_started: tuple[Path, list[str]],
                                         tmp_path: Path) -> None:
    """Deleting the lock file would let a process holding the old one and a process
    locking a new one change the cache at once."""
    cache_dir, folder = _copy_of(cold_started[0], tmp_path)
    lock_file = folder / jitcache.ACCESS_LOCK_NAME
    assert lock_file.exists()
    inode = lock_file.stat().st_ino
    (folder / jitcache.WARMING_MARKER).write_text("12345\n")

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
