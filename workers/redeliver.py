"""Publish again the jobs the broker lost (see :mod:`contract.state.lost` for how a job is
lost and how it is recognised).

Workers run the sweep because they are what a lost job waits for: an idle worker beside a
run that still counts queued recordings is exactly the stall to end. Every
``visibility_timeout_s`` each worker's main process checks, in one round trip, whether the
broker is empty; only then does one of them (a short lock) list the quiet runs' queued
recordings and publish their jobs again, on the run's queue, or record them as
``job_lost`` once a job was redelivered :data:`~contract.state.lost.MAX_REDELIVERIES`
times.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable
from typing import Any

from celery import bootsteps

from contract.broker import TASK_NAME
from contract.settings import Settings
from contract.state import Runs
from contract.state.lost import MAX_REDELIVERIES

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any], str], None]  # (job, queue)


def sweep_lost_jobs(runs: Runs, send: Send, *, quiet_s: float, lock_ttl_s: float,
                    max_redeliveries: int = MAX_REDELIVERIES) -> tuple[int, int]:
    """One sweep: (jobs published again, jobs recorded as ``job_lost``)."""
    if not runs.broker_idle() or not runs.take_redeliver_lock(secrets.token_hex(8), lock_ttl_s):
        return 0, 0
    sent = given_up = 0
    for lost in runs.lost_jobs(quiet_s=quiet_s):
        try:
            job = json.loads(lost.job)
        except ValueError:
            continue  # written by the transition script from a Job: cannot happen
        count = runs.count_redelivery(lost.run_id, lost.recording_id)
        if count < 0:
            continue  # finished or closed since it was listed
        if count > max_redeliveries:
            runs.fail(lost.run_id, lost.recording_id, "job_lost",
                      f"the broker lost this job's message {max_redeliveries} times "
                      "after it was published again", job)
            given_up += 1
            continue
        send(job, lost.queue)
        sent += 1
    if sent or given_up:
        log.warning("published %d lost job(s) again; %d lost too often, recorded as job_lost",
                    sent, given_up)
    return sent, given_up


class LostJobSweeper(bootsteps.StartStopStep):
    """Consumer step: :func:`sweep_lost_jobs` every visibility timeout, in a thread of its
    own (a sweep during a broker outage must not hold up the consumer's event loop, which
    acknowledges jobs and beats the delivery heartbeat)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()

    def start(self, c: Any) -> None:
        if self.thread is not None and self.thread.is_alive():
            return  # a consumer restart (broker reconnect): the thread carries on
        settings = Settings.from_env()
        # No long client-side retry: a sweep that meets an outage gives up until the next.
        runs = Runs.from_url(settings.broker_url, retry=False, connect_timeout_s=5.0,
                             timeout_s=10.0)
        interval_s = float(max(1, settings.visibility_timeout_s))
        app = c.app

        def send(job: dict[str, Any], queue: str) -> None:
            app.send_task(TASK_NAME, args=[job], queue=queue)

        self.stopping.clear()
        self.thread = threading.Thread(target=self.loop, args=(runs, send, interval_s),
                                       name="lost-job-sweeper", daemon=True)
        self.thread.start()

    def stop(self, c: Any) -> None:
        pass  # a consumer restart stops and starts steps: keep sweeping across it

    def shutdown(self, c: Any) -> None:
        self.stopping.set()

    def loop(self, runs: Runs, send: Send, interval_s: float) -> None:
        failing = False
        while not self.stopping.wait(interval_s):
            try:
                sweep_lost_jobs(runs, send, quiet_s=interval_s, lock_ttl_s=interval_s)
            except Exception as exc:  # a broker outage: the next sweep tries again
                if not failing:
                    log.warning("could not sweep for lost jobs (%s: %s); retrying",
                                type(exc).__name__, exc)
                failing = True
                continue
            failing = False
