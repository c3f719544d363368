"""The HTTP submission API: submit work, follow runs, read features, find similar tracks.

``previewvec api`` serves :func:`create_app` with uvicorn. Endpoints (all under bearer
auth except ``/healthz`` and the docs):

- ``POST /v1/jobs`` — one of ``{"release": MBID}``, ``{"isrcs": [...]}``, ``{"query":
  LUCENE}``, ``{"new_releases": {"since": DATE, "until": DATE}}``, ``{"jobs": [Job...]}``,
  plus optional ``queue`` and ``force``. Answers 429 (with ``Retry-After``) while the
  target queue holds more than ``settings.queue_high_water`` jobs, else 202 with the run
  id at once; resolution
  and publishing (:func:`producers.submit.submit`, with its backpressure) run in a
  background thread, so upstream rate limits never hold a request.
- ``GET /v1/runs/{run_id}`` — counts, resolution progress, failures (cursor-paginated).
- ``GET /v1/recordings/{recording_id}`` — stored descriptors and provenance.
- ``GET /v1/similar/{recording_id}`` — neighbours from the vector index.
- ``GET /healthz`` — Redis reachable? ``/docs`` — OpenAPI UI.

Robustness rules: a request body is capped at ``settings.api_max_body_bytes`` (413,
checked on ``Content-Length`` and on the bytes actually streamed) and must arrive within
``BODY_READ_TIMEOUT_S`` (408); bad input is 400 (not JSON) or 422 (JSON of the wrong
shape, with field errors), never 500. A backend that is down, refuses or cannot be used
(Redis, the store, the index, their settings) is a 503 with a stable ``code``, logged in
one line. Tokens are compared in constant time, never logged and never echoed.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import queue as queue_mod
import re
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contract.broker import QUEUES
from contract.errors import (
    ConfigError,
    IndexUnavailable,
    InvalidQuery,
    NotFound,
    NothingStored,
    PreviewvecError,
    StoreError,
    VectorIndexError,
)
from contract.jobs import JOB_SCHEMA, InvalidJob, Job, no_duplicate_keys, parse_isrc
from contract.layout import PITCH_CLASSES
from contract.records import CorruptRecord, IncompatibleRecord
from contract.settings import Settings
from contract.state import (
    RedisConnectionError,
    RedisError,
    RedisProtocolError,
    RedisTimeoutError,
    Runs,
    new_run_id,
)
from contract.store import StoreUnavailable
from previewvec.faults import redis_refusal
from producers.submit import (
    default_queue,
    iter_resolutions,
    submit,
)

log = logging.getLogger(__name__)

MAX_ISRCS = 1_000
MAX_JOBS = 10_000
MAX_QUERY_CHARS = 1_000
MAX_ERRORS = 50  # field errors reported per 422
BACKGROUND_WORKERS = 4
# Submissions accepted but not yet resolved, at most: resolution runs at upstream's pace
# (MusicBrainz: one call a second), so without a bound a burst of submissions piles up
# in memory (and is lost when the API stops) while the Celery queue looks empty.
MAX_PENDING_SUBMISSIONS = 100
# Retry-After of a 429 when the target queue is above PREVIEWVEC_QUEUE_HIGH_WATER: about
# how long a few workers take to work a full chunk off.
QUEUE_FULL_RETRY_AFTER_S = 30
# The whole request body must arrive within this (a 1 MB body at a slow 300 kbit/s).
BODY_READ_TIMEOUT_S = 30.0
INPUT_KEYS = ("release", "isrcs", "query", "new_releases", "jobs")
OPTION_KEYS = ("queue", "force")
_MBID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_BEARER = HTTPBearer(auto_error=False, description="a token from PREVIEWVEC_API_TOKENS")


def _safe(text: object) -> str:
    """A string that always encodes as UTF-8 (lone surrogates escaped), for responses."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


class SafeJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: user-supplied text can never make rendering fail."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False,
                          separators=(",", ":")).encode("ascii")


# The code of an error that has no more specific one: every error body carries a stable
# machine-readable ``code`` beside its ``detail``.
STATUS_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 408: "request_timeout",
    409: "conflict", 413: "too_large", 415: "unsupported_media_type",
    422: "invalid_request", 429: "too_many_requests", 500: "internal_error",
    503: "unavailable",
}


def _status_code(status: int) -> str:
    return STATUS_CODES.get(status, f"http_{status}")


def _error(status: int, message: str, headers: dict[str, str] | None = None, *,
           code: str | None = None) -> SafeJSONResponse:
    # A stable machine-readable code (contract/errors.py), else the status's own.
    body = {"detail": _safe(message), "code": code or _status_code(status)}
    return SafeJSONResponse(body, status_code=status, headers=headers)


