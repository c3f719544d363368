"""Records out of the store, as Arrow: the Parquet export and the Python API's tables.

One row per recording: ``recording_id``, ``feature_version``, ``vector`` (a fixed-size
list of float32, in :func:`contract.layout.feature_names` order), each descriptor in its
own column, the computation (JSON) and every provenance field (text; ``confidence`` a
float64, :data:`NUMERIC_PROVENANCE`). The dimension names, the layout's names hash and
the version are in the schema metadata.

Streaming: records are read (concurrently from S3/R2, see contract/store/bulk.py) and
turned into Arrow record batches of :data:`BATCH_ROWS` rows, so memory stays flat
whatever the catalog holds. The Parquet file is written under a temporary name in the
target folder and renamed when complete: an interrupted export leaves no file behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from contract.errors import InputUnreadable, NothingStored
from contract.layout import DESCRIPTORS, VECTOR_DIM, feature_names, names_hash
from contract.records import (
    PROVENANCE_KEYS,
    CorruptRecord,
    FeatureRecord,
    IncompatibleRecord,
    decode_stored,
)
from contract.store import FeatureStore
from contract.store.bulk import read_many

# Provenance fields that are numbers (exported as float64); the others are text.
NUMERIC_PROVENANCE = frozenset({"confidence"})
BATCH_ROWS = 2048  # ≈ 4.3 MB of vectors per batch: one Parquet row group page set
METADATA_NAMES = b"previewvec.feature_names"

log = logging.getLogger(__name__)


def record_schema(version: str) -> pa.Schema:
    """The Arrow schema of exported records of ``version``."""
    fields = [
        pa.field("recording_id", pa.string(), nullable=False),
        pa.field("feature_version", pa.string(), nullable=False),
        pa.field("vector", pa.list_(pa.float32(), VECTOR_DIM), nullable=False),
    ]
    fields += [pa.field(name, pa.float64() if kind == "number" else pa.string())
               for name, kind in DESCRIPTORS.items()]
    fields.append(pa.field("computation", pa.string()))
    fields += [pa.field(name, pa.float64() if name in NUMERIC_PROVENANCE else pa.string())
               for name in PROVENANCE_KEYS]
    metadata = {
        METADATA_NAMES: json.dumps(list(feature_names())).encode(),
        b"previewvec.feature_version": version.encode(),
        b"previewvec.names_hash": names_hash().encode(),
        b"previewvec.dim": str(VECTOR_DIM).encode(),
    }
    return pa.schema(fields, metadata=metadata)


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def to_batch(records: list[FeatureRecord], schema: pa.Schema,
             matrix: np.ndarray | None = None) -> pa.RecordBatch:
    """One Arrow record batch of ``records``; ``matrix``: their vectors, when the caller
    already copied them out (then the records' own vectors are not read)."""
    if matrix is None:
        matrix = np.empty((len(records), VECTOR_DIM), dtype=np.float32)
        for row, record in enumerate(records):
            matrix[row] = record.vector
    columns: list[pa.Array] = [
        pa.array([r.recording_id for r in records], pa.string()),
        pa.array([r.feature_version for r in records], pa.string()),
        pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), pa.float32()),
                                          VECTOR_DIM),
    ]
    for name, kind in DESCRIPTORS.items():
        values = [r.descriptors.get(name) for r in records]
        if kind == "number":
            columns.append(pa.array([_number(v) for v in values], pa.float64()))
        else:
            columns.append(pa.array([_text(v) for v in values], pa.string()))
    columns.append(pa.array([_text(r.computation) for r in records], pa.string()))
    for name in PROVENANCE_KEYS:
        values = [r.provenance.get(name) for r in records]
        if name in NUMERIC_PROVENANCE:
            columns.append(pa.array([_number(v) for v in values], pa.float64()))
        else:
            columns.append(pa.array([_text(v) for v in values], pa.string()))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


