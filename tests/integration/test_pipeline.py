"""The whole pipeline with real components: enqueue → Celery workers (fetch, decode,
features, store) → ready queue → reducer → vector index.

Real: a private ``redis-server``, ``celery -A workers.app worker`` subprocesses (prefork),
clips generated and encoded by the project's own song generator and served over HTTP from
127.0.0.1, the folder store and an S3 API (moto server), the embedded LanceDB index, the
``previewvec`` command line, and for Vectorize a local server speaking its HTTP API
(tests/contract/vectorize_server.py — a contract test, not the real service).

Scenarios: a batch end to end (S3 and folder stores); re-enqueueing is a no-op; workers
SIGKILLed mid-batch lose and duplicate nothing; bad previews become recorded failures
with stable codes (and ``previewvec retry``); on-demand jobs overtake a batch backlog;
one reduce into the Vectorize adapter.

Workers load numba's compiled extractor from a cache directory shared by the session
(compiled once up front), so each worker starts in seconds.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from contract.layout import FEATURE_VERSION, VECTOR_DIM
from contract.records import decode_record, record_key
from contract.settings import Settings
from contract.state import RunStatus
from tests.harness.pipeline import (
    FETCH_MAX_BYTES,
    Assets,
    Clip,
    ClipServer,
    Pipeline,
    WorkerProcess,
    catalog_line,
    parse_status_line,
    prepare_assets,
    running_clip_server,
)
from workers.app import HARD_LIMIT_SHARE, TASK_TIME_LIMIT_S

pytestmark = pytest.mark.slow

N_CLIPS = 22
RECORD_PREFIX = f"features/{FEATURE_VERSION}/"
DESCRIPTORS = ("tempo_bpm", "key", "mode", "key_strength", "loudness_lufs", "energy",
               "danceability", "onset_rate", "duration_s")
S3_BUCKET = "previewvec-pipeline"
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-access-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",  # moto accepts any credentials
    "AWS_DEFAULT_REGION": "us-east-1",
}
HTML_PAGE = (b"<!doctype html><html><head><title>Preview unavailable</title></head>"
             b"<body><h1>Sorry</h1><p>This preview is not available.</p></body></html>\n")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def assets(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Assets:
    """≥ 20 distinct clips in five formats, and a numba cache compiled once.

    The cache lives in pytest's cache folder (``.pytest_cache``) so later sessions skip
    the ~60 s compilation too; numba re-compiles by itself when the source changes.
    ``PREVIEWVEC_TEST_CACHE_DIR`` overrides the location.
    """
    assets = prepare_assets(request, tmp_path_factory, N_CLIPS)
    assert len({c.data for c in assets.clips}) == N_CLIPS
    return assets


@pytest.fixture(scope="session")
def clip_server(assets: Assets) -> Iterator[ClipServer]:
    with running_clip_server(assets.clips) as server:
        yield server


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API (moto's server, in a thread) on a free 127.0.0.1 port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str):
    import boto3

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=AWS_TEST_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=AWS_TEST_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
    )


def clip_url(server: ClipServer, clip: Clip, delay_ms: int = 0) -> str:
    url = server.url(f"/clips/{clip.name}")
    return f"{url}?delay_ms={delay_ms}" if delay_ms else url


def catalog(server: ClipServer, clips: list[Clip], prefix: str, delay_ms: int = 0) -> list[str]:
    return [
        catalog_line(f"{prefix}-{i:02d}", clip_url(server, clip, delay_ms),
                     title=f"{clip.style} {clip.tempo_bpm:g} BPM",
                     release_id=f"00000000-0000-4000-8000-{i % 2:012d}")
        for i, clip in enumerate(clips)
    ]


def recording_of(key: str) -> str:
    """Recording id of a record key (test ids need no percent-decoding)."""
    return key.rsplit("/", 1)[1].removesuffix(".json")


def index_ids(index_path: Path) -> list[str]:
    """Every id in the embedded index, read with LanceDB directly (duplicates included)."""
    import lancedb

    table = lancedb.connect(str(index_path)).open_table("vectors")
    return table.to_arrow().column("id").to_pylist()


def s3_snapshot(endpoint: str, prefix: str) -> dict[str, tuple[str, object, bytes]]:
    """key → (ETag, LastModified, bytes) of every object under ``prefix``."""
    client = s3_client(endpoint)
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET,
                                                                  Prefix=prefix):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=S3_BUCKET, Key=obj["Key"])["Body"].read()
            out[obj["Key"]] = (obj["ETag"], obj["LastModified"], body)
    return out


def folder_snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """relative path → (mtime_ns, bytes) of every file below ``root``."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_index_holds_exactly(index_path: Path, ids: set[str], reducer) -> None:
    stored = index_ids(index_path)
    assert len(stored) == len(set(stored)), "duplicate ids in the index"
    assert set(stored) == ids
    assert reducer.index.count() == len(ids)
    items = reducer.index.get(sorted(ids))
    assert [i.id for i in items] == sorted(ids)
    for item in items:
        assert len(item.values) == VECTOR_DIM
        assert item.metadata["recording_id"] == item.id
        assert all(name in item.metadata for name in DESCRIPTORS)


