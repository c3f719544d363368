"""Fault scenarios: a 200-job batch through the real pipeline while something breaks.

Every scenario runs 200 jobs (24 generated clips under 200 distinct recording ids and
URLs, served from 127.0.0.1) through a private Redis (AOF on), two ``celery worker``
processes, a real S3 API (moto's server, reached through a TCP proxy that can take it
down) and ``previewvec reduce --follow`` into an index (embedded LanceDB, or the Vectorize
contract server), injects its faults mid-batch, and then audits store and index: every
recording exactly once in both, or recorded as failed with its code; nothing lost,
nothing duplicated (tests/harness/faults.py: :func:`audit`).

Each scenario adds a row to the table printed at the end of the session (conftest.py),
the table of docs/reliability.md. "Time to recover" runs from the end of the last fault
to the moment the run has no queued recording and the index holds every completed one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from contract.broker import QUEUES
from contract.layout import FEATURE_VERSION, VECTOR_DIM
from contract.settings import Settings
from tests.conftest import MOTO_ACCESS_KEY, MOTO_REGION, MOTO_SECRET_KEY
from tests.contract.vectorize_server import VectorizeContractServer
from tests.faults.conftest import FaultAssets
from tests.harness.faults import (
    RECORD_PREFIX,
    Audit,
    FaultPipeline,
    FaultyClipServer,
    Row,
    TcpProxy,
    audit,
    batch_catalog,
    lance_ids,
    row_from,
    s3_listing,
)

pytestmark = pytest.mark.faults

JOBS = 200
# Workers run as production runs them: the configured prefetch multiplier (16 per child),
# so jobs are fetched ahead and written behind by the worker's main process
# (workers/overlap.py). Set to 1 to try a scenario on plain Celery.
PRODUCTION: int | None = None
STORE_PREFIX = "pv"


@pytest.fixture
def s3_proxy(moto_endpoint: str) -> Iterator[TcpProxy]:
    """The workers' and the reducer's S3 endpoint: a proxy in front of the session's moto
    server, so the endpoint can go down and come back on the same port with its objects."""
    proxy = TcpProxy(int(moto_endpoint.rsplit(":", 1)[1])).start()
    yield proxy
    proxy.close()


@dataclass
class Batch:
    """One scenario's pipeline, its batch and the ways to look at store and index."""

    name: str
    pipeline: FaultPipeline
    s3: object  # boto3 S3 client straight to moto (not through the proxy)
    bucket: str
    run_id: str
    ids: list[str]
    index_env: dict[str, str]

    def read_record(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=f"{STORE_PREFIX}/{key}")["Body"].read()

    def store_keys(self) -> list[str]:
        return s3_listing(self.s3, self.bucket, f"{STORE_PREFIX}/{RECORD_PREFIX}")

    def status(self) -> dict[str, int]:
        return self.pipeline.runs.status(self.run_id).counts

    def complete(self) -> bool:
        """No recording queued, and nothing left to reduce: a job pushes its record key
        before it is marked done or skipped, and the reducer trims the ready queue only
        after the upsert, so an empty queue means every completed one was upserted."""
        counts = self.status()
        runs = self.pipeline.runs
        return (sum(counts.values()) == len(self.ids) and not counts["queued"]
                and not runs.ready_depth())

    def queue_depths(self) -> dict[str, int]:
        return {queue: self.pipeline.runs.queue_depth(queue) for queue in QUEUES}

    def wait_done(self, n: int, timeout_s: float = 120) -> None:
        self.pipeline.wait_for(lambda: self.status()["done"] >= n, timeout_s=timeout_s,
                               what=f"{n} jobs of {self.name} done")

    def wait_complete(self, timeout_s: float = 180) -> float:
        """Until :meth:`complete`; returns when (``time.monotonic()``)."""
        self.pipeline.wait_for(self.complete, timeout_s=timeout_s,
                               what=lambda: f"{self.name} to complete (now {self.status()}, "
                                            f"{self.pipeline.raw.hlen('unacked')} "
                                            "deliveries unacknowledged, queue depths "
                                            f"{self.queue_depths()})")
        return time.monotonic()


