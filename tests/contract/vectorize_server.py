"""A local HTTP server that speaks Cloudflare Vectorize's documented v2 HTTP API.

For contract tests only — not the real service. It models what clients must cope with:

- bearer-token auth, Cloudflare's ``{"success", "errors", "messages", "result"}`` envelope;
- NDJSON upserts with the documented limits (≤ 5 000 vectors per request, id ≤ 64 bytes,
  metadata ≤ 10 KiB, dimension match, finite float values);
- asynchronous writes: upserts/deletes return a ``mutationId`` and are applied by a
  background thread after ``apply_delay_s``, possibly several at once, so
  ``processedUpToMutation`` can jump past a given mutation;
- filters work only on properties that had a metadata index when the vector was written;
- ``topK`` ≤ 100, and ≤ 20 when values or metadata are returned;
- fault injection: the next N requests, or every request for T seconds, answer 429/5xx
  (optionally with Retry-After); upserts can be held before they are applied, so a client
  can be killed mid-upsert (the write still lands, as when a client dies waiting).
"""

from __future__ import annotations

import collections
import json
import math
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from tests.local_http import serve_in_background, stop_server

MAX_VECTORS_PER_UPSERT = 5_000
MAX_ID_BYTES = 64
MAX_METADATA_BYTES = 10 * 1024
MAX_BODY_BYTES = 100 * 1024 * 1024
MAX_METADATA_INDEXES = 10
_PATH_RE = re.compile(
    r"^/client/v4/accounts/(?P<account>[^/]+)/vectorize/v2/indexes/(?P<index>[^/]+)/(?P<op>.+)$"
)
_FILTER_OPS = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"}


