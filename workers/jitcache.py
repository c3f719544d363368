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
2. **Loads share, writes exclude.** Every save, and every wipe, holds an exclusive
   ``flock`` on one file of the cache folder (``.access``, never deleted); every load
   holds it shared, so an index and the data file it names are read as one (a load never
   meets a data file that a rebuild has reused for another signature, which crashed
   whole test processes in CI). numba's index is re-read under the lock, so no entry is
   lost and no data-file number is handed out twice. The warm-up, which does nearly all
   the compiling, also holds a second lock (``.lock``) throughout: concurrent cold starts
   compile once; the others wait, then load what the first compiled.
3. **A warm-up that died is detected and its cache rebuilt.** The warm-up leaves a
   ``.warming`` marker until it has finished (or was stopped by an exception or a signal
   Python saw, which leaves every saved entry whole); a process that finds the marker (its
   owner was killed mid-compile, or crashed loading a corrupt cache) deletes the cache
   and compiles it afresh, instead of crashing on it for ever.

:func:`prepare` must run before numba is imported (it sets ``NUMBA_CACHE_DIR``);
:func:`warm` runs the extractor once under the cache lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from contract import __version__
from contract.settings import Settings

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"  # held by a warm-up throughout
ACCESS_LOCK_NAME = ".access"  # shared by loads, exclusive for saves and wipes
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
    _serialise_cache_access(folder)
    _prepared = folder
    return folder


class _AccessLock:
    """The cache folder's reader/writer lock: an ``flock`` on ``.access``.

    Re-entrant within a process (a nested hold is covered by the outer one; the mutex
    keeps this process's threads from converting each other's lock). Each hold opens the
    file anew, so no descriptor outlives it, and a child forked during a hold closes its
    copy (the lock belongs to the parent's open file, which the child must not keep).
    """

    def __init__(self) -> None:
        self._mutex = threading.RLock()
        self._fd: int | None = None
        self._depth = 0
        os.register_at_fork(after_in_child=self._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._mutex, self._fd, self._depth = threading.RLock(), None, 0

    @contextlib.contextmanager
    def hold(self, folder: Path, exclusive: bool) -> Iterator[None]:
        with self._mutex:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            fd = os.open(folder / ACCESS_LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                         0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                self._fd, self._depth = fd, 1
                yield
            finally:
                self._fd, self._depth = None, 0
                os.close(fd)  # releases the lock


_access = _AccessLock()


def access(folder: Path, exclusive: bool) -> contextlib.AbstractContextManager[None]:
    """Hold the cache folder's access lock: shared to read entries, exclusive to change."""
    return _access.hold(folder, exclusive)


def _serialise_cache_access(folder: Path) -> None:
    """Wrap numba's ``IndexDataCacheFile.load`` and ``save`` in ``folder``'s access lock."""
    from numba.core import caching

    cache_file = caching.IndexDataCacheFile
    if getattr(cache_file.save, "previewvec_locked", False):
        return
    original_save: Callable[..., Any] = cache_file.save
    original_load: Callable[..., Any] = cache_file.load

    @functools.wraps(original_save)
    def save(self: Any, key: Any, data: Any) -> None:
        # numba's save re-reads the index itself; under the lock that read is current.
        with access(folder, exclusive=True):
            original_save(self, key, data)

    @functools.wraps(original_load)
    def load(self: Any, key: Any) -> Any:
        with access(folder, exclusive=False):
            return original_load(self, key)

    save.previewvec_locked = True  # type: ignore[attr-defined]
    cache_file.save = save
    cache_file.load = load


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
    """Delete every cache entry in ``folder`` (not the locks or the marker), while no
    process reads or writes one."""
    with access(folder, exclusive=True):
        for entry in folder.iterdir():
            if entry.name in (LOCK_NAME, ACCESS_LOCK_NAME, WARMING_MARKER):
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
            try:
                warm_up(settings.analysis_sr)
            except Exception as exc:  # e.g. an unreadable entry, which numba lets through
                # A cache file numba cannot read (left half written by an old release, a
                # full disk) raises instead of recompiling: start from an empty cache once.
                log.warning("warm-up failed (%s: %s): rebuilding the compile cache in %s",
                            type(exc).__name__, exc, folder)
                (folder / WARM_MARKER).unlink(missing_ok=True)
                _wipe(folder)
                warm_up(settings.analysis_sr)
        except (KeyboardInterrupt, SystemExit):
            # Stopped between two bytecodes (Ctrl-C, a worker told to shut down): every
            # entry saved so far is whole, so the next start need not rebuild them all.
            marker.unlink(missing_ok=True)
            raise
        (folder / WARM_MARKER).touch()
        marker.unlink()
    finally:
        lock.release()
    _warm_seconds = time.perf_counter() - started
    log.info("extractor warm in %.1f s", _warm_seconds)
    return _warm_seconds
