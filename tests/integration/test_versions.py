"""The version is the computation: real workers refuse a version they do not compute, and
workers with different analysis settings write different versions.

Real components: a private Redis, ``celery -A workers.app worker`` and ``previewvec
worker`` processes, the folder store, a generated clip served from 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.layout import FEATURE_VERSION
from contract.records import decode_record, record_key
from contract.settings import Settings
from contract.versions import derived_version, registry_key
from previewvec.localredis import LocalRedis
from tests.harness.pipeline import ClipServer, Pipeline, make_clips, worker_cache_location
from workers.featurize import WorkerContext, featurize

pytestmark = pytest.mark.slow


@pytest.fixture
def pipeline(tmp_path: Path, request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    cache = worker_cache_location(request, tmp_path_factory)
    p = Pipeline(tmp_path, cache_dir=cache, store=str(tmp_path / "store"))
    yield p
    p.close()


def test_a_worker_refuses_a_pinned_version_its_settings_do_not_compute(pipeline: Pipeline,
                                                                       ) -> None:
    """Given PREVIEWVEC_FEATURE_VERSION=pv2 and a 44.1 kHz analysis rate, expect the
    worker to stop before warming, with one line that says why, and a non-zero exit."""
    worker = pipeline.start_worker("pinned", extra_env={
        "PREVIEWVEC_FEATURE_VERSION": FEATURE_VERSION, "PREVIEWVEC_ANALYSIS_SR": "44100"})
    assert worker.proc.wait(timeout=60) != 0
    refusals = [line for line in worker.log().splitlines() if "refusing to start" in line]
    assert len(refusals) == 1, worker.log_tail()
    assert "analysis_sr=44100" in refusals[0] and FEATURE_VERSION in refusals[0]
    assert "warming the extractor" not in worker.log()


def test_a_worker_refuses_a_version_the_store_registers_otherwise(pipeline: Pipeline) -> None:
    """Given a store whose registry says pv2 was computed at 44.1 kHz (another release),
    expect a worker on the defaults to refuse to write pv2."""
    store = Path(pipeline.store_url)
    (store / "versions").mkdir(parents=True)
    (store / registry_key(FEATURE_VERSION)).write_text(json.dumps(
        {"computation": {"analysis_sr": 44_100, "max_duration_s": 30.0}}))
    worker = pipeline.start_worker("registry")
    assert worker.proc.wait(timeout=60) != 0
    assert "registered in the store" in worker.log(), worker.log_tail()


def test_previewvec_worker_says_it_in_one_line_and_exits_2(pipeline: Pipeline) -> None:
    result = pipeline.cli("worker", env={"PREVIEWVEC_FEATURE_VERSION": FEATURE_VERSION,
                                         "PREVIEWVEC_MAX_DURATION_S": "20"})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("previewvec: ")
    assert "max_duration_s=20.0" in result.stderr and "Traceback" not in result.stderr


def test_a_worker_refuses_a_store_it_can_never_use(pipeline: Pipeline,
                                                  tmp_path: Path) -> None:
    """Given a store folder that is a file, expect `previewvec worker` to say so in one
    line and exit 4, and a worker started directly to refuse too, before warming: each
    pool child used to fail to start with two tracebacks while the worker ran on."""
    not_a_folder = tmp_path / "store-file"
    not_a_folder.write_text("")
    result = pipeline.cli("worker", env={"PREVIEWVEC_STORE": str(not_a_folder)})
    assert result.returncode == 4, result.stderr
    assert result.stderr.count("\n") == 1 and "store-file" in result.stderr
    worker = pipeline.start_worker("file-store",
                                   extra_env={"PREVIEWVEC_STORE": str(not_a_folder)})
    assert worker.proc.wait(timeout=60) == 4
    assert "refusing to start" in worker.log() and "Traceback" not in worker.log()
    assert "warming the extractor" not in worker.log()


def test_a_worker_refuses_a_store_it_cannot_write(pipeline: Pipeline, tmp_path: Path) -> None:
    """From the operations review: a store the worker can read but not write (a read-only
    mount, read-only credentials) whose version was registered before let the worker
    start, and every job then failed for good (store_error). Here the probe's folder is
    a file, which refuses the write as a read-only mount does (root ignores modes)."""
    from contract.store import PROBE_PREFIX, open_store
    from contract.versions import register

    store_dir = tmp_path / "store-ro"
    settings = Settings(store=str(store_dir))
    register(open_store(settings.store), settings)  # the version is registered already
    (store_dir / PROBE_PREFIX.rstrip("/")).write_text("in the way")
    result = pipeline.cli("worker", env={"PREVIEWVEC_STORE": str(store_dir)})
    assert result.returncode == 4, result.stderr
    assert result.stderr.count("\n") == 1 and "cannot write" in result.stderr
    worker = pipeline.start_worker("ro-store", extra_env={"PREVIEWVEC_STORE": str(store_dir)})
    assert worker.proc.wait(timeout=60) == 4
    assert "refusing to start" in worker.log() and "Traceback" not in worker.log()


def test_different_analysis_settings_write_different_versions(tmp_path: Path) -> None:
    """Given the same job featurized by workers at 22.05 and 11.025 kHz, expect two records
    under two versions, each naming the computation that made it, with different vectors.

    Rhythm and key read every 2nd frame of an STFT at twice the analysis rate: the clip's
    own at 11.025 kHz for this 22.05 kHz clip, a resampled copy's at 22.05 kHz."""
    server = ClipServer().start()
    try:
        (clip,) = make_clips(1, duration_s=8.0)
        url = server.add_clip(clip)
        with LocalRedis() as local_redis:
            base = Settings(broker_url=local_redis.url, store=str(tmp_path / "store"),
                            allowed_audio_hosts=("127.0.0.1",))
            slow = Settings(**{**base.__dict__, "analysis_sr": 11_025})
            for settings in (base, slow):
                outcome = featurize({"recording_id": "same-1", "preview_url": url},
                                    WorkerContext.build(settings))
                assert outcome.status == "done", outcome
    finally:
        server.stop()
    ctx = WorkerContext.build(base)
    versions = [derived_version(base), derived_version(slow)]
    assert versions[0] == FEATURE_VERSION and versions[1] != versions[0]
    records = [decode_record(ctx.store.get(record_key(v, "same-1"))) for v in versions]
    assert [r.feature_version for r in records] == versions
    assert [r.computation["analysis_sr"] for r in records] == [22_050, 11_025]
    assert records[0].vector != records[1].vector