def assert_similar(reducer, recording_id: str, ids: set[str], k: int = 5) -> None:
    matches = reducer.similar(recording_id, k=k)
    assert len(matches) == k
    assert recording_id not in {m.id for m in matches}
    assert {m.id for m in matches} <= ids
    scores = [m.score for m in matches]
    assert scores == sorted(scores, reverse=True)
    for match in matches:
        assert all(name in match.metadata for name in DESCRIPTORS), match.metadata
        assert match.metadata["mode"] in ("major", "minor")
        assert 30 <= match.metadata["tempo_bpm"] <= 300


# --------------------------------------------------------------------------- S3 store


@dataclass
class S3Batch:
    pipeline: Pipeline
    endpoint: str
    run_id: str
    lines: list[str]
    ids: set[str]
    status: RunStatus
    index_path: Path
    reduced: int
    elapsed_s: float


@pytest.fixture(scope="class")
def s3_batch(tmp_path_factory: pytest.TempPathFactory, assets: Assets,
             clip_server: ClipServer, s3_endpoint: str) -> Iterator[S3Batch]:
    """Two workers on an S3 store (moto) featurize every clip; the reducer drains the
    ready queue into an embedded index. Shared by the S3 tests of this module."""
    s3_client(s3_endpoint).create_bucket(Bucket=S3_BUCKET)
    root = tmp_path_factory.mktemp("s3-pipeline")
    pipeline = Pipeline(root, cache_dir=assets.cache_dir, store=f"s3://{S3_BUCKET}/catalog",
                        extra_env={**AWS_TEST_ENV, "AWS_ENDPOINT_URL_S3": s3_endpoint})
    try:
        pipeline.start_worker("s3a")
        pipeline.start_worker("s3b")
        started = time.monotonic()
        lines = catalog(clip_server, assets.clips, "s3")
        report = pipeline.enqueue(lines)
        assert (report.queued, report.invalid) == (N_CLIPS, 0)
        status = pipeline.wait_run(report.run_id, expected_total=N_CLIPS, timeout_s=240)
        index_path = root / "index"
        reducer = pipeline.reducer(index_path)
        reduced = reducer.drain()
        yield S3Batch(pipeline, s3_endpoint, report.run_id, lines,
                      {f"s3-{i:02d}" for i in range(N_CLIPS)}, status, index_path, reduced,
                      time.monotonic() - started)
    finally:
        pipeline.close()


@pytest.mark.timeout(480)  # the first test pays for the session's clips and JIT cache
class TestS3Store:
    def test_batch_end_to_end(self, s3_batch: S3Batch) -> None:
        batch = s3_batch
        counts = batch.status.counts
        assert counts == {"queued": 0, "done": N_CLIPS, "skipped": 0, "failed": 0}, (
            f"{counts}\n{dict(batch.pipeline.runs.failures(batch.run_id))}")
        assert batch.reduced == N_CLIPS

        # The store: exactly one record per recording, under its key, each decodable.
        objects = s3_snapshot(batch.endpoint, "catalog/")
        record_keys = sorted(k for k in objects if k.startswith("catalog/" + RECORD_PREFIX))
        assert record_keys == sorted(
            "catalog/" + record_key(FEATURE_VERSION, rid) for rid in batch.ids)
        hashes = set()
        for key in record_keys:
            record = decode_record(objects[key][2])
            assert record.provenance["run_id"] == batch.run_id
            assert record.provenance["preview_url"].startswith("http://127.0.0.1:")
            # the job's release, kept so that train and test sets can be split by album
            assert record.provenance["release_id"].startswith("00000000-0000-4000-8000-")
            hashes.add(record.provenance["audio_sha256"])
        assert len(hashes) == N_CLIPS  # every clip distinct
        assert f"catalog/normalizers/{FEATURE_VERSION}.json" in objects

        # The index: every recording exactly once; the ready queue is consumed.
        reducer = batch.pipeline.reducer(batch.index_path)
        assert_index_holds_exactly(batch.index_path, batch.ids, reducer)
        assert batch.pipeline.runs.ready_depth() == 0
        assert batch.pipeline.raw.keys("pv:indexed:*") == []  # the index is asked
        assert_similar(reducer, "s3-00", batch.ids)

    def test_reenqueue_does_no_new_work(self, s3_batch: S3Batch) -> None:
        batch = s3_batch
        pipeline = batch.pipeline
        before = s3_snapshot(batch.endpoint, "catalog/")
        reducer = pipeline.reducer(batch.index_path)
        count_before = reducer.index.count()
        assert pipeline.runs.ready_depth() == 0

        report = pipeline.enqueue(batch.lines)  # the same catalog, as a new run
        assert report.run_id != batch.run_id and report.queued == N_CLIPS
        status = pipeline.wait_run(report.run_id, expected_total=N_CLIPS, timeout_s=120)
        assert status.counts == {"queued": 0, "done": 0, "skipped": N_CLIPS, "failed": 0}

        # Nothing was rewritten: same keys, same bytes, same ETags and LastModified.
        assert s3_snapshot(batch.endpoint, "catalog/") == before
        # Every skipped record was handed to the reducer "if absent", and every one was
        # already indexed: the reducer asks the index and upserts nothing.
        assert pipeline.runs.ready_depth() == N_CLIPS
        upserted: list[str] = []
        upsert = reducer.index.upsert

        def counting_upsert(items):
            upserted.extend(item.id for item in items)
            upsert(items)

        reducer.index.upsert = counting_upsert  # type: ignore[method-assign]
        assert reducer.drain() == N_CLIPS
        assert upserted == [] and pipeline.runs.ready_depth() == 0
        assert reducer.index.count() == count_before == N_CLIPS
        assert_index_holds_exactly(batch.index_path, batch.ids, reducer)


