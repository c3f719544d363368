"""numba's on-disk JIT cache, made safe for many processes on one host or one volume.

numba's cache is not safe for concurrent writers (numba issues #10128 and #4807). A
gufunc is cached as two entries, its kernel and its wrapper, and the wrapper finds the
kernel by a symbol name that carries a per-process counter (the order in which that
process compiled things). Two processes compiling the same gufunc at once can leave the
kernel of one beside the wrapper of the other: every later process that loads both calls
a null pointer (SIGSEGV in ``librosa``'s gufuncs: ``beat``, ``zero_crossings``), until the
cache is deleted by hand. Saving an entry is racy as well: it reads the function's index,
picks the first free data-file number and writes both, so two processes can hand out one
number twice.

Three rules make the cache safe here:

1. **Its location is keyed on what invalidates it**: ``<PREVIEWVEC_CACHE_DIR>/numba/
   <previewvec version>-numba<version>-py<version>-<CPU target>``. Another release, numba or
   CPU model starts an empty cache beside the old one instead of mixing entries.
2. **One compiler at a time, across processes.** numba already holds one lock (its global
   compiler lock, in-process) around every compilation, and inside it looks the cache up,
   compiles on a miss and saves. :func:`prepare` extends that lock with an exclusive
   ``flock`` on the cache folder's ``.compile`` file (never deleted), so a process that
   missed the cache looks again once it holds the lock and loads what another compiled
   meanwhile: every entry is compiled once, and a gufunc's wrapper is always built against
   the kernel entry in the cache. Rebuilding the cache (rule 3) holds the same lock. The
   warm-up, which does nearly all the compiling, also holds a second lock (``.lock``)
   throughout: concurrent cold starts compile once; the others wait, then load.
3. **A warm-up that died is detected, and its cache rebuilt if it is broken.** The
   warm-up leaves a ``.warming`` marker until it has finished (or was stopped by an
   exception or a signal Python saw, which leaves every saved entry whole); a process that
   finds the marker (its owner was killed, or crashed loading a corrupt cache) warms up
   from the cache in a child process first. If the child crashes or fails, it deletes the
   cache and compiles it afresh, instead of crashing on it for ever; if the child loads it,
   the cache stays: other processes may be loading from it, and a wipe under them is
   itself a way to mix a gufunc's entries.

:func:`prepare` must run before numba is imported (it sets ``NUMBA_CACHE_DIR``);
:func:`warm` runs the extractor once under the cache lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from contract import __version__
from contract.settings import Settings

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"  # held by a warm-up throughout
COMPILE_LOCK_NAME = ".compile"  # held by every compilation and cache lookup, and wipes
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
    if _prepared is not None:
        return _prepared
    folder = cache_dir_for(settings)
    folder.mkdir(parents=True, exist_ok=True)
    _use(folder)
    return folder


def _use(folder: Path) -> None:
    """Make ``folder`` this process's numba cache, its compilations serialised with other
    processes'."""
    global _prepared
    os.environ["NUMBA_CACHE_DIR"] = str(folder)  # read by numba at import, and by children
    if "numba" in sys.modules:  # already imported (a test process): numba's config too
        from numba.core import config

        config.CACHE_DIR = str(folder)
    prepare_for(folder)
    _prepared = folder


class _CrossProcessCompilerLock:
    """numba's global compiler lock (an in-process ``RLock``), extended across processes:
    its outermost acquisition in a process also takes an exclusive ``flock`` on the cache
    folder's ``.compile`` file, released with it.

    numba holds this lock around every compilation, and inside it looks the cache up and
    saves what it compiled, so every process sees the cache as its own while it holds it.
    A lock file that cannot be opened (a read-only cache) leaves the lock in-process only.
    """

    def __init__(self, inner: Any, folder: Path) -> None:
        self._inner = inner
        self._path = folder / COMPILE_LOCK_NAME
        self._fd: int | None = None
        self._depth = 0
        self._warned = False
        os.register_at_fork(after_in_child=self._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        # The child must not keep the parent's lock (it belongs to the open file, which
        # the child shares); nothing compiles across a fork, so no holder is lost.
        if self._fd is not None:
            os.close(self._fd)
        self._inner, self._fd, self._depth = threading.RLock(), None, 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not self._inner.acquire(blocking, timeout):
            return False
        if self._depth == 0:
            try:
                self._fd = self._lock_file()
            except BaseException:
                self._inner.release()
                raise
        self._depth += 1
        return True

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # releases the flock
        self._inner.release()

    def _is_owned(self) -> bool:
        return bool(self._inner._is_owned())

    def _lock_file(self) -> int | None:
        for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):
            try:
                fd = os.open(self._path, flags | os.O_CLOEXEC, 0o666)
                break
            except OSError as exc:
                error = exc
        else:
            if not self._warned:
                self._warned = True
                log.warning("cannot open %s (%s): compilations in this process are not "
                            "serialised with other processes'", self._path, error)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        return fd


