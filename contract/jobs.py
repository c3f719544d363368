"""The job contract shared by producers and workers (pure: no I/O).

A job is one JSON object naming a recording and the preview clip to analyse::

    {"recording_id": "b1a9c0e9-…", "preview_url": "https://audio-ssl.itunes.apple.com/…",
     "isrc": "USRC17607839", "artist": "…", "title": "…", "duration_ms": 215000,
     "release_id": "…", "source": "itunes", "run_id": "2024-06-01.a", "force": false}

:class:`Job` is the validated form: constructing one (directly or via :meth:`Job.from_dict`
/ :meth:`Job.from_json`) validates and normalises every field, so a ``Job`` in hand is
always valid. Failures are :class:`InvalidJob` (code ``invalid_job``) naming the field.

The Python validation is the authority; :data:`JOB_SCHEMA` documents the same rules as
JSON Schema for other producers. JSON Schema cannot express three rules, where the code is
stricter than the schema: ``recording_id`` is limited to 64 *bytes* of UTF-8 (the schema
says 64 characters), strings must be valid Unicode (no lone surrogates), and a URL port
must be at most 65535.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from contract.errors import PreviewvecError
from contract.sources import MATCH_RULES

RECORDING_ID_MAX_BYTES = 64
PREVIEW_URL_MAX_CHARS = 2048
TEXT_MAX_CHARS = 512
ISRC_INPUT_MAX_CHARS = 64  # an ISRC typed with spaces and hyphens; longer is not one
RELEASE_ID_MAX_CHARS = 64
SOURCE_MAX_CHARS = 32
RUN_ID_MAX_CHARS = 64
SOURCE_TRACK_ID_MAX_CHARS = 64
DURATION_MS_MAX = 2**31 - 1  # ~24 days: anything longer is a producer bug, not a recording
VECTOR_ID_MAX_BYTES = 64  # Cloudflare Vectorize's id limit
MAX_CATALOG_LINE_CHARS = 65_536  # a valid job is < 20 KB even fully \u-escaped

# Patterns shared by the code (with re.fullmatch) and JOB_SCHEMA (ECMA-262 compatible).
# They end in "$(?!\n)": Python's "$" (used by jsonschema) also matches before a final
# newline, ECMA's does not; the lookahead makes both engines mean "end of string".
_CONTROL = r"\x00-\x1f\x7f-\x9f"  # Unicode category Cc: C0, DEL, C1
_END = r"$(?!\n)"
RECORDING_ID_PATTERN = rf"^[^{_CONTROL}/]+{_END}"
ISRC_PATTERN = rf"^[A-Z]{{2}}[A-Z0-9]{{3}}[0-9]{{7}}{_END}"  # after normalisation
ISRC_INPUT_PATTERN = rf"^-*(?:[A-Za-z]-*){{2}}(?:[A-Za-z0-9]-*){{3}}(?:[0-9]-*){{7}}{_END}"
TOKEN_PATTERN = rf"^[A-Za-z0-9._-]+{_END}"  # source, run_id
PREVIEW_URL_PATTERN = (
    r"^[Hh][Tt][Tt][Pp][Ss]?://"
    rf"(?:\[[0-9A-Fa-f:.]+\]|[^{_CONTROL} /?#@\\:\[\]]+)"  # host: no userinfo ("@")
    r"(?::[0-9]{0,5})?"
    rf"(?:[/?#][^{_CONTROL} \\]*)?{_END}"
)
# Whitespace, control characters and backslashes are refused anywhere in a URL: URL parsers
# disagree about them (WHATWG reads "\" as "/"), and such disagreements are how SSRF
# filters get bypassed.
_URL_FORBIDDEN = re.compile(rf"[{_CONTROL} \\]")
_RESERVED_IDS = frozenset({".", ".."})  # would be path traversal in a folder store

_FIELD_ORDER = (
    "recording_id",
    "preview_url",
    "isrc",
    "artist",
    "title",
    "duration_ms",
    "release_id",
    "source",
    "source_track_id",
    "source_url",
    "match_rule",
    "confidence",
    "run_id",
    "force",
)
_REQUIRED = ("recording_id", "preview_url")


class InvalidJob(PreviewvecError):
    """A job (or catalog line) that breaks the contract; ``field`` names the culprit."""

    code = "invalid_job"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message if field is None else f"{field}: {message}")
        self.field = field

    def to_dict(self) -> dict[str, str]:
        out = super().to_dict()
        if self.field is not None:
            out["field"] = self.field
        return out


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _string(name: str, value: object, *, min_chars: int = 0, max_chars: int) -> str:
    if not isinstance(value, str):
        raise InvalidJob(f"must be a string, got {type(value).__name__}", name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidJob("is not valid Unicode (lone surrogate)", name) from None
    if len(value) < min_chars:
        raise InvalidJob("must not be empty", name)
    if len(value) > max_chars:
        raise InvalidJob(f"must be at most {max_chars} characters, got {len(value)}", name)
    return value


def _recording_id(value: object) -> str:
    text = _string("recording_id", value, min_chars=1, max_chars=RECORDING_ID_MAX_BYTES)
    size = len(text.encode("utf-8"))
    if size > RECORDING_ID_MAX_BYTES:
        raise InvalidJob(
            f"must be at most {RECORDING_ID_MAX_BYTES} bytes of UTF-8, got {size}",
            "recording_id",
        )
    if not re.fullmatch(RECORDING_ID_PATTERN, text):
        raise InvalidJob(
            f"must not contain control characters or '/', got {_short(text)}", "recording_id"
        )
    if text in _RESERVED_IDS:
        raise InvalidJob(f"{text!r} is reserved (it is a path segment)", "recording_id")
    return text


def check_preview_url(value: object) -> str:
    """``value`` if it is a valid ``preview_url``; else raises :class:`InvalidJob`."""
    return _url("preview_url", value)


def _url(name: str, value: object) -> str:
    url = _string(name, value, min_chars=1, max_chars=PREVIEW_URL_MAX_CHARS)
    if _URL_FORBIDDEN.search(url):
        raise InvalidJob(
            "must not contain whitespace, control characters or backslashes", name
        )
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port >= 0  # .port raises on junk / > 65535
    except ValueError as exc:
        raise InvalidJob(f"is not a valid URL ({exc})", name) from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidJob(
            f"scheme must be http or https, got {_short(parts.scheme or url)}", name
        )
    if "@" in parts.netloc:
        raise InvalidJob("must not contain credentials (user@host)", name)
    if not parts.hostname or not port_ok:
        raise InvalidJob(f"must have a host, got {_short(url)}", name)
    if not re.fullmatch(PREVIEW_URL_PATTERN, url):  # keeps the code as strict as the schema
        raise InvalidJob(f"is not a valid http(s) URL: {_short(url)}", name)
    return url


def normalize_isrc(value: str) -> str:
    """Upper-case and strip hyphens (``us-rc1-76-07839`` → ``USRC17607839``); unvalidated."""
    return value.replace("-", "").upper()


def parse_isrc(value: object) -> str | None:
    """The ISRC a user typed, normalised (`` us-rc1-76-07839 `` → ``USRC17607839``), or
    None when it is not one. The one check of ISRC *inputs* (CLI, API); a job's own
    ``isrc`` field is stricter (no surrounding spaces), as JOB_SCHEMA says."""
    # ASCII check first: str.upper() maps e.g. "ı" to "I", which would smuggle non-ASCII in.
    if not isinstance(value, str) or len(value) > ISRC_INPUT_MAX_CHARS or not value.isascii():
        return None
    isrc = normalize_isrc(value.strip())
    return isrc if re.fullmatch(ISRC_PATTERN, isrc) else None


def _isrc(value: object) -> str:
    raw = _string("isrc", value, max_chars=TEXT_MAX_CHARS)
    # ASCII check first: str.upper() maps e.g. "ı" to "I", which would smuggle non-ASCII in.
    isrc = normalize_isrc(raw)
    if not raw.isascii() or not re.fullmatch(ISRC_PATTERN, isrc):
        raise InvalidJob(f"must be an ISO 3901 ISRC like USRC17607839, got {_short(raw)}", "isrc")
    return isrc


def _token(name: str, value: object, max_chars: int) -> str:
    text = _string(name, value, min_chars=1, max_chars=max_chars)
    if not re.fullmatch(TOKEN_PATTERN, text):
        raise InvalidJob(f"may only contain A-Z a-z 0-9 . _ -, got {_short(text)}", name)
    return text


def _confidence(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidJob(f"must be a number, got {type(value).__name__}", "confidence")
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise InvalidJob(f"must be between 0 and 1, got {value!r}", "confidence")
    return float(value)


def _duration_ms(value: object) -> int:
    # JSON Schema's "integer" includes 1000.0; accept it and normalise to int.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidJob(f"must be an integer, got {type(value).__name__}", "duration_ms")
    if isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise InvalidJob(f"must be an integer, got {value!r}", "duration_ms")
        value = int(value)
    if not 1 <= value <= DURATION_MS_MAX:
        raise InvalidJob(f"must be between 1 and {DURATION_MS_MAX}, got {value}", "duration_ms")
    return value


@dataclass(frozen=True)
class Job:
    """One validated job. Construction validates and normalises (raises :class:`InvalidJob`)."""

    recording_id: str
    preview_url: str
    isrc: str | None = None
    artist: str | None = None
    title: str | None = None
    duration_ms: int | None = None
    release_id: str | None = None
    source: str | None = None
    # Attribution and evidence (optional: older jobs lack them): the source's own track
    # id, a link back to the track on the store, which rule matched it
    # (contract.sources.MATCH_RULES) and how confidently (0..1).
    source_track_id: str | None = None
    source_url: str | None = None
    match_rule: str | None = None
    confidence: float | None = None
    run_id: str | None = None
    force: bool = False

    def __post_init__(self) -> None:
        checked: dict[str, Any] = {
            "recording_id": _recording_id(self.recording_id),
            "preview_url": check_preview_url(self.preview_url),
        }
        if self.isrc is not None:
            checked["isrc"] = _isrc(self.isrc)
        for name in ("artist", "title"):
            if getattr(self, name) is not None:
                _string(name, getattr(self, name), max_chars=TEXT_MAX_CHARS)
        if self.duration_ms is not None:
            checked["duration_ms"] = _duration_ms(self.duration_ms)
        if self.release_id is not None:
            _string("release_id", self.release_id, min_chars=1, max_chars=RELEASE_ID_MAX_CHARS)
        if self.source is not None:
            _token("source", self.source, SOURCE_MAX_CHARS)
        checked.update(self._attribution())
        if self.run_id is not None:
            _token("run_id", self.run_id, RUN_ID_MAX_CHARS)
        if not isinstance(self.force, bool):
            raise InvalidJob(f"must be true or false, got {_short(self.force)}", "force")
        for name, value in checked.items():  # frozen: normalised values go in this way
            object.__setattr__(self, name, value)

    def _attribution(self) -> dict[str, Any]:
        """Validated attribution and evidence fields (normalised values to set)."""
        checked: dict[str, Any] = {}
        if self.source_track_id is not None:
            _token("source_track_id", self.source_track_id, SOURCE_TRACK_ID_MAX_CHARS)
        if self.source_url is not None:
            checked["source_url"] = _url("source_url", self.source_url)
        if self.match_rule is not None and self.match_rule not in MATCH_RULES:
            raise InvalidJob(f"must be one of {', '.join(MATCH_RULES)}, got "
                             f"{_short(self.match_rule)}", "match_rule")
        if self.confidence is not None:
            checked["confidence"] = _confidence(self.confidence)
        return checked

    @property
    def preview_host(self) -> str:
        """The host the preview comes from (attribution: which CDN served the audio)."""
        return (urlsplit(self.preview_url).hostname or "").lower()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in schema field order; ``None`` fields are omitted."""
        # Not asdict(): every field is a scalar, and its deep copy dominated publishing.
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}

    @classmethod
    def from_dict(cls, data: object) -> Job:
        """Validate a decoded JSON object. Unknown fields are refused (typo safety);
        ``null`` for an optional field means absent."""
        if not isinstance(data, dict):
            raise InvalidJob(f"a job must be a JSON object, got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in _FIELD_ORDER)
        if unknown:
            raise InvalidJob(
                f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: "
                + ", ".join(_FIELD_ORDER),
                unknown[0],
            )
        for name in _REQUIRED:
            if data.get(name) is None:
                raise InvalidJob("is required", name)
        kwargs = {k: v for k, v in data.items() if v is not None}
        return cls(**kwargs)

    def to_json(self) -> str:
        """Compact single-line JSON (one catalog line)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        """Parse and validate one JSON job; malformed JSON is :class:`InvalidJob` too."""
        return cls.from_dict(_loads(text))


JOB_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Job))
assert JOB_FIELDS == _FIELD_ORDER


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` refusing an object with a repeated key (a ValueError)."""
    # json.loads silently keeps the last duplicate; an ambiguous job is refused instead.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _loads(text: str | bytes) -> object:
    try:
        return json.loads(text, object_pairs_hook=no_duplicate_keys,
                          parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidJob(f"malformed JSON: {exc}") from None


@dataclass(frozen=True)
class CatalogLine:
    """One non-blank, non-comment catalog line: exactly one of ``job`` / ``error`` is set."""

    line_no: int  # 1-based
    job: Job | None = None
    error: InvalidJob | None = None

    @property
    def ok(self) -> bool:
        return self.job is not None


NOT_JSON_LINES = "a catalog is JSON Lines, one job object per line"


def parse_catalog(lines: Iterable[str | bytes | InvalidJob]) -> Iterator[CatalogLine]:
    """Stream a JSON Lines catalog: one :class:`CatalogLine` per job line, lazily.

    Blank lines and lines starting with ``#`` are skipped (line numbers still count them).
    Bad lines (malformed JSON, invalid jobs, over-long lines, bad UTF-8) become error
    items; this never raises for bad input, so one bad line cannot stop a run. A line the
    reader already refused (too long to read) comes as its :class:`InvalidJob`.
    """
    for line_no, raw in enumerate(lines, start=1):
        if isinstance(raw, InvalidJob):
            yield CatalogLine(line_no, error=raw)
            continue
        try:
            line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError as exc:
            yield CatalogLine(line_no, error=InvalidJob(f"line is not UTF-8: {exc}"))
            continue
        if line_no == 1:
            line = line.removeprefix("\ufeff")  # tolerate a BOM from spreadsheet exports
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) > MAX_CATALOG_LINE_CHARS:
            # Checked before parsing: json.loads on huge or deeply nested junk is costly.
            yield CatalogLine(
                line_no,
                error=InvalidJob(f"line longer than {MAX_CATALOG_LINE_CHARS} characters"),
            )
            continue
        if line.startswith("["):
            yield CatalogLine(line_no, error=InvalidJob(
                f"a JSON array, not a job object: {NOT_JSON_LINES}"))
            continue
        try:
            yield CatalogLine(line_no, job=Job.from_json(line))
        except InvalidJob as exc:
            yield CatalogLine(line_no, error=exc)


def failure_ids(data: object) -> tuple[str, str | None]:
    """``(recording id, run id)`` to record an *invalid* job's failure under.

    Whatever the job holds, the recording id is safe to use as a Redis field and in logs:
    its own id with lone surrogates backslash-escaped, cut to
    :data:`RECORDING_ID_MAX_BYTES` bytes of UTF-8 on a character boundary, or ``"?"``
    when absent. The run id is returned only when it is well-formed: a malformed one
    names no run a producer created.
    """
    if not isinstance(data, dict):
        return "?", None
    raw = data.get("recording_id")
    text = "?" if raw is None or raw == "" else str(raw)
    encoded = text.encode("utf-8", "backslashreplace")[:RECORDING_ID_MAX_BYTES]
    recording_id = encoded.decode("utf-8", "ignore") or "?"
    run_id = data.get("run_id")
    if not (isinstance(run_id, str) and len(run_id) <= RUN_ID_MAX_CHARS
            and re.fullmatch(TOKEN_PATTERN, run_id)):
        run_id = None
    return recording_id, run_id


def vector_id(recording_id: str) -> str:
    """The index id for a recording, at most 64 bytes of UTF-8.

    It is the recording id itself whenever that is a valid ``recording_id`` — always, for a
    validated :class:`Job` — so vectors are addressable by recording. Any other non-empty
    string (too long, or holding control characters or "/") maps deterministically to
    ``"sha256~"`` + the first 56 hex digits of the SHA-256 of its UTF-8 (63 bytes). A real
    id of exactly that shape could collide; none does in practice.
    """
    if not isinstance(recording_id, str):
        raise TypeError(f"recording_id must be a str, got {type(recording_id).__name__}")
    if not recording_id:
        raise ValueError("recording_id must not be empty")
    try:
        return _recording_id(recording_id)
    except InvalidJob:
        digest = hashlib.sha256(recording_id.encode("utf-8", "surrogatepass")).hexdigest()
        return "sha256~" + digest[:56]


def _optional(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


JOB_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:previewvec:schema:job:1",
    "title": "previewvec job",
    "description": (
        "One preview clip to analyse. contract.jobs is the authority; it is stricter "
        "than this schema in three ways JSON Schema cannot express: recording_id is at "
        "most 64 bytes of UTF-8 (not characters), strings must not contain lone "
        "surrogates, and a URL port must be at most 65535. null for an optional field "
        "means absent."
    ),
    "type": "object",
    "additionalProperties": False,
    "required": list(_REQUIRED),
    "properties": {
        "recording_id": {
            "description": (
                "MusicBrainz recording id or another stable id; becomes part of storage "
                "keys and vector ids. At most 64 bytes of UTF-8; no control characters or "
                "'/'; not '.' or '..'."
            ),
            "type": "string",
            "minLength": 1,
            "maxLength": RECORDING_ID_MAX_BYTES,
            "pattern": RECORDING_ID_PATTERN,
            "not": {"enum": sorted(_RESERVED_IDS)},
        },
        "preview_url": {
            "description": (
                "http(s) URL of the preview clip, with a host and no credentials; no "
                "whitespace, control characters or backslashes."
            ),
            "type": "string",
            "format": "uri",
            "minLength": 1,
            "maxLength": PREVIEW_URL_MAX_CHARS,
            "pattern": PREVIEW_URL_PATTERN,
        },
        "isrc": _optional(
            {
                "description": (
                    "ISO 3901 ISRC; case-insensitive, hyphens ignored; stored upper-case "
                    "without hyphens (" + ISRC_PATTERN + ")."
                ),
                "type": "string",
                "pattern": ISRC_INPUT_PATTERN,
            }
        ),
        "artist": _optional({"type": "string", "maxLength": TEXT_MAX_CHARS}),
        "title": _optional({"type": "string", "maxLength": TEXT_MAX_CHARS}),
        "duration_ms": _optional({"type": "integer", "minimum": 1, "maximum": DURATION_MS_MAX}),
        "release_id": _optional(
            {"type": "string", "minLength": 1, "maxLength": RELEASE_ID_MAX_CHARS}
        ),
        "source": _optional(
            {
                "description": "Where the preview URL came from, e.g. 'itunes'.",
                "type": "string",
                "minLength": 1,
                "maxLength": SOURCE_MAX_CHARS,
                "pattern": TOKEN_PATTERN,
            }
        ),
        "source_track_id": _optional(
            {
                "description": "The source's own id of the track, e.g. an iTunes trackId.",
                "type": "string",
                "minLength": 1,
                "maxLength": SOURCE_TRACK_ID_MAX_CHARS,
                "pattern": TOKEN_PATTERN,
            }
        ),
        "source_url": _optional(
            {
                "description": "Link back to the track on the source's store (attribution).",
                "type": "string",
                "format": "uri",
                "minLength": 1,
                "maxLength": PREVIEW_URL_MAX_CHARS,
                "pattern": PREVIEW_URL_PATTERN,
            }
        ),
        "match_rule": _optional(
            {
                "description": "Which rule matched the track to the recording.",
                "enum": list(MATCH_RULES),
            }
        ),
        "confidence": _optional(
            {"description": "Match confidence.", "type": "number", "minimum": 0, "maximum": 1}
        ),
        "run_id": _optional(
            {
                "type": "string",
                "minLength": 1,
                "maxLength": RUN_ID_MAX_CHARS,
                "pattern": TOKEN_PATTERN,
            }
        ),
        "force": _optional(
            {
                "description": "Recompute even if a vector exists. Default false.",
                "type": "boolean",
            }
        ),
    },
}
