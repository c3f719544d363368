"""Typed failures with stable codes.

Every failure that can reach a user or a run record is a :class:`PreviewvecError` whose
``code`` is a stable, documented string; messages are for people and may change.
"""

from __future__ import annotations


class PreviewvecError(Exception):
    """Base class: a failure with a stable machine-readable ``code``."""

    code: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class EmptyInput(PreviewvecError):
    """The input had no bytes at all."""

    code = "empty_input"


class Undecodable(PreviewvecError):
    """The bytes are not a container/codec we can decode (or are corrupt)."""

    code = "undecodable"


class NoAudioStream(PreviewvecError):
    """The container decoded but holds no audio stream."""

    code = "no_audio_stream"


class TooShort(PreviewvecError):
    """Less decoded audio than the minimum analysis length."""

    code = "too_short"


class Silent(PreviewvecError):
    """The audio is (digitally) silent or has no usable signal."""

    code = "silent"


class TooLarge(PreviewvecError):
    """The input exceeds a size limit: its bytes, or the samples it would decode to."""

    code = "too_large"


class InvalidSignal(PreviewvecError):
    """Degenerate signal the extractor refuses rather than emit NaN/inf."""

    code = "invalid_signal"


ERROR_CODES: tuple[str, ...] = (
    EmptyInput.code,
    Undecodable.code,
    NoAudioStream.code,
    TooShort.code,
    Silent.code,
    TooLarge.code,
    InvalidSignal.code,
)


# --- operational faults ------------------------------------------------------------------
# Families a user meets in normal operation (bad configuration, a backend that is down or
# refuses us, a run that does not exist). The CLI turns each family into one line on stderr
# and its own exit status (previewvec/cli.py, EXIT_STATUS); workers record their codes.


class ConfigError(PreviewvecError, ValueError):
    """A setting is malformed or names something unusable (an unknown URL scheme, an s3://
    URL without a bucket, a missing required value). A ValueError too, for older callers."""

    code = "bad_config"


class InvalidQuery(PreviewvecError, ValueError):
    """A similarity query is malformed: ``k`` below 1, a query vector of the wrong length,
    non-numeric or not finite. A ValueError too, for older callers."""

    code = "invalid_query"


class InputUnreadable(PreviewvecError):
    """A file the user named cannot be read (or written): missing, a folder, no permission."""

    code = "input_unreadable"


class AlreadyRunning(PreviewvecError):
    """Another process is already doing this (an ``enqueue`` of the same catalog)."""

    code = "already_running"


class NotFound(PreviewvecError):
    """The thing asked for does not exist: an unknown run id, an unstored recording."""

    code = "not_found"


class UnknownRun(NotFound):
    code = "unknown_run"


class NothingStored(NotFound):
    """The feature store or the vector index is empty where the command needs records."""

    code = "nothing_stored"


class StoreError(PreviewvecError):
    """A permanent feature-store failure (access denied, missing bucket, disk error…)."""

    code = "store_error"


class StoreUnavailable(StoreError):
    """A transient backend failure (connection refused, timeout, 5xx, throttling): retry."""

    code = "store_unavailable"


class StoreAccessDenied(StoreError):
    """No credentials, unknown or wrong credentials, or a policy that refuses the request."""

    code = "store_access_denied"


class StoreBucketMissing(StoreError):
    """The bucket the store URL names does not exist."""

    code = "store_bucket_missing"


class StoreFolderMissing(StoreError):
    """A command that only reads the store was pointed at a folder that does not exist
    (a typo would otherwise read as an empty catalog, and leave a new folder behind)."""

    code = "store_folder_missing"


class VectorIndexError(PreviewvecError):
    """Base of vector index failures."""

    code = "index_error"


class IndexUnreadable(VectorIndexError):
    """The embedded index's files cannot be read (overwritten, truncated, missing).

    Its native library may keep worker threads that print a Rust panic when the process
    tears down, so a command ending on this error should end at once after saying so.
    """


class IndexRejected(VectorIndexError):
    """The backend refused the request (4xx other than 429); retrying will not help."""

    code = "index_rejected"


class IndexUnavailable(VectorIndexError):
    """The backend stayed unreachable/overloaded after retries, or a wait timed out."""

    code = "index_unavailable"


class UpstreamError(PreviewvecError):
    """Base of failures of the services jobs are resolved from (MusicBrainz, iTunes)."""

    code = "upstream_error"


# A job whose run state (Redis, also the broker) stayed away through every retry: no
# fault of the job, recorded (when Redis is back) so that the run does not wait for ever.
STATE_UNAVAILABLE = "state_unavailable"

# --- which failures are worth running again ----------------------------------------------
# Failure codes (of recordings in a run) whose cause may be gone on a later try: network
# trouble, overload, a store that was down, a crashed or timed-out worker, a bug since
# fixed. `previewvec retry RUN` re-runs these; the rest (http_404, undecodable,
# invalid_job, …) fail the same way again and are only re-run with `--all`.
TRANSIENT_CODES: frozenset[str] = frozenset({
    "fetch_failed",        # timeouts and connection errors (after the fetch's own retries)
    "http_408",
    "http_425",
    "http_429",
    "timeout",             # the task's time limit
    "worker_crashed",      # the pool child died (signal, OOM) more often than the cap
    "job_lost",            # the broker lost the job's message more often than the cap
    "internal_error",      # an unexpected exception: maybe a bug fixed since
    StoreUnavailable.code,
    STATE_UNAVAILABLE,
    IndexUnavailable.code,
    "upstream_unavailable",
    "rate_limited",
})


def is_transient(code: str) -> bool:
    """Whether a failure with ``code`` may succeed when run again (5xx statuses included)."""
    if code in TRANSIENT_CODES:
        return True
    return code.startswith("http_5") and code[5:].isdigit() and len(code) == 8
