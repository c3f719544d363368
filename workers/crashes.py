"""The crash cap: a job whose worker dies while running it is redelivered a few times,
then recorded as a ``worker_crashed`` failure of its run and acknowledged.

Without it, ``acks_late`` + ``reject_on_worker_lost`` requeue a job that kills its pool
child (a segfault in native code, the OOM killer) forever. Counts live in Redis
(:meth:`contract.state.Runs.attempt_started` and neighbours), keyed by the task id, so
every worker sees them and ``previewvec retry`` (a new task id) starts from zero.

Two places count, because neither sees every crash:

* the pool child, as it starts the job, counts an attempt (and uncounts it when the job
  returns). An attempt that never ended is a crash, however it happened, including the
  whole worker being killed (then no process is left to see the death);
* the worker's main process, told by the pool that a child died mid-job
  (``WorkerLostError``), counts the death with its signal, and at the cap records the
  failure and acknowledges the message itself: no redelivery just to give up.

A job past the cap that still comes back (its whole worker died each time, or the main
process could not reach Redis to record it) is recorded by the child at its start,
before it fetches anything. Celery's own ``retry_on_worker_lost`` + ``max_retries`` is
not used: it shares ``request.retries`` with the store-outage retries (up to 12), and it
never sees a worker that died as a whole.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery.utils.serialization import get_pickled_exception
from celery.worker import state
from celery.worker.request import Request

from contract.settings import Settings
from contract.state import CrashCount, Runs

log = logging.getLogger(__name__)

CODE = "worker_crashed"
WHOLE_WORKER_LOST = "the worker running it was lost (no exit status seen: the whole worker died)"
# billiard: "Worker exited prematurely: signal 9 (SIGKILL) Job: 3." or "... exitcode 1 ..."
_SIGNAL_RE = re.compile(r"signal (\d+)(?: \((SIG\w+)\))?")
_EXITCODE_RE = re.compile(r"exitcode (-?\d+)")


def describe_exit(exc: BaseException) -> str:
    """How a pool child died, from billiard's WorkerLostError (or the child's SystemExit)."""
    if isinstance(exc, SystemExit):
        return f"pool child exited with {exc.code!r}"
    text = str(exc) or type(exc).__name__
    if match := _SIGNAL_RE.search(text):
        number, name = match.groups()
        return f"pool child killed by {name or 'signal'} (signal {number})"
    if match := _EXITCODE_RE.search(text):
        return f"pool child exited with code {match.group(1)}"
    return f"pool child lost ({text})"


def capped_message(how: str, crashes: int, cap: int) -> str:
    """The failure message: how the last crash happened and how often it crashed."""
    plural = "es" if crashes != 1 else ""
    return (f"{how or WHOLE_WORKER_LOST}; {crashes} crash{plural}, not redelivered again "
            f"(at most {cap} redeliveries after a crash)")


def over_cap(count: CrashCount, cap: int) -> str | None:
    """The failure message when ``count`` crashes are more than ``cap`` redeliveries allow."""
    if count.crashes > max(0, cap):
        return capped_message(count.how, count.crashes, max(0, cap))
    return None


_main_state: tuple[Runs, int] | None = None


def _main_runs() -> tuple[Runs, int]:
    """The main process's Runs client and cap, made at the first crash it sees."""
    global _main_state
    if _main_state is None:
        settings = Settings.from_env()
        _main_state = (Runs.from_url(settings.broker_url), settings.max_crash_redeliveries)
    return _main_state


class CrashCappedRequest(Request):
    """Celery's request, with the crash cap where a pool child's death is handled.

    ``on_failure`` runs in the worker's main process; for a child lost mid-job it counts
    the crash and, past the cap, records the failure and acknowledges instead of the
    default requeue. Any trouble doing so (Redis away) falls back to the default.
    """

    def on_failure(self, exc_info: Any, send_failed_event: bool = True,
                   return_ok: bool = False) -> Any:
        from workers import overlap

        if (active := overlap.active()) is not None:
            active.forget(self.id)  # a preview fetched ahead for a job that never took it
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        # Celery treats a child's SystemExit as a lost worker too, unless it was revoked or
        # cancelled. A shutdown terminating its children is not the job's fault (requeue).
        exited = isinstance(exc, (SystemExit, KeyboardInterrupt)) and not (
            getattr(self, "_already_cancelled", False) or getattr(self, "_already_revoked", False))
        lost = (isinstance(exc, WorkerLostError) or exited) and not state.should_terminate
        if lost and self.task.acks_late and self._give_up(exc):
            return None
        if isinstance(exc, TimeLimitExceeded) and not state.should_terminate:
            # The hard limit killed the child (the soft one could not stop it, e.g. in
            # native code). Celery acknowledges that job: without this it would stay
            # "queued" in its run for ever.
            self._record_hard_timeout(exc)
        return super().on_failure(exc_info, send_failed_event=send_failed_event,
                                  return_ok=return_ok)

    def acknowledge(self) -> None:
        """Acknowledge, unless the worker's main process is still writing this job's
        record behind the child (workers/overlap.py): then once it is written."""
        from workers import overlap

        active = overlap.active()
        if active is not None:
            active.forget(self.id)
            if active.hold_ack(self):
                return
        super().acknowledge()

    def acknowledge_written(self) -> None:
        """The record is stored, pushed and accounted: acknowledge now."""
        super().acknowledge()

    def _record_hard_timeout(self, exc: TimeLimitExceeded) -> None:
        from workers.tasks import record_failure

        try:
            runs, _ = _main_runs()
            limit = exc.args[0] if exc.args else "?"
            record_failure(self.args[0] if self.args else None, "timeout",
                           f"killed at the hard time limit ({limit} s)", runs=runs)
            runs.attempts_over(self.id)
        except Exception:  # the failure is in the log only
            log.exception("%s[%s]: could not record the hard time limit", self.name, self.id)

    def _give_up(self, exc: BaseException) -> bool:
        """Count the crash; past the cap, record it and acknowledge. True if it gave up."""
        from workers.tasks import record_failure

        how = describe_exit(exc)
        try:
            runs, cap = _main_runs()
            crashes = runs.attempt_lost(self.id, how)
            message = over_cap(CrashCount(crashes, how), cap)
            if message is None:
                log.warning("%s[%s]: %s; crash %d, redelivering (at most %d times)",
                            self.name, self.id, how, crashes, cap)
                return False
            job = self.args[0] if self.args else None
            record_failure(job, CODE, message, runs=runs, raise_errors=True)
            runs.attempts_over(self.id)
        except Exception:  # Redis away: requeue; the next start records it (crashes > cap)
            log.exception("%s[%s]: could not count the crash; requeueing", self.name, self.id)
            return False
        log.error("%s[%s] gave up: %s", self.name, self.id, message)
        state.task_ready(self)
        self.acknowledge()
        self.send_event("task-failed", exception=repr(get_pickled_exception(exc)),
                        traceback="")
        return True
