"""Feature records: how one clip's features are named and encoded in the feature store.

Pure: no I/O. A record holds the vector, the human descriptors, provenance and timings —
never audio bytes. Records are compact, sorted-key UTF-8 JSON so that the same features
always encode to the same bytes (idempotent overwrites, stable checksums).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import metadata as _metadata
from typing import Any
from urllib.parse import unquote

import numpy as np
import orjson

from contract.errors import PreviewvecError
from contract.layout import FEATURE_VERSION, VECTOR_DIM, is_readable_version, names_hash

MAX_RECORDING_ID_BYTES = 64
# Bytes that may appear verbatim in a key; everything else is percent-encoded so keys are
# safe on every filesystem and in S3/R2 URLs.
_SAFE_KEY_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")

PROVENANCE_KEYS: tuple[str, ...] = (
    "preview_url",
    "audio_sha256",
    "source",
    "source_track_id",
    "source_url",
    "preview_host",
    "match_rule",
    "confidence",
    "run_id",
    "isrc",
    "artist",
    "title",
    "release_id",
    "decoder",
    "librosa_version",
    "numpy_version",
    "previewvec_version",
    "created_at",
)


class CorruptRecord(PreviewvecError):
    """Stored bytes are not a well-formed feature record (truncated, wrong types, NaN…)."""

    code = "corrupt_record"


class IncompatibleRecord(PreviewvecError):
    """A well-formed record whose layout (version, names hash, dimension) is not ours."""

    code = "incompatible_record"


def _check_recording_id(recording_id: str) -> None:
    # Ids are validated upstream; re-checking here keeps a bad id from ever becoming a key.
    if not isinstance(recording_id, str) or not recording_id:
        raise ValueError("recording_id must be a non-empty string")
    if len(recording_id.encode("utf-8")) > MAX_RECORDING_ID_BYTES:
        raise ValueError(f"recording_id longer than {MAX_RECORDING_ID_BYTES} bytes")
    if "/" in recording_id:
        raise ValueError("recording_id must not contain '/'")


def _escape_key_part(text: str) -> str:
    return "".join(chr(b) if b in _SAFE_KEY_BYTES else f"%{b:02X}" for b in text.encode("utf-8"))


def record_key(feature_version: str, recording_id: str) -> str:
    """``features/{version}/{shard}/{id}.json``; shard = first 2 hex of sha1(id).

    The shard spreads keys over 256 prefixes (S3/R2 partition by prefix). The id is
    percent-encoded outside ``[A-Za-z0-9._-]``, so the mapping is injective and key-safe.
    """
    _check_recording_id(recording_id)
    if not feature_version or "/" in feature_version:
        raise ValueError("feature_version must be a non-empty string without '/'")
    shard = hashlib.sha1(recording_id.encode("utf-8")).hexdigest()[:2]
    version, name = _escape_key_part(feature_version), _escape_key_part(recording_id)
    return f"features/{version}/{shard}/{name}.json"


def recording_id_of_key(key: str) -> str:
    """The recording id a :func:`record_key` was made from (its exact inverse)."""
    name = key.rsplit("/", 1)[-1]
    if not key.startswith("features/") or not name.endswith(".json") or len(name) == 5:
        raise ValueError(f"not a record key: {key!r}")
    recording_id = unquote(name[: -len(".json")], errors="strict")
    _check_recording_id(recording_id)
    return recording_id


@cache  # a process's installed versions do not change; the lookup scans sys.path
def _version(dist: str) -> str:
    try:
        return _metadata.version(dist)
    except _metadata.PackageNotFoundError:
        return "unknown"


@cache
def decoder_version() -> str:
    """E.g. ``"pyav 18.1.0 / ffmpeg 8.1.2"``; imports PyAV lazily (records stay pure)."""
    try:
        import av  # lazy: only where decoding happens anyway
    except ImportError:  # pragma: no cover - av is a hard dependency of workers
        return "unknown"
    ffmpeg = getattr(av, "ffmpeg_version_info", None) or "unknown"
    return f"pyav {av.__version__} / ffmpeg {ffmpeg}"


def utc_now_iso() -> str:
    """Current UTC time as ISO-8601 with a ``Z`` suffix, second precision."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def make_provenance(
    *,
    preview_url: str,
    audio_sha256: str,
    source: str,
    run_id: str,
    isrc: str | None = None,
    artist: str | None = None,
    title: str | None = None,
    release_id: str | None = None,
    decoder: str | None = None,
    created_at: str | None = None,
    source_track_id: str | None = None,
    source_url: str | None = None,
    preview_host: str | None = None,
    match_rule: str | None = None,
    confidence: float | None = None,
) -> dict[str, Any]:
    """Provenance with the software versions filled in from the running environment.

    Attribution (``source_track_id``, ``source_url``, ``preview_host``), match evidence
    (``match_rule``, ``confidence``) and the MusicBrainz release the job was resolved
    from (``release_id``: split train and test sets by album) are absent from records
    written before they existed; readers treat a missing key as ``None``."""
    return {
        "preview_url": preview_url,
        "audio_sha256": audio_sha256,
        "source": source,
        "source_track_id": source_track_id,
        "source_url": source_url,
        "preview_host": preview_host,
        "match_rule": match_rule,
        "confidence": confidence,
        "run_id": run_id,
        "isrc": isrc,
        "artist": artist,
        "title": title,
        "release_id": release_id,
        "decoder": decoder if decoder is not None else decoder_version(),
        "librosa_version": _version("librosa"),
        "numpy_version": np.__version__,
        "previewvec_version": _version("previewvec"),
        "created_at": created_at if created_at is not None else utc_now_iso(),
    }


