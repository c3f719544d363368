"""The featurize stage as a plain function: job in, stored record and an outcome out.

The Celery task (``workers/tasks.py``) only handles arguments, retries and
acknowledgement; everything here runs without a broker, so tests call it directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
from workers.fetch import FetchResult, HTTPStatusError, fetch_preview, make_session
from workers.refresh import EXPIRED_STATUSES, PreviewRefresher


@dataclass
class WorkerContext:
    """What a worker process builds once and reuses for every task."""

    settings: Settings
    store: FeatureStore
    runs: Runs
    session: requests.Session
    # Asks a source for a fresh preview URL when one expired (None: never).
    refresher: PreviewRefresher | None = None
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
            refresher=PreviewRefresher(settings),
            version=check_claim(settings),
        )


@dataclass(frozen=True)
class Ahead:
    """What the worker's main process did for a job before a pool child got it
    (workers/overlap.py): the store check and the preview fetch, run ahead.

    ``exists`` is None when the store was not checked (a forced job); ``data`` and
    ``error`` (a ``(code, message)`` pair) are both None when nothing was fetched.
    """

    exists: bool | None = None
    check_s: float = 0.0
    data: bytes | None = field(default=None, repr=False)
    error: tuple[str, str] | None = None
    fetch_s: float = 0.0
    held_s: float = 0.0  # received by the worker → handed to a pool child


class PrefetchFailed(PreviewvecError):
    """A fetch run ahead failed: the same code and message the fetch itself raised."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# Hands an encoded record to whoever writes it behind the child: (key, data, outcome,
# job) → True if taken (then it stores, pushes and accounts, and only then acks).
WriteBehind = Callable[[str, bytes, "Outcome", dict[str, Any]], bool]


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
    # Of timings_s, the part done outside this stage's wall, overlapped with other jobs'
    # compute: check and fetch run ahead, store and account written behind.
    overlapped_s: dict[str, float] = field(default_factory=dict)
    held_s: float | None = None  # in the worker, received → handed to a pool child
    written_behind: bool | None = None  # True: the worker's main process stores it

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None and v != {}}


