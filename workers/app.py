"""The Celery application: broker, serialisation, acknowledgement and queue policy.

``celery -A workers.app worker`` and ``previewvec worker`` both start workers from here.
"""

from __future__ import annotations

import os

# BLAS and numba threads would oversubscribe cores under prefork (one process per core).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from celery import Celery  # noqa: E402

from contract import broker  # noqa: E402
from contract.settings import Settings  # noqa: E402
from workers import jitcache  # noqa: E402
from workers.deliveries import DeliveryHeartbeat, heartbeat_interval_s  # noqa: E402
from workers.overlap import OverlapStep  # noqa: E402
from workers.redeliver import LostJobSweeper  # noqa: E402

QUEUES = broker.QUEUES  # consumed in this order: on-demand work goes first
VISIBILITY_TIMEOUT_S = 40  # the default of Settings.visibility_timeout_s
# What one job may take (fetch, decode, extract, store), well below the visibility
# timeout: the fetch has its own 15 s budget (Settings.fetch_total_timeout_s), decoding
# and extracting a 30 s preview take about a second. Scaled down with shorter timeouts.
TASK_SOFT_TIME_LIMIT_S = 20
TASK_TIME_LIMIT_S = 25
SOFT_LIMIT_SHARE = 0.5  # of the visibility timeout, when that is shorter than the default
HARD_LIMIT_SHARE = 0.625
MAX_MEMORY_PER_CHILD_KB = 1_500_000  # librosa workers grow; recycle a child past 1.5 GB
MAX_TASKS_PER_CHILD = 2000
# A pool child builds its clients in worker_process_init before it reports up (the
# extractor was warmed in the main process before the fork); Celery's default 4 s wait can
# kill it on a busy machine, and its replacement, and so on.
PROC_ALIVE_TIMEOUT_S = 120.0


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or Settings.from_env()
    jitcache.prepare(settings)  # before librosa imports numba
    app = Celery("previewvec", broker=settings.broker_url,
                 include=["workers.tasks", "workers.deliveries"])
    # The visibility timeout is how long a job held by a silent worker stays invisible.
    # Live workers refresh what they hold every few seconds (workers/deliveries.py), so
    # it only has to outlast a few missed heartbeats: a worker that dies as a whole
    # (SIGKILL, OOM, lost node) has its jobs back on the queue within the timeout plus
    # one sweep, 45 s by default, while a live worker's jobs are never handed out again,
    # however long they wait or run. Task time limits stay well below it all the same.
    # The trade-off is in docs/reliability.md ("Lost workers").
    visibility_s = max(1, settings.visibility_timeout_s)
    sweep_s = max(1, round(heartbeat_interval_s(visibility_s)))
    contract = broker.celery_settings(settings.broker_url)
    transport_options: dict[str, object] = {
        **contract.pop("broker_transport_options"),  # queue order, priority steps
        "visibility_timeout": visibility_s,
        # Every worker sweeps for expired deliveries this often (kombu's default is about
        # every 100 s, too slow for a short timeout).
        "unacked_restore_interval": sweep_s,
        "unacked_restore_throttle": 1,
        # A worker killed mid-sweep holds the sweep mutex until it expires (kombu: 5 min),
        # blocking every other worker's sweep. A sweep takes milliseconds, and two at once
        # are safe (each restore is a WATCH transaction on the unacked hash).
        "unacked_mutex_expire": max(2, visibility_s // 4),
    }
    app.conf.update(
        **contract,  # serialiser (JSON only), queues, exchanges, routes: shared with producers
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,  # ack after the work: a killed worker's job is redelivered
        task_reject_on_worker_lost=True,
        # Jobs reserved per pool child. Above 1 the worker's main process checks the
        # store and fetches previews ahead for them and writes records behind
        # (workers/overlap.py); an explicit --prefetch-multiplier keeps plain Celery.
        worker_prefetch_multiplier=max(1, settings.prefetch_multiplier),
        task_soft_time_limit=min(TASK_SOFT_TIME_LIMIT_S, SOFT_LIMIT_SHARE * visibility_s),
        task_time_limit=min(TASK_TIME_LIMIT_S, HARD_LIMIT_SHARE * visibility_s),
        broker_transport_options=transport_options,
        worker_max_memory_per_child=MAX_MEMORY_PER_CHILD_KB,
        worker_max_tasks_per_child=MAX_TASKS_PER_CHILD,
        worker_proc_alive_timeout=PROC_ALIVE_TIMEOUT_S,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        task_track_started=True,
        # Celery's consumer, but a broker outage never ends in "Unrecoverable error".
        worker_consumer="workers.reconnect:ReconnectingConsumer",
    )
    app.steps["consumer"].add(DeliveryHeartbeat)
    app.steps["consumer"].add(LostJobSweeper)  # jobs the broker lost (contract/state/lost.py)
    app.steps["consumer"].add(OverlapStep)
    return app


app = make_app()
