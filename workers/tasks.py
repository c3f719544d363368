"""Celery tasks: thin wrappers that handle retries and acknowledgement, nothing else."""

from __future__ import annotations

import logging
import random
from typing import Any

from celery.signals import worker_process_init

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


@worker_process_init.connect
def _warm_child(**_: Any) -> None:
    """Each pool child builds its clients and pays numba's JIT before its first task."""
    from workers.features.extractor import warm_up

    context()
    log.info("extractor warmed in %.1f s", warm_up())


@app.task(name="previewvec.featurize", bind=True, acks_late=True, reject_on_worker_lost=True)
def featurize_task(self, job: dict[str, Any]) -> dict[str, Any]:
    """Featurize one job; the result (shown in Flower) is the outcome with stage timings."""
    from workers.featurize import featurize

    ctx = context()
    try:
        return featurize(job, ctx).to_dict()
    except StoreUnavailable as exc:
        if self.request.retries >= STORE_RETRIES:
            ctx.runs.fail(job.get("run_id", ""), job.get("recording_id", "?"), exc.code,
                          exc.message, job)
            return {"recording_id": job.get("recording_id"), "run_id": job.get("run_id"),
                    "status": "failed", "error_code": exc.code, "error_message": exc.message}
        delay = random.uniform(0, min(STORE_BACKOFF_CAP_S, 2.0 ** self.request.retries))
        raise self.retry(exc=exc, countdown=delay, max_retries=STORE_RETRIES) from None