class InputError(Exception):
    """A request body the API refuses: 400 (not JSON) or 422 (field errors)."""

    def __init__(self, status: int, errors: list[dict[str, Any]] | str) -> None:
        super().__init__(str(errors))
        self.status = status
        self.errors = errors


def _field_error(loc: list[Any], msg: str, type_: str = "value_error") -> dict[str, Any]:
    return {"loc": ["body", *[x if isinstance(x, int) else _safe(x) for x in loc]],
            "msg": _safe(msg), "type": type_}


class _NoQueryStrings(logging.Filter):
    """Drops query strings from uvicorn's access log lines: a client that puts a token in
    the URL (``?token=...``) is refused, and its secret must not land in the log either."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], *args[3:])
        return True


ACCESS_LOG_FILTER = _NoQueryStrings()


# --------------------------------------------------------------------------- body limit


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413: declared (``Content-Length``) or streamed;
    and bodies not received within ``read_timeout_s`` with 408.

    The body is read here (at most ``max_bytes`` + one chunk) and replayed to the app, so
    nothing downstream ever sees more than the limit. The deadline covers the whole body:
    uvicorn has no read timeout once the headers are in, so a client that stops sending
    (or trickles a byte now and then) would otherwise hold its request for ever.
    """

    def __init__(self, app: ASGIApp, max_bytes: int,
                 read_timeout_s: float = BODY_READ_TIMEOUT_S) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = [v for k, v in scope.get("headers", ()) if k.lower() == b"content-length"]
        if declared:
            raw = declared[0].strip()
            if not raw.isdigit():
                await _error(400, "invalid Content-Length")(scope, receive, send)
                return
            if int(raw) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        deadline = asyncio.get_running_loop().time() + self.read_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(
                    receive(), max(0.0, deadline - asyncio.get_running_loop().time()))
            except TimeoutError:
                await _error(408, f"request body not received within "
                             f"{self.read_timeout_s:g} s", headers={"Connection": "close"},
                             code="body_timeout")(scope, receive, send)
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = _error(413, f"request body larger than {self.max_bytes} bytes",
                          headers={"Connection": "close"})
        await response(scope, receive, send)


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Submission:
    kind: str
    value: Any
    queue: str
    force: bool


def _text(value: object, loc: list[Any], errors: list[dict[str, Any]], *,
          max_chars: int) -> str | None:
    if not isinstance(value, str):
        errors.append(_field_error(loc, f"must be a string, got {type(value).__name__}",
                                   "type_error"))
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        errors.append(_field_error(loc, "is not valid Unicode (lone surrogate)"))
        return None
    if not value.strip():
        errors.append(_field_error(loc, "must not be empty"))
        return None
    if len(value) > max_chars:
        errors.append(_field_error(loc, f"must be at most {max_chars} characters"))
        return None
    if _CONTROL.search(value):
        errors.append(_field_error(loc, "must not contain control characters"))
        return None
    return value


def _iso_date(value: object, loc: list[Any], errors: list[dict[str, Any]]) -> date | None:
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    errors.append(_field_error(loc, "must be a date YYYY-MM-DD"))
    return None


Errors = list[dict[str, Any]]


def _parse_release(value: object, errors: Errors) -> str | None:
    if isinstance(value, str) and _MBID.fullmatch(value):
        return value.lower()
    errors.append(_field_error(["release"], "must be a MusicBrainz release id (a UUID)"))
    return None


def _parse_query(value: object, errors: Errors) -> str | None:
    return _text(value, ["query"], errors, max_chars=MAX_QUERY_CHARS)


def _parse_list(value: object, kind: str, limit: int, noun: str, errors: Errors,
                parse_item: Callable[[object, list[Any], Errors], Any]) -> list[Any] | None:
    """1 to ``limit`` items, each through ``parse_item`` (None: refused, error appended)."""
    if not (isinstance(value, list) and 1 <= len(value) <= limit):
        errors.append(_field_error([kind], f"must be a list of 1 to {limit} {noun}"))
        return None
    parsed = (parse_item(item, [kind, i], errors) for i, item in enumerate(value))
    return [x for x in parsed if x is not None]


def _isrc(item: object, loc: list[Any], errors: Errors) -> str | None:
    isrc = parse_isrc(item)
    if isrc is None:
        errors.append(_field_error(loc, "must be an ISRC like USRC17607839"))
    return isrc


def _job(item: object, loc: list[Any], errors: Errors) -> Job | None:
    try:
        return Job.from_dict(item)
    except InvalidJob as exc:
        errors.append(_field_error(loc + ([exc.field] if exc.field else []), exc.message,
                                   exc.code))
    except (TypeError, ValueError, RecursionError) as exc:  # belt and braces
        errors.append(_field_error(loc, f"invalid job: {exc}", "invalid_job"))
    return None


