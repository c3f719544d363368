"""Celery tasks: thin wrappers that handle retries and acknowledgement, nothing else.

Every way a job can end is accounted for in its run: the stage records typed failures
itself; here, store outages are retried with backoff and then recorded as
``store_unavailable`` (run-state outages and refusals, as ``state_unavailable``), a time
limit as ``timeout``, a permanent store error as
``store_error``, anything unexpected as ``internal_error`` and a job that keeps killing
its worker as ``worker_crashed`` (workers/crashes.py) — so no job stays "queued" forever
or is redelivered forever, and no exception kills the worker.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import Retry, SoftTimeLimitExceeded
from celery.signals import task_postrun, worker_init, worker_process_init

from contract.broker import TASK_NAME
from contract.errors import STATE_UNAVAILABLE, PreviewvecError
from contract.retry import Backoff
from contract.settings import Settings
from contract.state import Runs, redis_outage, redis_refusal
from contract.store import StoreUnavailable
from workers import crashes, heap
from workers.app import app
from workers.crashes import CrashCappedRequest

log = logging.getLogger(__name__)

STORE_RETRIES = 12
STORE_BACKOFF_CAP_S = 30.0
# Celery waits the countdown; contract.retry sets it (full jitter, 1 s doubling to the cap).
STORE_BACKOFF = Backoff(base_s=1.0, cap_s=STORE_BACKOFF_CAP_S)

_context = None
_handoff: Any = False  # workers.overlap.Handoff | None once looked for (per process)


def context():  # -> WorkerContext, built lazily once per process
    global _context
    if _context is None:
        from workers.featurize import WorkerContext

        _context = WorkerContext.build(Settings.from_env())
    return _context


def handoff():  # -> workers.overlap.Handoff | None: the line to this child's main process
    global _handoff
    if _handoff is False:
        from workers.overlap import Handoff

        _handoff = Handoff.for_parent()
    return _handoff


@worker_init.connect
def _warm_main(**_: Any) -> None:
    """The worker's main process compiles (or loads) the extractor once, under the compile
    cache's lock, before the pool forks: every pool child, and every replacement of one,
    inherits the compiled code, so no child compiles and none races another for the cache."""
    from workers import jitcache

    settings = Settings.from_env()
    # Before the overlap's threads start and before the pool forks (children inherit it).
    if heap.cap_arenas(settings.malloc_arenas):
        log.info("malloc arenas capped at %d", settings.malloc_arenas)
    _claim_version(settings)
    log.warning("warming the extractor")  # at warning: the demo and ops see this phase
    try:
        seconds = jitcache.warm(settings)
    except Exception as exc:
        # Celery logs and ignores a worker_init handler's exception, and would start
        # children that then compile (or wait for the cache lock) one by one: stop instead.
        log.critical("cannot warm the extractor, stopping: %s: %s", type(exc).__name__, exc)
        raise SystemExit(1) from exc
    log.warning("extractor warm in %.1f s", seconds)


def _claim_version(settings: Settings) -> None:
    """Refuse to start (one log line, exit 2) when these settings do not compute the
    version this worker would write: a pinned ``PREVIEWVEC_FEATURE_VERSION`` they do not
    compute, or a version the store registers with another computation."""
    from contract.errors import PreviewvecError
    from contract.store import check_writable, open_store
    from contract.versions import VersionMismatch, derived_version, register

    try:
        store = open_store(settings.store, settings)
        version = register(store, settings)
        check_writable(store)  # read-only: every job would fail for good
    except VersionMismatch as exc:
        log.critical("refusing to start: %s", exc.message)
        raise SystemExit(2) from None
    except StoreUnavailable as exc:
        # A store that is down may come back: the pin was checked (it needs no store),
        # the registry is by the next start.
        log.warning("could not check the version registry (%s); writing feature version "
                    "%s", exc.message, derived_version(settings))
        return
    except PreviewvecError as exc:
        # A store this worker can never use (a folder that is a file, refused credentials,
        # no bucket): every child would fail to start, each with a traceback.
        log.critical("refusing to start: %s", exc.message)
        raise SystemExit(4) from None
    log.warning("writing feature version %s", version)


@worker_process_init.connect
def _start_child(**_: Any) -> None:
    """Each pool child builds its clients before its first task (a no-op warm-up when the
    code was inherited from the main process; a real one under pools that do not fork)."""
    from workers import jitcache

    seconds = jitcache.warm(context().settings)
    log.info("extractor warmed in %.1f s; pool child ready", seconds)


_trim = heap.malloc_trim()
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


def is_outage(exc: BaseException) -> bool:
    """Whether a job meeting ``exc`` is retried through it (:func:`outage`)."""
    return isinstance(exc, StoreUnavailable) or redis_outage(exc)


def outage(exc: Exception) -> tuple[str, str]:
    """(code, message) of an outage a job is retried through: the store
    (``store_unavailable``) or the run state, Redis, away past its client's ~30 s of
    retries or refusing commands (at its maxmemory, MISCONF, a read-only replica:
    ``state_unavailable``; no failure of the job, as before it was recorded as
    ``internal_error``)."""
    if isinstance(exc, StoreUnavailable):
        return exc.code, exc.message
    what = "refused the command" if redis_refusal(exc) else "did not answer"
    return STATE_UNAVAILABLE, f"the run state (Redis) {what}: {type(exc).__name__}: {exc}"


def record_failure(job: Any, code: str, message: str, *, runs: Runs | None = None,
                   raise_errors: bool = False) -> dict[str, Any]:
    """Record ``job`` as a failure of its run (when it names one); returns the outcome.

    ``runs`` defaults to this process's context; a Redis error is logged and swallowed
    unless ``raise_errors`` (then the caller falls back to redelivery).
    """
    job = job if isinstance(job, dict) else {}
    recording_id = str(job.get("recording_id") or "?")[:64]
    run_id = job.get("run_id") if isinstance(job.get("run_id"), str) else None
    if run_id:
        try:
            (runs or context().runs).fail(run_id, recording_id, code, message, job)
        except Exception:  # Redis down too: the log line is all that is left
            if raise_errors:
                raise
            log.exception("could not record failure %s of %s in run %s", code, recording_id, run_id)
    return {
        "recording_id": recording_id,
        "run_id": run_id,
        "status": "failed",
        "error_code": code,
        "error_message": message,
    }


@app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True,
          Request=CrashCappedRequest)
def featurize_task(self, job: dict[str, Any]) -> dict[str, Any]:
    """Featurize one job; the result (shown in Flower) is the outcome with stage timings."""
    task_id = self.request.id  # None when called directly (tests): nothing to count
    if task_id:
        capped = _start_attempt(task_id)
        if capped:  # crashed too often: record it instead of crashing once more
            result = record_failure(job, crashes.CODE, capped)
            _end_attempt(task_id, retried=False)
            return result
    ended = "crash"  # what the finally sees if this process dies first: nothing
    try:
        result = _featurize(self, job)
        ended = "over"
        return result
    except Retry:
        ended = "retry"
        raise
    except Exception:
        ended = "over"
        raise
    finally:
        if task_id and ended != "crash":
            _end_attempt(task_id, retried=ended == "retry")


def _start_attempt(task_id: str) -> str | None:
    """Count this attempt's start; the failure message if earlier ones crashed too often."""
    ctx = context()
    try:
        count = ctx.runs.attempt_started(task_id)
    except Exception:  # Redis away: run the job uncounted rather than not at all
        log.exception("could not count the start of %s", task_id)
        return None
    capped = crashes.over_cap(count, ctx.settings.max_crash_redeliveries)
    if capped:
        log.error("task %s gave up at its start: %s", task_id, capped)
    return capped


