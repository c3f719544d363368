"""Celery tasks: thin wrappers that handle retries and acknowledgement, nothing else.

Every way a job can end is accounted for in its run: the stage records typed failures
itself; here, store outages are retried with backoff and then recorded as
``store_unavailable``, a time limit as ``timeout``, a permanent store error as
``store_error`` and anything unexpected as ``internal_error`` — so no job stays "queued"
forever and no exception kills the worker.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import random
from collections.abc import Callable
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import task_postrun, worker_init, worker_process_init

from previewvec.errors import PreviewvecError
from previewvec.settings import Settings
from workers.app import app
from workers.store import StoreUnavailable

log = logging.getLogger(__name__)

STORE_RETRIES = 12
STORE_BACKOFF_CAP_S = 30.0

_context = None


def context():  # -> WorkerContext, built lazily once per process
    global _context
    if _context is None:
        from workers.featurize import WorkerContext

        _context = WorkerContext.build(Settings.from_env())
    return _context


@worker_init.connect
def _warm_main(**_: Any) -> None:
    """The worker's main process compiles (or loads) the extractor once, under the compile
    cache's lock, before the pool forks: every pool child, and every replacement of one,
    inherits the compiled code, so no child compiles and none races another for the cache."""
    from workers import jitcache

    log.warning("warming the extractor")  # at warning: the demo and ops see this phase
    try:
        seconds = jitcache.warm(Settings.from_env())
    except Exception as exc:
        # Celery logs and ignores a worker_init handler's exception, and would start
        # children that then compile (or wait for the cache lock) one by one: stop instead.
        log.critical("cannot warm the extractor, stopping: %s: %s", type(exc).__name__, exc)
        raise SystemExit(1) from exc
    log.warning("extractor warm in %.1f s", seconds)


@worker_process_init.connect
def _start_child(**_: Any) -> None:
    """Each pool child builds its clients before its first task (a no-op warm-up when the
    code was inherited from the main process; a real one under pools that do not fork)."""
    from workers import jitcache

    seconds = jitcache.warm(context().settings)
    log.info("extractor warmed in %.1f s; pool child ready", seconds)


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_trim = _malloc_trim()
_tasks_since_trim = 0


@task_postrun.connect
def _trim_heap(**_: Any) -> None:
    """Every ``malloc_trim_every`` tasks, return the freed heap to the OS.

    Off by default: in benchmarks/soak.py a child's RSS stays flat without it, and with it
    the next task faults the returned pages back in (+3-8 % CPU per job for -2 % RSS).
    """
    global _tasks_since_trim
    every = context().settings.malloc_trim_every
    if every <= 0 or _trim is None:
        return
    _tasks_since_trim += 1
    if _tasks_since_trim >= every:
        _tasks_since_trim = 0
        _trim(0)


def _record_failure(job: Any, code: str, message: str) -> dict[str, Any]:
    job = job if isinstance(job, dict) else {}
    recording_id = str(job.get("recording_id") or "?")[:64]
    run_id = job.get("run_id") if isinstance(job.get("run_id"), str) else None
    if run_id:
        try:
            context().runs.fail(run_id, recording_id, code, message, job)
        except Exception:  # Redis down too: the log line is all that is left
            log.exception("could not record failure %s of %s in run %s", code, recording_id, run_id)
    return {
        "recording_id": recording_id,
        "run_id": run_id,
        "status": "failed",
        "error_code": code,
        "error_message": message,
    }


@app.task(name="previewvec.featurize", bind=True, acks_late=True, reject_on_worker_lost=True)
def featurize_task(self, job: dict[str, Any]) -> dict[str, Any]:
    """Featurize one job; the result (shown in Flower) is the outcome with stage timings."""
    from workers.featurize import featurize

    try:
        return featurize(job, context()).to_dict()
    except StoreUnavailable as exc:
        if self.request.retries >= STORE_RETRIES:
            return _record_failure(job, exc.code, exc.message)
        delay = random.uniform(0, min(STORE_BACKOFF_CAP_S, 2.0**self.request.retries))
        raise self.retry(exc=exc, countdown=delay, max_retries=STORE_RETRIES) from None
    except SoftTimeLimitExceeded:
        return _record_failure(
            job,
            "timeout",
            f"the job exceeded its {app.conf.task_soft_time_limit} s time limit",
        )
    except PreviewvecError as exc:  # e.g. a permanent store error (store_error)
        return _record_failure(job, exc.code, exc.message)
    except Exception as exc:
        log.exception("unexpected failure featurizing %r", job)
        return _record_failure(job, "internal_error", f"{type(exc).__name__}: {exc}")
