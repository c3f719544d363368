"""The featurize stage as a plain function: job in, stored record and an outcome out.

The Celery task (``workers/tasks.py``) only handles arguments, retries and
acknowledgement; everything here runs without a broker, so tests call it directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import requests

from contract.errors import PreviewvecError
from contract.jobs import InvalidJob, Job, failure_ids
from contract.records import FeatureRecord, encode_record, make_provenance, record_key
from contract.settings import Settings
from contract.state import Runs
from contract.store import FeatureStore, StoreUnavailable, open_store
from contract.versions import check_claim, computation
from workers.analysis import analyze
from workers.fetch import fetch_preview, make_session


@dataclass
class WorkerContext:
    """What a worker process builds once and reuses for every task."""

    settings: Settings
    store: FeatureStore
    runs: Runs
    session: requests.Session
    # The feature version these settings compute (contract/versions.py): every record
    # this worker writes, and every skip check, is under it.
    version: str = ""

    def __post_init__(self) -> None:
        if not self.version:
            self.version = check_claim(self.settings)

    @classmethod
    def build(cls, settings: Settings) -> WorkerContext:
        return cls(
            settings=settings,
            store=open_store(settings.store, settings),
            runs=Runs.from_url(settings.broker_url),
            session=make_session(settings),
            version=check_claim(settings),
        )


@dataclass
class Outcome:
    """What happened to one job; small and JSON-ready (it is the task's result in Flower)."""

    recording_id: str
    run_id: str | None
    status: str  # done | skipped | failed
    error_code: str | None = None
    error_message: str | None = None
    # Stage timings: the record's (check, fetch, decode, extract.*) plus what happens
    # after the record is sealed: encode (record → JSON), store (the write) and account
    # (ready push and run bookkeeping).
    timings_s: dict[str, float] = field(default_factory=dict)
    started_at: float | None = None  # UNIX time the stage began (queue wait, gaps)
    wall_s: float | None = None  # the whole stage; Celery's task wall minus this is Celery's
    cpu_s: float | None = None  # this process's CPU over the stage; wall − CPU = waiting

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None and v != {}}


def featurize(job_data: dict[str, Any], ctx: WorkerContext) -> Outcome:
    """Skip, or fetch → decode → extract → store, and account for the result in the run.

    Raises
    ------
    StoreUnavailable
        The store could not be reached: the caller retries the whole job later (nothing
        was recorded as failed).
    """
    try:
        job = Job.from_dict(job_data)
    except InvalidJob as exc:
        # Ids safe to account under: the job's own may not even encode (lone surrogates).
        recording_id, run_id = failure_ids(job_data)
        outcome = Outcome(recording_id, run_id, "failed", exc.code, exc.message)
        _account(ctx, outcome, job_data if isinstance(job_data, dict) else None)
        return outcome

    started_at, started, started_cpu = time.time(), time.perf_counter(), time.process_time()
    key = record_key(ctx.version, job.recording_id)
    skip = not job.force and ctx.store.exists(key)
    timings: dict[str, float] = {"check": time.perf_counter() - started}
    if skip:
        # The reducer upserts it only if the index lacks it: its writer may have died
        # between storing it and pushing its key.
        ctx.runs.push_ready_if_absent(key)
        outcome = Outcome(job.recording_id, job.run_id, "skipped", timings_s=timings)
        return _finish(ctx, outcome, job.to_dict(), (started_at, started, started_cpu))

    try:
        t0 = time.perf_counter()
        fetched = fetch_preview(job.preview_url, ctx.settings, session=ctx.session)
        timings["fetch"] = time.perf_counter() - t0
        analysis = analyze(fetched.data, ctx.settings)
        timings.update(analysis.timings_s)
    except StoreUnavailable:
        raise
    except PreviewvecError as exc:
        outcome = Outcome(job.recording_id, job.run_id, "failed", exc.code, exc.message,
                          timings)
        return _finish(ctx, outcome, job.to_dict(), (started_at, started, started_cpu))

    record = FeatureRecord(
        recording_id=job.recording_id,
        # The float32 array, not a list of Python floats: the record then holds the
        # shortest decimals that round-trip float32 (≈ 6 KB instead of ≈ 11 KB of float64
        # noise digits), which the store writes and the reducer parses.
        vector=analysis.features.vector,
        descriptors=dict(analysis.features.descriptors),
        provenance=make_provenance(
            preview_url=job.preview_url,
            audio_sha256=analysis.audio_sha256,
            source=job.source or "",
            run_id=job.run_id or "",
            isrc=job.isrc,
            artist=job.artist,
            title=job.title,
        ),
        # A record can only hold what happened before it was sealed; its own encoding and
        # write are in the outcome (the task's result, logged by the worker).
        timings_s=dict(timings),
        feature_version=ctx.version,
        computation=computation(ctx.settings),
    )
    t0 = time.perf_counter()
    data = encode_record(record)
    t1 = time.perf_counter()
    ctx.store.put(key, data)
    t2 = time.perf_counter()
    timings.update(encode=t1 - t0, store=t2 - t1)
    ctx.runs.push_ready(key)
    outcome = Outcome(job.recording_id, job.run_id, "done", timings_s=timings)
    return _finish(ctx, outcome, job.to_dict(), (started_at, started, started_cpu))


def _finish(ctx: WorkerContext, outcome: Outcome, job: dict[str, Any],
            start: tuple[float, float, float]) -> Outcome:
    """Account for the outcome in its run, then stamp the stage's start, wall and CPU
    (``start``: ``time.time()``, ``perf_counter()``, ``process_time()`` at the start)."""
    t0 = time.perf_counter()
    _account(ctx, outcome, job)
    done = time.perf_counter()
    outcome.timings_s["account"] = done - t0
    outcome.started_at, outcome.wall_s = start[0], done - start[1]
    outcome.cpu_s = time.process_time() - start[2]
    return outcome


def _account(ctx: WorkerContext, outcome: Outcome, job: dict[str, Any] | None) -> None:
    if not outcome.run_id:
        return
    # delivered: a recording a compacted run no longer lists already succeeded in it, so
    # this is a redelivery and must not count again.
    if outcome.status == "failed":
        ctx.runs.fail(outcome.run_id, outcome.recording_id, outcome.error_code or "error",
                      outcome.error_message or "", job, delivered=True)
    else:
        ctx.runs.succeed(outcome.run_id, outcome.recording_id, outcome.status, delivered=True)
