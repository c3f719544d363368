"""The vector index contract, shared validation, and the metadata filter language.

Two backends implement :class:`VectorIndex`: an embedded LanceDB folder and Cloudflare
Vectorize. Both enforce Vectorize's limits (id ≤ 64 bytes, metadata ≤ 10 KiB, dimension
≤ 1536) so that what works locally also works in production.

Filters mirror Vectorize's metadata filter: ``{"mode": "minor", "tempo_bpm": {"$gte": 90,
"$lte": 110}}`` — a bare value means ``$eq``; several fields or operators are ANDed; the
operators are ``$eq $ne $gt $gte $lt $lte $in $nin``; only :data:`FILTER_FIELDS` can be
filtered (they are the embedded table's columns and Vectorize's metadata indexes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

# The families live in contract.errors (the CLI maps them to exit statuses); re-exported.
from contract.errors import (  # noqa: F401
    ConfigError,
    IndexRejected,
    IndexUnavailable,
    IndexUnreadable,
    InvalidQuery,
    VectorIndexError,
)
from contract.layout import DESCRIPTORS, DescriptorKind

MAX_ID_BYTES = 64
MAX_METADATA_BYTES = 10 * 1024
MAX_DIMENSIONS = 1536

FieldKind = DescriptorKind
# The descriptor fields that can be filtered on: every descriptor (contract.layout).
FILTER_FIELDS: dict[str, FieldKind] = DESCRIPTORS
FILTER_OPS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"})


class InvalidIndexItem(VectorIndexError):
    """An item breaks the index limits; raised before anything is sent or written."""

    code = "invalid_index_item"


class InvalidFilter(VectorIndexError):
    """A filter uses an unknown field or operator, or a value of the wrong type."""

    code = "invalid_filter"


@dataclass
class IndexItem:
    """One vector: ``id`` ≤ 64 UTF-8 bytes, ``metadata`` ≤ 10 KiB as compact JSON."""

    id: str
    values: list[float] | np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Match:
    """A query result; ``score`` is cosine similarity (1 = same direction)."""

    id: str
    score: float
    metadata: dict[str, Any]


@runtime_checkable
class VectorIndex(Protocol):
    """Cosine-similarity vector index keyed by id."""

    dim: int

    def upsert(self, items: Sequence[IndexItem]) -> None:
        """Insert or fully replace items by id (never duplicates)."""
        ...

    def query(
        self, vector: Sequence[float] | np.ndarray, k: int, *, filter: dict | None = None
    ) -> list[Match]:
        """The ``k`` most similar items, best first, optionally filtered on metadata."""
        ...

    def get(self, ids: Sequence[str]) -> list[IndexItem]:
        """Stored items for ``ids`` in the order asked, missing ids skipped."""
        ...

    def contains(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the index holds (for Vectorize: as of the last processed
        write). The reducer asks this instead of keeping its own list of indexed ids."""
        ...

    def count(self) -> int:
        """How many items the index holds (for Vectorize: as of the last processed write)."""
        ...

    def delete(self, ids: Sequence[str]) -> None:
        """Remove ``ids``; missing ids are ignored."""
        ...

    def wait_for_writes(self, timeout_s: float = 60.0) -> None:
        """Block until every write made through this object is visible to queries."""
        ...


# --- validation shared by both backends -------------------------------------------------


def check_id(item_id: object) -> str:
    """A non-empty string of at most 64 UTF-8 bytes."""
    if not isinstance(item_id, str) or not item_id:
        raise InvalidIndexItem("id must be a non-empty string")
    if len(item_id.encode("utf-8")) > MAX_ID_BYTES:
        raise InvalidIndexItem(f"id {item_id[:80]!r} is longer than {MAX_ID_BYTES} bytes")
    return item_id


def check_vector(values: Sequence[float] | np.ndarray, dim: int, what: str) -> np.ndarray:
    """float32 ``(dim,)``, finite and non-zero (cosine is undefined for a zero vector)."""
    try:
        arr = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidIndexItem(f"{what}: values are not numbers") from None
    if arr.shape != (dim,):
        raise InvalidIndexItem(f"{what}: expected {dim} dimensions, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InvalidIndexItem(f"{what}: values must be finite (float32)")
    if not np.any(arr):
        raise InvalidIndexItem(f"{what}: zero vector has no cosine similarity")
    return arr


def check_query_vector(values: Sequence[float] | np.ndarray, dim: int) -> np.ndarray:
    """A raw query vector as float32 ``(dim,)``: numbers only, finite.

    Raises :class:`~contract.errors.InvalidQuery` (the caller's input, not the index's
    fault); a zero raw vector is fine, normalising moves it.
    """
    try:
        raw = np.asarray(values)
    except (TypeError, ValueError):  # ragged nesting
        raise InvalidQuery("the query vector is not a flat sequence of numbers") from None
    if raw.dtype.kind not in "fiu":  # strings, objects, booleans: not features
        raise InvalidQuery(f"the query vector holds non-numbers ({raw.dtype})")
    if raw.shape != (dim,):
        raise InvalidQuery(f"the query vector has shape {raw.shape}, expected ({dim},)")
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused just below
        arr = raw.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise InvalidQuery("the query vector holds NaN or infinite values (as float32)")
    return arr


def _numpy_scalar(value: object) -> object:
    # Descriptors computed with numpy often arrive as np.float32/np.int64 scalars.
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# Built once: json.dumps with non-default options constructs an encoder on every call.
_METADATA_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_numpy_scalar
)