@dataclass
class ReadCounts:
    """What a stream of records held besides the rows it yielded."""

    read: int = 0  # records decoded (matching the filter or not)
    skipped: int = 0  # corrupt or of another layout: not exported


def iter_records(store: FeatureStore, version: str, *, run_id: str | None = None,
                 counts: ReadCounts | None = None, threads: int | None = None,
                 ) -> Iterator[FeatureRecord]:
    """Every readable record of ``version`` in key order (of ``run_id``'s writing, when
    given), each recording once; corrupt ones (a record under another recording's key, or
    a copy under another shard's, included) are logged with their key and counted in
    ``counts.skipped``, never raised."""
    counts = counts if counts is not None else ReadCounts()
    keys = store.iter_keys(f"features/{version}/")
    for key, data in read_many(store, keys, threads=threads):
        if data is None:
            continue
        try:
            record = decode_stored(key, data, version)
        except (CorruptRecord, IncompatibleRecord) as exc:
            # Logged one by one: the count alone does not say which record to look at.
            log.warning("%s; skipped (%s)", exc.message, exc.code)
            counts.skipped += 1
            continue
        if key != record.key and store.exists(record.key):
            # A copy under another shard's folder: its recording is read at its own key,
            # and twice would be two rows of one id. (Without that key, this is the only
            # copy: its row is kept.) One HEAD per misplaced record, none otherwise.
            log.warning("stored record %s: a copy of the record stored at %s; skipped "
                        "(corrupt_record)", key, record.key)
            counts.skipped += 1
            continue
        counts.read += 1
        if run_id is None or record.provenance.get("run_id") == run_id:
            yield record


