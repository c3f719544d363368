"""The broker contract between producers and workers, written once.

Producers publish by task name and never import worker code; workers consume what this
module names. Both sides build their Celery configuration from :func:`celery_settings`,
so the task name, the queues and their order, the serialisation and the transport options
a publisher depends on cannot drift apart.
"""

from __future__ import annotations

import ssl
from typing import Any

from kombu import Exchange, Queue

TASK_NAME = "previewvec.featurize"
# Consumed in this order (queue_order_strategy=priority): on-demand work goes first.
QUEUES = ("ondemand", "batch")
DEFAULT_QUEUE = "batch"
# kombu's Redis transport keeps one list per queue and priority step: the queue name for
# priority 0, "<name>\x06\x16<step>" for the others (kombu.transport.redis.Channel.sep).
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)  # kombu's default, written down because producers count them
# kombu's hash of delivered, unacknowledged messages (its Redis transport's default name).
UNACKED_KEY = "unacked"
# JSON only: pickle is refused, a broker message must never run code.
SERIALIZER = "json"


def queue_keys(queue: str) -> list[str]:
    """The Redis lists kombu keeps for ``queue`` (one per priority step)."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


# A broker that accepts connections and never answers (a stopped Redis, the wrong
# service on the port) held a worker's start for ever, deaf to SIGTERM: kombu sets no
# socket timeout. Its blocking calls (connect, PING, LPUSH) now give up after this and
# are retried as a lost connection; BRPOP waits 1 s at a time, well inside it.
BROKER_SOCKET_TIMEOUT_S = 10.0


def transport_options() -> dict[str, Any]:
    """The Redis transport options both sides share (workers add their timing options)."""
    return {
        "queue_order_strategy": "priority",  # BRPOP keys in QUEUES order
        "priority_steps": list(PRIORITY_STEPS),
        "socket_timeout": BROKER_SOCKET_TIMEOUT_S,
        "socket_connect_timeout": BROKER_SOCKET_TIMEOUT_S,
    }


def broker_ssl(broker_url: str) -> dict[str, Any] | None:
    """TLS options for a ``rediss://`` broker: the server's certificate is verified.

    Given ``rediss://`` and no ``ssl_cert_reqs`` in the URL, kombu falls back to
    ``CERT_NONE`` (a warning in the log), so the Redis password would go over TLS anyone
    in the path can intercept, while the run-state client (redis-py) verifies. A URL
    that names ``ssl_cert_reqs`` itself keeps its choice."""
    if not broker_url.startswith("rediss://") or "ssl_cert_reqs" in broker_url:
        return None
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def celery_settings(broker_url: str = "") -> dict[str, Any]:
    """The Celery settings producers and workers must agree on (a fresh dict per call);
    ``broker_url`` for its TLS options (:func:`broker_ssl`)."""
    tls = broker_ssl(broker_url)
    return {
        **({"broker_use_ssl": tls} if tls else {}),
        "task_serializer": SERIALIZER,
        "accept_content": [SERIALIZER],
        "result_serializer": SERIALIZER,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport_options(),
        # One exchange per queue: nothing published for one queue can land in the other.
        "task_queues": [Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
        "task_default_queue": DEFAULT_QUEUE,
        "task_routes": {TASK_NAME: {"queue": DEFAULT_QUEUE}},
    }