def _parse_isrcs(value: object, errors: Errors) -> list[str] | None:
    isrcs = _parse_list(value, "isrcs", MAX_ISRCS, "ISRCs", errors, _isrc)
    return None if isrcs is None else list(dict.fromkeys(isrcs))  # repeats dropped, in order


def _parse_jobs(value: object, errors: Errors) -> list[Job] | None:
    """The jobs, each recording once: a repeat of the same job is dropped, a repeat with
    another job is a field error (which of the two is meant is not ours to guess)."""
    if not isinstance(value, list):
        return _parse_list(value, "jobs", MAX_JOBS, "jobs", errors, _job)
    jobs: dict[str, tuple[int, Job]] = {}

    def once(item: object, loc: list[Any], errs: Errors) -> Job | None:
        job = _job(item, loc, errs)
        if job is None:
            return None
        first = jobs.setdefault(job.recording_id, (loc[-1], job))
        if first[0] == loc[-1]:
            return job
        if first[1] != job:
            errs.append(_field_error(loc, f"conflicting duplicate of jobs[{first[0]}]: "
                                     f"recording_id {job.recording_id!r} again, with "
                                     "another job"))
        return None

    return _parse_list(value, "jobs", MAX_JOBS, "jobs", errors, once)


def _parse_new_releases(value: object, errors: Errors) -> tuple[date | None, date | None] | None:
    kind = "new_releases"
    if not isinstance(value, dict):
        errors.append(_field_error([kind], 'must be {"since": DATE, "until": DATE}'))
        return None
    for key in value:
        if key not in ("since", "until"):
            errors.append(_field_error([kind, key], "unknown field", "extra_forbidden"))
    if "since" not in value:
        errors.append(_field_error([kind, "since"], "is required", "missing"))
        return None
    since = _iso_date(value["since"], [kind, "since"], errors)
    until = None
    if value.get("until") is not None:
        until = _iso_date(value["until"], [kind, "until"], errors)
    if since and until and until < since:
        errors.append(_field_error([kind, "until"], "must not be before since"))
    return since, until



# One parser per input kind (INPUT_KEYS): each appends its field errors and returns the
# value a submission carries (None when unusable).
_INPUT_PARSERS: dict[str, Callable[[object, Errors], Any]] = {
    "release": _parse_release,
    "isrcs": _parse_isrcs,
    "query": _parse_query,
    "new_releases": _parse_new_releases,
    "jobs": _parse_jobs,
}


def _parse_input(kind: str, value: object, errors: Errors) -> Any:
    return _INPUT_PARSERS[kind](value, errors)


def parse_submission(body: bytes) -> Submission:
    """Validate a ``POST /v1/jobs`` body; raises :class:`InputError` (400/422)."""
    if not body.strip():
        raise InputError(400, "empty body: expected a JSON object")
    try:
        # A repeated key is refused, as in a catalog: json.loads would keep the last.
        data = json.loads(body.decode("utf-8"), object_pairs_hook=no_duplicate_keys)
    except UnicodeDecodeError:
        raise InputError(400, "body is not UTF-8") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, int too long, nesting
        raise InputError(400, f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(422, [_field_error([], "expected a JSON object")])
    errors: list[dict[str, Any]] = []
    for key in data:
        if key not in INPUT_KEYS and key not in OPTION_KEYS:
            errors.append(_field_error([key], "unknown field; allowed: "
                                       + ", ".join(INPUT_KEYS + OPTION_KEYS), "extra_forbidden"))
    given = [k for k in INPUT_KEYS if k in data]
    if len(given) != 1:
        errors.append(_field_error([], "exactly one of " + ", ".join(INPUT_KEYS)
                                   + " is required", "missing" if not given else "value_error"))
    queue = data.get("queue")
    if queue is not None and queue not in QUEUES:
        errors.append(_field_error(["queue"], f"must be one of {', '.join(QUEUES)}"))
    force = data.get("force")
    if force is not None and not isinstance(force, bool):
        errors.append(_field_error(["force"], "must be true or false", "type_error"))
    value = _parse_input(given[0], data[given[0]], errors) if len(given) == 1 else None
    if errors:
        raise InputError(422, errors[:MAX_ERRORS])
    kind = given[0]
    return Submission(kind, value, queue or default_queue(kind), bool(force))


# --------------------------------------------------------------------------- background


class Background:
    """A few daemon threads running submissions in order of arrival.

    Daemon threads: stopping the API abandons runs still resolving (their run shows
    ``resolution_state: running``); dump-sized work belongs to ``previewvec submit``.
    """

    def __init__(self, workers: int = BACKGROUND_WORKERS,
                 max_pending: int = MAX_PENDING_SUBMISSIONS) -> None:
        self.workers = workers
        self.max_pending = max_pending
        self.tasks: queue_mod.Queue[Callable[[], None] | None] = queue_mod.Queue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, task: Callable[[], None]) -> None:
        with self._lock:
            if not self._threads:
                for i in range(self.workers):
                    thread = threading.Thread(target=self._loop, name=f"pv-api-submit-{i}",
                                              daemon=True)
                    thread.start()
                    self._threads.append(thread)
        self.tasks.put(task)

    def full(self) -> bool:
        """Whether ``max_pending`` submissions are already waiting or running."""
        return self.tasks.unfinished_tasks >= self.max_pending

    def _loop(self) -> None:
        while True:
            task = self.tasks.get()
            try:
                if task is None:
                    return
                task()
            except Exception:
                log.exception("background submission failed")
            finally:
                self.tasks.task_done()

    def join(self) -> None:
        """Wait until every submitted task ran (tests)."""
        self.tasks.join()

    def stop(self) -> None:
        with self._lock:
            for _ in self._threads:
                self.tasks.put(None)
            self._threads = []


