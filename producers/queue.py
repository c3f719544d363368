"""Publishing jobs to the broker by task name: producers never import worker code."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from celery import Celery

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
    if queue not in QUEUES:
        raise ValueError(f"queue must be one of {QUEUES}")
    client = make_client(settings)
    queued = invalid = 0
    with client.connection_for_write() as conn, client.producer_pool.acquire(
            block=True) as producer:
        del conn
        for chunk in _chunks(items, PUBLISH_CHUNK):
            jobs: list[Job] = []
            for item in chunk:
                if isinstance(item, CatalogLine) and item.job is None:
                    invalid += 1
                    runs.fail(run_id, f"line:{item.line_no}", "invalid_job",
                              f"line {item.line_no}: {item.error}")
                    continue
                job = item.job if isinstance(item, CatalogLine) else item
                jobs.append(Job.from_dict({**job.to_dict(), "run_id": run_id,
                                           "force": force or job.force}))
            runs.mark_many_queued(run_id, [j.recording_id for j in jobs])
            for job in jobs:
                client.send_task(TASK_NAME, args=[job.to_dict()], queue=queue,
                                 producer=producer)
            queued += len(jobs)
    runs.redis.hincrby(f"pv:run:{run_id}:meta", "submitted", queued)
    return EnqueueReport(run_id, queued, invalid)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