def _end_attempt(task_id: str, *, retried: bool) -> None:
    try:
        if retried:
            context().runs.attempt_retried(task_id)
        else:
            context().runs.attempts_over(task_id)
    except Exception:  # at worst a later crash counts one too many; the key expires
        log.exception("could not end the crash count of %s", task_id)


def _featurize(self: Any, job: dict[str, Any]) -> dict[str, Any]:
    from workers.featurize import featurize

    line = handoff() if self.request.id else None
    try:
        if line is None:
            return featurize(job, context()).to_dict()
        # The worker's main process checked and fetched ahead, and writes behind
        # (workers/overlap.py); whatever it did not do, the stage does here.
        return featurize(job, context(), ahead=line.take(self.request.id),
                         write_behind=line.writer(self.request.id)).to_dict()
    except SoftTimeLimitExceeded:
        return record_failure(
            job,
            "timeout",
            f"the job exceeded its {app.conf.task_soft_time_limit} s time limit",
        )
    except Exception as exc:
        if is_outage(exc):
            # Retried with a countdown (while the broker itself is down or refusing even
            # the retry cannot be published: the unacknowledged message comes back after
            # the visibility timeout), then recorded.
            code, message = outage(exc)
            if self.request.retries >= STORE_RETRIES:
                return record_failure(job, code, message)
            delay = STORE_BACKOFF.delay(self.request.retries + 1)
            raise self.retry(exc=exc, countdown=delay, max_retries=STORE_RETRIES) from None
        if isinstance(exc, PreviewvecError):  # e.g. a permanent store error (store_error)
            return record_failure(job, exc.code, exc.message)
        log.exception("unexpected failure featurizing %r", job)
        return record_failure(job, "internal_error", f"{type(exc).__name__}: {exc}")