def iter_batches(records: Iterable[FeatureRecord], version: str,
                 rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """Arrow record batches of at most ``rows`` rows.

    Each vector is copied into the batch's float32 matrix as its record arrives and the
    record's list of Python floats (≈ 17 KB) dropped: a batch then holds 2 KB per row.
    """
    schema = record_schema(version)
    matrix = np.empty((rows, VECTOR_DIM), dtype=np.float32)
    batch: list[FeatureRecord] = []
    for record in records:
        matrix[len(batch)] = record.vector
        record.vector = []
        batch.append(record)
        if len(batch) >= rows:
            yield to_batch(batch, schema, matrix)
            matrix = np.empty((rows, VECTOR_DIM), dtype=np.float32)
            batch = []
    if batch:
        yield to_batch(batch, schema, matrix[:len(batch)])


@dataclass(frozen=True)
class ExportReport:
    rows: int
    skipped: int
    path: Path


def export_parquet(store: FeatureStore, out: str | os.PathLike[str], *, version: str,
                   run_id: str | None = None, threads: int | None = None,
                   progress: Callable[[int], None] | None = None) -> ExportReport:
    """Write every record of ``version`` (of ``run_id``) to the Parquet file ``out``.

    Atomic: written to a hidden temporary file beside ``out`` and renamed once complete;
    on any failure or interruption the temporary file is removed and ``out`` untouched.

    Raises
    ------
    InputUnreadable
        ``out`` cannot be written (a missing folder, no permission, a folder, a full
        disk).
    NothingStored
        No record matched: no file is written.
    """
    import pyarrow.parquet as pq

    target = output_path(out)
    counts = ReadCounts()
    rows = 0
    tmp: Path | None = None
    held: int | None = None
    try:
        # Named before it exists, so that the ``finally`` below removes it whatever instant
        # an interrupt lands at (Ctrl-C, or SIGTERM/SIGHUP, which the CLI turns into
        # KeyboardInterrupt). Blocking those signals in this thread around mkstemp did not
        # close that window: a signal sent to the process goes to any thread that does not
        # block it (pyarrow's, BLAS's), and Python raises it in this one at once.
        tmp = temporary_path(target)
        with _writing(out):
            held = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            # Held locked until the end (closed below): a later export of ``out`` tells
            # this live temporary file from one a killed export left.
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        remove_stale_temporaries(target)
        schema = record_schema(version)
        # snappy (Parquet's default): zstd took 4x the CPU per row for ~nothing, float32
        # features being close to incompressible.
        with _writing(out):
            writer = pq.ParquetWriter(tmp, schema, compression="snappy")
        try:
            records = iter_records(store, version, run_id=run_id, counts=counts,
                                   threads=threads)
            for batch in iter_batches(records, version):
                with _writing(out):  # only the writes: store faults keep their own types
                    writer.write_batch(batch)
                rows += batch.num_rows
                if progress is not None:
                    progress(batch.num_rows)
        except BaseException:
            # The first error is the one to tell; the file is removed below either way.
            with contextlib.suppress(OSError):
                writer.close()
            raise
        with _writing(out):
            writer.close()  # writes the footer: can meet a full disk too
        if rows == 0:
            what = f"of run {run_id} " if run_id else ""
            # All of them unreadable is not an empty store: say what was passed over.
            skipped = (f" ({counts.skipped} unreadable records skipped: see the warnings)"
                       if counts.skipped else "")
            raise NothingStored(f"no records {what}of feature version {version} in the "
                                f"feature store{skipped}: nothing exported")
        with _writing(out):
            os.chmod(tmp, 0o644)  # 0600 while partial; an export is meant to be shared
            os.replace(tmp, target)
    finally:
        if tmp is not None:
            # OSError, not only FileNotFoundError: on a read-only filesystem the unlink of
            # a file never made fails with EROFS, which would hide the error that matters.
            with contextlib.suppress(OSError):
                tmp.unlink()
        if held is not None:
            os.close(held)
    return ExportReport(rows=rows, skipped=counts.skipped, path=target)


# A temporary file younger than this is never taken for a killed export's: it may be one
# created an instant ago whose writer has not locked it yet.
STALE_TEMPORARY_S = 60.0


def remove_stale_temporaries(target: Path, *, now: float | None = None) -> list[Path]:
    """Remove the temporary files earlier exports of ``target`` left (:func:`temporary_path`
    names) that no process holds: an export killed outright (SIGKILL, the OOM killer)
    cannot remove its own, and each would stay, hidden, as large as that export got.
    A file a running export holds (its lock) or made in the last
    :data:`STALE_TEMPORARY_S` is left alone. Returns the removed paths."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[0-9a-f]{{12}}\.tmp")
    removed = []
    clock = time.time() if now is None else now
    try:
        candidates = [p for p in target.parent.iterdir() if pattern.fullmatch(p.name)]
    except OSError:
        return removed
    for path in candidates:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            if clock - os.fstat(fd).st_mtime < STALE_TEMPORARY_S:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # OSError: an export holds it
            path.unlink()
            removed.append(path)
            log.info("removed %s, left by an export that was killed", path)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def output_path(out: str | os.PathLike[str]) -> Path:
    """``out`` as a path a file can be written to under a temporary name and renamed to.

    Raises :class:`InputUnreadable` for a folder, or anything else that exists but is not
    a regular file (a device such as /dev/null, a FIFO, /dev/stdout): the rename would
    put a regular file in its place instead of writing to it.
    """
    target = Path(out).expanduser()
    if target.is_dir():
        raise InputUnreadable(f"cannot write {str(out)!r}: it is a folder")
    if target.exists() and not target.is_file():  # follows a symlink: /dev/stdout
        raise InputUnreadable(f"cannot write {str(out)!r}: it is not a regular file "
                              "(write to a file, then copy it)")
    return target


def temporary_path(target: Path) -> Path:
    """A hidden, unused name beside ``target`` to write it under, then rename: chosen
    before the file exists, so a caller's cleanup covers the instant it is created."""
    return target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"


@contextlib.contextmanager
def _writing(out: str | os.PathLike[str]) -> Iterator[None]:
    """Writing ``out``: an OSError (a full disk, a quota, a file-size limit, no
    permission) becomes :class:`InputUnreadable`, one line for the CLI."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise InputUnreadable(f"cannot write {str(out)!r}: {reason}") from None
