"""Benchmark processes run single-threaded (figures are per core) with numba's JIT cache
persisted, so a fresh process does not recompile librosa's kernels. Call
:func:`pin_one_thread` before numpy, scipy or numba is imported: they read these once.
Subprocesses (e.g. Celery workers) inherit the environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from contract.settings import Settings

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def pin_one_thread(script: str) -> str:
    """Pin this process (and its children) to one thread; returns the numba cache dir."""
    if "numpy" in sys.modules:  # pragma: no cover - only if something imported numpy early
        raise SystemExit(f"{script} must set thread counts before numpy is imported")
    for var in THREAD_VARS:
        os.environ[var] = "1"
    cache = os.environ.get("NUMBA_CACHE_DIR") or str(Settings.from_env().numba_cache_dir)
    os.makedirs(cache, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = cache
    return cache


def stop_workers(procs: list[subprocess.Popen[bytes]], timeout_s: float = 60) -> None:
    """SIGTERM every worker still running (a warm shutdown: the current task finishes),
    then wait for each; one that outlives ``timeout_s`` is killed."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