# --------------------------------------------------------------------------- folder store


@pytest.fixture(scope="class")
def folder_pipeline(tmp_path_factory: pytest.TempPathFactory,
                    assets: Assets) -> Iterator[Pipeline]:
    """Two workers on a folder store, shared by the folder-store tests (each test uses
    its own recording ids and first drains what an earlier test may have left)."""
    root = tmp_path_factory.mktemp("folder-pipeline")
    pipeline = Pipeline(root, cache_dir=assets.cache_dir, store=str(root / "store"))
    try:
        pipeline.start_worker("fa")
        pipeline.start_worker("fb")
        yield pipeline
    finally:
        pipeline.close()


@pytest.mark.timeout(300)
class TestFolderStore:
    def test_batch_end_to_end(self, folder_pipeline: Pipeline, assets: Assets,
                              clip_server: ClipServer, tmp_path: Path) -> None:
        pipeline = folder_pipeline
        pipeline.drain_leftovers()
        clips = assets.clips[:10]
        ids = {f"fold-{i:02d}" for i in range(len(clips))}
        report = pipeline.enqueue(catalog(clip_server, clips, "fold"))
        status = pipeline.wait_run(report.run_id, expected_total=len(clips), timeout_s=180)
        assert status.counts == {"queued": 0, "done": len(clips), "skipped": 0, "failed": 0}

        store_root = Path(pipeline.store_url)
        files = [p for p in (store_root / RECORD_PREFIX).rglob("*") if p.is_file()]
        ours = sorted(str(p.relative_to(store_root)) for p in files
                      if p.name.startswith("fold-"))
        assert ours == sorted(record_key(FEATURE_VERSION, rid) for rid in ids)
        assert not [p for p in store_root.rglob(".*")], "temp files left in the store"

        index_path = tmp_path / "index"
        reducer = pipeline.reducer(index_path)
        assert reducer.drain() == len(clips)
        assert_index_holds_exactly(index_path, ids, reducer)
        assert_similar(reducer, "fold-03", ids, k=4)

        # The same query through the real command line.
        result = pipeline.cli("similar", "fold-03", "-k", "3",
                              env={"PREVIEWVEC_INDEX": str(index_path)})
        assert result.returncode == 0, result.stderr
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(rows) == 3 and {r["recording_id"] for r in rows} <= ids - {"fold-03"}
        assert all(set(DESCRIPTORS) <= set(r["descriptors"]) for r in rows)

    @pytest.mark.faults
    def test_bad_previews_become_recorded_failures(
            self, folder_pipeline: Pipeline, assets: Assets, clip_server: ClipServer,
            tmp_path: Path) -> None:
        pipeline = folder_pipeline
        m4a = next(c for c in assets.clips if c.fmt == "m4a")
        bad = {  # recording id → (url, acceptable codes)
            "bad-404": (clip_server.url("/nothing/here.m4a"), {"http_404"}),
            "bad-html": (clip_server.add("/bad/page.m4a", HTML_PAGE, "audio/mp4"),
                         {"undecodable"}),
            # 600 bytes of an m4a: a header without the audio. (Cut at 300 bytes FFmpeg
            # reports a container with only a data stream: no_audio_stream.)
            "bad-truncated": (clip_server.add("/bad/truncated.m4a", m4a.data[:600],
                                              "audio/mp4"),
                              {"undecodable", "too_short"}),
            "bad-large": (clip_server.add("/bad/large.m4a", bytes(FETCH_MAX_BYTES + 4096),
                                          "audio/mp4"), {"too_large"}),
            # Same server, but named "localhost": only "127.0.0.1" is allowed.
            "bad-localhost": (clip_server.url(f"/clips/{m4a.name}", host="localhost"),
                              {"host_not_allowed"}),
            "bad-unlisted": ("http://example.invalid/x.m4a", {"host_not_allowed"}),
        }
        good = {f"ok-{i}": clip for i, clip in enumerate(assets.clips[10:13])}
        lines = ["# previews with problems, and three good ones", ""]
        lines += [catalog_line(rid, clip_url(clip_server, clip)) for rid, clip in good.items()]
        lines += [catalog_line(rid, url) for rid, (url, _) in bad.items()]
        lines.insert(5, catalog_line("bad-scheme", "ftp://127.0.0.1/x.m4a"))
        invalid_line_no = 6  # 1-based, comment and blank lines count
        catalog_path = tmp_path / "catalog.jsonl"
        catalog_path.write_text("\n".join(lines) + "\n")

        enqueued = pipeline.cli("enqueue", str(catalog_path))
        assert enqueued.returncode == 0, enqueued.stderr
        run_id = enqueued.stdout.strip()
        assert "queued 9, invalid lines 1" in enqueued.stderr
        total = len(good) + len(bad) + 1
        pipeline.wait_run(run_id, expected_total=total, timeout_s=120)

        def check_outcome() -> dict[str, dict]:
            status = pipeline.cli("status", run_id)
            assert status.returncode == 0, status.stderr
            assert parse_status_line(status.stdout) == {
                "finished": total, "total": total, "queued": 0, "done": len(good),
                "skipped": 0, "failed": len(bad) + 1}, status.stdout
            listed = pipeline.cli("failures", run_id)
            assert listed.returncode == 0, listed.stderr
            failures = {row["recording_id"]: row
                        for row in map(json.loads, listed.stdout.splitlines())}
            assert set(failures) == set(bad) | {f"line:{invalid_line_no}"}
            for rid, (_, codes) in bad.items():
                assert failures[rid]["code"] in codes, failures[rid]
            invalid = failures[f"line:{invalid_line_no}"]
            assert invalid["code"] == "invalid_job"
            assert f"line {invalid_line_no}" in invalid["message"]
            assert "scheme" in invalid["message"]
            return failures

        first = check_outcome()
        store_root = Path(pipeline.store_url)
        for rid in good:
            assert (store_root / record_key(FEATURE_VERSION, rid)).is_file()
        for rid in bad:
            assert not (store_root / record_key(FEATURE_VERSION, rid)).exists()
        # A 404 is not retried within a fetch; the oversized body is refused at its
        # Content-Length.
        assert clip_server.hits["/nothing/here.m4a"] == 1
        assert clip_server.hits["/bad/large.m4a"] == 1

        # Every one of these failures is permanent: a plain retry re-runs none of them
        # and says so; --all re-runs each one, exactly once.
        skipped = pipeline.cli("retry", run_id)
        assert skipped.returncode == 0, skipped.stderr
        assert f"re-enqueued 0 failed jobs of {run_id}" in skipped.stdout
        assert f"skipped {len(bad)} permanent failures" in skipped.stdout
        assert "1 failures have no job to re-run" in skipped.stdout  # the invalid line
        retried = pipeline.cli("retry", run_id, "--all")
        assert retried.returncode == 0, retried.stderr
        assert f"re-enqueued {len(bad)} failed jobs of {run_id}" in retried.stdout
        pipeline.wait_run(run_id, expected_total=total, timeout_s=120)
        second = check_outcome()
        assert {rid: row["code"] for rid, row in second.items()} == {
            rid: row["code"] for rid, row in first.items()}
        assert clip_server.hits["/nothing/here.m4a"] == 2

    def test_vectorize_contract_reduce(self, folder_pipeline: Pipeline, assets: Assets,
                                       clip_server: ClipServer) -> None:
        """Contract test: one ``previewvec reduce`` into the Vectorize adapter, against a
        local server that speaks Vectorize's documented v2 HTTP API (not the service)."""
        contract = pytest.importorskip(
            "tests.contract.vectorize_server",
            reason="tests/contract/vectorize_server.py (the Vectorize API stand-in) is absent")
        pipeline = folder_pipeline
        pipeline.drain_leftovers()
        clips = assets.clips[13:19]
        ids = {f"vz-{i:02d}" for i in range(len(clips))}
        report = pipeline.enqueue(catalog(clip_server, clips, "vz"))
        status = pipeline.wait_run(report.run_id, expected_total=len(clips), timeout_s=120)
        assert status.counts["done"] == len(clips)
        assert pipeline.runs.ready_depth() == len(clips)

        server = contract.VectorizeContractServer(index_name="test-index",
                                                  dimensions=VECTOR_DIM)
        with server:
            env = {"PREVIEWVEC_INDEX": "vectorize://test-index",
                   "PREVIEWVEC_VECTORIZE_ACCOUNT_ID": server.account_id,
                   "PREVIEWVEC_VECTORIZE_API_TOKEN": server.token,
                   "PREVIEWVEC_VECTORIZE_BASE_URL": server.base_url}
            reduced = pipeline.cli("reduce", env=env)
            assert reduced.returncode == 0, reduced.stderr
            assert (f"reduced {len(clips)} ready records; index holds {len(clips)} vectors"
                    in reduced.stdout)
            assert set(server.vectors) == ids
            for rid, vector in server.vectors.items():
                assert vector.values.shape == (VECTOR_DIM,)
                assert vector.metadata["recording_id"] == rid
                assert set(DESCRIPTORS) <= set(vector.metadata)
            # Metadata indexes were created before the first write, so every filter
            # field is filterable on these vectors.
            assert all(set(v.indexed) >= {"tempo_bpm", "key", "mode"}
                       for v in server.vectors.values())
            assert pipeline.runs.ready_depth() == 0

            similar = pipeline.cli("similar", "vz-00", "-k", "3", env=env)
            assert similar.returncode == 0, similar.stderr
            rows = [json.loads(line) for line in similar.stdout.splitlines()]
            assert len(rows) == 3 and {r["recording_id"] for r in rows} <= ids - {"vz-00"}
            assert all(set(DESCRIPTORS) <= set(r["descriptors"]) for r in rows)