def metadata_json(metadata: Mapping[str, Any], what: str) -> str:
    """Validate metadata (Vectorize's key rules, 10 KiB, filter-field types); its JSON."""
    if not isinstance(metadata, Mapping):
        raise InvalidIndexItem(f"{what}: metadata must be a mapping")
    for key in metadata:
        # Vectorize's rules: keys are non-empty and have no ".", no '"', no leading "$".
        if not isinstance(key, str) or not key or "." in key or '"' in key or key[0] == "$":
            raise InvalidIndexItem(f"{what}: invalid metadata key {key!r}")
        kind = FILTER_FIELDS.get(key)
        if kind is None:
            continue
        value = metadata[key]
        if value is None:
            continue
        if kind == "string" and not isinstance(value, str):
            raise InvalidIndexItem(f"{what}: metadata {key!r} must be a string")
        if kind == "number" and not _is_number(value):
            raise InvalidIndexItem(f"{what}: metadata {key!r} must be a finite number")
    try:
        text = _METADATA_ENCODER.encode(dict(metadata))
    except (TypeError, ValueError) as exc:
        raise InvalidIndexItem(f"{what}: metadata must be finite JSON values: {exc}") from None
    # UTF-8 is at most 4 bytes per character: only long texts need the exact count.
    if len(text) * 4 > MAX_METADATA_BYTES:
        size = len(text.encode("utf-8"))
        if size > MAX_METADATA_BYTES:
            raise InvalidIndexItem(f"{what}: metadata is {size} bytes, limit {MAX_METADATA_BYTES}")
    return text


@dataclass(frozen=True)
class CheckedBatch:
    """Validated items, column-wise: ids, an ``(n, dim)`` float32 matrix, metadata."""

    ids: list[str]
    values: np.ndarray
    metadata: list[dict[str, Any]]
    metadata_json: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def slice(self, start: int, stop: int) -> CheckedBatch:
        """Rows ``start:stop``."""
        return CheckedBatch(
            self.ids[start:stop],
            self.values[start:stop],
            self.metadata[start:stop],
            self.metadata_json[start:stop],
        )


def check_items(items: Sequence[IndexItem], dim: int) -> CheckedBatch:
    """Validate every item before any I/O; for repeated ids the last one wins.

    Vectors are checked as one matrix (per-item numpy calls would cost more than the
    database write); the per-item path only runs to name the offending item.
    """
    last: dict[str, int] = {}
    for position, item in enumerate(items):
        last[check_id(item.id)] = position
    keep = sorted(last.values())
    chosen = [items[i] for i in keep]
    if not chosen:
        return CheckedBatch([], np.zeros((0, dim), np.float32), [], [])
    try:
        matrix = np.array([item.values for item in chosen], dtype=np.float32)
    except (TypeError, ValueError):
        matrix = None  # ragged or non-numeric: find the culprit below
    if matrix is None or matrix.shape != (len(chosen), dim):
        for item in chosen:
            check_vector(item.values, dim, f"item {item.id!r}")
        raise InvalidIndexItem(f"vectors must all have {dim} dimensions")  # pragma: no cover
    matrix = matrix.reshape(len(chosen), dim)
    bad = ~np.isfinite(matrix).all(axis=1) | ~matrix.any(axis=1)
    if bad.any():
        culprit = chosen[int(np.argmax(bad))]
        check_vector(culprit.values, dim, f"item {culprit.id!r}")
    metadata = [dict(item.metadata or {}) for item in chosen]
    texts = [
        metadata_json(meta, f"item {item.id!r}")
        for item, meta in zip(chosen, metadata, strict=True)
    ]
    return CheckedBatch([item.id for item in chosen], matrix, metadata, texts)


def check_k(k: int, limit: int | None = None) -> int:
    """A positive int (bool excluded), at most ``limit`` if given."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidQuery(f"k must be a positive integer, not {k!r}")
    if limit is not None and k > limit:
        raise InvalidQuery(f"k must be at most {limit}, not {k}")
    return k


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


Condition = tuple[str, str, Any]  # (field, op, value)


def normalize_filter(filter: Mapping[str, Any] | None) -> list[Condition]:
    """Validate a filter dict into ``(field, op, value)`` conditions (ANDed)."""
    if filter is None:
        return []
    if not isinstance(filter, Mapping):
        raise InvalidFilter("filter must be a dict")
    conditions: list[Condition] = []
    for name, spec in filter.items():
        kind = FILTER_FIELDS.get(name)
        if kind is None:
            raise InvalidFilter(f"cannot filter on {name!r}; known: {sorted(FILTER_FIELDS)}")
        ops = spec if isinstance(spec, Mapping) else {"$eq": spec}
        if not ops:
            raise InvalidFilter(f"empty condition for {name!r}")
        for op, value in ops.items():
            if op not in FILTER_OPS:
                raise InvalidFilter(f"unknown operator {op!r} for {name!r}")
            if op in ("$in", "$nin"):
                if not isinstance(value, list | tuple):
                    raise InvalidFilter(f"{name} {op} needs a list")
                for v in value:
                    _check_filter_value(name, kind, op, v)
                conditions.append((name, op, list(value)))
            else:
                _check_filter_value(name, kind, op, value)
                conditions.append((name, op, value))
    return conditions


def _check_filter_value(name: str, kind: FieldKind, op: str, value: object) -> None:
    if kind == "string" and not isinstance(value, str):
        raise InvalidFilter(f"{name} {op} needs a string, got {value!r}")
    if kind == "string" and "\x00" in value:  # type: ignore[operator]
        raise InvalidFilter(f"{name} {op}: NUL in string")
    if kind == "number" and not _is_number(value):
        raise InvalidFilter(f"{name} {op} needs a finite number, got {value!r}")
