"""Per-stage timings: what a stored record and a task's outcome say about where time went.

Real components: a private Redis, the folder store, one generated clip served over HTTP
from 127.0.0.1, and ``workers.featurize.featurize`` called directly (no broker needed).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from contract.layout import FEATURE_VERSION
from contract.records import decode_record, record_key
from contract.settings import Settings
from contract.state import Runs, new_run_id
from previewvec.localredis import LocalRedis
from tests.harness.pipeline import ClipServer, make_clips
from workers.featurize import WorkerContext, featurize

AFTER_SEALING = ("encode", "store", "account")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[WorkerContext, str]]:
    server = ClipServer().start()
    (clip,) = make_clips(1, duration_s=12.0)
    url = server.add_clip(clip)
    with LocalRedis() as local_redis:
        settings = Settings(broker_url=local_redis.url, store=str(tmp_path / "store"),
                            allowed_audio_hosts=("127.0.0.1",))
        yield WorkerContext.build(settings), url
    server.stop()


def test_record_and_outcome_time_every_stage(setup: tuple[WorkerContext, str]) -> None:
    """Given a job that runs to the end, expect the record to time what happened before
    it was sealed (check, fetch, decode, each feature family) and the outcome to add
    encode, store and account, a start time and a wall time covering all of them."""
    ctx, url = setup
    run_id = new_run_id()
    Runs.from_url(ctx.settings.broker_url).create(run_id)
    job = {"recording_id": "timed-1", "preview_url": url, "run_id": run_id}
    before = time.time()

    outcome = featurize(job, ctx)

    after = time.time()
    assert outcome.status == "done", outcome
    record = decode_record(ctx.store.get(record_key(FEATURE_VERSION, "timed-1")))
    families = {k for k in record.timings_s if k.startswith("extract.")}
    assert len(families) >= 4  # by feature family, as the extractor reports them
    expected = {"check", "fetch", "decode", *families}
    assert set(record.timings_s) == expected
    assert set(outcome.timings_s) == expected | set(AFTER_SEALING)
    assert all(outcome.timings_s[k] == v for k, v in record.timings_s.items())
    assert all(v >= 0 for v in outcome.timings_s.values())
    assert outcome.wall_s is not None and outcome.started_at is not None
    assert outcome.wall_s >= sum(outcome.timings_s.values())
    assert before <= outcome.started_at <= after
    assert outcome.cpu_s is not None and outcome.cpu_s > 0
    assert {"started_at", "wall_s", "cpu_s", "timings_s"} <= set(outcome.to_dict())
    # The float32 vector is stored as the shortest decimals that round-trip it.
    assert all(float(str(np.float32(v))) == v for v in record.vector)


def test_skipped_job_times_its_check(setup: tuple[WorkerContext, str]) -> None:
    """Given a recording already stored, expect a skip timed by its check and accounting."""
    ctx, url = setup
    job = {"recording_id": "timed-2", "preview_url": url}
    assert featurize(job, ctx).status == "done"

    outcome = featurize(job, ctx)

    assert outcome.status == "skipped"
    assert set(outcome.timings_s) == {"check", "account"}
    assert outcome.wall_s is not None and outcome.wall_s >= sum(outcome.timings_s.values())
