"""Feature store: where feature records live (a local folder or an S3/R2 bucket)."""

from contract.store.base import (
    ConfigError,
    FeatureStore,
    StoreAccessDenied,
    StoreBucketMissing,
    StoreError,
    StoreUnavailable,
    open_store,
    parse_s3_url,
    validate_key,
)

__all__ = [
    "ConfigError",
    "FeatureStore",
    "StoreAccessDenied",
    "StoreBucketMissing",
    "StoreError",
    "StoreUnavailable",
    "open_store",
    "parse_s3_url",
    "validate_key",
]