def start_batch(name: str, root: Path, assets: FaultAssets, host: FaultyClipServer,
                proxy: TcpProxy, moto_endpoint: str, *, index_env: dict[str, str] | None = None,
                extra_env: dict[str, str] | None = None, workers: int = 2,
                appendonly: bool = True) -> Batch:
    """Bucket, Redis, workers (warm), a following reducer, and the 200 jobs enqueued."""
    import boto3

    s3 = boto3.session.Session().client(
        "s3", endpoint_url=moto_endpoint, region_name=MOTO_REGION,
        aws_access_key_id=MOTO_ACCESS_KEY, aws_secret_access_key=MOTO_SECRET_KEY)
    bucket = f"faults-{name.replace('_', '-')}"
    s3.create_bucket(Bucket=bucket)
    env = {
        "AWS_ACCESS_KEY_ID": MOTO_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": MOTO_SECRET_KEY,
        "AWS_DEFAULT_REGION": MOTO_REGION, "AWS_ENDPOINT_URL_S3": proxy.url,
        **(extra_env or {}),
    }
    pipeline = FaultPipeline(root, cache_dir=assets.cache_dir,
                             store=f"s3://{bucket}/{STORE_PREFIX}", extra_env=env,
                             appendonly=appendonly)
    try:
        started = [pipeline.start_worker(f"{name}-{i}", prefetch=PRODUCTION)
                   for i in range(workers)]
        index_env = index_env or {"PREVIEWVEC_INDEX": str(root / "index")}
        pipeline.start_reducer(index_env)
        for worker in started:
            worker.wait_warm()
        ids, lines = batch_catalog(host, assets.clips, name, JOBS)
        report = pipeline.enqueue(lines)
        assert (report.queued, report.invalid) == (JOBS, 0)
    except BaseException:
        pipeline.close()
        raise
    return Batch(name, pipeline, s3, bucket, report.run_id, ids, index_env)


def check(batch: Batch, result: Audit, *, allowed_codes: frozenset[str] = frozenset()) -> None:
    """The invariant: nothing lost, nothing duplicated; failures only with expected codes."""
    assert result.problems == [], "\n".join(result.problems[:20])
    assert result.lost == 0 and result.duplicates == 0
    assert set(result.failed) <= allowed_codes, result.failed
    completed = result.jobs - sum(result.failed.values())
    assert result.in_store == result.in_index == completed
    assert batch.pipeline.raw.llen("pv:ready:dead") == 0


def lance_audit(batch: Batch) -> Audit:
    return audit(batch.pipeline, batch.run_id, batch.ids, batch.store_keys(),
                 lance_ids(Path(batch.index_env["PREVIEWVEC_INDEX"])), batch.read_record)


def seconds(value: float) -> str:
    return f"{value:.1f} s"


# --------------------------------------------------------------------------- workers


# The production default, not shortened: the live workers' heartbeat is what makes it
# short enough (workers/deliveries.py). Shortening it also shrank the task time limits
# (to 7.2 / 9 s at 12 s), which a job on a loaded machine could hit.
VISIBILITY_TIMEOUT_S = Settings().visibility_timeout_s


@pytest.mark.timeout(300)
def test_sigkilled_workers_and_pool_children(tmp_path: Path, fault_assets: FaultAssets,
                                            clip_host: FaultyClipServer, s3_proxy: TcpProxy,
                                            moto_endpoint: str, fault_rows: list[Row]) -> None:
    """Six SIGKILLs mid-batch, alternating: a pool child (its job is requeued at once by
    reject_on_worker_lost), then a whole worker, main process and child together (its job
    stays unacknowledged until the visibility timeout, counted from the worker's last
    heartbeat; a fresh worker replaces it)."""
    batch = start_batch("kill", tmp_path, fault_assets, clip_host, s3_proxy, moto_endpoint)
    pipeline = batch.pipeline
    rng = random.Random(6)
    try:
        batch.wait_done(20)
        children = workers = 0
        for round_ in range(6):
            # A worker that has been running jobs (a replacement may still be starting).
            target = rng.choice([w for w in pipeline.live_workers()
                                 if "extractor warmed" in w.log()])
            if round_ % 2 == 0:
                pipeline.wait_for(lambda t=target: bool(t.pool_children()), timeout_s=30,
                                  what=f"a pool child of {target.name}")
                target.kill_pool_child()
                children += 1
            else:
                target.kill_hard()
                workers += 1
                # joins while the batch runs
                pipeline.start_worker(f"kill-r{round_}", prefetch=PRODUCTION)
            done = batch.status()["done"]
            batch.wait_done(done + 6)  # the next kill lands on running jobs again
        last_kill = time.monotonic()
        assert batch.status()["queued"] > 0, "the kills came too late to be mid-batch"
        finished = batch.wait_complete()
        result = lance_audit(batch)
        check(batch, result)
        fault_rows.append(row_from(
            "SIGKILL workers", result,
            f"{children} pool children + {workers} whole workers SIGKILLed "
            f"(visibility timeout {VISIBILITY_TIMEOUT_S} s)",
            seconds(finished - last_kill)))
    finally:
        pipeline.close()


# --------------------------------------------------------------------------- Redis


REDIS_DOWN_S = 3.0
# Jobs done before each restart. Four, not two: a worker could die of one restart in
# about six (workers/reconnect.py), and two workers dying at the same one stall the batch.
REDIS_RESTARTS_AT = (20, 60, 100, 140)


@pytest.mark.timeout(300)
def test_redis_restarts_with_aof(tmp_path: Path, fault_assets: FaultAssets,
                                 clip_host: FaultyClipServer, s3_proxy: TcpProxy,
                                 moto_endpoint: str, fault_rows: list[Row]) -> None:
    """Redis (the broker and all run state, AOF fsynced every second) is restarted four
    times mid-batch, down for 3 s each time; workers and reducer reconnect and carry on,
    whatever kombu raises while it drops the lost connection (workers/reconnect.py).

    A job delivered to a worker in the instant the broker goes away (received, not yet
    running) is dropped by Celery on reconnect and stays in kombu's ``unacked`` hash,
    like a hard-killed worker's job, until the visibility timeout restores it (the
    production default, as in the SIGKILL scenario: no heartbeat refreshes a dropped job)."""
    batch = start_batch("redis", tmp_path, fault_assets, clip_host, s3_proxy, moto_endpoint)
    pipeline = batch.pipeline
    try:
        for done in REDIS_RESTARTS_AT:
            batch.wait_done(done)
            pipeline.restart_redis(REDIS_DOWN_S)
        restarted = time.monotonic()
        assert batch.status()["queued"] > 0, "the restarts came too late to be mid-batch"
        finished = batch.wait_complete()
        # A worker that died of a restart would leave the other to finish alone.
        assert len(pipeline.live_workers()) == len(pipeline.workers), pipeline.logs()
        result = lance_audit(batch)
        check(batch, result)
        fault_rows.append(row_from(
            "Redis restart (AOF)", result,
            f"{len(REDIS_RESTARTS_AT)} restarts, {REDIS_DOWN_S:g} s down each",
            seconds(finished - restarted)))
    finally:
        pipeline.close()


REDIS_LONG_DOWN_S = 45.0  # past the client's ~30 s of retries and the 40 s visibility timeout


@pytest.mark.timeout(420)
def test_redis_down_longer_than_its_client_retries(
        tmp_path: Path, fault_assets: FaultAssets, clip_host: FaultyClipServer,
        s3_proxy: TcpProxy, moto_endpoint: str, fault_rows: list[Row]) -> None:
    """Redis stays away for 45 s mid-batch: writes behind outlast their client's retries
    and are retried with the store's backoff (workers/overlap.py), then every job ends
    done or skipped: none as ``internal_error`` or ``state_unavailable``, which it would
    be wrong to record for a job whose record is stored. Every held delivery's score is
    older than the visibility timeout when Redis returns: some jobs run twice, each
    vector is still stored and indexed once."""
    # Its own bucket: the restart scenario's records would make every job a skip.
    batch = start_batch("redis_long", tmp_path, fault_assets, clip_host, s3_proxy, moto_endpoint)
    pipeline = batch.pipeline
    try:
        batch.wait_done(40)
        pipeline.restart_redis(REDIS_LONG_DOWN_S)
        back = time.monotonic()
        assert batch.status()["queued"] > 0, "the outage came too late to be mid-batch"
        finished = batch.wait_complete()
        assert len(pipeline.live_workers()) == len(pipeline.workers), pipeline.logs()
        result = lance_audit(batch)
        check(batch, result)
        retried = sum(w.log().count("state_unavailable writing") for w in pipeline.workers)
        fault_rows.append(row_from(
            "Redis away past its client's retries", result,
            f"1 outage of {REDIS_LONG_DOWN_S:g} s; {retried} writes retried",
            seconds(finished - back)))
    finally:
        pipeline.close()


# --------------------------------------------------------------------------- S3


S3_DOWN_S = 30.0


@pytest.mark.timeout(300)
def test_s3_endpoint_down_for_30_s(tmp_path: Path, fault_assets: FaultAssets,
                                   clip_host: FaultyClipServer, s3_proxy: TcpProxy,
                                   moto_endpoint: str, fault_rows: list[Row]) -> None:
    """The S3 endpoint refuses connections for 30 s mid-batch (open connections reset),
    then comes back on the same address: store_unavailable retries carry every job."""
    batch = start_batch("s3", tmp_path, fault_assets, clip_host, s3_proxy, moto_endpoint)
    pipeline = batch.pipeline
    try:
        batch.wait_done(30)
        s3_proxy.down()
        time.sleep(S3_DOWN_S)
        during = batch.status()
        s3_proxy.up()
        back = time.monotonic()
        assert during["queued"] > 0
        finished = batch.wait_complete()
        result = lance_audit(batch)
        check(batch, result)
        retried = sum(w.log().count("Retry in") for w in pipeline.workers)
        fault_rows.append(row_from(
            "S3 endpoint down", result,
            f"1 outage of {S3_DOWN_S:g} s (connections refused); {retried} task retries",
            seconds(finished - back)))
    finally:
        pipeline.close()


# --------------------------------------------------------------------------- reducer, index


@pytest.fixture
def vectorize() -> Iterator[VectorizeContractServer]:
    """The Vectorize contract server (tests/contract/vectorize_server.py), not the service."""
    with VectorizeContractServer(index_name="faults", dimensions=VECTOR_DIM) as server:
        yield server


def vectorize_env(server: VectorizeContractServer) -> dict[str, str]:
    return {"PREVIEWVEC_INDEX": f"vectorize://{server.index_name}",
            "PREVIEWVEC_VECTORIZE_ACCOUNT_ID": server.account_id,
            "PREVIEWVEC_VECTORIZE_API_TOKEN": server.token,
            "PREVIEWVEC_VECTORIZE_BASE_URL": server.base_url}


def vectorize_audit(batch: Batch, server: VectorizeContractServer) -> Audit:
    batch.pipeline.wait_for(lambda: server.pending_mutations == 0, timeout_s=30,
                            what="the contract server to apply every mutation")
    return audit(batch.pipeline, batch.run_id, batch.ids, batch.store_keys(),
                 list(server.vectors), batch.read_record)


UPSERT_HOLD_S = 3.0
REDUCER_KILLS = 3


