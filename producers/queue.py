"""Publishing jobs to the broker by task name: producers never import worker code."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any
from uuid import uuid4

from celery import Celery
from kombu import Producer, Queue
from kombu.entity import PERSISTENT_DELIVERY_MODE

from previewvec.jobs import CatalogLine, Job, parse_catalog
from previewvec.runs import Runs, new_run_id
from previewvec.settings import Settings

TASK_NAME = "previewvec.featurize"
QUEUES = ("ondemand", "batch")
PUBLISH_CHUNK = 500


def make_client(settings: Settings) -> Celery:
    """A publishing-only Celery app speaking the workers' contract (JSON only)."""
    client = Celery("previewvec-producer", broker=settings.broker_url)
    client.conf.update(task_serializer="json", accept_content=["json"],
                       broker_connection_retry_on_startup=True,
                       broker_transport_options={"queue_order_strategy": "priority"})
    return client


@dataclass
class EnqueueReport:
    run_id: str
    queued: int
    invalid: int


def enqueue_catalog(lines: Iterable[str | bytes], settings: Settings, *, queue: str = "batch",
                    force: bool = False, run_id: str | None = None,
                    source: str = "") -> EnqueueReport:
    """Validate each catalog line, record invalid lines as failures of the run, publish
    the valid ones. Returns the run id and counts."""
    runs = Runs.from_url(settings.broker_url)
    run_id = run_id or new_run_id()
    runs.create(run_id, queue=queue, source=source)
    return publish(parse_catalog(lines), runs, settings, run_id=run_id, queue=queue, force=force)


def publish(items: Iterable[CatalogLine | Job], runs: Runs, settings: Settings, *,
            run_id: str, queue: str = "batch", force: bool = False) -> EnqueueReport:
    """Mark the valid jobs queued in the run, then publish them, PUBLISH_CHUNK at a time.

    Each chunk goes out in one Redis round trip: kombu's publish batch buffers the LPUSHes
    that publishing one message at a time would make, and each message is what
    ``send_task`` produces (built by Celery's own ``create_task_message``, routed to the
    queue's default-priority list; tests/integration/test_publish.py compares the two).
    Publishing is at-least-once: a failed flush raises ``kombu.exceptions.BatchPublishError``
    (some of the chunk may be queued) and the caller republishes, which is harmless
    because jobs and run transitions are idempotent.
    """
    if queue not in QUEUES:
        raise ValueError(f"queue must be one of {QUEUES}")
    client = make_client(settings)
    queued = invalid = 0
    with client.producer_pool.acquire(block=True) as producer:
        # Batched, a publish only appends to a pipeline, so kombu's per-message retry
        # wrapper has nothing to retry; keep it only where the transport cannot batch.
        retry = not producer.supports_batch_publish
        # Declared once here, not per message (send_task re-binds the queue every time).
        target = client.amqp.queues[queue]
        producer.maybe_declare(target)
        for chunk in _chunks(items, PUBLISH_CHUNK):
            jobs: list[Job] = []
            for item in chunk:
                if isinstance(item, CatalogLine) and item.job is None:
                    invalid += 1
                    runs.fail(run_id, f"line:{item.line_no}", "invalid_job",
                              f"line {item.line_no}: {item.error}")
                    continue
                job = item.job if isinstance(item, CatalogLine) else item
                jobs.append(replace(job, run_id=run_id, force=force or job.force))
            if not jobs:
                continue
            # Queued before published: a worker can finish a job within milliseconds, and a
            # "queued" written after its "done" would count it as queued for ever.
            runs.mark_many_queued(run_id, [j.recording_id for j in jobs])
            with producer.batch(max_size=len(jobs)):
                for job in jobs:
                    _publish_task(client, producer, target, job.to_dict(), retry=retry)
            queued += len(jobs)
    runs.redis.hincrby(f"pv:run:{run_id}:meta", "submitted", queued)
    return EnqueueReport(run_id, queued, invalid)


def _publish_task(client: Celery, producer: Producer, queue: Queue, job: dict[str, Any], *,
                  retry: bool) -> None:
    """Publish one featurize task as ``send_task(TASK_NAME, args=[job], queue=queue)`` would.

    The message comes from Celery's protocol-2 builder; what is left out of send_task is
    its per-call option routing and the ``before/after_task_publish`` signals (producers
    connect none), which cost about as much CPU as the rest of a publish.
    """
    task_id = str(uuid4())
    args = [job]
    # The text Flower shows as the arguments. Celery's saferepr is the largest single cost
    # of building a message. For a flat dict of ints, bools and strings that repr()
    # leaves unescaped (the usual job) the builtin repr is the same text; anything else,
    # or anything longer than Celery's cap, is left to saferepr (None).
    text = repr(args)
    plain = all(not isinstance(v, str) or repr(v) == f"'{v}'" for v in job.values())
    argsrepr = text if plain and len(text) <= client.amqp.argsrepr_maxsize else None
    headers, properties, body, _ = client.amqp.create_task_message(
        task_id, TASK_NAME, args, {}, root_id=task_id, reply_to=client.thread_oid,
        ignore_result=None, argsrepr=argsrepr, kwargsrepr="{}")
    # A direct exchange is published through the anonymous exchange, the queue's name as
    # the routing key: kombu's Redis transport pushes it onto that queue's list.
    producer.publish(body, exchange="", routing_key=queue.name, serializer="json",
                     delivery_mode=queue.exchange.delivery_mode or PERSISTENT_DELIVERY_MODE,
                     headers=headers, declare=[], retry=retry, **properties)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