# --------------------------------------------------------------------------- priority


@pytest.mark.timeout(240)
def test_ondemand_overtakes_batch_backlog(tmp_path: Path, assets: Assets,
                                          clip_server: ClipServer) -> None:
    """One worker, one process: a job sent to ``ondemand`` runs right after the batch job
    in progress, before the rest of the batch backlog (queue_order_strategy=priority)."""
    pipeline = Pipeline(tmp_path / "pipe", cache_dir=assets.cache_dir,
                        store=str(tmp_path / "store"))
    try:
        pipeline.start_worker("solo", concurrency=1)
        backlog = assets.clips[:8]
        # A slow CDN (0.5 s per response) keeps the backlog in place long enough.
        batch = pipeline.enqueue(catalog(clip_server, backlog, "prio-batch", delay_ms=500))
        pipeline.wait_until(lambda: pipeline.runs.status(batch.run_id).counts["done"] >= 1,
                            timeout_s=150, what="the first batch job")
        waiting = pipeline.runs.status(batch.run_id).counts["queued"]
        ondemand = pipeline.enqueue(
            [catalog_line("prio-ondemand", clip_url(clip_server, assets.clips[8]))],
            queue="ondemand")
        # Read after publishing: at most the one batch job in progress can finish before
        # the on-demand job, so its position is at most this count (+1).
        finished_before = len(pipeline.ready_keys())
        assert waiting - (finished_before - 1) >= 3, "backlog drained too early to tell"

        pipeline.wait_run(ondemand.run_id, expected_total=1, timeout_s=60)
        pipeline.wait_run(batch.run_id, expected_total=len(backlog), timeout_s=150)
        order = [recording_of(key) for key in pipeline.ready_keys()]
        assert sorted(order) == sorted(
            ["prio-ondemand", *(f"prio-batch-{i:02d}" for i in range(len(backlog)))])
        position = order.index("prio-ondemand")
        assert position <= finished_before + 1, order
        overtaken = order[position + 1 :]
        assert len(overtaken) >= 2, order

        # Second witness, from the store: the on-demand record was written before the
        # records of every batch job it overtook.
        store_root = Path(pipeline.store_url)

        def mtime(rid: str) -> int:
            return (store_root / record_key(FEATURE_VERSION, rid)).stat().st_mtime_ns

        assert all(mtime("prio-ondemand") < mtime(rid) for rid in overtaken)
    finally:
        pipeline.close()