@pytest.mark.timeout(300)
def test_reducer_killed_mid_upsert(tmp_path: Path, fault_assets: FaultAssets,
                                   clip_host: FaultyClipServer, s3_proxy: TcpProxy,
                                   moto_endpoint: str, vectorize: VectorizeContractServer,
                                   fault_rows: list[Row]) -> None:
    """``previewvec reduce --follow`` is SIGKILLed three times while an upsert is in flight
    (the index holds each upsert 3 s; the killed one still lands, unanswered) and
    restarted each time: the batch it was writing stays queued and is upserted again."""
    vectorize.hold_upserts(UPSERT_HOLD_S)
    env = vectorize_env(vectorize)
    batch = start_batch("reducer", tmp_path, fault_assets, clip_host, s3_proxy, moto_endpoint,
                        index_env=env)
    pipeline = batch.pipeline
    try:
        for _ in range(REDUCER_KILLS):
            pipeline.wait_for(vectorize.upsert_received.is_set, timeout_s=120,
                              what="an upsert in flight")
            pipeline.reducers[-1].kill_hard()
            vectorize.hold_upserts(UPSERT_HOLD_S)  # re-arms upsert_received
            pipeline.start_reducer(env)
        last_kill = time.monotonic()
        vectorize.hold_upserts(0)
        finished = batch.wait_complete()
        result = vectorize_audit(batch, vectorize)
        check(batch, result)
        rewritten = sum(1 for n in vectorize.writes.values() if n > 1)
        assert rewritten > 0, "no killed upsert was written again"
        assert all(r.proc.returncode == -9 for r in pipeline.reducers[:-1])
        fault_rows.append(row_from(
            "reducer killed mid-upsert (Vectorize)", result,
            f"{REDUCER_KILLS} SIGKILLs of `reduce --follow` during an upsert, each restarted; "
            f"{rewritten} vectors upserted again (same id)", seconds(finished - last_kill)))
    finally:
        pipeline.close()


THROTTLE_S = 15.0
OUTAGE_5XX_S = 10.0


@pytest.mark.timeout(300)
def test_index_answers_429_then_503(tmp_path: Path, fault_assets: FaultAssets,
                                    clip_host: FaultyClipServer, s3_proxy: TcpProxy,
                                    moto_endpoint: str, vectorize: VectorizeContractServer,
                                    fault_rows: list[Row]) -> None:
    """Mid-batch the index answers every request 429 (Retry-After: 2) for 15 s, then 503
    for 10 s: the client's retries run out, the reducer keeps the batch queued and backs
    off, and catches up when the index answers again."""
    env = vectorize_env(vectorize)
    batch = start_batch("index", tmp_path, fault_assets, clip_host, s3_proxy, moto_endpoint,
                        index_env=env)
    pipeline = batch.pipeline
    try:
        pipeline.wait_for(lambda: len(vectorize.vectors) >= 20, timeout_s=120,
                          what="the first vectors in the index")
        assert batch.status()["queued"] > 0, "the batch finished before the fault"
        vectorize.fail_for(THROTTLE_S, status=429, retry_after="2")
        time.sleep(THROTTLE_S)
        vectorize.fail_for(OUTAGE_5XX_S, status=503)
        time.sleep(OUTAGE_5XX_S)
        back = time.monotonic()
        faulted = vectorize.calls["fault"]
        # The workers carried on meanwhile; their records waited in the ready queue.
        assert faulted > 0 and pipeline.runs.ready_depth() > 0
        finished = batch.wait_complete()
        result = vectorize_audit(batch, vectorize)
        check(batch, result)
        gave_up = sum(r.log_tail(10_000).count("batch stays queued") for r in pipeline.reducers)
        fault_rows.append(row_from(
            "index 429 / 503", result,
            f"{THROTTLE_S:g} s of 429 + {OUTAGE_5XX_S:g} s of 503: {faulted} requests "
            f"refused, the client gave up {gave_up}×", seconds(finished - back)))
    finally:
        pipeline.close()


# --------------------------------------------------------------------------- preview host


FLAP_S = 8.0  # each phase lasts this long at most...
SLOW_S = 8.0
# ...and ends once it has served this many requests: with the production prefetch, workers
# fetch 16 jobs ahead per child, and 8 s of flapping would use up the batch before the
# slow phase begins (a failing fetch no longer holds a pool child while it retries).
FLAP_HITS = 40
SLOW_HITS = 6
SLOW_RESPONSE_S = 2.5
FETCH_ENV = {  # short fetch limits: the slow host's 2.5 s is over the 1 s read timeout
    "PREVIEWVEC_FETCH_CONNECT_TIMEOUT_S": "1",
    "PREVIEWVEC_FETCH_READ_TIMEOUT_S": "1",
    "PREVIEWVEC_FETCH_TOTAL_TIMEOUT_S": "4",
    "PREVIEWVEC_FETCH_RETRIES": "2",
}