class ApiError(Exception):
    """An error the API reports in its envelope with an HTTP status."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class _Vector:
    values: np.ndarray
    metadata: dict[str, Any]
    indexed: frozenset[str]  # metadata properties filterable for this vector


@dataclass
class _Mutation:
    id: str
    queued_at: float
    kind: str
    payload: Any


@dataclass
class _Fault:
    remaining: int = 0
    status: int = 503
    retry_after: str | None = None
    until: float = 0.0  # time.monotonic() deadline of a timed outage


@dataclass
class VectorizeContractServer:
    """Start with :meth:`start` (or as a context manager); clients use :attr:`base_url`."""

    account_id: str = "0123456789abcdef0123456789abcdef"
    token: str = "contract-test-token"
    index_name: str = "pv-test"
    dimensions: int = 32
    apply_delay_s: float = 0.05
    calls: collections.Counter = field(default_factory=collections.Counter)
    vectors: dict[str, _Vector] = field(default_factory=dict)
    metadata_indexes: dict[str, str] = field(default_factory=dict)
    # id → number of upserted lines carrying it (re-upserts are visible here, not in
    # ``vectors``, which is keyed by id like the real index).
    writes: collections.Counter = field(default_factory=collections.Counter)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: collections.deque[_Mutation] = collections.deque()
        self._processed: str | None = None
        self._processed_at: str | None = None
        self._paused = False
        self._fault = _Fault()
        self._upsert_hold_s = 0.0
        self.upsert_received = threading.Event()  # set when a held upsert arrives
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # --- lifecycle and test knobs -------------------------------------------------------

    def start(self) -> VectorizeContractServer:
        handler = type("Handler", (_Handler,), {"api": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        applier = threading.Thread(target=self._apply_loop, daemon=True)
        applier.start()
        self._threads = [serve_in_background(self._httpd, poll_interval=0.05), applier]
        return self

    def stop(self) -> None:
        self._stop.set()
        stop_server(self._httpd)
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> VectorizeContractServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "start() first"
        return f"http://127.0.0.1:{self._httpd.server_port}/client/v4"

    def fail_next(self, n: int, status: int = 503, retry_after: str | None = None) -> None:
        """The next ``n`` requests answer ``status`` (e.g. 429, 503) without effect."""
        with self._lock:
            self._fault = _Fault(n, status, retry_after)

    def fail_for(self, seconds: float, status: int = 503, retry_after: str | None = None) -> None:
        """Every request for the next ``seconds`` answers ``status`` without effect (an
        outage or a throttling period rather than a count of failures)."""
        with self._lock:
            self._fault = _Fault(0, status, retry_after, time.monotonic() + seconds)

    def hold_upserts(self, seconds: float) -> None:
        """Hold each upsert ``seconds`` after its body arrived, before it is applied and
        answered (0 ends it). Sets :attr:`upsert_received` when one arrives."""
        with self._lock:
            self._upsert_hold_s = seconds
            self.upsert_received.clear()

    def pause_apply(self) -> None:
        """Hold queued mutations (to observe not-yet-visible writes)."""
        with self._lock:
            self._paused = True

    def resume_apply(self) -> None:
        with self._lock:
            self._paused = False

    @property
    def pending_mutations(self) -> int:
        with self._lock:
            return len(self._queue)

    # --- async mutation application -----------------------------------------------------

    def _apply_loop(self) -> None:
        while not self._stop.wait(0.01):
            with self._lock:
                if self._paused:
                    continue
                now = time.monotonic()
                last = None
                # Apply every due mutation in one go, like a batch: processedUpToMutation
                # then jumps to the newest, skipping the ids in between.
                while self._queue and self._queue[0].queued_at + self.apply_delay_s <= now:
                    mutation = self._queue.popleft()
                    self._apply(mutation)
                    last = mutation.id
                if last is not None:
                    self._processed = last
                    self._processed_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")

    def _apply(self, mutation: _Mutation) -> None:
        if mutation.kind == "upsert":
            indexed = frozenset(self.metadata_indexes)
            for vid, values, metadata in mutation.payload:
                self.vectors[vid] = _Vector(values, metadata, indexed)
        elif mutation.kind == "delete":
            for vid in mutation.payload:
                self.vectors.pop(vid, None)
        elif mutation.kind == "metadata_index":
            name, kind = mutation.payload
            self.metadata_indexes[name] = kind

    def _enqueue(self, kind: str, payload: Any) -> dict[str, str]:
        mutation = _Mutation(str(uuid.uuid4()), time.monotonic(), kind, payload)
        self._queue.append(mutation)
        return {"mutationId": mutation.id}

    # --- request handling (called by the handler; returns the `result`) ------------------

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any, dict]:
        """(status, envelope, extra headers) for one request."""
        match = _PATH_RE.match(path.split("?", 1)[0])
        op = match["op"] if match else "unknown"
        with self._lock:
            self.calls[op] += 1  # every request, faulted or not
            timed = time.monotonic() < self._fault.until
            if self._fault.remaining > 0 or timed:
                if not timed:
                    self._fault.remaining -= 1
                self.calls["fault"] += 1
                extra = {"Retry-After": self._fault.retry_after} if self._fault.retry_after else {}
                status = self._fault.status
                return status, _envelope_error(status * 10, "injected fault"), extra
        try:
            if headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiError(401, 10000, "Authentication error")
            if not match or match["account"] != self.account_id:
                raise ApiError(404, 7003, "Could not route to the requested resource")
            if match["index"] != self.index_name:
                raise ApiError(404, 40008, "vectorize.index.not_found")
            route = {
                ("POST", "upsert"): self._upsert,
                ("POST", "query"): self._query,
                ("POST", "get_by_ids"): self._get_by_ids,
                ("POST", "delete_by_ids"): self._delete_by_ids,
                ("GET", "info"): self._info,
                ("POST", "metadata_index/create"): self._create_metadata_index,
                ("GET", "metadata_index/list"): self._list_metadata_indexes,
            }.get((method, op))
            if route is None:
                raise ApiError(404, 7003, f"No route for {method} {op}")
            with self._lock:
                hold_s = self._upsert_hold_s if op == "upsert" else 0.0
            if hold_s:
                self.upsert_received.set()
                time.sleep(hold_s)
            with self._lock:
                result = route(headers, body)
        except ApiError as err:
            return err.status, _envelope_error(err.code, err.message), {}
        return 200, {"result": result, "success": True, "errors": [], "messages": []}, {}

    @staticmethod
    def _json(body: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(body or b"{}")
        except ValueError:
            raise ApiError(400, 40001, "invalid JSON body") from None
        if not isinstance(doc, dict):
            raise ApiError(400, 40001, "body must be a JSON object")
        return doc

    def _check_values(self, values: Any, where: str) -> np.ndarray:
        if not isinstance(values, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        ):
            raise ApiError(400, 40005, f"{where}: values must be a list of numbers")
        if len(values) != self.dimensions:
            raise ApiError(
                400,
                40012,
                f"{where}: vector dimension {len(values)} does not match index "
                f"dimension {self.dimensions}",
            )
        arr = np.asarray(values, dtype=np.float32)
        if not np.all(np.isfinite(arr)):
            raise ApiError(400, 40005, f"{where}: values must be finite float32")
        return arr

    def _upsert(self, headers: Any, body: bytes) -> dict[str, str]:
        if not (headers.get("Content-Type") or "").startswith("application/x-ndjson"):
            raise ApiError(400, 40026, "upsert body must be application/x-ndjson")
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, 40007, "upload too large")
        lines = [line for line in body.split(b"\n") if line.strip()]
        if not lines:
            raise ApiError(400, 40006, "no vectors in body")
        if len(lines) > MAX_VECTORS_PER_UPSERT:
            raise ApiError(400, 40006, f"too many vectors: {len(lines)} > {MAX_VECTORS_PER_UPSERT}")
        parsed = []
        for number, line in enumerate(lines, 1):
            try:
                doc = json.loads(line)
            except ValueError:
                raise ApiError(400, 40026, f"line {number}: invalid JSON") from None
            vid = doc.get("id") if isinstance(doc, dict) else None
            if not isinstance(vid, str) or not vid:
                raise ApiError(400, 40003, f"line {number}: missing id")
            if len(vid.encode()) > MAX_ID_BYTES:
                raise ApiError(400, 40003, f"line {number}: id longer than {MAX_ID_BYTES} bytes")
            values = self._check_values(doc.get("values"), f"line {number}")
            metadata = doc.get("metadata") or {}
            if not isinstance(metadata, dict):
                raise ApiError(400, 40004, f"line {number}: metadata must be an object")
            if len(json.dumps(metadata, separators=(",", ":")).encode()) > MAX_METADATA_BYTES:
                raise ApiError(400, 40004, f"line {number}: metadata over 10 KiB")
            parsed.append((vid, values, metadata))
        self.writes.update(vid for vid, _, _ in parsed)
        return self._enqueue("upsert", parsed)

    def _query(self, headers: Any, body: bytes) -> dict[str, Any]:
        doc = self._json(body)
        vector = self._check_values(doc.get("vector"), "query")
        top_k = doc.get("topK", 5)
        return_values = bool(doc.get("returnValues", False))
        return_metadata = doc.get("returnMetadata", "none")
        if return_metadata is True:
            return_metadata = "all"
        elif return_metadata is False:
            return_metadata = "none"
        if return_metadata not in ("none", "indexed", "all"):
            raise ApiError(400, 40020, "returnMetadata must be none, indexed or all")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= 100:
            raise ApiError(400, 40021, "topK must be between 1 and 100")
        if (return_values or return_metadata != "none") and top_k > 20:
            raise ApiError(400, 40021, "topK must be at most 20 with values or metadata")
        conditions = _parse_filter(doc.get("filter"))
        ids = [vid for vid, vec in self.vectors.items() if _matches(vec, conditions)]
        if not ids:
            return {"count": 0, "matches": []}
        matrix = np.stack([self.vectors[vid].values for vid in ids])
        norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(vector))
        scores = (matrix @ vector) / np.where(norms == 0, 1, norms)
        order = np.argsort(-scores, kind="stable")[:top_k]
        matches = []
        for i in order:
            vec = self.vectors[ids[i]]
            match: dict[str, Any] = {"id": ids[i], "score": float(scores[i])}
            if return_values:
                match["values"] = vec.values.tolist()
            if return_metadata == "all":
                match["metadata"] = vec.metadata
            elif return_metadata == "indexed":
                match["metadata"] = {k: v for k, v in vec.metadata.items() if k in vec.indexed}
            matches.append(match)
        return {"count": len(matches), "matches": matches}

    def _ids(self, body: bytes) -> list[str]:
        ids = self._json(body).get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ApiError(400, 40001, "ids must be a list of strings")
        return ids

    def _get_by_ids(self, headers: Any, body: bytes) -> list[dict[str, Any]]:
        return [
            {
                "id": vid,
                "values": self.vectors[vid].values.tolist(),
                "metadata": self.vectors[vid].metadata,
            }
            for vid in self._ids(body)
            if vid in self.vectors
        ]

    def _delete_by_ids(self, headers: Any, body: bytes) -> dict[str, str]:
        return self._enqueue("delete", self._ids(body))

    def _info(self, headers: Any, body: bytes) -> dict[str, Any]:
        return {
            "dimensions": self.dimensions,
            "vectorCount": len(self.vectors),
            "processedUpToMutation": self._processed,
            "processedUpToDatetime": self._processed_at,
        }

    def _create_metadata_index(self, headers: Any, body: bytes) -> dict[str, str]:
        doc = self._json(body)
        name, kind = doc.get("propertyName"), doc.get("indexType")
        if not isinstance(name, str) or not name or kind not in ("string", "number", "boolean"):
            raise ApiError(400, 40030, "propertyName and indexType (string|number|boolean)")
        pending = {m.payload[0] for m in self._queue if m.kind == "metadata_index"}
        known = set(self.metadata_indexes) | pending
        if name in known:
            raise ApiError(409, 40031, f"metadata index for {name!r} already exists")
        if len(known) >= MAX_METADATA_INDEXES:
            raise ApiError(400, 40032, "at most 10 metadata indexes per index")
        return self._enqueue("metadata_index", (name, kind))

    def _list_metadata_indexes(self, headers: Any, body: bytes) -> dict[str, Any]:
        pending = [m.payload for m in self._queue if m.kind == "metadata_index"]
        entries = [*self.metadata_indexes.items(), *pending]
        return {"metadataIndexes": [{"propertyName": n, "indexType": t} for n, t in entries]}


def _envelope_error(code: int, message: str) -> dict[str, Any]:
    return {
        "result": None,
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": [],
    }


def _parse_filter(spec: Any) -> list[tuple[str, str, Any]]:
    if spec is None:
        return []
    if not isinstance(spec, dict):
        raise ApiError(400, 40022, "filter must be an object")
    conditions = []
    for name, cond in spec.items():
        ops = cond if isinstance(cond, dict) else {"$eq": cond}
        for op, value in ops.items():
            if op not in _FILTER_OPS:
                raise ApiError(400, 40022, f"unsupported filter operator {op}")
            if op in ("$in", "$nin") and not isinstance(value, list):
                raise ApiError(400, 40022, f"{op} needs an array")
            conditions.append((name, op, value))
    return conditions


def _comparable(a: Any, b: Any) -> bool:
    def kind(x: Any) -> str:
        if isinstance(x, bool):
            return "bool"
        if isinstance(x, int | float):
            return "number" if math.isfinite(x) else "nan"
        return type(x).__name__

    return kind(a) == kind(b)


def _matches(vec: _Vector, conditions: list[tuple[str, str, Any]]) -> bool:
    for name, op, value in conditions:
        # Properties without a metadata index (when the vector was written) are invisible
        # to filters: they behave as missing.
        present = name in vec.indexed and vec.metadata.get(name) is not None
        actual = vec.metadata.get(name) if present else None
        if op == "$eq":
            ok = present and _comparable(actual, value) and actual == value
        elif op == "$ne":
            ok = not (present and _comparable(actual, value) and actual == value)
        elif op == "$in":
            ok = present and any(_comparable(actual, v) and actual == v for v in value)
        elif op == "$nin":
            ok = not (present and any(_comparable(actual, v) and actual == v for v in value))
        else:
            if not (present and _comparable(actual, value)):
                return False
            ok = {
                "$gt": actual > value,
                "$gte": actual >= value,
                "$lt": actual < value,
                "$lte": actual <= value,
            }[op]
        if not ok:
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API behind a client session
    api: VectorizeContractServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY, Nagle + delayed ACK
        # add ~40 ms to every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, envelope, extra = self.api.handle(self.command, self.path, self.headers, body)
        data = json.dumps(envelope).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _serve

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass
