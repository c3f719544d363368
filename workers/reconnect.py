"""The worker's consumer: a broker outage never ends the worker.

When the broker connection breaks, Celery's consumer closes the old connection and
reconnects; any exception other than a connection or channel error, there or on the
event loop, is "Unrecoverable" and shuts the worker down. kombu 5.7's Redis transport can
raise ``AttributeError: 'NoneType' object has no attribute 'hostname'`` on such a
connection: when a close is cut short while Redis goes away, the channel is left open
with its connection pool dropped and the transport's client gone. Anything the channel
then sends builds a new pool from that missing client: the second close (restoring the
channel's unacknowledged deliveries), and the acknowledgement of a job that was running
across the reconnect and finishes after it. With two workers and five Redis restarts
mid-batch (tests/faults/test_scenarios.py, ``test_redis_restarts_with_aof``), a worker
exited this way in 5 of 7 runs, and in 2 of them both did: the batch stalled.

Nothing is lost by carrying on: deliveries the old channel could neither restore nor
acknowledge stay in kombu's ``unacked`` hash, and no live request refreshes them
(workers/deliveries.py), so a worker's sweep puts them back on their queue after the
visibility timeout, as for a worker that died; a job that already ran is then skipped as
stored.

**Redis refusing commands** (:func:`contract.state.redis_refusal`: at its maxmemory with
noeviction, MISCONF after a failed save, a read-only replica) was fatal the same way:
kombu acknowledges in a MULTI transaction, which Redis refuses when out of memory, and
both workers of a run exited ("Unrecoverable error: server:OutOfMemoryError"). Now:

* an acknowledgement (or rejection) refused is logged; the delivery stays in ``unacked``
  and comes back after the visibility timeout, to be skipped as stored (record writes and
  index upserts are idempotent by recording id: no second vector);
* a delivery Redis refuses to record in ``unacked`` (BRPOP already popped it) still
  reaches Celery and runs; were this worker to die before it ends, the run's lost-job
  sweep publishes it again (workers/redeliver.py);
* any other refusal on the event loop or while connecting (BRPOP or declaring the queues
  on a read-only or MISCONF Redis) is handled as a lost connection: Celery reconnects,
  backing off, until Redis takes commands again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis
from celery.worker.consumer import Consumer
from kombu.transport import virtual

from contract.state import redis_refusal

log = logging.getLogger(__name__)


class BrokerRefused(redis.ConnectionError):
    """Redis refused a command the consumer needs: handled as a lost connection (a
    connection error to Celery), so the consumer reconnects instead of exiting."""


class ReconnectingConsumer(Consumer):
    """Celery's consumer, except that kombu's failures on a connection it has half torn
    down are logged, not fatal: closing it, and acknowledging on it the jobs that were
    running across the reconnect; nor is Redis refusing commands (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Celery's start() reconnects on connection errors raised from here (connecting,
        # the event loop) and exits on anything else.
        self.blueprint.start = _refusals_as_lost_connection(self.blueprint.start)

    def connect(self) -> Any:
        connection = super().connect()
        _deliver_when_refused(connection.default_channel)
        return connection

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        connection = self.connection
        if connection is not None:
            # Celery closes it midway through its clean-up (then resets the prefetch
            # count, warns about running jobs): only the close may fail.
            connection.close = _logged_close(connection.close)
        super().on_connection_error_after_connected(exc)

    def call_soon_ack(self, p: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Acknowledge (or reject) on the event loop, as Celery does; a message whose
        channel lost its client in the half-closed state above raises ``AttributeError``
        instead of a connection error, and Redis may refuse the transaction (out of
        memory): neither must end the worker."""

        def ack() -> None:
            try:
                p(*args, **kwargs)
            except AttributeError as exc:
                log.warning("could not acknowledge a job delivered before the broker "
                            "reconnect (%s); it returns after the visibility timeout (and "
                            "is skipped if its record is stored)", exc)
            except redis.ResponseError as exc:
                if not redis_refusal(exc):
                    raise
                log.warning("Redis refused to acknowledge a job (%s: %s); it returns "
                            "after the visibility timeout (and is skipped if its record "
                            "is stored)", type(exc).__name__, exc)

        return super().call_soon_ack(ack)


def _refusals_as_lost_connection(start: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def start_or_reconnect(parent: Any) -> Any:
        try:
            return start(parent)
        except redis.ResponseError as exc:
            if not redis_refusal(exc):
                raise
            log.warning("Redis refused a command of the consumer (%s: %s); reconnecting",
                        type(exc).__name__, exc)
            raise BrokerRefused(str(exc)) from exc

    return start_or_reconnect


def _deliver_when_refused(channel: Any) -> None:
    """Let ``channel`` hand on a message Redis refuses to record as delivered.

    kombu's Redis transport pops a message (BRPOP), then records it in ``unacked`` in a
    MULTI transaction; when Redis refuses that (out of memory), the message would be
    gone from Redis and never run. It runs instead, held in this worker's memory only.
    """
    qos = getattr(channel, "qos", None)
    if not hasattr(channel, "unacked_index_key") or qos is None:  # not Redis' transport
        return
    append = qos.append

    def append_or_hold(message: Any, delivery_tag: str) -> None:
        try:
            append(message, delivery_tag)
        except redis.ResponseError as exc:
            if not redis_refusal(exc):
                raise
            log.warning("Redis refused to record delivery %s (%s: %s); running it "
                        "unrecorded (if this worker dies first, the run's lost-job sweep "
                        "publishes it again)", delivery_tag, type(exc).__name__, exc)
            virtual.QoS.append(qos, message, delivery_tag)

    qos.append = append_or_hold


def _logged_close(close: Callable[[], Any]) -> Callable[[], None]:
    def close_lost() -> None:
        try:
            close()
        except AttributeError as exc:  # kombu's half-closed channel, see the module
            log.warning("closing the lost broker connection failed (%s); its "
                        "unacknowledged jobs return after the visibility timeout; "
                        "reconnecting", exc)

    return close_lost