@pytest.mark.timeout(300)
def test_preview_host_flapping_then_slow(tmp_path: Path, fault_assets: FaultAssets,
                                         clip_host: FaultyClipServer, s3_proxy: TcpProxy,
                                         moto_endpoint: str, fault_rows: list[Row]) -> None:
    """The preview host flaps for 8 s (connection reset, 503, a good answer, in turn),
    then answers slower than the read timeout for 8 s, then recovers. Jobs succeed
    through the fetch's retries or fail with a typed code without holding a worker;
    ``previewvec retry`` completes the failed ones, exactly once."""
    batch = start_batch("host", tmp_path, fault_assets, clip_host, s3_proxy, moto_endpoint,
                        extra_env=FETCH_ENV)
    pipeline = batch.pipeline
    try:
        batch.wait_done(20)
        for mode, hits, longest_s in (("flap", FLAP_HITS, FLAP_S), ("slow", SLOW_HITS, SLOW_S)):
            clip_host.set_mode(mode, slow_s=SLOW_RESPONSE_S if mode == "slow" else 0.0)
            phase_end = time.monotonic() + longest_s
            while clip_host.hits[mode] < hits and time.monotonic() < phase_end:
                time.sleep(0.05)
        clip_host.set_mode("ok")
        healthy = time.monotonic()
        first_pass = batch.wait_complete()
        first = lance_audit(batch)
        check(batch, first, allowed_codes=frozenset({"fetch_failed", "http_503"}))
        assert first.failed, "no job failed: the faults did not bite"
        assert clip_host.hits["slow"] > 0 and clip_host.hits["flap"] > 0

        retried = pipeline.cli("retry", batch.run_id)
        assert retried.returncode == 0, retried.stderr
        n_failed = sum(first.failed.values())
        assert f"re-enqueued {n_failed} failed jobs" in retried.stdout
        retry_started = time.monotonic()
        pipeline.wait_for(lambda: batch.status()["failed"] == 0, timeout_s=120,
                          what="the retried jobs")
        finished = batch.wait_complete()
        final = lance_audit(batch)
        check(batch, final)
        assert final.failed == {}
        fault_rows.append(Row(
            "preview host flapping, then slow", final.jobs,
            f"flapping (reset / 503 / ok) for {clip_host.hits['flap']} requests, then slow "
            f"({SLOW_RESPONSE_S:g} s > 1 s read timeout) for {clip_host.hits['slow']}",
            final.in_store, final.in_index, final.duplicates, final.lost,
            f"{first.failed_text()} → 0 after `previewvec retry`",
            f"{seconds(first_pass - healthy)}; retry {seconds(finished - retry_started)}"))
    finally:
        pipeline.close()


# --------------------------------------------------------------------------- no persistence


def redis_footprint(pipeline: FaultPipeline, run_id: str) -> dict[str, int]:
    """What Redis holds of the pipeline's state right now."""
    r = pipeline.raw
    return {"queued messages": int(r.llen("batch")), "unacked": int(r.hlen("unacked")),
            "run states": int(r.hlen(f"pv:run:{run_id}:state")),
            "ready keys": int(r.llen("pv:ready"))}


