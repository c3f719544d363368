"""numba's on-disk JIT cache, made safe for many processes on one host or one volume.

numba's cache is not safe for concurrent writers (numba issues #10128 and #4807). Saving
an entry reads the function's index, picks the first free data-file number, writes the
index, then the data. Two processes compiling the same function at once both pick
number 1 for *different* signatures: one index then points at the other's object code,
and every later process that loads it crashes (SIGSEGV in ``librosa.beat``'s gufunc),
until the cache is deleted by hand.

Three rules make the cache safe here:

1. **Its location is keyed on what invalidates it**: ``<PREVIEWVEC_CACHE_DIR>/numba/
   <previewvec version>-numba<version>-py<version>-<CPU target>``. Another release, numba or
   CPU model starts an empty cache beside the old one instead of mixing entries.
2. **One writer at a time.** Every save holds an exclusive ``flock`` on the cache folder it
   writes (numba's index is re-read under it, so no entry is lost and no data-file number
   is handed out twice), and the warm-up, which does nearly all the compiling, holds one
   lock on the whole cache: concurrent cold starts compile once; the others wait, then
   load what the first compiled (seconds, not another compilation).
3. **A warm-up that died is detected and its cache rebuilt.** The warm-up leaves a
   ``.warming`` marker until it has finished; a process that finds the marker (its owner
   crashed or was killed mid-compile, or crashed loading a corrupt cache) deletes the
   cache and compiles it afresh, instead of crashing on it for ever.

:func:`prepare` must run before numba is imported (it sets ``NUMBA_CACHE_DIR``);
:func:`warm` runs the extractor once under the cache lock.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from contract import __version__
from contract.settings import Settings

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
WARMING_MARKER = ".warming"  # present while a warm-up runs; left behind if it died
WARM_MARKER = ".warm"  # a warm-up finished here: every production path is compiled
WAIT_LOG_EVERY_S = 15.0  # how often a waiting process says what it waits for

_prepared: Path | None = None
_warm_seconds: float | None = None


def cpu_target() -> str:
    """The CPU numba compiles for: its name and a digest of its features.

    numba takes both from ``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` when set (the container
    image sets ``generic`` so its baked cache is valid on every node), else from the host;
    they are read here exactly as numba reads them, so the key names what numba compiles.
    """
    name = os.environ.get("NUMBA_CPU_NAME", "")
    features = os.environ.get("NUMBA_CPU_FEATURES", "")
    if not name:
        import llvmlite.binding as llvm  # the host CPU, without importing numba

        name = llvm.get_host_cpu_name()
        features = llvm.get_host_cpu_features().flatten()
    return f"{name}-{hashlib.sha1(features.encode()).hexdigest()[:8]}"


def cache_dir_for(settings: Settings) -> Path:
    """The cache folder for this release of previewvec, this numba and this CPU."""
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    key = f"pv{__version__}-numba{metadata.version('numba')}-{python}-{cpu_target()}"
    return settings.numba_cache_dir / key


def prepare(settings: Settings) -> Path:
    """Point numba at the keyed cache folder and serialise its writers; returns the folder.

    Call before anything imports numba (librosa does). Idempotent.
    """
    global _prepared
    if _prepared is not None:
        return _prepared
    folder = cache_dir_for(settings)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = str(folder)  # read by numba at import, and by children
    if "numba" in sys.modules:  # already imported (a test process): numba's config too
        from numba.core import config

        config.CACHE_DIR = str(folder)
    _serialise_cache_writes()
    _prepared = folder
    return folder


def _serialise_cache_writes() -> None:
    """Wrap numba's ``IndexDataCacheFile.save`` in an exclusive lock on its folder."""
    from numba.core import caching

    original: Callable[..., Any] = caching.IndexDataCacheFile.save
    if getattr(original, "previewvec_locked", False):
        return

    @functools.wraps(original)
    def save(self: Any, key: Any, data: Any) -> None:
        # numba's save re-reads the index itself; under the lock that read is current.
        with FileLock(os.path.join(self._cache_path, LOCK_NAME)):
            original(self, key, data)

    save.previewvec_locked = True  # type: ignore[attr-defined]
    caching.IndexDataCacheFile.save = save


def _acquire(lock: FileLock, folder: Path) -> None:
    """Take ``lock``, saying every so often that another process is compiling."""
    started = time.monotonic()
    while True:
        try:
            lock.acquire(timeout=WAIT_LOG_EVERY_S)
            return
        except Timeout:
            log.warning("waiting %.0f s for another process compiling the extractor in %s",
                        time.monotonic() - started, folder)


def _wipe(folder: Path) -> None:
    """Delete every cache entry in ``folder`` (not the lock or the marker)."""
    for entry in folder.iterdir():
        if entry.name in (LOCK_NAME, WARMING_MARKER):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def is_warm(settings: Settings) -> bool:
    """Whether a warm-up has completed in this cache (and none has died since)."""
    folder = prepare(settings)
    return (folder / WARM_MARKER).exists() and not (folder / WARMING_MARKER).exists()


def warm(settings: Settings) -> float:
    """Compile (or load) the whole extractor once in this process; returns the seconds.

    Holds the cache lock throughout, so concurrent cold starts compile once. A process
    forked after this (a Celery pool child) inherits the compiled code and needs no warm-up.
    """
    global _warm_seconds
    if _warm_seconds is not None:
        return 0.0
    folder = prepare(settings)
    lock = FileLock(folder / LOCK_NAME)
    started = time.perf_counter()
    _acquire(lock, folder)
    try:
        marker = folder / WARMING_MARKER
        if marker.exists():
            log.warning("the last warm-up in %s did not finish (crash or kill while "
                        "compiling or loading): rebuilding the compile cache", folder)
            (folder / WARM_MARKER).unlink(missing_ok=True)
            _wipe(folder)
        marker.write_text(f"{os.getpid()}\n")
        log.info("warming the extractor (compile cache %s)", folder)
        from workers.features.extractor import warm_up

        try:
            warm_up(settings.analysis_sr)
        except Exception as exc:  # e.g. an unreadable entry, which numba lets through
            # A cache file numba cannot read (left half written by an old release, a full
            # disk) raises instead of recompiling: start from an empty cache once.
            log.warning("warm-up failed (%s: %s): rebuilding the compile cache in %s",
                        type(exc).__name__, exc, folder)
            (folder / WARM_MARKER).unlink(missing_ok=True)
            _wipe(folder)
            warm_up(settings.analysis_sr)
        (folder / WARM_MARKER).touch()
        marker.unlink()
    finally:
        lock.release()
    _warm_seconds = time.perf_counter() - started
    log.info("extractor warm in %.1f s", _warm_seconds)
    return _warm_seconds