# --------------------------------------------------------------------------- kills


VISIBILITY_TIMEOUT_S = 20


@pytest.mark.faults
@pytest.mark.timeout(300)
def test_sigkilled_workers_lose_and_duplicate_nothing(tmp_path: Path, assets: Assets,
                                                      clip_server: ClipServer) -> None:
    """Mid-batch, worker A's pool child and all of worker B (main process and child at
    once, like an OOM kill) are SIGKILLed; a fresh worker C joins. Every recording still
    ends up exactly once in the store and in the index.

    A's job comes back at once (reject_on_worker_lost requeues it); B's job was delivered
    and never acknowledged, so only the visibility timeout (shortened to 20 s here via
    PREVIEWVEC_VISIBILITY_TIMEOUT_S) brings it back.
    """
    pipeline = Pipeline(
        tmp_path / "pipe", cache_dir=assets.cache_dir, store=str(tmp_path / "store"),
        extra_env={"PREVIEWVEC_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S)})
    try:
        a = pipeline.start_worker("a")
        b = pipeline.start_worker("b")
        # Both warm before the batch: a worker still starting (slow on a loaded machine)
        # would leave the other one to drain the batch before the kills.
        a.wait_warm()
        b.wait_warm()
        clips = assets.clips[:20]
        ids = {f"kill-{i:02d}" for i in range(len(clips))}
        # 1 s of download per clip: each job spends most of its time in flight.
        run = pipeline.enqueue(catalog(clip_server, clips, "kill", delay_ms=1000))
        pipeline.wait_until(lambda: pipeline.runs.status(run.run_id).counts["done"] >= 4,
                            timeout_s=150, what="4 jobs done before the kills")
        pipeline.wait_until(lambda: len(pipeline.unacked()) >= 2, timeout_s=30,
                            what="both workers holding a job")
        assert b.pool_children(), b.log_tail()

        killed_wall = time.time()
        b.kill_hard()
        stranded = pipeline.unacked()  # B's job, and A's current one
        child = a.kill_pool_child()
        killed_at = time.monotonic()
        c = pipeline.start_worker("c")
        counts = pipeline.runs.status(run.run_id).counts
        assert counts["queued"] >= 5, f"kills came too late to be mid-batch: {counts}"
        # A's main process requeues its lost job at once; what stays unacknowledged of the
        # snapshot is B's job, which nobody will acknowledge.
        pipeline.wait_until(lambda: len(set(pipeline.unacked()) & set(stranded)) < len(stranded),
                            timeout_s=15, what="A's lost job to be requeued")
        orphaned = {tag: stranded[tag] for tag in set(pipeline.unacked()) & set(stranded)}
        assert len(orphaned) == 1, f"B was not holding exactly one job: {stranded}"
        (delivered_at, orphan_job), = orphaned.values()

        status = pipeline.wait_run(run.run_id, expected_total=len(clips), timeout_s=180)
        finished_after_s = time.monotonic() - killed_at
        counts = status.counts
        assert counts["failed"] == 0, dict(pipeline.runs.failures(run.run_id))
        # Even a job redelivered after its record was written (a kill between the store
        # write and the ack) stays "done": every vector was computed in this run.
        assert counts == {"queued": 0, "done": len(clips), "skipped": 0, "failed": 0}
        assert "signal 9" in a.log() or "WorkerLostError" in a.log(), a.log_tail()
        assert child not in a.pool_children()
        assert a.alive() and c.alive() and not b.alive()
        pipeline.wait_until(lambda: not pipeline.unacked(), timeout_s=30,
                            what="every delivery to be acknowledged")

        # B's job came back through the visibility timeout, not earlier: its record was
        # written at least VISIBILITY_TIMEOUT_S after B received it. (Unless B died in
        # the few milliseconds between writing the record and acknowledging: then the
        # redelivered job found B's record and did nothing.)
        store_root = Path(pipeline.store_url)
        orphan_id = orphan_job["recording_id"]
        orphan_record = store_root / record_key(FEATURE_VERSION, orphan_id)
        written_after_s = orphan_record.stat().st_mtime - delivered_at
        if orphan_record.stat().st_mtime > killed_wall:  # written by the redelivered job
            assert written_after_s >= VISIBILITY_TIMEOUT_S - 1, written_after_s

        store_root = Path(pipeline.store_url)
        stored = sorted(str(p.relative_to(store_root))
                        for p in (store_root / RECORD_PREFIX).rglob("*.json"))
        assert stored == sorted(record_key(FEATURE_VERSION, rid) for rid in ids)
        assert not [p for p in store_root.rglob(".*")], "temp files left in the store"

        index_path = tmp_path / "index"
        reducer = pipeline.reducer(index_path)
        reducer.drain()
        assert_index_holds_exactly(index_path, ids, reducer)
        assert pipeline.runs.ready_depth() == 0
        print(f"run finished {finished_after_s:.1f} s after the kills; B's job "
              f"{orphan_id} written {written_after_s:.1f} s after its first delivery")
    finally:
        pipeline.close()


# --------------------------------------------------------------------------- crash cap


def _pool_child_of(pipeline: Pipeline, pid: int) -> WorkerProcess | None:
    """The pipeline's worker whose pool child ``pid`` is (only those may be killed)."""
    return next((w for w in pipeline.workers if w.alive() and pid in w.pool_children()), None)


def _listed_failures(pipeline: Pipeline, run_id: str) -> dict[str, dict]:
    listed = pipeline.cli("failures", run_id)
    assert listed.returncode == 0, listed.stderr
    return {row["recording_id"]: row for row in map(json.loads, listed.stdout.splitlines())}


def _no_crash_counts_left(pipeline: Pipeline) -> list[str]:
    return list(pipeline.raw.scan_iter("pv:crash:*"))


@pytest.mark.faults
@pytest.mark.timeout(420)
def test_job_that_kills_its_pool_child_ends_as_a_listed_failure(
        tmp_path: Path, assets: Assets, clip_server: ClipServer) -> None:
    """A preview whose fetch SIGKILLs the fetching pool child, every time, in a batch of
    good ones. With the default cap (3 redeliveries) it runs 4 times, then is recorded as
    ``worker_crashed`` (signal and count in the message) and acknowledged; the rest of
    the run completes and nothing loops. ``retry`` runs it again on purpose (4 more)."""
    cap = Settings().max_crash_redeliveries
    pipeline = Pipeline(tmp_path / "pipe", cache_dir=assets.cache_dir,
                        store=str(tmp_path / "store"))
    try:
        def kill_pool_child(pid: int) -> int | None:
            return pid if _pool_child_of(pipeline, pid) else None

        path = f"/crash/{tmp_path.name}.m4a"
        killer_url = clip_server.add_killer(path, kill_pool_child)
        a, b = pipeline.start_worker("ca"), pipeline.start_worker("cb")
        a.wait_warm()
        b.wait_warm()
        clips = assets.clips[:6]
        lines = [*catalog(clip_server, clips, "cap"), catalog_line("cap-crash", killer_url)]
        enqueued_at = time.time()
        run = pipeline.enqueue(lines)
        status = pipeline.wait_run(run.run_id, expected_total=len(lines), timeout_s=240)
        finished_at = time.time()
        assert status.counts == {"queued": 0, "done": len(clips), "skipped": 0, "failed": 1}

        def check_failure(deliveries: int) -> None:
            failures = _listed_failures(pipeline, run.run_id)
            assert set(failures) == {"cap-crash"}, failures
            failure = failures["cap-crash"]
            assert failure["code"] == "worker_crashed", failure
            assert "SIGKILL (signal 9)" in failure["message"], failure
            assert f"{cap + 1} crashes" in failure["message"], failure
            # Acknowledged, not requeued: nothing is left to deliver, and it stays at
            # 1 + cap deliveries (no loop), each one a killed child.
            pipeline.wait_until(lambda: not pipeline.unacked()
                                and pipeline.queue_depth("batch") == 0,
                                timeout_s=30, what="every delivery to be acknowledged")
            assert clip_server.hits[path] == deliveries, clip_server.hits[path]
            assert len(clip_server.killed[path]) == deliveries
            assert not _no_crash_counts_left(pipeline)
            assert pipeline.runs.status(run.run_id).counts["failed"] == 1

        check_failure(cap + 1)
        recorded_at = dict(pipeline.runs.failures(run.run_id))["cap-crash"]["at"]
        print(f"pool-child crash cap: {cap + 1} deliveries, worker_crashed recorded "
              f"{recorded_at - enqueued_at:.1f} s after the enqueue; run of {len(lines)} "
              f"finished after {finished_at - enqueued_at:.1f} s")
        logs = a.log() + b.log()
        assert logs.count("gave up: pool child killed by SIGKILL") == 1, pipeline.logs()

        retried = pipeline.cli("retry", run.run_id)
        assert retried.returncode == 0, retried.stderr
        assert f"re-enqueued 1 failed jobs of {run.run_id}" in retried.stdout
        pipeline.wait_until(lambda: len(clip_server.killed[path]) >= 2 * (cap + 1)
                            and pipeline.runs.status(run.run_id).counts["queued"] == 0,
                            timeout_s=180, what="the retried job to crash and give up again")
        check_failure(2 * (cap + 1))
        assert pipeline.runs.status(run.run_id).counts == {
            "queued": 0, "done": len(clips), "skipped": 0, "failed": 1}
    finally:
        pipeline.close()


@pytest.mark.faults
@pytest.mark.timeout(420)
def test_job_that_kills_its_whole_worker_ends_as_a_listed_failure(
        tmp_path: Path, assets: Assets, clip_server: ClipServer) -> None:
    """A preview whose fetch SIGKILLs the fetching worker's whole process group: no
    process is left to see the death, the job comes back by the visibility timeout. The
    starts counted in Redis still end it: with a cap of 1, it is killed twice and its
    third delivery records ``worker_crashed`` before fetching anything."""
    pipeline = Pipeline(
        tmp_path / "pipe", cache_dir=assets.cache_dir, store=str(tmp_path / "store"),
        extra_env={"PREVIEWVEC_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
                   "PREVIEWVEC_MAX_CRASH_REDELIVERIES": "1"})
    try:
        def kill_whole_worker(pid: int) -> int | None:
            worker = _pool_child_of(pipeline, pid)
            return -worker.pid if worker else None

        path = f"/crash/{tmp_path.name}.m4a"
        killer_url = clip_server.add_killer(path, kill_whole_worker)
        for name in ("wa", "wb"):
            pipeline.start_worker(name).wait_warm()
        clips = assets.clips[6:10]
        lines = [*catalog(clip_server, clips, "whole"), catalog_line("whole-crash", killer_url)]
        enqueued_at = time.time()
        run = pipeline.enqueue(lines)

        # Keep two workers running, as a supervisor (Kubernetes) would.
        deadline = time.monotonic() + 300
        started = 2
        while True:
            status = pipeline.runs.status(run.run_id)
            if status.total == len(lines) and status.counts["queued"] == 0:
                break
            assert time.monotonic() < deadline, f"run stuck at {status.counts}\n{pipeline.logs()}"
            while len(pipeline.live_workers()) < 2:
                started += 1
                pipeline.start_worker(f"w{started}")
            time.sleep(0.5)

        assert status.counts == {"queued": 0, "done": len(clips), "skipped": 0, "failed": 1}
        failure = _listed_failures(pipeline, run.run_id)["whole-crash"]
        assert failure["code"] == "worker_crashed", failure
        assert "2 crashes" in failure["message"], failure
        assert clip_server.hits[path] == 2 and len(clip_server.killed[path]) == 2
        assert all(victim < 0 for victim in clip_server.killed[path])
        pipeline.wait_until(lambda: not pipeline.unacked() and pipeline.queue_depth("batch") == 0,
                            timeout_s=30, what="every delivery to be acknowledged")
        assert clip_server.hits[path] == 2
        assert not _no_crash_counts_left(pipeline)
        assert "gave up at its start" in "".join(w.log() for w in pipeline.workers)
        recorded_at = dict(pipeline.runs.failures(run.run_id))["whole-crash"]["at"]
        print(f"whole-worker crash cap (cap 1, visibility timeout {VISIBILITY_TIMEOUT_S} s): "
              f"worker_crashed recorded {recorded_at - enqueued_at:.1f} s after the enqueue, "
              f"{started} workers started in all")
    finally:
        pipeline.close()


@pytest.mark.faults
@pytest.mark.timeout(300)
def test_job_killed_at_the_hard_time_limit_is_a_recorded_timeout(
        tmp_path: Path, assets: Assets, clip_server: ClipServer) -> None:
    """A preview whose fetch freezes the fetching pool child (SIGSTOP: stuck in native
    code, where the soft limit cannot interrupt it). The hard limit kills the child and
    Celery acknowledges the job; it is recorded as ``timeout``, not left "queued"."""
    pipeline = Pipeline(tmp_path / "pipe", cache_dir=assets.cache_dir,
                        store=str(tmp_path / "store"),
                        extra_env={"PREVIEWVEC_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S)})
    try:
        def freeze_pool_child(pid: int) -> int | None:
            return pid if _pool_child_of(pipeline, pid) else None

        path = f"/freeze/{tmp_path.name}.m4a"
        frozen_url = clip_server.add_killer(path, freeze_pool_child, signal.SIGSTOP)
        pipeline.start_worker("ta").wait_warm()
        clips = assets.clips[10:12]
        lines = [*catalog(clip_server, clips, "limit"), catalog_line("limit-frozen", frozen_url)]
        run = pipeline.enqueue(lines)
        status = pipeline.wait_run(run.run_id, expected_total=len(lines), timeout_s=180)
        assert status.counts == {"queued": 0, "done": len(clips), "skipped": 0, "failed": 1}
        failure = _listed_failures(pipeline, run.run_id)["limit-frozen"]
        assert failure["code"] == "timeout", failure
        # The limit the workers derive from the short visibility timeout (workers/app.py).
        hard_limit_s = min(TASK_TIME_LIMIT_S, HARD_LIMIT_SHARE * VISIBILITY_TIMEOUT_S)
        assert f"hard time limit ({hard_limit_s} s)" in failure["message"], failure
        pipeline.wait_until(lambda: not pipeline.unacked() and pipeline.queue_depth("batch") == 0,
                            timeout_s=30, what="every delivery to be acknowledged")
        assert clip_server.hits[path] == 1
        assert not _no_crash_counts_left(pipeline)
    finally:
        pipeline.close()