# --------------------------------------------------------------------------- the app


def _jobs_body_schema() -> dict[str, Any]:
    job = {k: v for k, v in JOB_SCHEMA.items() if k not in ("$schema", "$id")}
    options = {
        "queue": {"type": "string", "enum": list(QUEUES),
                  "description": "default: ondemand, or batch for a query"},
        "force": {"type": "boolean", "description": "recompute even if a record exists"},
    }

    def one(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"type": "object", "title": name, "description": description,
                "required": [name], "additionalProperties": False,
                "properties": {name: schema, **options}}

    date_ = {"type": "string", "format": "date"}
    return {
        "required": True,
        "content": {"application/json": {"schema": {"oneOf": [
            one("release", {"type": "string", "format": "uuid"},
                "every recording of a MusicBrainz release"),
            one("isrcs", {"type": "array", "items": {"type": "string"}, "minItems": 1,
                          "maxItems": MAX_ISRCS}, "recordings by ISRC"),
            one("query", {"type": "string", "maxLength": MAX_QUERY_CHARS},
                "a MusicBrainz recording search (Lucene syntax)"),
            one("new_releases", {"type": "object", "required": ["since"],
                                 "additionalProperties": False,
                                 "properties": {"since": date_, "until": date_}},
                "releases dated since .. until"),
            one("jobs", {"type": "array", "items": job, "minItems": 1, "maxItems": MAX_JOBS},
                "ready-made jobs (the catalog contract)"),
        ]}}},
    }


@dataclass
class ApiState:
    """What the handlers share, built once per app: settings, run state, the background
    threads, the auth tokens, and the store and reducer, opened on first use."""

    settings: Settings
    runs: Runs
    background: Background
    resolver_factory: Callable[..., Any]
    tokens: tuple[bytes, ...]
    _store: Any = None
    _store_checked: bool = False
    _reducer: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def store(self) -> Any:
        """The store, opened to read only: the API never creates its folder. Submissions
        ask it what is stored (a folder no worker made yet holds nothing)."""
        with self._lock:
            if self._store is None:
                from contract.store import open_store

                self._store = open_store(self.settings.store, self.settings, create=False)
            return self._store

    def checked_store(self) -> Any:
        """:meth:`store`, probed once (as ``Reducer.build`` probes it) for the endpoints
        that read records: a folder that does not exist is ``store_folder_missing`` (503),
        not 404 "no stored record" for every recording."""
        store = self.store()
        if not self._store_checked:
            check = getattr(store, "check", None)
            if check is not None:
                check()
            self._store_checked = True
        return store

    def reducer(self) -> Any:
        with self._lock:
            if self._reducer is None:
                from reducer.reduce import Reducer  # lazy: LanceDB, numpy

                # The index may be made here: the API may start before the reducer
                # first writes the index it shares (an empty one answers 404).
                self._reducer = Reducer.build(self.settings, create_store=False)
            return self._reducer


def _api(request: Request) -> ApiState:
    return request.app.state.api


async def _state(request: Request) -> ApiState:
    return _api(request)  # async: no thread-pool hop for a dict lookup


State = Annotated[ApiState, Depends(_state)]


