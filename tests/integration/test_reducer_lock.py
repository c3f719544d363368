"""The reducer's lock under expiry: a reducer whose lock ran out mid-batch (a slow upsert,
a long normaliser fit) must neither trim entries another reducer now owns nor release that
reducer's lock. And its trim under a lost reply: Redis executed it, the client retried it.
Real Redis, folder store and embedded index; synthetic records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contract.layout import FEATURE_VERSION, VECTOR_DIM
from contract.records import (
    FeatureRecord,
    decode_record,
    encode_record,
    make_provenance,
    record_key,
)
from contract.settings import Settings
from contract.state import connect
from previewvec.localredis import LocalRedis
from reducer.reduce import LOCK_KEY, Reducer

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
    raw = connect(settings.broker_url)  # plays the third reducer
    upsert = first.index.upsert
    calls = []

    def slow_upsert(items):
        calls.append(len(items))
        if len(calls) == 1:
            # The first reducer stalls past its lock's TTL: the lock expires, a second
            # reducer consumes the head of the queue, and a third now holds the lock.
            raw.delete(LOCK_KEY)
            assert second.reduce_once(BATCH) == BATCH
            raw.set(LOCK_KEY, "third-reducer")
        upsert(items)

    first.index.upsert = slow_upsert  # type: ignore[method-assign]
    first.reduce_once(BATCH)

    # The stalled reducer must not trim: the head of the queue is no longer its batch.
    assert first.runs.ready_depth() == N_RECORDS - BATCH
    # Nor release a lock it no longer holds.
    assert first.runs.reducer_lock_holder() == "third-reducer"

    raw.delete(LOCK_KEY)  # the third reducer finishes
    first.index.upsert = upsert  # type: ignore[method-assign]
    first.drain(BATCH)
    assert first.runs.ready_depth() == 0
    ids = {f"lock-{i:02d}" for i in range(N_RECORDS)}
    assert first.index.count() == N_RECORDS
    assert {item.id for item in first.index.get(sorted(ids))} == ids
    assert first.index.contains(sorted(ids | {"lock-absent"})) == ids
    assert all(first.store.exists(record_key(FEATURE_VERSION, rid)) for rid in ids)


class ReplyDroppingProxy:
    """A TCP proxy in front of Redis that, once, lets a command containing ``marker``
    through and then cuts the connection instead of passing its reply back: Redis has
    executed the command, the client sees a dropped connection (as when Redis stops
    right after executing it) and retries it on a new one."""

    def __init__(self, target_port: int, marker: bytes) -> None:
        self.target_port, self.marker = target_port, marker
        self.dropped = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            armed = threading.Event()
            threading.Thread(target=self._pump, args=(client, upstream, armed, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, armed, False),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, armed: threading.Event,
              to_redis: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if to_redis and self.marker in data and not self.dropped.is_set():
                    self.dropped.set()
                    armed.set()
                elif not to_redis and armed.is_set():
                    break  # the reply of the marked command: never delivered
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.timeout(120)
def test_a_retried_trim_whose_first_reply_was_lost_drops_nothing(settings: Settings) -> None:
    rng = np.random.default_rng(8)
    direct = Reducer.build(settings)
    for i in range(N_RECORDS):
        record = _record(i, rng)
        direct.store.put(record.key, encode_record(record))
        direct.runs.push_ready(record.key)

    port = int(settings.broker_url.rsplit(":", 1)[1].split("/")[0])
    proxy = ReplyDroppingProxy(port, marker=b"LTRIM")
    try:
        via_proxy = Reducer.build(dataclasses.replace(
            settings, broker_url=f"redis://127.0.0.1:{proxy.port}/0"))
        assert via_proxy.reduce_once(BATCH) == BATCH
        assert proxy.dropped.is_set(), "the trim's reply was not intercepted"
        # Redis trimmed once; the client's retry must not trim the next batch as well.
        assert direct.runs.ready_depth() == N_RECORDS - BATCH
        via_proxy.drain(BATCH)
    finally:
        proxy.close()
    ids = {f"lock-{i:02d}" for i in range(N_RECORDS)}
    assert direct.index.count() == N_RECORDS
    assert direct.runs.ready_depth() == 0  # the index itself is the "indexed" marker now
    assert {item.id for item in direct.index.get(sorted(ids))} == ids


def _upsert_batch_at_barrier(settings: Settings, barrier: Any) -> None:
    """One reducer process: read the head batch of the ready queue, wait, upsert it."""
    reducer = Reducer.build(settings)
    keys = reducer.runs.peek_ready(N_RECORDS)
    records = [decode_record(reducer.store.get(key)) for key in keys]
    items = reducer.items_for(records)
    barrier.wait(timeout=60)
    reducer.index.upsert(items)


@pytest.mark.timeout(180)
def test_two_reducers_upserting_the_same_batch_at_once_index_each_vector_once(
        settings: Settings) -> None:
    """Given two reducer processes that upsert the same batch at the same moment (the
    first one's lock lapsed mid-upsert: the process was paused past its TTL, or cut off
    from Redis, and the second one took the batch over), expect each vector once in the
    embedded index. The lock is a lease: it cannot stop a paused holder from resuming its
    write, so the index itself must not turn two concurrent upserts of an id into two rows
    (LanceDB's merge_insert does, when both read the table before either commits)."""
    rng = np.random.default_rng(9)
    parent = Reducer.build(settings)
    for i in range(N_RECORDS):
        record = _record(i, rng)
        parent.store.put(record.key, encode_record(record))
        parent.runs.push_ready(record.key)
    parent.normalizer()  # fitted and stored once: both processes load the same one
    parent.index.upsert(parent.items_for([_record(99, rng)]))  # the table has rows

    spawn = multiprocessing.get_context("spawn")  # a fresh LanceDB runtime per process
    barrier = spawn.Barrier(2)
    reducers = [spawn.Process(target=_upsert_batch_at_barrier, args=(settings, barrier))
                for _ in range(2)]
    for process in reducers:
        process.start()
    for process in reducers:
        process.join(timeout=150)
    assert [process.exitcode for process in reducers] == [0, 0]

    import lancedb

    rows = Counter(lancedb.connect(settings.index).open_table("vectors")
                   .to_arrow().column("id").to_pylist())
    assert len(rows) == N_RECORDS + 1
    assert {vid: n for vid, n in rows.items() if n > 1} == {}
