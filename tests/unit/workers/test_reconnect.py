"""workers/reconnect.py: kombu's errors on a half-closed broker connection (closing it,
acknowledging on it), and Redis refusing commands (out of memory, MISCONF), do not end
the worker; Celery's own consumer lets them escape, and the worker shuts down
("Unrecoverable error")."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery
from celery.concurrency.solo import TaskPool as SoloPool
from celery.exceptions import CPendingDeprecationWarning
from celery.worker.consumer import Consumer
from kombu import Connection, Exchange, Message, Queue
from kombu.asynchronous import Hub
from redis.exceptions import OutOfMemoryError, ResponseError

from contract.settings import Settings
from contract.state import connect
from previewvec.localredis import LocalRedis
from tests.harness.faults import redis_out_of_memory
from workers.app import make_app
from workers.reconnect import BrokerRefused, ReconnectingConsumer, _refusals_as_lost_connection

NO_EVENT_LOOP = SimpleNamespace(use_eventloop=False)  # the worker, as the consumer sees it


@pytest.fixture
def server() -> Iterator[LocalRedis]:
    with LocalRedis() as redis_server:
        yield redis_server


@pytest.fixture
def app(server: LocalRedis, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Celery:
    monkeypatch.setenv("PREVIEWVEC_CACHE_DIR", str(tmp_path / "cache"))
    return make_app(Settings.from_env({"PREVIEWVEC_BROKER_URL": server.url}))


@pytest.fixture
def half_closed(app: Celery) -> Iterator[tuple[Connection, Message]]:
    """A real connection holding one unacknowledged delivery, left as kombu leaves one
    whose close was cut short while Redis went away: the channel open, its connection
    pool dropped, the transport's client gone."""
    connection = app.connection_for_read()
    channel = connection.default_channel
    queue = Queue("reconnect-test", Exchange("reconnect-test"), "reconnect-test")
    delivered: list[Message] = []
    consumer = connection.Consumer(queue, callbacks=[lambda body, msg: delivered.append(msg)])
    connection.Producer().publish({"job": 1}, exchange=queue.exchange,
                                  routing_key="reconnect-test", declare=[queue])
    consumer.consume()
    connection.drain_events(timeout=5)
    channel._disconnect_pools()
    connection._do_close_transport()
    yield connection, delivered[0]
    channel.do_restore = False  # else kombu's exit handler tries again, and says so


def test_the_app_uses_the_reconnecting_consumer(app: Celery) -> None:
    assert app.conf.worker_consumer == "workers.reconnect:ReconnectingConsumer"