@pytest.mark.timeout(300)
def test_redis_restart_without_persistence(tmp_path: Path, fault_assets: FaultAssets,
                                           clip_host: FaultyClipServer, s3_proxy: TcpProxy,
                                           moto_endpoint: str, fault_rows: list[Row]) -> None:
    """What a Redis restart *without* persistence loses, and how it is recovered: the
    queued jobs, the run's bookkeeping and the ready queue are gone; re-enqueueing the
    catalog skips every stored record (handing it to the reducer, which upserts it if the
    index lacks it: the ready queue lost may have held it) and computes the rest. Exactly
    once again."""
    batch = start_batch("volatile", tmp_path, fault_assets, clip_host, s3_proxy, moto_endpoint,
                        appendonly=False)
    pipeline = batch.pipeline
    try:
        batch.wait_done(60)
        before = redis_footprint(pipeline, batch.run_id)
        pipeline.restart_redis(1.0)
        after = redis_footprint(pipeline, batch.run_id)
        restarted = time.monotonic()
        assert before["queued messages"] > 0 and before["run states"] == JOBS
        assert after["queued messages"] == 0
        assert after["run states"] <= 4  # at most the jobs in flight, written after restart
        # Workers re-declare their queues when they reconnect; publish after that.
        pipeline.wait_for(lambda: pipeline.raw.exists("_kombu.binding.batch"),
                          timeout_s=60, what="workers to reconnect")
        stored = len(batch.store_keys())
        report = pipeline.enqueue(batch_catalog(clip_host, fault_assets.clips, "volatile",
                                                JOBS)[1])
        again = Batch(batch.name, pipeline, batch.s3, batch.bucket, report.run_id, batch.ids,
                      batch.index_env)
        finished = again.wait_complete()
        result = lance_audit(again)
        check(again, result)
        counts = again.status()
        assert counts["skipped"] >= stored - 4 and counts["done"] + counts["skipped"] == JOBS
        lost = ", ".join(f"{k} {before[k]} → {after[k]}" for k in before)
        fault_rows.append(row_from(
            "Redis restart **without** persistence, then the catalog re-enqueued", result,
            f"1 restart (no AOF): {lost}; re-enqueued: {counts['skipped']} skipped "
            f"(stored), {counts['done']} computed", seconds(finished - restarted)))
    finally:
        pipeline.close()


# --------------------------------------------------------------------------- lock renewal


@pytest.mark.timeout(60)
def test_reducer_lock_is_renewed_through_a_slow_upsert(
        tmp_path: Path, vectorize: VectorizeContractServer) -> None:
    """Given a reducer lock of 1 s and an index that holds the upsert 3 s, the lock stays
    the first reducer's for the whole batch (renewed), a second reducer stays out, and
    the lock is released when the batch is done. (The short TTL is what lets a SIGKILLed
    reducer's successor in quickly: test_reducer_killed_mid_upsert.)"""
    import dataclasses
    import threading

    import numpy as np

    from contract.records import FeatureRecord, encode_record, make_provenance, record_key
    from contract.settings import Settings
    from previewvec.localredis import LocalRedis
    from reducer.reduce import Reducer

    rng = np.random.default_rng(7)
    with LocalRedis(data_dir=tmp_path / "redis") as server:
        settings = Settings.from_env({"PREVIEWVEC_BROKER_URL": server.url,
                                      "PREVIEWVEC_STORE": str(tmp_path / "store"),
                                      **vectorize_env(vectorize)})
        first = dataclasses.replace(Reducer.build(settings), lock_ttl_s=1.0)
        second = Reducer.build(settings)
        for i in range(5):
            record = FeatureRecord(
                f"lock-{i}", rng.normal(size=VECTOR_DIM).astype(np.float32).tolist(),
                {"tempo_bpm": 100.0 + i}, make_provenance(
                    preview_url="http://127.0.0.1/x", audio_sha256="0" * 64, source="test",
                    run_id="r"))
            key = record_key(FEATURE_VERSION, record.recording_id)
            first.store.put(key, encode_record(record))
            first.runs.push_ready(key)
        first.normalizer()  # fitted before the clock starts: only the upsert is slow
        vectorize.hold_upserts(3.0)
        consumed: list[int] = []
        worker = threading.Thread(target=lambda: consumed.append(first.reduce_once()))
        worker.start()
        assert vectorize.upsert_received.wait(10)
        token = first.runs.reducer_lock_holder()
        since = time.monotonic()
        while worker.is_alive():  # 3 s of hold against a 1 s TTL: renewed, never lost
            assert first.runs.reducer_lock_holder() == token
            assert second.reduce_once() == 0
            worker.join(timeout=0.1)
        assert time.monotonic() - since >= 2.0, "the upsert was not held past the TTL"
        assert consumed == [5]
        assert first.runs.reducer_lock_holder() is None
        assert first.runs.ready_depth() == 0
