"""Feature store: where feature records live (a local folder or an S3/R2 bucket).

The factory :func:`open_store` lives here, above the backends: ``base`` knows none of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from contract.store.base import (
    ConfigError,
    FeatureStore,
    StoreAccessDenied,
    StoreBucketMissing,
    StoreError,
    StoreFolderMissing,
    StoreUnavailable,
    parse_s3_url,
    validate_key,
)

if TYPE_CHECKING:
    from contract.settings import Settings

__all__ = [
    "PROBE_PREFIX",
    "ConfigError",
    "FeatureStore",
    "StoreAccessDenied",
    "StoreBucketMissing",
    "StoreError",
    "StoreFolderMissing",
    "StoreUnavailable",
    "check_writable",
    "open_store",
    "parse_s3_url",
    "validate_key",
]


# Where check_writable writes and deletes its probe: no reader lists this prefix.
PROBE_PREFIX = "probes/"


def check_writable(store: FeatureStore) -> None:
    """Write and delete a probe object: a worker's store must take records. A read-only
    folder or read-only credentials (as the API may be given) otherwise let a worker
    start and fail every job for good (``store_error``, ``store_access_denied``)."""
    import os
    import uuid

    key = f"{PROBE_PREFIX}write-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    store.put(key, b"")
    store.delete(key)


def open_store(url: str, settings: Settings | None = None, *,
               create: bool = True) -> FeatureStore:
    """A plain path (or ``file://path``) → :class:`LocalStore`; ``s3://bucket/prefix`` →
    :class:`S3Store` configured from the standard AWS environment variables. A malformed
    or unknown URL raises :class:`ConfigError`. ``create=False`` for a reader: a folder
    that does not exist raises :class:`StoreFolderMissing` rather than being created (a
    bucket is never created; a missing one is :class:`StoreBucketMissing` on first use)."""
    del settings  # reserved: both backends read everything they need from url/env today
    if url.startswith("s3://"):
        from contract.store.s3 import S3Store

        bucket, prefix = parse_s3_url(url)
        return S3Store(bucket, prefix)
    if "://" in url and not url.startswith("file://"):
        raise ConfigError(f"unsupported store URL {url!r} (PREVIEWVEC_STORE): expected a "
                          "folder, file://FOLDER or s3://BUCKET/PREFIX")
    from contract.store.local import LocalStore

    folder = url.removeprefix("file://")
    if not folder.strip():  # "" or "file://" would silently be the current directory
        raise ConfigError(f"store URL {url!r} (PREVIEWVEC_STORE) names no folder: expected "
                          "a folder, file://FOLDER or s3://BUCKET/PREFIX")
    return LocalStore(folder, create=create)