def require_token(request: Request,
                  creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> None:
    """Bearer auth against ``settings.api_tokens``, compared in constant time."""
    if creds is not None and creds.scheme.lower() == "bearer":
        given = creds.credentials.encode("latin-1", "replace")
        ok = False
        for token in _api(request).tokens:  # no early exit: time does not depend on a match
            ok |= hmac.compare_digest(given, token)
        if ok:
            return
    raise HTTPException(401, "missing or invalid bearer token",
                        headers={"WWW-Authenticate": "Bearer"})


_AUTH = [Depends(require_token)]


# --------------------------------------------------------------------------- errors


async def _input_error(_: Request, exc: InputError) -> SafeJSONResponse:
    if isinstance(exc.errors, str):
        return _error(exc.status, exc.errors)
    return SafeJSONResponse({"detail": exc.errors, "code": _status_code(exc.status)},
                            status_code=exc.status)


async def _validation_error(_: Request, exc: RequestValidationError) -> SafeJSONResponse:
    # Rebuilt from loc/msg/type only: echoing the raw input could fail to render.
    detail = [{"loc": [x if isinstance(x, int) else _safe(x) for x in e.get("loc", ())],
               "msg": _safe(e.get("msg", "")), "type": _safe(e.get("type", ""))}
              for e in exc.errors()[:MAX_ERRORS]]
    return SafeJSONResponse({"detail": detail, "code": _status_code(422)}, status_code=422)


class CodedHTTPException(HTTPException):
    """An HTTP error whose JSON body carries a stable ``code`` too."""

    def __init__(self, status: int, detail: str, *, code: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status, detail, headers=headers)
        self.code = code


async def _http_error(_: Request, exc: StarletteHTTPException) -> SafeJSONResponse:
    return _error(exc.status_code, str(exc.detail), headers=exc.headers,
                  code=getattr(exc, "code", None))


_RETRY = {"Retry-After": "5"}


async def _broker_down(_: Request, exc: Exception) -> SafeJSONResponse:
    log.warning("broker unavailable: %s", type(exc).__name__)
    return _error(503, "broker unavailable, try again later", headers=_RETRY,
                  code="broker_unavailable")


async def _broker_error(request: Request, exc: Exception) -> SafeJSONResponse:
    # Redis answering but refusing (out of memory, MISCONF, read-only replica) is an
    # outage like Redis down; any other error reply is a bug.
    if not redis_refusal(exc):
        return await _server_fault(request, exc)
    log.warning("broker refused on %s %s: %s", request.method, request.url.path, exc)
    return _error(503, "broker refused the command, try again later", headers=_RETRY,
                  code="broker_refused")


async def _store_down(_: Request, exc: Exception) -> SafeJSONResponse:
    log.warning("feature store unavailable: %s", type(exc).__name__)
    return _error(503, "feature store unavailable, try again later", headers=_RETRY,
                  code=StoreUnavailable.code)


# Typed faults of the server's backends or settings, by family (most specific first):
# (status, what the client is told, Retry-After?). The message itself, which may name
# paths, buckets or settings, goes to the log only.
_TYPED_FAULTS: tuple[tuple[type[PreviewvecError], int, str, bool], ...] = (
    (IndexUnavailable, 503, "vector index unavailable, try again later", True),
    (ConfigError, 503, "the server is misconfigured", False),
    (StoreError, 503, "feature store unusable", False),
    (VectorIndexError, 503, "vector index unusable", False),
)


async def _typed_error(request: Request, exc: Exception) -> SafeJSONResponse:
    assert isinstance(exc, PreviewvecError)
    if isinstance(exc, NotFound):  # about this request: said as it is
        return _error(404, exc.message, code=exc.code)
    if isinstance(exc, InvalidQuery):
        return SafeJSONResponse({"detail": [{"loc": ["query"], "msg": _safe(exc.message),
                                             "type": exc.code}],
                                 "code": _status_code(422)}, status_code=422)
    for family, status, told, retry in _TYPED_FAULTS:
        if isinstance(exc, family):
            log.warning("%s on %s %s: %s", exc.code, request.method, request.url.path,
                        exc.message)
            return _error(status, f"{told} ({exc.code})", headers=_RETRY if retry else None,
                          code=exc.code)
    return await _server_fault(request, exc)


async def _unreadable_record(request: Request, exc: Exception) -> SafeJSONResponse:
    # A stored record that cannot be read is the store's fault, not the client's, and no
    # bug either: said as it is (the key, what is wrong), logged without a traceback.
    log.warning("unreadable stored record on %s: %s", request.url.path, exc)
    return _error(500, str(exc), code=getattr(exc, "code", "corrupt_record"))


async def _server_fault(request: Request, exc: Exception) -> SafeJSONResponse:
    # Genuine server faults only; never logs headers (tokens).
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error(500, "internal server error")


_ERROR_HANDLERS: tuple[tuple[type[Exception], Callable[..., Any]], ...] = (
    (InputError, _input_error),
    (RequestValidationError, _validation_error),
    (StarletteHTTPException, _http_error),
    (RedisTimeoutError, _broker_down),
    (RedisProtocolError, _broker_down),  # another server on the broker's port
    (RedisConnectionError, _broker_down),
    (RedisError, _broker_error),
    (StoreUnavailable, _store_down),
    (PreviewvecError, _typed_error),
    (CorruptRecord, _unreadable_record),
    (IncompatibleRecord, _unreadable_record),
    (Exception, _server_fault),
)


# --------------------------------------------------------------------------- ops

ops = APIRouter(tags=["ops"])


# HEAD too (healthz_head): uptime monitors and some load balancers probe with it.
@ops.get("/healthz", summary="liveness: Redis reachable")
def healthz(state: State) -> SafeJSONResponse:
    try:
        state.runs.ping()
    except RedisError:
        return SafeJSONResponse({"status": "unavailable", "redis": "unreachable"},
                                status_code=503)
    return SafeJSONResponse({"status": "ok", "redis": "ok"})


@ops.head("/healthz", include_in_schema=False)
def healthz_head(state: State) -> SafeJSONResponse:
    """``/healthz`` for HEAD: the same status, no body (the server drops it)."""
    return healthz(state)


# --------------------------------------------------------------------------- runs

runs_router = APIRouter(dependencies=_AUTH, tags=["runs"])


def _run_submission(state: ApiState, run_id: str, sub: Submission, resolver: Any) -> None:
    """Resolve and publish one accepted submission (a background thread)."""
    try:
        items = sub.value if sub.kind == "jobs" else iter_resolutions(resolver, sub.kind,
                                                                       sub.value)
        submit(items, state.settings, queue=sub.queue, force=sub.force, run_id=run_id,
               runs=state.runs, store=None if sub.force else state.store())
    except Exception as exc:
        if isinstance(exc, PreviewvecError):  # expected (upstream, config): no trace
            log.warning("run %s: submission failed: %s", run_id, exc.code)
        else:
            log.error("run %s: submission failed: %s", run_id, type(exc).__name__,
                      exc_info=exc)
        state.runs.update_meta(run_id, resolution_state="failed",
                               resolution_error=_safe(f"{type(exc).__name__}: {exc}")[:500])


def _check_room(state: ApiState, queue: str) -> None:
    """Backpressure, as `enqueue` and `submit` wait: refuse new work while the queue it
    goes to is above the mark, or while the background threads already hold
    ``max_pending`` submissions, rather than pile it up in them."""
    retry = {"Retry-After": str(QUEUE_FULL_RETRY_AFTER_S)}
    if state.background.full():
        raise CodedHTTPException(
            429, f"{state.background.max_pending} submissions are waiting to be resolved: "
            f"try again in {QUEUE_FULL_RETRY_AFTER_S} s", code="too_many_pending",
            headers=retry)
    depth = state.runs.queue_depth(queue)
    high_water = state.settings.queue_high_water
    if depth > high_water:
        raise CodedHTTPException(
            429, f"queue {queue!r} holds {depth} jobs, more than its high-water "
            f"mark of {high_water}: try again in {QUEUE_FULL_RETRY_AFTER_S} s",
            code="queue_full", headers=retry)


def _resolver_for(state: ApiState, sub: Submission, run_id: str) -> Any:
    """The submission's resolver. As ``submit`` on the CLI: recordings stored (unless
    ``force``), queued in any run or handled by this run are not resolved again."""
    if sub.kind == "jobs":
        return None
    try:  # no network: only clients are built, so misconfiguration shows up now
        return state.resolver_factory(state.settings,
                                      store=None if sub.force else state.store(),
                                      runs=state.runs, run_id=run_id)
    except PreviewvecError as exc:
        raise HTTPException(503, f"resolution unavailable ({exc.code}): "
                            f"{exc.message}") from None


def _check_hosts(state: ApiState, sub: Submission) -> None:
    """422 for a job whose preview host no worker would fetch (not in
    ``PREVIEWVEC_ALLOWED_AUDIO_HOSTS``, an IP literal): said now, not accepted and then
    failed by a worker as ``host_not_allowed``."""
    if sub.kind != "jobs":
        return
    from workers.fetch import HostNotAllowed, HostPolicy

    policy = HostPolicy(state.settings.allowed_audio_hosts)
    errors: Errors = []
    for i, job in enumerate(sub.value):
        try:
            policy.check_name(job.preview_host, job.preview_url)
        except HostNotAllowed as exc:
            errors.append(_field_error(["jobs", i, "preview_url"], exc.message, exc.code))
            if len(errors) == MAX_ERRORS:  # as parse_submission: a bounded answer
                break
    if errors:
        raise InputError(422, errors)


def _accept(state: ApiState, sub: Submission) -> dict[str, Any]:
    """Create the run and hand the submission to the background threads."""
    _check_hosts(state, sub)
    _check_room(state, sub.queue)
    run_id = new_run_id()
    resolver = _resolver_for(state, sub, run_id)
    meta: dict[str, str | int] = {"queue": sub.queue, "source": "api", "input": sub.kind,
                                  "resolution_state": "pending"}
    if sub.kind == "jobs":
        meta["accepted"] = len(sub.value)
    state.runs.create(run_id, **meta)
    state.background.submit(lambda: _run_submission(state, run_id, sub, resolver))
    out: dict[str, Any] = {"run_id": run_id, "status_url": f"/v1/runs/{run_id}",
                           "input": sub.kind, "queue": sub.queue, "force": sub.force}
    if sub.kind == "jobs":
        out["accepted"] = len(sub.value)
    return out


@runs_router.post(
    "/v1/jobs", status_code=202,
    summary="submit a release, ISRCs, a query, new releases or jobs",
    openapi_extra={"requestBody": _jobs_body_schema()},
    responses={202: {"description": "accepted; follow the run at status_url"},
               400: {"description": "not JSON"}, 401: {"description": "no token"},
               413: {"description": "body too large"},
               429: {"description": "the target queue is above its high-water "
                     "mark; retry after Retry-After seconds"},
               422: {"description": "field errors"}})
async def post_jobs(request: Request, state: State) -> SafeJSONResponse:
    body = await request.body()
    sub = await run_in_threadpool(parse_submission, body)
    return SafeJSONResponse(await run_in_threadpool(_accept, state, sub), status_code=202)


def _failures_page(runs: Runs, run_id: str, cursor: int,
                   limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """One page of a run's failures and the cursor of the next (None: the last page)."""
    next_cursor, page = runs.failures_page(run_id, cursor, limit)
    failures = []
    for recording_id, raw in sorted(page.items()):
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = {}
        failures.append({"recording_id": recording_id, "code": entry.get("code"),
                         "message": entry.get("message"), "job": entry.get("job")})
    return failures, int(next_cursor) or None


@runs_router.get("/v1/runs/{run_id}",
                 summary="a run's counts, resolution progress and failures")
def get_run(state: State, run_id: str,
            cursor: int = Query(0, ge=0, le=2**63 - 1,
                                description="failures page: 0, then failures_next"),
            limit: int = Query(100, ge=1, le=1000,
                               description="failures per page (approximate)"),
            ) -> dict[str, Any]:
    from previewvec.progress import resolution_progress

    runs = state.runs
    if len(run_id) > 128 or not runs.exists(run_id):
        raise HTTPException(404, "no such run")
    status = runs.status(run_id)
    failures, failures_next = _failures_page(runs, run_id, cursor, limit)
    meta = status.meta
    resolution = resolution_progress(status)
    if resolution is not None and meta.get("resolution_error"):
        resolution["error"] = meta["resolution_error"]
    return {
        "run_id": run_id,
        "created_at": _float(meta.get("created_at")),
        "queue": meta.get("queue"),
        "input": meta.get("input"),
        "source": meta.get("source"),
        "counts": status.counts,
        "total": status.total,
        "finished": status.finished,
        "submitted": _int(meta.get("submitted")),
        "resolution": resolution,
        "failures": failures,
        "failures_next": failures_next,
    }


# --------------------------------------------------------------------------- features

def _query_names(dependant: Any) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def known_query(request: Request) -> None:
    """422 for a query parameter the endpoint does not take (`?tempo=100`, the CLI's
    `?tempo-min=`): answered as if it were not there, it gave unfiltered results."""
    route = request.scope.get("route")
    if route is None:
        return
    unknown = sorted(set(request.query_params) - _query_names(route.dependant))
    if unknown:
        raise InputError(422, [{"loc": ["query", _safe(name)], "msg": "unknown query parameter",
                                "type": "extra_forbidden"} for name in unknown])


features = APIRouter(dependencies=[*_AUTH, Depends(known_query)], tags=["features"])
_NO_RECORD = "no stored record for this recording"


@features.get("/v1/recordings/{recording_id}",
              summary="a recording's stored descriptors and provenance")
def get_recording(state: State, recording_id: str,
                  vector: bool = Query(False, description="include the raw vector"),
                  ) -> dict[str, Any]:
    from contract.records import decode_stored, record_key
    from contract.versions import current_version

    # Outside the try: a store or setting that cannot be used is the server's fault
    # (503), not a recording that is not stored (ConfigError is a ValueError too).
    version = current_version(state.settings)
    store = state.checked_store()
    try:
        key = record_key(version, recording_id)
        data = store.get(key)
    except (FileNotFoundError, ValueError) as exc:  # ValueError: not a possible id
        if isinstance(exc, PreviewvecError):
            raise
        raise HTTPException(404, _NO_RECORD) from None
    # decode_stored: a record under another recording's key is corrupt here, and the
    # error names the key
    record = decode_stored(key, data)
    out: dict[str, Any] = {
        "recording_id": record.recording_id,
        "feature_version": record.feature_version,
        "descriptors": record.descriptors,
        "provenance": record.provenance,
        "timings_s": record.timings_s,
    }
    if vector:
        out["vector"] = record.vector
    return out


def _check_similar_query(recording_id: str, tempo_min: float | None,
                         tempo_max: float | None) -> None:
    from contract.records import record_key

    for name, bound in (("tempo_min", tempo_min), ("tempo_max", tempo_max)):
        if bound is not None and not math.isfinite(bound):
            raise InputError(422, [{"loc": ["query", name], "msg": "must be finite",
                                    "type": "value_error"}])
    if tempo_min is not None and tempo_max is not None and tempo_min > tempo_max:
        raise InputError(422, [{"loc": ["query", "tempo_min"],
                                "msg": "is above tempo_max: no recording can match",
                                "type": "value_error"}])
    try:
        record_key("x", recording_id)  # refuses ids that can never be stored
    except ValueError:
        raise HTTPException(404, _NO_RECORD) from None


def _similar_error(exc: PreviewvecError) -> Exception | None:
    """The response for an index error about this request; None: a fault (re-raised)."""
    if exc.code in ("invalid_filter", "invalid_index_item"):
        # A filter we cannot run, or a stored vector that cannot be compared
        # (e.g. all-zero after normalisation): about this request, not a fault.
        return InputError(422, [{"loc": ["query"], "msg": _safe(exc.message),
                                 "type": exc.code}])
    if exc.code == "index_unavailable":
        return HTTPException(503, "vector index unavailable, try again later",
                             headers={"Retry-After": "5"})
    return None


@features.get("/v1/similar/{recording_id}", summary="recordings that sound like this one")
def get_similar(state: State, recording_id: str,
                k: int = Query(10, ge=1, le=100),
                tempo_min: float | None = Query(None, ge=0, le=1000),
                tempo_max: float | None = Query(None, ge=0, le=1000),
                key: Literal[PITCH_CLASSES] | None = Query(None),  # type: ignore[valid-type]
                mode: Literal["major", "minor"] | None = Query(None),
                ) -> dict[str, Any]:
    from reducer.reduce import match_descriptors, similar_filter  # lazy: LanceDB, numpy

    _check_similar_query(recording_id, tempo_min, tempo_max)
    where = similar_filter(tempo_min=tempo_min, tempo_max=tempo_max, key=key, mode=mode)
    reducer = state.reducer()
    try:
        matches = reducer.similar(recording_id, k, filter=where)
        if not matches and reducer.index.count() == 0:
            # Not "no similar recordings": nothing was reduced into the index yet.
            raise NothingStored("the vector index holds no vectors yet: nothing was "
                                "reduced into it")
    except FileNotFoundError:
        raise HTTPException(404, _NO_RECORD) from None
    except PreviewvecError as exc:
        response = _similar_error(exc)
        if response is None:
            raise
        raise response from None
    return {"recording_id": recording_id, "k": k, "matches": [
        {"recording_id": m.metadata.get("recording_id", m.id),
         "score": round(float(m.score), 4) if math.isfinite(m.score) else None,
         "descriptors": match_descriptors(m)}
        for m in matches]}


# --------------------------------------------------------------------------- the app


@asynccontextmanager
async def _lifespan(app: FastAPI):
    state: ApiState = app.state.api
    if not state.tokens:
        log.warning("no API tokens configured (PREVIEWVEC_API_TOKENS): all requests "
                    "to /v1 are refused")
    yield
    state.background.stop()


def _install_access_log_filter() -> None:
    access_log = logging.getLogger("uvicorn.access")
    if ACCESS_LOG_FILTER not in access_log.filters:
        access_log.addFilter(ACCESS_LOG_FILTER)


def _default_runs(settings: Settings) -> Runs:
    return Runs.from_url(settings.broker_url, retry=False, connect_timeout_s=5, timeout_s=30)


def create_app(settings: Settings, *, resolver_factory: Callable[..., Any] | None = None,
               runs: Runs | None = None, store: Any = None,
               background: Background | None = None) -> FastAPI:
    """The API. ``resolver_factory(settings, store=, runs=, run_id=)`` builds a resolver
    per submission (default: :func:`producers.submit.build_resolver`); the other
    arguments are for tests."""
    if resolver_factory is None:
        from producers.submit import build_resolver as resolver_factory
    state = ApiState(settings=settings, runs=runs or _default_runs(settings),
                     background=background or Background(), resolver_factory=resolver_factory,
                     tokens=tuple(t.encode("utf-8") for t in settings.api_tokens if t),
                     _store=store)
    _install_access_log_filter()
    app = FastAPI(title="previewvec", version="1",
                  description="Submit music for audio-feature extraction, follow runs, "
                  "read descriptors, find similar recordings.",
                  default_response_class=SafeJSONResponse, lifespan=_lifespan)
    app.state.api = state
    app.state.background = state.background
    app.state.runs = state.runs
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api_max_body_bytes)
    for exc_class, handler in _ERROR_HANDLERS:
        app.add_exception_handler(exc_class, handler)
    for router in (ops, runs_router, features):
        app.include_router(router)
    return app


def _int(raw: str | None) -> int:
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0


def _float(raw: str | None) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None
