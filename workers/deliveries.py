"""The deliveries a worker holds: kept visible while it lives, accounted when cut short.

**Heartbeat.** kombu's Redis transport emulates acknowledgements: a delivered message
stays in the ``unacked`` hash, scored in the ``unacked_index`` zset by its delivery time,
and any worker's periodic sweep puts it back on its queue once that score is older than
the visibility timeout. On its own that forces a choice between a long timeout (a job
held by a worker that died as a whole waits that long) and a short one (a job still held
by a live worker, running, prefetched or waiting for its countdown, is handed to a
second worker). :class:`DeliveryHeartbeat` removes the choice: every
:data:`heartbeat_interval_s` the worker's main process moves the score of each delivery
it still holds to *now* (``ZADD XX``: it can never re-add an entry that was acknowledged
or restored meanwhile). So the visibility timeout only measures how long a holder has
been silent, and it can be short (40 s by default, see ``workers/app.py``): a dead
worker's jobs come back within the timeout plus one sweep, a live worker's never.

What counts as held is what Celery itself will still run or acknowledge: the requests in
``celery.worker.state`` (received, ETA-waiting or running). A request Celery dropped (on
a broker reconnect it forgets prefetched and ETA-waiting ones) or finished without
acknowledging is not refreshed, so its message comes back after the timeout.

The beat runs on the consumer's event loop, like acknowledgements: if that loop stalls
for longer than the visibility timeout minus one interval, the worker is treated as lost
and its jobs may run a second time elsewhere. Every step of a job is idempotent, so that
costs work, not correctness (docs/reliability.md, "Lost workers").

A job killed by its hard time limit is recorded as ``timeout`` by the worker's request
class (``workers/crashes.py``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import bootsteps
from celery.worker import state

log = logging.getLogger(__name__)

HEARTBEAT_MAX_INTERVAL_S = 5.0


def heartbeat_interval_s(visibility_timeout_s: float) -> float:
    """How often a worker refreshes its deliveries: a sixth of the visibility timeout,
    at most 5 s, so that several beats in a row must be missed before one expires."""
    return max(0.5, min(HEARTBEAT_MAX_INTERVAL_S, visibility_timeout_s / 6))


def held_delivery_tags() -> set[str]:
    """Delivery tags of every request this worker will still run or acknowledge."""
    requests = {*state.requests.values(), *state.reserved_requests, *state.active_requests,
                *state.scheduled_requests}
    from workers import overlap

    active = overlap.active()
    tags = active.held_tags() if active is not None else set()  # acks awaiting a write
    for request in requests:
        tag = getattr(getattr(request, "message", None), "delivery_tag", None)
        if tag:
            tags.add(str(tag))
    return tags


def refresh_deliveries(channel: Any, tags: set[str], now: float | None = None) -> int:
    """Move the visibility clock of ``tags`` to ``now``; returns how many were refreshed.

    Only entries still present change (``XX``): an acknowledged or restored delivery is
    gone from the zset and stays gone.
    """
    if not tags:
        return 0
    stamp = time.time() if now is None else now
    with channel.conn_or_acquire() as client:
        return int(client.zadd(channel.unacked_index_key, dict.fromkeys(tags, stamp),
                               xx=True, ch=True))


class DeliveryHeartbeat(bootsteps.StartStopStep):
    """Consumer step: refreshes this worker's deliveries on the event loop's timer."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.tref: Any = None
        self.channel: Any = None
        self.failing = False

    def start(self, c: Any) -> None:
        channel = c.connection.default_channel
        if not hasattr(channel, "unacked_index_key"):  # not the Redis transport
            return
        self.channel = channel
        visibility = float(channel.visibility_timeout)
        self.beat()  # at once: a reconnect may follow a long outage
        self.tref = c.timer.call_repeatedly(heartbeat_interval_s(visibility), self.beat)

    def stop(self, c: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        self.channel = None

    shutdown = stop

    def beat(self) -> None:
        if self.channel is None:
            return
        try:
            refresh_deliveries(self.channel, held_delivery_tags())
        except Exception as exc:  # a broker outage: the consumer reconnects by itself
            if not self.failing:
                log.warning("could not refresh held deliveries (%s: %s); retrying",
                            type(exc).__name__, exc)
            self.failing = True
            return
        if self.failing:
            log.info("refreshing held deliveries again")
        self.failing = False
