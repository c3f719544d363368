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
checked on ``Content-Length`` and on the bytes actually streamed); bad input is 400 (not
JSON) or 422 (JSON of the wrong shape, with field errors), never 500. Tokens are compared
in constant time, never logged and never echoed.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import queue as queue_mod
import re
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contract.errors import PreviewvecError
from contract.jobs import ISRC_PATTERN, JOB_SCHEMA, InvalidJob, Job, normalize_isrc
from contract.settings import Settings
from contract.state import (
    RedisConnectionError,
    RedisError,
    RedisTimeoutError,
    Runs,
    new_run_id,
)
from contract.store import StoreUnavailable
from producers.queue import QUEUES
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
# Retry-After of a 429 when the target queue is above PREVIEWVEC_QUEUE_HIGH_WATER: about
# how long a few workers take to work a full chunk off.
QUEUE_FULL_RETRY_AFTER_S = 30
INPUT_KEYS = ("release", "isrcs", "query", "new_releases", "jobs")
OPTION_KEYS = ("queue", "force")
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
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


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> SafeJSONResponse:
    return SafeJSONResponse({"detail": _safe(message)}, status_code=status, headers=headers)


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
    """Refuse bodies over ``max_bytes`` with 413: declared (``Content-Length``) or streamed.

    The body is read here (at most ``max_bytes`` + one chunk) and replayed to the app, so
    nothing downstream ever sees more than the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

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
        while True:
            message = await receive()
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


def _parse_input(kind: str, value: object, errors: list[dict[str, Any]]) -> Any:
    if kind == "release":
        if isinstance(value, str) and _MBID.fullmatch(value):
            return value.lower()
        errors.append(_field_error([kind], "must be a MusicBrainz release id (a UUID)"))
        return None
    if kind == "query":
        return _text(value, [kind], errors, max_chars=MAX_QUERY_CHARS)
    if kind == "isrcs":
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_ISRCS:
            errors.append(_field_error([kind], f"must be a list of 1 to {MAX_ISRCS} ISRCs"))
            return None
        isrcs: list[str] = []
        for i, item in enumerate(value):
            if (isinstance(item, str) and item.isascii() and len(item) <= 64
                    and re.fullmatch(ISRC_PATTERN, normalize_isrc(item))):
                isrc = normalize_isrc(item)
                if isrc not in isrcs:
                    isrcs.append(isrc)
            else:
                errors.append(_field_error([kind, i], "must be an ISRC like USRC17607839"))
        return isrcs
    if kind == "new_releases":
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
    # jobs
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_JOBS:
        errors.append(_field_error([kind], f"must be a list of 1 to {MAX_JOBS} jobs"))
        return None
    jobs: list[Job] = []
    for i, item in enumerate(value):
        try:
            jobs.append(Job.from_dict(item))
        except InvalidJob as exc:
            loc: list[Any] = [kind, i] + ([exc.field] if exc.field else [])
            errors.append(_field_error(loc, exc.message, exc.code))
        except (TypeError, ValueError, RecursionError) as exc:  # belt and braces
            errors.append(_field_error([kind, i], f"invalid job: {exc}", "invalid_job"))
    return jobs


def parse_submission(body: bytes) -> Submission:
    """Validate a ``POST /v1/jobs`` body; raises :class:`InputError` (400/422)."""
    if not body.strip():
        raise InputError(400, "empty body: expected a JSON object")
    try:
        data = json.loads(body.decode("utf-8"))
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

    def __init__(self, workers: int = BACKGROUND_WORKERS) -> None:
        self.workers = workers
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


def create_app(settings: Settings, *, resolver_factory: Callable[[Settings], Any] | None = None,
               runs: Runs | None = None, store: Any = None,
               background: Background | None = None) -> FastAPI:
    """The API. ``resolver_factory(settings)`` builds a resolver per submission (default:
    :meth:`producers.resolve.Resolver.build`); the other arguments are for tests."""
    if resolver_factory is None:
        from producers.submit import build_resolver as resolver_factory
    runs = runs or Runs.from_url(settings.broker_url, retry=False, connect_timeout_s=5,
                                 timeout_s=30)
    background = background or Background()
    tokens = tuple(t.encode("utf-8") for t in settings.api_tokens if t)
    lazy: dict[str, Any] = {"store": store}
    lazy_lock = threading.Lock()

    def get_store() -> Any:
        with lazy_lock:
            if lazy["store"] is None:
                from contract.store import open_store

                lazy["store"] = open_store(settings.store, settings)
            return lazy["store"]

    def get_reducer() -> Any:
        with lazy_lock:
            if lazy.get("reducer") is None:
                from reducer.reduce import Reducer  # lazy: LanceDB, numpy

                lazy["reducer"] = Reducer.build(settings)
            return lazy["reducer"]

    access_log = logging.getLogger("uvicorn.access")
    if ACCESS_LOG_FILTER not in access_log.filters:
        access_log.addFilter(ACCESS_LOG_FILTER)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if not tokens:
            log.warning("no API tokens configured (PREVIEWVEC_API_TOKENS): all requests "
                        "to /v1 are refused")
        yield
        background.stop()

    app = FastAPI(title="previewvec", version="1",
                  description="Submit music for audio-feature extraction, follow runs, "
                  "read descriptors, find similar recordings.",
                  default_response_class=SafeJSONResponse, lifespan=lifespan)
    app.state.background = background
    app.state.runs = runs
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api_max_body_bytes)

    # ----------------------------------------------------------------- errors
    @app.exception_handler(InputError)
    async def _input_error(_: Request, exc: InputError) -> SafeJSONResponse:
        if isinstance(exc.errors, str):
            return _error(exc.status, exc.errors)
        return SafeJSONResponse({"detail": exc.errors}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> SafeJSONResponse:
        # Rebuilt from loc/msg/type only: echoing the raw input could fail to render.
        detail = [{"loc": [x if isinstance(x, int) else _safe(x) for x in e.get("loc", ())],
                   "msg": _safe(e.get("msg", "")), "type": _safe(e.get("type", ""))}
                  for e in exc.errors()[:MAX_ERRORS]]
        return SafeJSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> SafeJSONResponse:
        return _error(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _broker_down(_: Request, exc: Exception) -> SafeJSONResponse:
        log.warning("broker unavailable: %s", type(exc).__name__)
        return _error(503, "broker unavailable, try again later",
                      headers={"Retry-After": "5"})

    @app.exception_handler(StoreUnavailable)
    async def _store_down(_: Request, exc: StoreUnavailable) -> SafeJSONResponse:
        log.warning("feature store unavailable: %s", type(exc).__name__)
        return _error(503, "feature store unavailable, try again later",
                      headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _server_fault(request: Request, exc: Exception) -> SafeJSONResponse:
        # Genuine server faults only; never logs headers (tokens).
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal server error")

    # ----------------------------------------------------------------- auth
    def require_token(
            creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> None:
        if creds is not None and creds.scheme.lower() == "bearer":
            given = creds.credentials.encode("latin-1", "replace")
            ok = False
            for token in tokens:  # no early exit: the time spent does not depend on a match
                ok |= hmac.compare_digest(given, token)
            if ok:
                return
        raise HTTPException(401, "missing or invalid bearer token",
                            headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(require_token)]

    # ----------------------------------------------------------------- endpoints
    @app.get("/healthz", tags=["ops"], summary="liveness: Redis reachable")
    def healthz() -> SafeJSONResponse:
        try:
            runs.ping()
        except RedisError:
            return SafeJSONResponse({"status": "unavailable", "redis": "unreachable"},
                                    status_code=503)
        return SafeJSONResponse({"status": "ok", "redis": "ok"})

    def _run_submission(run_id: str, sub: Submission, resolver: Any) -> None:
        try:
            if sub.kind == "jobs":
                items = sub.value
            else:
                items = iter_resolutions(resolver, sub.kind, sub.value)
            submit(items, settings, queue=sub.queue, force=sub.force, run_id=run_id,
                   runs=runs, store=None if sub.force else get_store())
        except Exception as exc:
            if isinstance(exc, PreviewvecError):  # expected (upstream, config): no trace
                log.warning("run %s: submission failed: %s", run_id, exc.code)
            else:
                log.error("run %s: submission failed: %s", run_id, type(exc).__name__,
                          exc_info=exc)
            runs.update_meta(run_id, resolution_state="failed",
                             resolution_error=_safe(f"{type(exc).__name__}: {exc}")[:500])

    def _accept(sub: Submission) -> dict[str, Any]:
        # Backpressure, as `enqueue` and `submit` wait: refuse new work while the queue it
        # goes to is above the mark, rather than pile it up in the background threads.
        depth = runs.queue_depth(sub.queue)
        if depth > settings.queue_high_water:
            raise HTTPException(
                429, f"queue {sub.queue!r} holds {depth} jobs, more than its high-water "
                f"mark of {settings.queue_high_water}: try again in "
                f"{QUEUE_FULL_RETRY_AFTER_S} s",
                headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_S)})
        resolver = None
        if sub.kind != "jobs":
            try:  # no network: only clients are built, so misconfiguration shows up now
                resolver = resolver_factory(settings)
            except PreviewvecError as exc:
                raise HTTPException(503, f"resolution unavailable ({exc.code}): "
                                    f"{exc.message}") from None
        run_id = new_run_id()
        meta: dict[str, str | int] = {"queue": sub.queue, "source": "api", "input": sub.kind,
                                      "resolution_state": "pending"}
        if sub.kind == "jobs":
            meta["accepted"] = len(sub.value)
        runs.create(run_id, **meta)
        background.submit(lambda: _run_submission(run_id, sub, resolver))
        out: dict[str, Any] = {"run_id": run_id, "status_url": f"/v1/runs/{run_id}",
                               "input": sub.kind, "queue": sub.queue, "force": sub.force}
        if sub.kind == "jobs":
            out["accepted"] = len(sub.value)
        return out

    @app.post("/v1/jobs", status_code=202, dependencies=auth, tags=["runs"],
              summary="submit a release, ISRCs, a query, new releases or jobs",
              openapi_extra={"requestBody": _jobs_body_schema()},
              responses={202: {"description": "accepted; follow the run at status_url"},
                         400: {"description": "not JSON"}, 401: {"description": "no token"},
                         413: {"description": "body too large"},
                         429: {"description": "the target queue is above its high-water "
                               "mark; retry after Retry-After seconds"},
                         422: {"description": "field errors"}})
    async def post_jobs(request: Request) -> SafeJSONResponse:
        body = await request.body()
        sub = await run_in_threadpool(parse_submission, body)
        return SafeJSONResponse(await run_in_threadpool(_accept, sub), status_code=202)

    @app.get("/v1/runs/{run_id}", dependencies=auth, tags=["runs"],
             summary="a run's counts, resolution progress and failures")
    def get_run(run_id: str,
                cursor: int = Query(0, ge=0, le=2**63 - 1,
                                    description="failures page: 0, then failures_next"),
                limit: int = Query(100, ge=1, le=1000,
                                   description="failures per page (approximate)"),
                ) -> dict[str, Any]:
        from previewvec.progress import resolution_progress

        if len(run_id) > 128 or not runs.exists(run_id):
            raise HTTPException(404, "no such run")
        status = runs.status(run_id)
        next_cursor, page = runs.failures_page(run_id, cursor, limit)
        failures = []
        for recording_id, raw in sorted(page.items()):
            try:
                entry = json.loads(raw)
            except ValueError:
                entry = {}
            failures.append({"recording_id": recording_id, "code": entry.get("code"),
                             "message": entry.get("message"), "job": entry.get("job")})
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
            "failures_next": int(next_cursor) or None,
        }

    @app.get("/v1/recordings/{recording_id}", dependencies=auth, tags=["features"],
             summary="a recording's stored descriptors and provenance")
    def get_recording(recording_id: str,
                      vector: bool = Query(False, description="include the raw vector"),
                      ) -> dict[str, Any]:
        from contract.layout import FEATURE_VERSION
        from contract.records import decode_record, record_key

        try:
            data = get_store().get(record_key(FEATURE_VERSION, recording_id))
        except (FileNotFoundError, ValueError):  # ValueError: not a possible recording id
            raise HTTPException(404, "no stored record for this recording") from None
        record = decode_record(data)
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

    @app.get("/v1/similar/{recording_id}", dependencies=auth, tags=["features"],
             summary="recordings that sound like this one")
    def get_similar(recording_id: str,
                    k: int = Query(10, ge=1, le=100),
                    tempo_min: float | None = Query(None, ge=0, le=1000),
                    tempo_max: float | None = Query(None, ge=0, le=1000),
                    key: Literal[PITCH_CLASSES] | None = Query(None),  # type: ignore[valid-type]
                    mode: Literal["major", "minor"] | None = Query(None),
                    ) -> dict[str, Any]:
        from contract.records import record_key

        for name, bound in (("tempo_min", tempo_min), ("tempo_max", tempo_max)):
            if bound is not None and not math.isfinite(bound):
                raise InputError(422, [{"loc": ["query", name], "msg": "must be finite",
                                        "type": "value_error"}])
        try:
            record_key("x", recording_id)  # refuses ids that can never be stored
        except ValueError:
            raise HTTPException(404, "no stored record for this recording") from None
        where: dict[str, Any] = {}
        tempo = {op: v for op, v in (("$gte", tempo_min), ("$lte", tempo_max)) if v is not None}
        if tempo:
            where["tempo_bpm"] = tempo
        if key:
            where["key"] = key
        if mode:
            where["mode"] = mode
        try:
            matches = get_reducer().similar(recording_id, k, filter=where or None)
        except FileNotFoundError:
            raise HTTPException(404, "no stored record for this recording") from None
        except PreviewvecError as exc:
            if exc.code in ("invalid_filter", "invalid_index_item"):
                # A filter we cannot run, or a stored vector that cannot be compared
                # (e.g. all-zero after normalisation): about this request, not a fault.
                raise InputError(422, [{"loc": ["query"], "msg": _safe(exc.message),
                                        "type": exc.code}]) from None
            if exc.code == "index_unavailable":
                raise HTTPException(503, "vector index unavailable, try again later",
                                    headers={"Retry-After": "5"}) from None
            raise
        return {"recording_id": recording_id, "k": k, "matches": [
            {"recording_id": m.metadata.get("recording_id", m.id),
             "score": round(float(m.score), 4) if math.isfinite(m.score) else None,
             "descriptors": {n: v for n, v in m.metadata.items()
                             if n not in ("recording_id", "normalizer")}}
            for m in matches]}

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
