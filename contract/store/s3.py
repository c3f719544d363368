"""A feature store in an S3-compatible bucket (AWS S3, Cloudflare R2, MinIO, moto).

Configuration comes from the standard AWS environment, which boto3 reads itself:
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``; the region is ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, default
``auto`` (what R2 expects). Credentials are never logged or put in error messages.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from contract.store.base import (
    ConfigError,
    StoreAccessDenied,
    StoreBucketMissing,
    StoreError,
    StoreUnavailable,
    validate_key,
)

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceUnavailable",
        "InternalError",
        "BandwidthLimitExceeded",
    }
)
# Credentials missing, unknown, wrong or not allowed: a person has to fix the configuration.
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AllAccessDisabled",
        "AccountProblem",
        "403",
    }
)
_CREDENTIALS_HINT = "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"


def _region() -> str:
    # botocore itself only reads AWS_DEFAULT_REGION; R2 wants "auto".
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "auto"


class S3Store:
    """Keys live under ``s3://{bucket}/{prefix}/``; one thread-safe boto3 client per store."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        max_retries: int = 5,
        connect_timeout: float = 5,
        read_timeout: float = 30,
        max_pool_connections: int = 32,
        page_size: int = 1000,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.page_size = page_size
        config = Config(
            # R2 rejects boto3 >= 1.36's default CRC checksums; only send them when an
            # operation requires one.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # botocore's legacy key: retries after the first attempt (so 6 tries in all).
            retries={"max_attempts": max_retries, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
        )
        # A private session: boto3's default session is shared module state and not
        # thread-safe to create clients from; the client itself is thread-safe.
        session = boto3.session.Session()
        try:
            self._client = session.client("s3", region_name=_region(), config=config)
        except ValueError as exc:  # e.g. AWS_ENDPOINT_URL_S3 is not a URL
            raise ConfigError(f"cannot configure the S3 client: {exc}") from None

    def __repr__(self) -> str:
        return f"S3Store(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def _object_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _errors(self, op: str, key: str) -> Iterator[None]:
        """Map botocore failures to FileNotFoundError / StoreUnavailable / StoreError."""
        where = f"s3 {op} {self.bucket}/{self._display(key)}"
        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in _NOT_FOUND_CODES or (status == 404 and code != "NoSuchBucket"):
                raise FileNotFoundError(f"no such key: {key}") from None
            message = f"{where}: {code or 'error'} (HTTP {status or '?'})"
            if code == "NoSuchBucket":
                raise StoreBucketMissing(f"{message}: bucket {self.bucket!r} does not exist "
                                         "(PREVIEWVEC_STORE)") from exc
            if code in _DENIED_CODES or status == 403:
                raise StoreAccessDenied(f"{message}: the credentials ({_CREDENTIALS_HINT}) "
                                        "are unknown, wrong or not allowed") from exc
            if status >= 500 or status == 429 or code in _TRANSIENT_CODES:
                raise StoreUnavailable(message) from exc
            raise StoreError(message) from exc
        except (BotoConnectionError, HTTPClientError, IncompleteReadError) as exc:
            raise StoreUnavailable(f"{where}: {type(exc).__name__}: {exc}") from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise StoreAccessDenied(f"{where}: {exc} (set {_CREDENTIALS_HINT})") from exc
        except BotoCoreError as exc:  # bad parameters, …
            raise StoreError(f"{where}: {type(exc).__name__}: {exc}") from exc

    def _display(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def check(self) -> None:
        """HEAD the bucket: raise the typed error (missing bucket, credentials, endpoint
        down) now rather than at the first record; HEAD of a missing object cannot tell a
        missing bucket from a missing key."""
        with self._errors("head-bucket", ""):
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                # HEAD responses carry no error body: only the status says what went wrong.
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
                if status == 404:
                    exc.response.setdefault("Error", {})["Code"] = "NoSuchBucket"
                raise

    def exists(self, key: str) -> bool:
        """HEAD the object."""
        object_key = self._object_key(key)
        try:
            with self._errors("head", key):
                self._client.head_object(Bucket=self.bucket, Key=object_key)
        except FileNotFoundError:
            return False
        return True

    def get(self, key: str) -> bytes:
        """GET the object's bytes; ``FileNotFoundError`` if missing."""
        object_key = self._object_key(key)
        with self._errors("get", key):
            response = self._client.get_object(Bucket=self.bucket, Key=object_key)
            # Reading the body can fail mid-stream too; same mapping applies.
            return response["Body"].read()

    def put(self, key: str, data: bytes) -> None:
        """PUT the object; S3 PUTs are atomic (readers see the old or the new object)."""
        object_key = self._object_key(key)
        extra: dict[str, Any] = {}
        if key.endswith(".json"):
            extra["ContentType"] = "application/json"
        with self._errors("put", key):
            self._client.put_object(Bucket=self.bucket, Key=object_key, Body=data, **extra)

    def delete(self, key: str) -> None:
        """DELETE the object (S3 deletes of missing keys succeed)."""
        object_key = self._object_key(key)
        with self._errors("delete", key):
            self._client.delete_object(Bucket=self.bucket, Key=object_key)

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        """Stream keys under ``prefix`` with the list_objects_v2 paginator, page by page."""
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket,
            Prefix=full_prefix,
            PaginationConfig={"PageSize": self.page_size},
        )
        yield from self._stream(iter(pages), prefix, strip)

    def _stream(self, iterator: Iterator[dict[str, Any]], prefix: str, strip: int) -> Iterator[str]:
        while True:
            # Each page is fetched lazily inside next(); map its errors, not the consumer's.
            with self._errors("list", prefix or "/"):
                try:
                    page = next(iterator)
                except StopIteration:
                    return
            if page.get("IsTruncated") and not page.get("NextContinuationToken"):
                # botocore's paginator ends quietly there: a listing that says "more" but
                # gives no way on would pass for the whole catalog (a reindex, an export
                # missing records). A broken S3-compatible server; say so, retryably.
                raise StoreUnavailable(f"S3 listing of {prefix or '/'} says it is truncated "
                                       "but gives no continuation token")
            for item in page.get("Contents", ()):
                key = item["Key"][strip:]
                # Objects no store key can name (a console "folder" marker ending in "/",
                # a hidden file, a "//") are not ours, and get() would refuse them: pass
                # over them as LocalStore passes over folders and hidden files.
                try:
                    validate_key(key)
                except ValueError:
                    continue
                yield key