@dataclass
class FeatureRecord:
    """One clip's stored features. ``vector`` follows ``layout.feature_names()``; a
    float32 array encodes to the shortest decimals that round-trip it (decoded: floats)."""

    recording_id: str
    vector: list[float] | np.ndarray
    descriptors: dict[str, Any]
    provenance: dict[str, Any]
    timings_s: dict[str, float] = field(default_factory=dict)
    feature_version: str = FEATURE_VERSION
    names_hash: str = field(default_factory=names_hash)
    # The value-changing settings the vector was computed with (contract/versions.py);
    # None in records written before versions named computations (then: the layout's
    # base computation).
    computation: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        """The store key of this record."""
        return record_key(self.feature_version, self.recording_id)

    def vector_array(self) -> np.ndarray:
        """The vector as float32, the precision features are computed and indexed in."""
        return np.asarray(self.vector, dtype=np.float32)


def _vector_to_json(vector: Sequence[float] | np.ndarray) -> list[float]:
    arr = np.asarray(vector)
    if arr.ndim != 1 or arr.dtype.kind not in "fiu":
        raise ValueError("vector must be a 1-D numeric sequence")
    if not np.all(np.isfinite(arr)):
        raise ValueError("vector has non-finite values")
    if arr.dtype == np.float32:
        # Shortest decimal that round-trips the float32 exactly: ~half the bytes of
        # float64 noise digits, and decoding then casting to float32 is lossless.
        return [float(str(x)) for x in arr]
    return [float(x) for x in arr.astype(np.float64)]


