"""The Celery application: broker, serialisation, acknowledgement and queue policy.

``celery -A workers.app worker`` and ``previewvec worker`` both start workers from here.
"""

from __future__ import annotations

import os

# BLAS and numba threads would oversubscribe cores under prefork (one process per core).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from celery import Celery  # noqa: E402
from kombu import Exchange, Queue  # noqa: E402

from previewvec.settings import Settings  # noqa: E402
from workers import jitcache  # noqa: E402

QUEUES = ("ondemand", "batch")  # consumed in this order: on-demand work goes first
VISIBILITY_TIMEOUT_S = 900  # the default of Settings.visibility_timeout_s
TASK_SOFT_TIME_LIMIT_S = 240
TASK_TIME_LIMIT_S = 300  # below the visibility timeout, or Redis would redeliver live tasks
MAX_MEMORY_PER_CHILD_KB = 1_500_000  # librosa workers grow; recycle a child past 1.5 GB
MAX_TASKS_PER_CHILD = 2000
# A pool child builds its clients in worker_process_init before it reports up (the
# extractor was warmed in the main process before the fork); Celery's default 4 s wait can
# kill it on a busy machine, and its replacement, and so on.
PROC_ALIVE_TIMEOUT_S = 120.0


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or Settings.from_env()
    jitcache.prepare(settings)  # before librosa imports numba
    app = Celery("previewvec", broker=settings.broker_url, include=["workers.tasks"])
    # The visibility timeout is a trade-off. Redis hands a job that stayed unacknowledged
    # that long to another worker, even while a live worker is still running it. Long:
    # a worker that dies hard (SIGKILL, OOM, lost node), or a job delivered in the instant
    # the broker restarts (Celery drops it on reconnect), stays invisible that long before
    # a worker restores it. Short (seconds, tests): such jobs come back quickly, but any
    # job running longer would run twice, so the time limits are scaled to stay below it
    # (75 % hard, 60 % soft). The default, 15 min, is three times the 300 s hard limit
    # (Celery's own default, 1 h, left such jobs late by up to an hour).
    visibility_s = max(1, settings.visibility_timeout_s)
    transport_options: dict[str, object] = {
        "visibility_timeout": visibility_s,
        "queue_order_strategy": "priority",  # BRPOP keys in order: ondemand before batch
    }
    if visibility_s < VISIBILITY_TIMEOUT_S:
        # Sweep for expired jobs often enough that a short timeout takes effect
        # (kombu's default sweep runs about every 100 s).
        transport_options["unacked_restore_interval"] = max(1, visibility_s // 10)
        transport_options["unacked_restore_throttle"] = 1
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],  # pickle refused: a broker message must never run code
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,  # ack after the work: a killed worker's job is redelivered
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=min(TASK_SOFT_TIME_LIMIT_S, 0.6 * visibility_s),
        task_time_limit=min(TASK_TIME_LIMIT_S, 0.75 * visibility_s),
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        # One exchange per queue: nothing published for one queue can land in the other.
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
        task_default_queue="batch",
        task_routes={"previewvec.featurize": {"queue": "batch"}},
        worker_max_memory_per_child=MAX_MEMORY_PER_CHILD_KB,
        worker_max_tasks_per_child=MAX_TASKS_PER_CHILD,
        worker_proc_alive_timeout=PROC_ALIVE_TIMEOUT_S,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        task_track_started=True,
    )
    return app


app = make_app()