def featurize(job_data: dict[str, Any], ctx: WorkerContext, *, ahead: Ahead | None = None,
              write_behind: WriteBehind | None = None) -> Outcome:
    """Skip, or fetch → decode → extract → store, and account for the result in the run.

    ``ahead``: the store check and fetch already done for this job (they are not
    repeated). ``write_behind``: hands the encoded record over instead of storing and
    accounting here; if it takes it, the returned outcome lacks store and account.

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
    start = (started_at, started, started_cpu)
    key = record_key(ctx.version, job.recording_id)
    overlapped: dict[str, float] = {}
    if ahead is not None and ahead.exists is not None:
        skip = ahead.exists
        timings: dict[str, float] = {"check": ahead.check_s}
        overlapped["check"] = ahead.check_s
    else:
        skip = not job.force and ctx.store.exists(key)
        timings = {"check": time.perf_counter() - started}
    held = ahead.held_s if ahead is not None else None
    if skip:
        # The reducer upserts it only if the index lacks it: its writer may have died
        # between storing it and pushing its key.
        ctx.runs.push_ready_if_absent(key)
        outcome = Outcome(job.recording_id, job.run_id, "skipped", timings_s=timings,
                          overlapped_s=overlapped, held_s=held)
        return _finish(ctx, outcome, job.to_dict(), start)

    try:
        job, data = _fetch(job, ctx, ahead, timings, overlapped)
        analysis = analyze(data, ctx.settings)
        timings.update(analysis.timings_s)
    except StoreUnavailable:
        raise
    except PreviewvecError as exc:
        outcome = Outcome(job.recording_id, job.run_id, "failed", exc.code, exc.message,
                          timings, overlapped_s=overlapped, held_s=held)
        return _finish(ctx, outcome, job.to_dict(), start)

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
            release_id=job.release_id,
            source_track_id=job.source_track_id,
            source_url=job.source_url,
            preview_host=job.preview_host,
            match_rule=job.match_rule,
            confidence=job.confidence,
        ),
        # A record can only hold what happened before it was sealed; its own encoding and
        # write are in the outcome (the task's result, logged by the worker).
        timings_s=dict(timings),
        feature_version=ctx.version,
        computation=computation(ctx.settings),
    )
    t0 = time.perf_counter()
    encoded = encode_record(record)
    timings["encode"] = time.perf_counter() - t0
    outcome = Outcome(job.recording_id, job.run_id, "done", timings_s=timings,
                      overlapped_s=overlapped, held_s=held)
    if write_behind is not None:
        _stamp(outcome, start, time.perf_counter())
        if write_behind(key, encoded, outcome, job.to_dict()):
            return outcome
    store(ctx, key, encoded, outcome)
    return _finish(ctx, outcome, job.to_dict(), start)


def _fetch(job: Job, ctx: WorkerContext, ahead: Ahead | None, timings: dict[str, float],
           overlapped: dict[str, float]) -> tuple[Job, bytes]:
    """The job as fetched and the preview's bytes: fetched ahead (its failure raised as
    the same typed error, unless it is an expired preview, re-resolved here), or now."""
    if ahead is not None and (ahead.data is not None or ahead.error is not None):
        timings["fetch"] = overlapped["fetch"] = ahead.fetch_s
        if ahead.error is None:
            assert ahead.data is not None
            return job, ahead.data
        code, message = ahead.error
        if not (_expired_code(code) and ctx.refresher is not None
                and ctx.refresher.refreshable(job)):
            raise PrefetchFailed(code, message)
        budget = _FetchBudget(ctx.settings)  # the refresh and the new fetch share one
        fresh = ctx.refresher.refresh(job, budget_s=budget.left_s())
        if fresh is None or budget.left_s() <= 0:
            raise PrefetchFailed(code, message)
        job = replace(job, preview_url=fresh)  # validated again: the URL came from upstream
        t0 = time.perf_counter()
        data = fetch_preview(job.preview_url, ctx.settings, session=ctx.session,
                             budget_s=budget.left_s()).data
        timings["fetch"] += time.perf_counter() - t0
        return job, data
    t0 = time.perf_counter()
    job, fetched = _fetch_now(job, ctx)
    timings["fetch"] = time.perf_counter() - t0
    return job, fetched.data


def _expired_code(code: str) -> bool:
    """A fetch failure code that says the preview URL expired (``http_403``, ``http_410``)."""
    return code.startswith("http_") and code[5:].isdigit() and int(code[5:]) in EXPIRED_STATUSES


def store(ctx: WorkerContext, key: str, encoded: bytes, outcome: Outcome) -> None:
    """Write the record and push its key to the ready list (timed as ``store``)."""
    t0 = time.perf_counter()
    ctx.store.put(key, encoded)
    outcome.timings_s["store"] = time.perf_counter() - t0
    ctx.runs.push_ready(key)


def account(ctx: WorkerContext, outcome: Outcome, job: dict[str, Any] | None) -> None:
    """Account for the outcome in its run (timed as ``account``)."""
    t0 = time.perf_counter()
    _account(ctx, outcome, job)
    outcome.timings_s["account"] = time.perf_counter() - t0


def _stamp(outcome: Outcome, start: tuple[float, float, float], done: float) -> None:
    outcome.started_at, outcome.wall_s = start[0], done - start[1]
    outcome.cpu_s = time.process_time() - start[2]


class _FetchBudget:
    """What is left of one ``fetch_total_timeout_s`` for a job's fetches and refresh:
    an expired preview's refresh (its rate-limit wait and API call) and second fetch
    must not start a second budget, which would overrun the task's soft time limit (the
    15 s budget sits inside its 20 s)."""

    def __init__(self, settings: Settings) -> None:
        self.deadline = _clock() + settings.fetch_total_timeout_s

    def left_s(self) -> float:
        return self.deadline - _clock()


def _clock() -> float:
    return time.monotonic()


def _fetch_now(job: Job, ctx: WorkerContext) -> tuple[Job, FetchResult]:
    """Fetch the preview; an expired one (403/410 from a source whose URLs expire) is
    re-resolved ONCE through its source and fetched again, all inside one fetch budget
    (none left: the refresh is skipped and the job fails with the CDN's status).
    Returns the job as fetched."""
    budget = _FetchBudget(ctx.settings)
    try:
        return job, fetch_preview(job.preview_url, ctx.settings, session=ctx.session)
    except HTTPStatusError as exc:
        if (exc.status not in EXPIRED_STATUSES or ctx.refresher is None
                or not ctx.refresher.refreshable(job) or budget.left_s() <= 0):
            raise
        fresh = ctx.refresher.refresh(job, budget_s=budget.left_s())
        if fresh is None or budget.left_s() <= 0:
            raise
    job = replace(job, preview_url=fresh)  # validated again: the URL came from upstream
    return job, fetch_preview(job.preview_url, ctx.settings, session=ctx.session,
                              budget_s=budget.left_s())


def _finish(ctx: WorkerContext, outcome: Outcome, job: dict[str, Any],
            start: tuple[float, float, float]) -> Outcome:
    """Account for the outcome in its run, then stamp the stage's start, wall and CPU
    (``start``: ``time.time()``, ``perf_counter()``, ``process_time()`` at the start)."""
    account(ctx, outcome, job)
    _stamp(outcome, start, time.perf_counter())
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
