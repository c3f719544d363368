"""The broker contract (contract/broker.py): producers and workers build from it alike."""

from __future__ import annotations

import dataclasses

from contract import broker
from contract.settings import Settings
from producers.queue import make_client
from workers.app import make_app


def _settings() -> Settings:
    return dataclasses.replace(Settings.from_env(), broker_url="redis://127.0.0.1:1/0")


def test_producer_and_worker_agree_on_every_contract_setting() -> None:
    settings = _settings()
    producer, worker = make_client(settings).conf, make_app(settings).conf
    for name, value in broker.celery_settings().items():
        if name == "broker_transport_options":
            for option, shared in value.items():
                assert producer[name][option] == worker[name][option] == shared, option
        elif name == "task_queues":
            shape = [(q.name, q.exchange.name, q.exchange.type, q.routing_key) for q in value]
            for conf in (producer, worker):
                assert [(q.name, q.exchange.name, q.exchange.type, q.routing_key)
                        for q in conf[name]] == shape
        else:
            assert producer[name] == worker[name] == value, name


def test_contract_values() -> None:
    settings = broker.celery_settings()
    assert broker.TASK_NAME == "previewvec.featurize"
    assert broker.QUEUES == ("ondemand", "batch")  # consumed in this order
    assert settings["accept_content"] == ["json"]  # never pickle
    assert settings["broker_transport_options"]["queue_order_strategy"] == "priority"
    assert settings["task_routes"] == {broker.TASK_NAME: {"queue": "batch"}}
    assert broker.celery_settings() is not settings  # callers may change their copy


def test_workers_register_the_contract_task_name() -> None:
    from workers.tasks import app, featurize_task

    assert featurize_task.name == broker.TASK_NAME
    assert broker.TASK_NAME in app.tasks


def test_queue_keys_cover_every_priority_step() -> None:
    assert broker.queue_keys("batch") == ["batch", "batch\x06\x163", "batch\x06\x166",
                                          "batch\x06\x169"]


def test_a_tls_broker_verifies_the_server_certificate() -> None:
    """From the operations review: given rediss:// (the production Secret's form) and no
    ssl_cert_reqs, kombu fell back to CERT_NONE while redis-py verified."""
    import ssl

    tls = broker.celery_settings("rediss://:pw@redis.example:6380/0")["broker_use_ssl"]
    assert tls == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert "broker_use_ssl" not in broker.celery_settings("redis://127.0.0.1:6379/0")
    chosen = "rediss://h:6380/0?ssl_cert_reqs=optional"  # the URL's own choice stays
    assert "broker_use_ssl" not in broker.celery_settings(chosen)