def _plain(value: Any) -> Any:
    """Numpy scalars → Python scalars so json can encode them."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def encode_record(rec: FeatureRecord) -> bytes:
    """Compact, sorted-key UTF-8 JSON. Raises ``ValueError`` on non-finite numbers."""
    _check_recording_id(rec.recording_id)
    doc = {
        "recording_id": rec.recording_id,
        "feature_version": rec.feature_version,
        "names_hash": rec.names_hash,
        "vector": _vector_to_json(rec.vector),
        "descriptors": _plain(rec.descriptors),
        "provenance": _plain(rec.provenance),
        "timings_s": _plain(rec.timings_s),
    }
    if rec.computation is not None:
        doc["computation"] = _plain(rec.computation)
    # allow_nan=False: NaN/Infinity are not JSON, and a NaN feature is a bug upstream.
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _require(doc: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in doc:
        raise CorruptRecord(f"record is missing {name!r}")
    value = doc[name]
    if not isinstance(value, kind):
        raise CorruptRecord(f"record field {name!r} has the wrong type")
    return value


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _checked_vector(vector: list[Any]) -> list[float]:
    """The stored vector as floats: our dimension, numbers only, all finite."""
    if len(vector) != VECTOR_DIM:
        raise IncompatibleRecord(f"vector has {len(vector)} dimensions, expected {VECTOR_DIM}")
    # Exact types: bool is an int subclass, and a true/false in the vector is corruption.
    kinds = set(map(type, vector))
    if not kinds <= {float, int}:
        raise CorruptRecord("vector holds non-numbers")
    floats = vector if kinds == {float} else [float(x) for x in vector]
    try:
        values = np.array(floats, dtype=np.float64)
    except OverflowError:  # an integer beyond float64
        raise CorruptRecord("vector holds non-finite numbers") from None
    if not np.isfinite(values).all():
        raise CorruptRecord("vector holds non-finite numbers")
    # Readers take the vector as float32 (vector_array, export, the index): a number
    # beyond its range would turn into inf there.
    if (np.abs(values) > _FLOAT32_MAX).any():
        raise CorruptRecord("vector holds numbers beyond float32's range")
    return floats


def _non_finite_constant(data: bytes) -> str | None:
    """The NaN/Infinity literal that made orjson refuse ``data``, when that is the only
    fault: the standard parser accepts those literals (its extension of JSON). Called
    only on the error path, so valid records pay nothing for it."""
    seen: list[str] = []

    def constant(name: str) -> float:
        seen.append(name)
        return 0.0

    try:
        json.loads(data, parse_constant=constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return seen[0] if seen else None


def decode_record(data: bytes, expect_version: str | None = None) -> FeatureRecord:
    """Parse and validate stored bytes (of ``expect_version``, when given).

    Raises
    ------
    CorruptRecord
        Not UTF-8 JSON, missing/mistyped fields, non-finite numbers.
    IncompatibleRecord
        Another layout (names hash, dimension), or a version that is neither a
        computation of this code's layout (bare or ``-<hash>``) nor of an earlier one
        (``EARLIER_VERSIONS``: read as stored, under their own version), or another
        version than ``expect_version``.
    """
    try:
        # orjson: ~5x the standard parser on 530 floats (export and reindex read every
        # record); like allow_nan=False it refuses NaN and Infinity, and invalid UTF-8.
        doc = orjson.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        if "infinity" in str(exc):  # 1e999: a number float64 cannot hold
            raise CorruptRecord(f"record holds non-finite numbers: {exc}") from None
        constant = _non_finite_constant(data)
        if constant is not None:
            raise CorruptRecord(f"record holds a non-finite number ({constant}), which "
                                "JSON cannot hold") from None
        raise CorruptRecord(f"record is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CorruptRecord("record is not a JSON object")
    recording_id = _require(doc, "recording_id", str)
    try:
        _check_recording_id(recording_id)
    except ValueError as exc:
        raise CorruptRecord(f"bad recording_id: {exc}") from None
    version = _require(doc, "feature_version", str)
    hash_ = _require(doc, "names_hash", str)
    vector = _require(doc, "vector", list)
    descriptors = _require(doc, "descriptors", dict)
    provenance = _require(doc, "provenance", dict)
    timings = _require(doc, "timings_s", dict)
    computation = doc.get("computation")
    if computation is not None and not isinstance(computation, dict):
        raise CorruptRecord("record field 'computation' has the wrong type")
    # Any computation of this layout decodes (pv8, pv8-<hash>, and earlier ones): which
    # version a reader wants is the reader's choice (``expect_version``).
    if not is_readable_version(version) or hash_ != names_hash():
        raise IncompatibleRecord(
            f"record layout {version}/{hash_[:12]} is not {FEATURE_VERSION}/{names_hash()[:12]}"
        )
    if expect_version is not None and version != expect_version:
        raise IncompatibleRecord(f"record of feature version {version}, not {expect_version}")
    floats = _checked_vector(vector)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in timings.values()):
        raise CorruptRecord("timings_s holds non-numbers")
    return FeatureRecord(
        recording_id=recording_id,
        feature_version=version,
        names_hash=hash_,
        vector=floats,
        descriptors=descriptors,
        provenance=provenance,
        timings_s={str(k): float(v) for k, v in timings.items()},
        computation=computation,
    )


def decode_stored(key: str, data: bytes, expect_version: str | None = None) -> FeatureRecord:
    """:func:`decode_record` of the bytes read from ``key``, which must be the key of the
    record's own recording: a record under another recording's key (a bad copy, a
    hand-made store) would otherwise be read twice, once under each key.

    Raises :class:`CorruptRecord` or :class:`IncompatibleRecord`, their messages
    starting ``stored record <key>:`` so that a reader knows which object to look at.
    """
    try:
        record = decode_record(data, expect_version)
    except (CorruptRecord, IncompatibleRecord) as exc:
        raise type(exc)(f"stored record {key}: {exc.message}") from None
    try:
        keyed = recording_id_of_key(key)
    except ValueError:
        keyed = None
    if keyed != record.recording_id:
        raise CorruptRecord(f"stored record {key}: holds the record of "
                            f"{record.recording_id!r}, not of the recording its key names")
    return record