@pytest.mark.parametrize("consumer_class", [ReconnectingConsumer, Consumer])
def test_closing_a_half_closed_connection(
        app: Celery, consumer_class: type[Consumer], half_closed: tuple[Connection, Message],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    consumer = consumer_class(lambda request: None, app=app, hostname="t@test",
                              controller=NO_EVENT_LOOP, pool=SoloPool())
    connection, _ = half_closed
    # Celery collects the connection before it closes it; that collect is what was cut
    # short and left the state above, so it does nothing more here.
    monkeypatch.setattr(connection, "collect", lambda socket_timeout=None: None)
    consumer.connection = connection
    lost = ConnectionError("Connection closed by server.")

    if consumer_class is Consumer:  # why the subclass exists
        with pytest.raises(AttributeError, match="hostname"):
            consumer.on_connection_error_after_connected(lost)
        return
    # The rest of Celery's clean-up still runs (its last step warns about running jobs).
    with pytest.warns(CPendingDeprecationWarning):
        consumer.on_connection_error_after_connected(lost)
    assert consumer.connection is None  # the restart that follows opens a new one
    assert "closing the lost broker connection failed ('NoneType'" in caplog.text


@pytest.mark.parametrize("consumer_class", [ReconnectingConsumer, Consumer])
def test_acknowledging_on_a_half_closed_connection(
        app: Celery, consumer_class: type[Consumer], half_closed: tuple[Connection, Message],
        caplog: pytest.LogCaptureFixture) -> None:
    """As Celery acknowledges a late-acked job: scheduled on the event loop, with the
    connection errors it expects (the one raised here is not among them)."""
    hub = Hub()
    consumer = consumer_class(lambda request: None, app=app, hostname="t@test",
                              controller=NO_EVENT_LOOP, hub=hub)
    connection, message = half_closed
    consumer.call_soon_ack(message.ack_log_error, logging.getLogger("test"),
                           connection.connection_errors)

    if consumer_class is Consumer:
        with pytest.raises(AttributeError, match="hostname"):
            hub.run_once()
        return
    hub.run_once()
    assert "could not acknowledge a job delivered before the broker reconnect" in caplog.text
    assert not message.acknowledged  # in unacked: restored after the visibility timeout


# --------------------------------------------------------------------------- Redis refusing


@pytest.fixture
def delivered(app: Celery) -> Iterator[tuple[Connection, Message]]:
    """A live connection holding one delivery, recorded in kombu's ``unacked``."""
    connection = app.connection_for_read()
    queue = Queue("refusal-test", Exchange("refusal-test"), "refusal-test")
    received: list[Message] = []
    consumer = connection.Consumer(queue, callbacks=[lambda body, msg: received.append(msg)])
    connection.Producer().publish({"job": 1}, exchange=queue.exchange,
                                  routing_key="refusal-test", declare=[queue])
    consumer.consume()
    connection.drain_events(timeout=5)
    yield connection, received[0]
    connection.default_channel.do_restore = False
    connection.release()


@pytest.mark.parametrize("consumer_class", [ReconnectingConsumer, Consumer])
def test_acknowledging_while_redis_is_out_of_memory(
        app: Celery, server: LocalRedis, consumer_class: type[Consumer],
        delivered: tuple[Connection, Message], caplog: pytest.LogCaptureFixture) -> None:
    """Given Redis at its maxmemory when a job's acknowledgement runs (kombu's MULTI is
    refused; the audit: both workers exited "Unrecoverable error: OutOfMemoryError"),
    expect it logged, the delivery left in ``unacked`` to come back after the visibility
    timeout, and the event loop going on."""
    hub = Hub()
    consumer = consumer_class(lambda request: None, app=app, hostname="t@test",
                              controller=NO_EVENT_LOOP, hub=hub)
    connection, message = delivered
    raw = connect(server.url)
    with redis_out_of_memory(raw):
        consumer.call_soon_ack(message.ack_log_error, logging.getLogger("test"),
                               connection.connection_errors)
        if consumer_class is Consumer:  # why the subclass handles it
            with pytest.raises(OutOfMemoryError):
                hub.run_once()
            return
        hub.run_once()
    assert "Redis refused to acknowledge a job (OutOfMemoryError" in caplog.text
    assert raw.hexists("unacked", message.delivery_tag)


def test_a_delivery_redis_refuses_to_record_still_runs(
        app: Celery, server: LocalRedis, caplog: pytest.LogCaptureFixture) -> None:
    """Given a message popped while Redis refuses to record it in ``unacked`` (out of
    memory), expect it handed to the consumer's callback, not lost from Redis and the
    worker ended; a plain connection raises instead."""
    consumer = ReconnectingConsumer(lambda request: None, app=app, hostname="t@test",
                                    controller=NO_EVENT_LOOP, pool=SoloPool())
    queue = Queue("refusal-deliver", Exchange("refusal-deliver"), "refusal-deliver")
    raw = connect(server.url)
    outcomes = []
    for connection in (app.connection_for_read(), consumer.connect()):
        received: list[Message] = []
        connection.Producer().publish({"job": 2}, exchange=queue.exchange,
                                      routing_key="refusal-deliver", declare=[queue])
        connection.Consumer(queue, callbacks=[lambda body, msg, into=received:
                                              into.append(msg)]).consume()
        with redis_out_of_memory(raw):
            try:
                connection.drain_events(timeout=5)
                outcomes.append(len(received))
            except OutOfMemoryError:
                outcomes.append("raised")
        connection.default_channel.do_restore = False
        connection.release()
    assert outcomes == ["raised", 1]
    assert "Redis refused to record delivery" in caplog.text


def test_other_refusals_while_consuming_are_a_lost_connection(app: Celery) -> None:
    """A refusal anywhere in the consumer's start (connecting, declaring the queues, the
    event loop: BRPOP on a MISCONF or read-only Redis) becomes a connection error, which
    Celery answers by reconnecting; an error reply of our own making is not touched."""
    consumer = ReconnectingConsumer(lambda request: None, app=app, hostname="t@test",
                                    controller=NO_EVENT_LOOP, pool=SoloPool())
    connection_errors = app.connection_for_read().connection_errors

    def refused(parent: Any) -> None:
        raise ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's "
                            "currently unable to persist to disk.")

    def wrong_type(parent: Any) -> None:
        raise ResponseError("WRONGTYPE Operation against a key holding the wrong kind")

    for blueprint_start, expected in ((refused, connection_errors),
                                      (wrong_type, (ResponseError,))):
        consumer.blueprint.start = _refusals_as_lost_connection(blueprint_start)
        with pytest.raises(expected) as raised:
            consumer.blueprint.start(consumer)
        assert isinstance(raised.value, BrokerRefused) == (blueprint_start is refused)