def compiling(folder: Path) -> contextlib.AbstractContextManager[Any]:
    """Hold the lock every numba compilation and cache lookup holds, in every process
    that uses the cache in ``folder`` (:func:`prepare` installs it)."""
    from numba.core.compiler_lock import global_compiler_lock

    if not isinstance(global_compiler_lock._lock, _CrossProcessCompilerLock):
        prepare_for(folder)
    return global_compiler_lock


def prepare_for(folder: Path) -> None:
    """Make numba's compiler lock a cross-process one for the cache in ``folder``."""
    from numba.core.compiler_lock import global_compiler_lock

    current = global_compiler_lock._lock
    if isinstance(current, _CrossProcessCompilerLock):
        if current._path.parent == folder:
            return
        current = current._inner
    global_compiler_lock._lock = _CrossProcessCompilerLock(current, folder)


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
    with compiling(folder):
        for entry in folder.iterdir():
            if entry.name in (LOCK_NAME, COMPILE_LOCK_NAME, WARMING_MARKER):
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _loads_in_a_fresh_process(folder: Path, analysis_sr: int) -> bool:
    """Whether the extractor warms up from the cache in ``folder`` in a child process.

    Asked when a warm-up died (its marker is left) or raised. Most deaths (a worker killed
    while it loaded a warm cache, or between two entries it saved, each saved whole) leave
    a cache that loads, and wiping one in place would pull it from under every process
    loading from it at that moment: one that loaded a gufunc's kernel before the wipe and
    its wrapper after it holds a mismatched pair and crashes (numba #10128 again). Only a
    cache that really fails (a crash or an error loading it) is rebuilt. The child also
    compiles whatever the dead warm-up had not reached yet.
    """
    log.info("checking that the cache in %s loads in a fresh process", folder)
    root = str(Path(__file__).resolve().parents[1])  # where ``workers`` is importable from
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    child = subprocess.run(
        [sys.executable, "-c", "import sys; from workers.jitcache import _warm_in_child; "
         "_warm_in_child(sys.argv[1], int(sys.argv[2]))", str(folder), str(analysis_sr)],
        env={**os.environ, "NUMBA_CACHE_DIR": str(folder), "PYTHONPATH": path},
        stdin=subprocess.DEVNULL, check=False,
    )
    if child.returncode == 0:
        log.warning("the cache in %s loads whole in a fresh process: keeping it", folder)
        return True
    how = (f"killed by signal {-child.returncode}" if child.returncode < 0
           else f"exit status {child.returncode}")
    log.warning("loading the cache in %s in a fresh process failed (%s)", folder, how)
    return False


def _warm_in_child(folder: str, analysis_sr: int) -> None:
    """The child of :func:`_loads_in_a_fresh_process`: warm up from ``folder`` without its
    warm-up lock (which the parent holds), under the cross-process compiler lock."""
    logging.basicConfig(level=logging.WARNING)
    _use(Path(folder))
    from workers.features.extractor import warm_up

    warm_up(analysis_sr)


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
                        "compiling or loading)", folder)
            if not _loads_in_a_fresh_process(folder, settings.analysis_sr):
                log.warning("rebuilding the compile cache in %s", folder)
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
                # full disk) raises instead of recompiling: start from an empty cache once,
                # if the cache is what failed (the same check as for a dead warm-up).
                log.warning("warm-up failed (%s: %s)", type(exc).__name__, exc)
                if _loads_in_a_fresh_process(folder, settings.analysis_sr):
                    raise  # not the cache's fault: say what failed
                log.warning("rebuilding the compile cache in %s", folder)
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
