"""The reducer's lock under expiry: a reducer whose lock ran out mid-batch (a slow upsert,
a long normaliser fit) must neither trim entries another reducer now owns nor release that
reducer's lock. Real Redis, folder store and embedded index; synthetic records.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from previewvec.localredis import LocalRedis
from previewvec.records import FeatureRecord, encode_record, make_provenance, record_key
from previewvec.settings import Settings
from workers.features.layout import FEATURE_VERSION, VECTOR_DIM
from workers.reducer import LOCK_KEY, Reducer

N_RECORDS = 30
BATCH = 10


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    with LocalRedis(data_dir=tmp_path / "redis") as local_redis:
        yield Settings(broker_url=local_redis.url, store=str(tmp_path / "store"),
                       index=str(tmp_path / "index"), cache_dir=tmp_path / "cache")


def _record(i: int, rng: np.random.Generator) -> FeatureRecord:
    return FeatureRecord(
        recording_id=f"lock-{i:02d}",
        vector=rng.standard_normal(VECTOR_DIM).astype(np.float32).tolist(),
        descriptors={"tempo_bpm": 80.0 + i, "key": "C", "mode": "major",
                     "energy": 0.5, "duration_s": 10.0},
        provenance=make_provenance(preview_url=f"http://127.0.0.1/{i}.m4a",
                                   audio_sha256=f"{i:064x}", source="test", run_id="r1",
                                   decoder="test", created_at="2024-01-01T00:00:00Z"),
    )


@pytest.mark.timeout(120)
def test_reducer_whose_lock_expired_leaves_the_queue_and_the_lock_alone(
        settings: Settings) -> None:
    rng = np.random.default_rng(7)
    first = Reducer.build(settings)
    for i in range(N_RECORDS):
        record = _record(i, rng)
        first.store.put(record.key, encode_record(record))
        first.runs.push_ready(record.key)

    second = Reducer.build(settings)
    upsert = first.index.upsert
    calls = []

    def slow_upsert(items):
        calls.append(len(items))
        if len(calls) == 1:
            # The first reducer stalls past its lock's TTL: the lock expires, a second
            # reducer consumes the head of the queue, and a third now holds the lock.
            first.runs.redis.delete(LOCK_KEY)
            assert second.reduce_once(BATCH) == BATCH
            first.runs.redis.set(LOCK_KEY, "third-reducer")
        upsert(items)

    first.index.upsert = slow_upsert  # type: ignore[method-assign]
    first.reduce_once(BATCH)

    # The stalled reducer must not trim: the head of the queue is no longer its batch.
    assert first.runs.ready_depth() == N_RECORDS - BATCH
    # Nor release a lock it no longer holds.
    assert first.runs.redis.get(LOCK_KEY) == "third-reducer"

    first.runs.redis.delete(LOCK_KEY)  # the third reducer finishes
    first.index.upsert = upsert  # type: ignore[method-assign]
    first.drain(BATCH)
    assert first.runs.ready_depth() == 0
    ids = {f"lock-{i:02d}" for i in range(N_RECORDS)}
    assert first.index.count() == N_RECORDS
    assert {item.id for item in first.index.get(sorted(ids))} == ids
    assert first.index.contains(sorted(ids | {"lock-absent"})) == ids
    assert all(first.store.exists(record_key(FEATURE_VERSION, rid)) for rid in ids)
