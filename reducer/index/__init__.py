"""Vector index: nearest-neighbour search over feature vectors (LanceDB or Vectorize).

The factory :func:`open_index` lives here, above the backends: ``base`` knows none of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from contract.errors import ConfigError
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
)

if TYPE_CHECKING:
    from contract.settings import Settings

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


def open_index(url: str, settings: Settings, dim: int, *, create: bool = True) -> VectorIndex:
    """A folder path → :class:`EmbeddedIndex`; ``vectorize://NAME`` → :class:`VectorizeIndex`.

    A malformed URL or missing Vectorize credentials raise :class:`ConfigError`;
    ``create=False`` (queries): an embedded index not made yet is ``NothingStored``.
    """
    if url.startswith("vectorize://"):
        from reducer.index.vectorize import VectorizeIndex

        name = url[len("vectorize://") :].strip("/")
        try:
            return VectorizeIndex(
                name,
                account_id=settings.vectorize_account_id,
                api_token=settings.vectorize_api_token,
                dim=dim,
                base_url=settings.vectorize_base_url,
            )
        except ValueError as exc:  # a bad name, no account id or token
            raise ConfigError(f"index {url!r} (PREVIEWVEC_INDEX): {exc}") from None
    if "://" in url and not url.startswith("file://"):
        raise ConfigError(f"unsupported index URL {url!r} (PREVIEWVEC_INDEX): expected a "
                          "folder, file://FOLDER or vectorize://NAME")
    from reducer.index.embedded import EmbeddedIndex

    folder = url.removeprefix("file://")
    if not folder.strip():  # "" or "file://" would silently be the current directory
        raise ConfigError(f"index URL {url!r} (PREVIEWVEC_INDEX) names no folder: expected "
                          "a folder, file://FOLDER or vectorize://NAME")
    return EmbeddedIndex(folder, dim, create=create)
