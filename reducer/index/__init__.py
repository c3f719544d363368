"""Vector index: nearest-neighbour search over feature vectors (LanceDB or Vectorize)."""

from reducer.index.base import (
    FILTER_FIELDS,
    IndexItem,
    IndexRejected,
    IndexUnavailable,
    InvalidFilter,
    InvalidIndexItem,
    Match,
    VectorIndex,
    VectorIndexError,
    open_index,
)

__all__ = [
    "FILTER_FIELDS",
    "IndexItem",
    "IndexRejected",
    "IndexUnavailable",
    "InvalidFilter",
    "InvalidIndexItem",
    "Match",
    "VectorIndex",
    "VectorIndexError",
    "open_index",
]
