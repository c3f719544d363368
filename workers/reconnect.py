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
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer

log = logging.getLogger(__name__)


class ReconnectingConsumer(Consumer):
    """Celery's consumer, except that kombu's failures on a connection it has half torn
    down are logged, not fatal: closing it, and acknowledging on it the jobs that were
    running across the reconnect."""

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
        instead of a connection error, and that must not end the worker either."""

        def ack() -> None:
            try:
                p(*args, **kwargs)
            except AttributeError as exc:
                log.warning("could not acknowledge a job delivered before the broker "
                            "reconnect (%s); it returns after the visibility timeout (and "
                            "is skipped if its record is stored)", exc)

        return super().call_soon_ack(ack)


def _logged_close(close: Callable[[], Any]) -> Callable[[], None]:
    def close_lost() -> None:
        try:
            close()
        except AttributeError as exc:  # kombu's half-closed channel, see the module
            log.warning("closing the lost broker connection failed (%s); its "
                        "unacknowledged jobs return after the visibility timeout; "
                        "reconnecting", exc)

    return close_lost
