"""previewvec/export.py: records → Arrow → Parquet, streamed, atomic, read back exactly
by pyarrow, pandas and polars. Real folder store of synthetic records."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from contract.errors import InputUnreadable, NothingStored
from contract.layout import DESCRIPTORS, FEATURE_VERSION, VECTOR_DIM, feature_names
from contract.records import PROVENANCE_KEYS, encode_record
from contract.store.local import LocalStore
from previewvec.export import (
    BATCH_ROWS,
    ReadCounts,
    export_parquet,
    iter_batches,
    iter_records,
)
from testkit.records import synthetic_record

N = BATCH_ROWS + 37  # two batches, the second one partial


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    store = LocalStore(tmp_path_factory.mktemp("export") / "store")
    for i in range(N):
        record = synthetic_record(i, run_id="run-a" if i % 3 else "run-b")
        store.put(record.key, encode_record(record))
    other = synthetic_record(N, version=f"{FEATURE_VERSION}-0123456789")
    store.put(other.key, encode_record(other))  # another computation: not exported
    store.put(f"features/{FEATURE_VERSION}/zz/broken.json", b"{not json")
    return store


@pytest.fixture(scope="module")
def exported(store: LocalStore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out") / "all.parquet"
    report = export_parquet(store, out, version=FEATURE_VERSION)
    assert (report.rows, report.skipped) == (N, 1)
    return out


def test_one_row_per_record_with_the_exact_float32_vector(exported: Path) -> None:
    table = pq.read_table(exported)
    assert table.num_rows == N
    assert table.schema.field("vector").type.list_size == VECTOR_DIM
    ids = table.column("recording_id").to_pylist()
    assert len(set(ids)) == N
    row = ids.index("rec-0000005")
    vector = np.asarray(table.column("vector")[row].values.to_numpy(), dtype=np.float32)
    np.testing.assert_array_equal(vector, synthetic_record(5).vector_array())
    assert set(table.column("feature_version").to_pylist()) == {FEATURE_VERSION}


def test_descriptors_provenance_and_names_are_columns_and_metadata(exported: Path) -> None:
    schema = pq.read_schema(exported)
    assert set(DESCRIPTORS) | set(PROVENANCE_KEYS) <= set(schema.names)
    assert json.loads(schema.metadata[b"previewvec.feature_names"]) == list(feature_names())
    assert schema.metadata[b"previewvec.feature_version"] == FEATURE_VERSION.encode()
    table = pq.read_table(exported, columns=["recording_id", "tempo_bpm", "key", "run_id"])
    first = next(r for r in table.to_pylist() if r["recording_id"] == "rec-0000000")
    expected = synthetic_record(0)
    assert first["tempo_bpm"] == expected.descriptors["tempo_bpm"]
    assert first["key"] == expected.descriptors["key"] and first["run_id"] == "run-b"


def test_pandas_and_polars_read_it(exported: Path) -> None:
    frame = pd.read_parquet(exported)
    assert len(frame) == N and len(frame["vector"].iloc[0]) == VECTOR_DIM
    polars = pl.read_parquet(exported)
    assert polars.height == N
    assert polars["vector"].dtype == pl.Array(pl.Float32, VECTOR_DIM)
    np.testing.assert_array_equal(
        polars.filter(pl.col("recording_id") == "rec-0000005")["vector"].to_numpy()[0],
        synthetic_record(5).vector_array())


def test_a_run_filter_keeps_that_runs_records_only(store: LocalStore, tmp_path: Path) -> None:
    report = export_parquet(store, tmp_path / "b.parquet", version=FEATURE_VERSION,
                            run_id="run-b")
    ids = pq.read_table(tmp_path / "b.parquet").column("recording_id").to_pylist()
    assert report.rows == len(ids) == len(range(0, N, 3))
    assert all(int(i.removeprefix("rec-")) % 3 == 0 for i in ids)


def test_another_computation_is_its_own_export(store: LocalStore, tmp_path: Path) -> None:
    version = f"{FEATURE_VERSION}-0123456789"
    assert export_parquet(store, tmp_path / "o.parquet", version=version).rows == 1


def test_nothing_to_export_writes_no_file(store: LocalStore, tmp_path: Path) -> None:
    with pytest.raises(NothingStored, match="run-none"):
        export_parquet(store, tmp_path / "x.parquet", version=FEATURE_VERSION,
                       run_id="run-none")
    assert list(tmp_path.iterdir()) == []


def test_nothing_exported_because_all_was_unreadable_says_so(tmp_path: Path) -> None:
    """Given a store whose every record is unreadable (truncated), expect NothingStored to
    count them instead of saying the store holds no records."""
    store = LocalStore(tmp_path / "store")
    for i in range(3):
        record = synthetic_record(i)
        store.put(record.key, encode_record(record)[:50])
    with pytest.raises(NothingStored, match="3 unreadable records skipped"):
        export_parquet(store, tmp_path / "x.parquet", version=FEATURE_VERSION)
    assert not (tmp_path / "x.parquet").exists()


def test_a_record_copied_into_another_shard_is_read_once(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture,
                                                         ) -> None:
    """Given a record also copied under another shard's folder (a bad copy), expect one
    row for it, the copy skipped with a warning naming its key; given a record found only
    under a wrong shard, expect its row (it is the only copy)."""
    store = LocalStore(tmp_path / "store")
    for i in range(3):
        record = synthetic_record(i)
        store.put(record.key, encode_record(record))
    copy = f"features/{FEATURE_VERSION}/zz/rec-0000001.json"
    store.put(copy, encode_record(synthetic_record(1)))
    only = synthetic_record(7)
    store.put(f"features/{FEATURE_VERSION}/zz/{only.recording_id}.json", encode_record(only))
    counts = ReadCounts()
    with caplog.at_level(logging.WARNING, logger="previewvec.export"):
        ids = [r.recording_id for r in iter_records(store, FEATURE_VERSION, counts=counts)]
    assert sorted(ids) == ["rec-0000000", "rec-0000001", "rec-0000002", "rec-0000007"]
    assert counts.skipped == 1
    assert [r.levelname for r in caplog.records if copy in r.getMessage()] == ["WARNING"]


def test_a_shard_folder_linked_from_another_disk_is_read(tmp_path: Path) -> None:
    """Given a shard folder moved elsewhere and symlinked back (a StoreError "Is a
    directory" before) and a link back to the store's own root (a loop), expect every
    record once."""
    store = LocalStore(tmp_path / "store")
    keys = []
    for i in range(4):
        record = synthetic_record(i)
        store.put(record.key, encode_record(record))
        keys.append(record.key)
    shard = store.root / keys[1].rsplit("/", 1)[0]
    shard.rename(tmp_path / "elsewhere")
    shard.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (store.root / "features" / FEATURE_VERSION / "loop").symlink_to(store.root)
    ids = [r.recording_id for r in iter_records(store, FEATURE_VERSION)]
    assert sorted(ids) == [f"rec-{i:07d}" for i in range(4)]
    report = export_parquet(store, tmp_path / "x.parquet", version=FEATURE_VERSION)
    assert (report.rows, report.skipped) == (4, 0)


def test_an_interrupted_export_leaves_no_file(store: LocalStore, tmp_path: Path) -> None:
    """Given an export interrupted after its first batch (Ctrl-C), expect neither the
    target nor its temporary file to exist, and an earlier export kept intact."""
    out = tmp_path / "out.parquet"
    out.write_bytes(b"an earlier export")

    def interrupt(rows: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_parquet(store, out, version=FEATURE_VERSION, progress=interrupt)
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]
    assert out.read_bytes() == b"an earlier export"


def test_an_interrupt_as_the_temporary_file_is_created_leaves_no_file(
        store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given Ctrl-C landing the instant the temporary file has been created (a signal
    handled in the main thread whichever thread received it: blocking it in the main
    thread cannot hold it off), expect no file left (CI once found one)."""
    out = tmp_path / "out.parquet"
    real_open = os.open

    def open_then_interrupt(path: object, flags: int, *args: object) -> int:
        fd = real_open(path, flags, *args)
        if str(path).endswith(".tmp") and flags & os.O_CREAT:
            os.close(fd)
            raise KeyboardInterrupt
        return fd

    monkeypatch.setattr(os, "open", open_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        export_parquet(store, out, version=FEATURE_VERSION)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_target_is_input_unreadable(store: LocalStore, tmp_path: Path) -> None:
    with pytest.raises(InputUnreadable, match="missing"):
        export_parquet(store, tmp_path / "missing" / "x.parquet", version=FEATURE_VERSION)
    with pytest.raises(InputUnreadable, match="folder"):
        export_parquet(store, tmp_path, version=FEATURE_VERSION)


@pytest.mark.parametrize("failing", ["write_batch", "close"])
def test_a_full_disk_is_input_unreadable_and_leaves_no_file(
        store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        failing: str) -> None:
    """Given ENOSPC while writing a batch or the footer, expect the typed error of an
    unwritable target, naming the cause, and no file left (an earlier export kept)."""
    out = tmp_path / "out.parquet"
    out.write_bytes(b"an earlier export")
    real = getattr(pq.ParquetWriter, failing)

    def full(self: pq.ParquetWriter, *args: object) -> None:
        real(self, *args)  # the real write (or close), then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pq.ParquetWriter, failing, full)
    with pytest.raises(InputUnreadable, match="No space left on device"):
        export_parquet(store, out, version=FEATURE_VERSION)
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]
    assert out.read_bytes() == b"an earlier export"


def test_a_store_fault_while_exporting_keeps_its_own_type(
        store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the writes are the target's fault: an error raised while reading is not
    turned into InputUnreadable."""
    def broken(*args: object, **kwargs: object) -> None:
        raise pa.ArrowInvalid("not a write")

    monkeypatch.setattr("previewvec.export.to_batch", broken)
    with pytest.raises(pa.ArrowInvalid):
        export_parquet(store, tmp_path / "x.parquet", version=FEATURE_VERSION)
    assert list(tmp_path.iterdir()) == []


def test_a_record_under_another_recordings_key_is_skipped_and_named(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Given record 1 stored under its own key and under record 2's, expect one row of
    it (no duplicate), one skipped, and record 2's key in the log."""
    store = LocalStore(tmp_path / "store")
    for i in range(3):
        record = synthetic_record(i)
        store.put(record.key, encode_record(record))
    misplaced = synthetic_record(2).key
    store.put(misplaced, encode_record(synthetic_record(1)))
    counts = ReadCounts()
    with caplog.at_level(logging.WARNING, logger="previewvec.export"):
        ids = [r.recording_id for r in iter_records(store, FEATURE_VERSION, counts=counts)]
    assert sorted(ids) == ["rec-0000000", "rec-0000001"]
    assert (counts.read, counts.skipped) == (2, 1)
    assert [r.getMessage() for r in caplog.records if misplaced in r.getMessage()]


def test_confidence_is_a_number_column(tmp_path: Path) -> None:
    """The match confidence is a float in records: exported as float64 (None → null), so
    it can be filtered and averaged without parsing text."""
    store = LocalStore(tmp_path / "store")
    for i, confidence in enumerate([0.87, None, 1]):
        record = synthetic_record(i)
        record.provenance["confidence"] = confidence
        store.put(record.key, encode_record(record))
    export_parquet(store, tmp_path / "c.parquet", version=FEATURE_VERSION)
    table = pq.read_table(tmp_path / "c.parquet")
    assert table.schema.field("confidence").type == pa.float64()
    by_id = dict(zip(table.column("recording_id").to_pylist(),
                     table.column("confidence").to_pylist(), strict=True))
    assert by_id == {"rec-0000000": 0.87, "rec-0000001": None, "rec-0000002": 1.0}
    assert table.schema.field("run_id").type == pa.string()


def test_batches_are_bounded_and_streamed(store: LocalStore) -> None:
    sizes = [b.num_rows for b in iter_batches(iter_records(store, FEATURE_VERSION),
                                              FEATURE_VERSION, rows=500)]
    assert sizes == [500] * (N // 500) + [N % 500]


def test_a_killed_exports_temporary_file_is_removed_by_the_next_export(
        store: LocalStore, tmp_path: Path) -> None:
    """Given the temporary files of exports of ``out``: one a killed process held (SIGKILL:
    no cleanup ran), one a live export holds, one made an instant ago, and another
    target's, expect the next export of ``out`` to remove only the killed one's."""
    import fcntl
    import signal
    import subprocess
    import sys
    import time

    from previewvec.export import STALE_TEMPORARY_S, temporary_path

    out = tmp_path / "out.parquet"
    killed, live, young = (temporary_path(out) for _ in range(3))
    other = temporary_path(tmp_path / "other.parquet")
    holder = ("import fcntl, os, sys, time\n"
              "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)\n"
              "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(600)\n")
    child = subprocess.Popen([sys.executable, "-c", holder, str(killed)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "held\n"
    child.send_signal(signal.SIGKILL)
    child.wait()
    live_fd = os.open(live, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(live_fd, fcntl.LOCK_EX)
    for path in (young, other):
        path.write_bytes(b"partial")
    old = time.time() - STALE_TEMPORARY_S - 60
    for path in (killed, live, other):
        os.utime(path, (old, old))
    try:
        export_parquet(store, out, version=FEATURE_VERSION)
        assert not killed.exists()
        assert live.exists() and young.exists() and other.exists()
        assert pq.read_table(out).num_rows == N
    finally:
        os.close(live_fd)
