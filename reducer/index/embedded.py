"""Embedded vector index: a LanceDB table in a local folder (no server).

One table, ``vectors``: ``id`` (unique), ``vector`` (fixed-size float32 list), one typed
column per filterable descriptor (so filters are SQL ``where`` clauses LanceDB can push
down), and ``metadata_json`` with the full metadata. Search is exact (flat) cosine until an
ANN index is built with :meth:`EmbeddedIndex.create_ann_index`.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import BTree

from contract.errors import NothingStored
from reducer.index.base import (
    FILTER_FIELDS,
    MAX_DIMENSIONS,
    CheckedBatch,
    Condition,
    IndexItem,
    IndexRejected,
    IndexUnreadable,
    Match,
    VectorIndexError,
    check_id,
    check_items,
    check_k,
    check_vector,
    normalize_filter,
)

log = logging.getLogger(__name__)

TABLE_NAME = "vectors"
# Rows per merge_insert call: bounds memory (5 000 × 530 float32 ≈ 10 MB per batch).
WRITE_BATCH = 20_000
# Ids per SQL IN (...) list for get/delete.
ID_BATCH = 1_000
# In the index folder, beside the table: held (flock) by whichever process writes.
WRITE_LOCK_FILE = ".write.lock"

# LanceDB reports an index folder it cannot read (a data file or manifest overwritten,
# truncated or missing) as a RuntimeError "lance error: LanceError(IO): ..." (or "External
# error: LanceError(...)", or an OSError), at open or at the first query; its message ends
# with a Rust source location that says nothing to an operator.
_LANCE_ERROR = re.compile(r"\blance error\b|\bLanceError\(", re.IGNORECASE)
_RUST_LOCATION = re.compile(r",\s*/\S+\.rs:\d+:\d+\s*$")

_T = TypeVar("_T")


@contextlib.contextmanager
def _lance_faults(path: Path) -> Iterator[None]:
    """LanceDB failing to read the folder at ``path`` as :class:`IndexUnreadable`;
    any other error (a bug) keeps its type and traceback."""
    try:
        yield
    except (RuntimeError, OSError) as exc:
        if not _LANCE_ERROR.search(str(exc)):
            raise
        reason = _RUST_LOCATION.sub("", " ".join(str(exc).split()))
        raise IndexUnreadable(f"cannot read the vector index {path}: {reason}; move the "
                               "folder away and run `previewvec reindex`") from exc


def _typed_faults(method: Callable[..., _T]) -> Callable[..., _T]:
    """Run an :class:`EmbeddedIndex` method under :func:`_lance_faults`."""
    @functools.wraps(method)
    def wrapper(self: EmbeddedIndex, *args: Any, **kwargs: Any) -> _T:
        with _lance_faults(self.path):
            return method(self, *args, **kwargs)
    return wrapper


def _schema(dim: int) -> pa.Schema:
    columns = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
    ]
    for name, kind in FILTER_FIELDS.items():
        columns.append(pa.field(name, pa.float64() if kind == "number" else pa.string()))
    columns.append(pa.field("metadata_json", pa.string(), nullable=False))
    return pa.schema(columns)


def sql_literal(value: object) -> str:
    """A SQL literal for a validated filter value (str or finite number)."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"  # standard SQL quote doubling
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"unsupported literal {value!r}")
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise ValueError("non-finite literal")
    return repr(float(value))


def _column(name: str) -> str:
    # Names come from FILTER_FIELDS only (checked by normalize_filter); backticks keep
    # words like `key` from ever being read as SQL keywords.
    if name not in FILTER_FIELDS:
        raise ValueError(f"not a filterable column: {name!r}")
    return f"`{name}`"


