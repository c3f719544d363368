"""The feature store contract: a flat key → bytes namespace (a folder or an S3/R2 prefix)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from contract.errors import (
    ConfigError,
    StoreAccessDenied,
    StoreBucketMissing,
    StoreError,
    StoreFolderMissing,
    StoreUnavailable,
)

if TYPE_CHECKING:
    pass

# The error families live in contract.errors (the CLI maps them to exit statuses); they
# are re-exported here for the store's users.
__all__ = ["ConfigError", "FeatureStore", "StoreAccessDenied", "StoreBucketMissing",
           "StoreError", "StoreFolderMissing", "StoreUnavailable", "parse_s3_url", "validate_key"]


@runtime_checkable
class FeatureStore(Protocol):
    """Keys are relative ``/``-separated paths such as ``features/pv2/ab/id.json``."""

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes under ``key``; ``FileNotFoundError`` if there are none."""
        ...

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` atomically (readers see all or nothing); overwriting is allowed."""
        ...

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        """Every key starting with ``prefix``, in ascending byte order, streamed page by page."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error."""
        ...


def validate_key(key: str) -> str:
    """Reject keys that could escape the store root or collide with temp files.

    Raises ``ValueError``: a bad key is a programming error, not a backend failure.
    """
    if not isinstance(key, str) or not key:
        raise ValueError("store key must be a non-empty string")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"invalid store key {key!r}")
    for part in key.split("/"):
        # "." prefixes are reserved for LocalStore's temp files; ".."/"" would escape or alias.
        if not part or part.startswith("."):
            raise ValueError(f"invalid store key {key!r}")
    return key


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ``("bucket", "some/prefix")`` (prefix may be empty).

    Raises :class:`ConfigError` (a ValueError) for anything else.
    """
    if not url.startswith("s3://"):
        raise ConfigError(f"not an s3:// url: {url!r}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ConfigError(f"store URL {url!r} names no bucket (expected s3://BUCKET/PREFIX, "
                          "PREVIEWVEC_STORE)")
    return bucket, prefix.strip("/")