def filter_to_sql(conditions: Sequence[Condition]) -> str | None:
    """Translate validated conditions to a LanceDB (DataFusion) ``where`` string."""
    clauses = []
    for name, op, value in conditions:
        col = _column(name)
        if op in ("$in", "$nin"):
            if not value:
                clauses.append("false" if op == "$in" else "true")
                continue
            items = ", ".join(sql_literal(v) for v in value)
            if op == "$in":
                clauses.append(f"{col} IN ({items})")
            else:  # a missing field is "not in" anything (as Vectorize's $nin)
                clauses.append(f"({col} IS NULL OR {col} NOT IN ({items}))")
            continue
        literal = sql_literal(value)
        if op == "$ne":
            clauses.append(f"({col} IS NULL OR {col} <> {literal})")
        else:
            sql_op = {"$eq": "=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[op]
            clauses.append(f"{col} {sql_op} {literal}")
    return " AND ".join(clauses) if clauses else None


def _ids_sql(ids: Sequence[str]) -> str:
    return "id IN (" + ", ".join(sql_literal(i) for i in ids) + ")"


class EmbeddedIndex:
    """LanceDB-backed :class:`~reducer.index.base.VectorIndex` in ``path``."""

    def __init__(self, path: str | Path, dim: int, *, create: bool = True) -> None:
        """``create=False`` for queries: an index that does not exist yet (a mistyped
        folder, or nothing reduced) is :class:`NothingStored`, and nothing is written."""
        if not 1 <= dim <= MAX_DIMENSIONS:
            raise ValueError(f"dim must be 1..{MAX_DIMENSIONS}")
        self.dim = dim
        self.path = Path(path).expanduser()
        missing = NothingStored(f"the vector index holds no vectors: there is none at "
                                f"{self.path} (PREVIEWVEC_INDEX); run `previewvec reduce` "
                                "first")
        if not create and not self.path.exists():
            raise missing
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission: fix PREVIEWVEC_INDEX
            raise VectorIndexError(f"cannot use index folder {self.path}: {exc}") from None
        self._schema = _schema(dim)
        self._write_lock = threading.Lock()  # one writing thread; _writing() adds processes
        self._write_lock_path = self.path / WRITE_LOCK_FILE
        with _lance_faults(self.path):
            # interval 0: every read sees the latest committed version, also when another
            # process (e.g. the reducer) wrote it.
            self._db = lancedb.connect(str(self.path),
                                       read_consistency_interval=timedelta(0))
            try:
                self._table = self._db.open_table(TABLE_NAME)
            except ValueError:  # LanceDB's "table not found"
                if not create:
                    raise missing from None
                # exist_ok: another process may create it between our open and create.
                self._table = self._db.create_table(TABLE_NAME, schema=self._schema,
                                                    exist_ok=True)
            existing = self._table.schema.field("vector").type
        if existing != self._schema.field("vector").type:
            raise IndexRejected(
                f"index at {self.path} holds vectors of type {existing}, not {dim}-d float32"
            )

    def __repr__(self) -> str:
        return f"EmbeddedIndex({str(self.path)!r}, dim={self.dim})"

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One writer at a time, across threads and processes.

        Two ``merge_insert`` calls that both read the table before either commits each
        insert an id the table lacked: two rows for one id. The reducer lock in Redis is a
        lease, so it cannot rule that out (a reducer paused past its TTL resumes its upsert
        while its successor upserts the same batch; ``reindex`` beside ``reduce``). An
        ``flock`` on the folder serialises whole writes, so the later one finds the rows
        and replaces them; the kernel drops it when its holder dies.
        """
        with self._write_lock:
            try:
                fd = os.open(self._write_lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:  # a read-only mount, a folder not ours
                raise VectorIndexError(f"cannot write the index at {self.path}: "
                                       f"{exc.strerror or exc}") from None
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # say why this write waits (a paused writer?)
                    log.warning("another process is writing the index at %s; waiting",
                                self.path)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def _arrow(self, batch: CheckedBatch) -> pa.Table:
        # Vectors go in straight from the numpy matrix: per-row Python lists would
        # dominate the cost of an upsert.
        flat = np.ascontiguousarray(batch.values).reshape(-1)
        columns: list[pa.Array] = [
            pa.array(batch.ids, pa.string()),
            pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), self.dim),
        ]
        for name, kind in FILTER_FIELDS.items():
            values = [meta.get(name) for meta in batch.metadata]
            columns.append(pa.array(values, pa.float64() if kind == "number" else pa.string()))
        columns.append(pa.array(batch.metadata_json, pa.string()))
        return pa.Table.from_arrays(columns, schema=self._schema)

    @_typed_faults
    def upsert(self, items: Sequence[IndexItem]) -> None:
        """Insert or replace by id with ``merge_insert("id")``: ids stay unique."""
        checked = check_items(items, self.dim)
        with self._writing():
            for start in range(0, len(checked), WRITE_BATCH):
                batch = self._arrow(checked.slice(start, start + WRITE_BATCH))
                (
                    self._table.merge_insert("id")
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .execute(batch)
                )

    @_typed_faults
    def query(
        self, vector: Sequence[float] | np.ndarray, k: int, *, filter: dict | None = None
    ) -> list[Match]:
        """Exact (or ANN, once built) cosine search; score = 1 - cosine distance."""
        check_k(k)
        query = check_vector(vector, self.dim, "query vector")
        where = filter_to_sql(normalize_filter(filter))
        search = (
            self._table.search(query, vector_column_name="vector")
            .distance_type("cosine")
            .select(["id", "metadata_json", "_distance"])
            .limit(k)
        )
        if where:
            search = search.where(where, prefilter=True)  # filter first, then top-k
        rows = search.to_arrow().to_pylist()
        return [
            Match(row["id"], 1.0 - float(row["_distance"]), json.loads(row["metadata_json"]))
            for row in rows
        ]

    @_typed_faults
    def get(self, ids: Sequence[str]) -> list[IndexItem]:
        """Items for ``ids`` in the order asked; unknown ids are skipped."""
        wanted = [check_id(i) for i in ids]
        found: dict[str, IndexItem] = {}
        unique = list(dict.fromkeys(wanted))
        for start in range(0, len(unique), ID_BATCH):
            chunk = unique[start : start + ID_BATCH]
            table = (
                self._table.search()
                .where(_ids_sql(chunk))
                .select(["id", "vector", "metadata_json"])
                .limit(len(chunk))
                .to_arrow()
            )
            vectors = table.column("vector").combine_chunks().flatten().to_numpy()
            vectors = vectors.reshape(-1, self.dim)
            for row, (item_id, meta) in enumerate(
                zip(
                    table.column("id").to_pylist(),
                    table.column("metadata_json").to_pylist(),
                    strict=True,
                )
            ):
                found[item_id] = IndexItem(item_id, vectors[row].copy(), json.loads(meta))
        return [found[i] for i in wanted if i in found]

    @_typed_faults
    def contains(self, ids: Sequence[str]) -> set[str]:
        """The ids among ``ids`` that have a row: a filtered scan of the ``id`` column only
        (fast with the scalar index :meth:`create_ann_index` also builds)."""
        unique = list(dict.fromkeys(check_id(i) for i in ids))
        found: set[str] = set()
        for start in range(0, len(unique), ID_BATCH):
            chunk = unique[start : start + ID_BATCH]
            table = (
                self._table.search()
                .where(_ids_sql(chunk))
                .select(["id"])
                .limit(len(chunk))
                .to_arrow()
            )
            found.update(table.column("id").to_pylist())
        return found

    @_typed_faults
    def count(self) -> int:
        """Rows in the table."""
        return int(self._table.count_rows())

    @_typed_faults
    def delete(self, ids: Sequence[str]) -> None:
        """Delete rows by id."""
        unique = list(dict.fromkeys(check_id(i) for i in ids))
        with self._writing():
            for start in range(0, len(unique), ID_BATCH):
                self._table.delete(_ids_sql(unique[start : start + ID_BATCH]))

    def wait_for_writes(self, timeout_s: float = 60.0) -> None:
        """Writes are synchronous here: nothing to wait for."""
        del timeout_s

    @_typed_faults
    def optimize(self, keep_versions_for: timedelta = timedelta(hours=1)) -> None:
        """Compact the small fragments merge_insert leaves; drop versions older than
        ``keep_versions_for`` (replaced rows stay on disk until their version is dropped).

        Call now and then (e.g. after a reduce run); it rewrites data, so not per batch.
        """
        with self._writing():
            self._table.optimize(cleanup_older_than=keep_versions_for)

    @_typed_faults
    def create_ann_index(self, **options: Any) -> None:
        """Build an approximate (IVF) cosine index; worthwhile beyond ~100k vectors.

        Without it every query scans all vectors exactly. ``options`` go to LanceDB's
        ``create_index`` (e.g. ``num_partitions``, ``num_sub_vectors``). Also builds a
        B-tree on ``id``, which upserts (``merge_insert`` joins on it) and the reducer's
        :meth:`contains` checks use instead of scanning the column.
        """
        with self._writing():
            self._table.create_index(
                metric="cosine", vector_column_name="vector", replace=True, **options
            )
            self._table.create_index("id", config=BTree(), replace=True)
