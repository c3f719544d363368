"""Cloudflare Vectorize (HTTP API v2) as a :class:`~reducer.index.base.VectorIndex`.

Writes are asynchronous on Vectorize: upsert/delete return a ``mutationId`` and become
visible once the index's ``processedUpToMutation`` reaches it (see
:meth:`VectorizeIndex.wait_for_mutation`). Filtering needs a metadata index per property,
created *before* the vectors are written; this client creates the ones for
``FILTER_FIELDS`` on its first write.

The API token is sent as ``Authorization: Bearer`` and never logged or put in errors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np
import requests
from tenacity import RetryCallState

from contract.retry import Backoff, parse_retry_after, retrying
from reducer.index.base import (
    FILTER_FIELDS,
    MAX_DIMENSIONS,
    CheckedBatch,
    IndexItem,
    IndexRejected,
    IndexUnavailable,
    Match,
    check_id,
    check_items,
    check_k,
    check_vector,
    normalize_filter,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
MAX_VECTORS_PER_UPSERT = 5_000  # HTTP API limit per request
MAX_UPLOAD_BYTES = 90_000_000  # API limit is 100 MB; keep headroom
MAX_TOPK_WITH_METADATA = 20  # topK limit when metadata or values are returned
MAX_TOPK = 100
GET_BATCH = 20  # ids per get_by_ids request (kept at the returned-with-values limit)
DELETE_BATCH = 1_000
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_FORMAT_F32 = "{:.9g}".format  # 9 significant digits round-trip any float32 exactly


@dataclass(frozen=True)
class IndexInfo:
    """``GET …/info``: dimensions, vector count and how far async writes are applied."""

    dimensions: int
    vector_count: int
    processed_up_to_mutation: str | None
    processed_up_to_datetime: str | None


@contextlib.contextmanager
def _expected_shape(op: str) -> Iterator[None]:
    """A ``success: true`` answer whose ``result`` is not shaped as documented (a proxy's,
    a changed API) is :class:`IndexUnavailable` with a short reason, not a traceback."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise IndexUnavailable(f"Vectorize {op} answered in an unexpected shape "
                               f"({type(exc).__name__}: {exc})") from None


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"expected a non-empty string, got {value!r:.40}")
    return value


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r:.40}")
    return float(value)


def _count(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a count, got {value!r:.40}")
    return value


class _Transient(Exception):
    """A failed attempt worth another: network error, 429, 5xx or a non-JSON answer."""

    def __init__(self, problem: str, retry_after_s: float | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.retry_after_s = retry_after_s


def _api_errors(response: requests.Response) -> str:
    """The API's error messages (``errors[].message``), else a short body excerpt."""
    try:
        body = response.json()
        errors = body.get("errors") or []
        parts = [f"{e.get('code', '?')}: {e.get('message', '')}" for e in errors]
        if parts:
            return "; ".join(parts)
    except (ValueError, AttributeError):
        pass
    return response.text[:200].strip() or response.reason or "no error message"


class VectorizeIndex:
    """Client for one Vectorize index (thread-safe for concurrent calls)."""

    max_k = MAX_TOPK  # the API's topK cap: Reducer.similar asks for no more

    def __init__(
        self,
        name: str,
        *,
        account_id: str,
        api_token: str,
        dim: int,
        base_url: str = DEFAULT_BASE_URL,
        max_attempts: int = 6,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        poll_interval_s: float = 0.5,
        manage_metadata_indexes: bool = True,
        session: requests.Session | None = None,
    ) -> None:
        if not _NAME_RE.match(name):
            raise ValueError(f"invalid Vectorize index name {name!r}")
        if not account_id:
            raise ValueError("Vectorize needs an account id (PREVIEWVEC_VECTORIZE_ACCOUNT_ID)")
        if not api_token:
            raise ValueError("Vectorize needs an API token (PREVIEWVEC_VECTORIZE_API_TOKEN)")
        if not 1 <= dim <= MAX_DIMENSIONS:
            raise ValueError(f"dim must be 1..{MAX_DIMENSIONS}")
        self.name = name
        self.dim = dim
        self._account_id = account_id
        self._token = api_token
        self._base = (
            f"{base_url.rstrip('/')}/accounts/{quote(account_id, safe='')}"
            f"/vectorize/v2/indexes/{quote(name, safe='')}"
        )
        self.max_attempts = max(1, max_attempts)
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.poll_interval_s = poll_interval_s
        self._timeout = (connect_timeout_s, read_timeout_s)
        self._session = session or requests.Session()
        self._lock = threading.Lock()
        self._mutations: list[str] = []  # ours, in the order the API accepted them
        self._manage_metadata_indexes = manage_metadata_indexes
        self._metadata_indexes_ready = False
        self._metadata_lock = threading.Lock()

    def __repr__(self) -> str:  # no token, no account id
        return f"VectorizeIndex({self.name!r}, dim={self.dim})"

    # --- HTTP ---------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        op: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        content_type: str = "application/json",
        deadline: float | None = None,
    ) -> Any:
        """One API call with retries on 429/5xx/network errors; returns ``result``. With
        ``deadline`` (a ``time.monotonic()`` value) no attempt or pause runs past it."""
        url = f"{self._base}/{op}"
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        body = data
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":"), allow_nan=False).encode()
        if body is not None:
            headers["Content-Type"] = content_type
        tries = retrying(
            Backoff(self.backoff_base_s, self.backoff_max_s),
            attempts=self.max_attempts,
            retryable=lambda exc: isinstance(exc, _Transient),
            retry_after=lambda exc: getattr(exc, "retry_after_s", None),
            deadline=deadline,
            before_sleep=lambda state: self._log_retry(op, state),
        )
        try:
            for try_ in tries:
                with try_:
                    timeout = self._timeout
                    if deadline is not None:
                        left = max(deadline - time.monotonic(), 0.001)
                        timeout = (min(timeout[0], left), min(timeout[1], left))
                    return self._attempt(method, op, url, body, headers, timeout)
        except _Transient as exc:
            raise IndexUnavailable(
                f"Vectorize {op} failed after {self.max_attempts} attempts: {exc.problem}"
            ) from None
        raise AssertionError("unreachable: tenacity returns or raises")

    def _attempt(
        self, method: str, op: str, url: str, body: bytes | None, headers: dict[str, str],
        timeout: tuple[float, float],
    ) -> Any:
        """One try: ``result``, or :class:`_Transient` / :class:`IndexRejected`."""
        try:
            response = self._session.request(
                method, url, data=body, headers=headers, timeout=timeout
            )
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            raise _Transient(type(exc).__name__) from None
        status = response.status_code
        if status in (408, 429) or status >= 500:  # 408: the request timed out, try again
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise _Transient(f"HTTP {status}", retry_after)
        if status >= 400:
            raise IndexRejected(
                f"Vectorize {op} rejected (HTTP {status}): {_api_errors(response)}"
            )
        try:
            payload = response.json()
        except ValueError:
            raise _Transient(f"HTTP {status} with a non-JSON body") from None
        if isinstance(payload, dict) and payload.get("success") is False:
            raise IndexRejected(f"Vectorize {op} failed: {_api_errors(response)}")
        return payload.get("result") if isinstance(payload, dict) else None

    def _log_retry(self, op: str, state: RetryCallState) -> None:
        # INFO: routine while it lasts; the outcome is IndexUnavailable (the CLI's one
        # line, the reducer's warning) if every attempt fails.
        exc = state.outcome.exception() if state.outcome else None
        log.info(
            "vectorize %s: %s; retry %d/%d in %.2fs",
            op,
            getattr(exc, "problem", exc),
            state.attempt_number,
            self.max_attempts - 1,
            state.upcoming_sleep,
        )

    def _record_mutation(self, result: Any) -> str | None:
        mutation = result.get("mutationId") if isinstance(result, dict) else None
        if mutation:
            with self._lock:
                self._mutations.append(mutation)
        return mutation

    # --- metadata indexes -----------------------------------------------------------------

    def list_metadata_indexes(self) -> dict[str, str]:
        """propertyName → indexType of the index's metadata indexes."""
        result = self._request("GET", "metadata_index/list") or {}
        return {
            entry["propertyName"]: entry.get("indexType", "")
            for entry in result.get("metadataIndexes") or []
        }

    def ensure_metadata_indexes(self) -> None:
        """Create the metadata indexes for ``FILTER_FIELDS`` that do not exist yet.

        Vectorize only filters on indexed properties, and only for vectors written after
        the property's index exists — so this runs before the first write.
        """
        existing = self.list_metadata_indexes()
        for name, kind in FILTER_FIELDS.items():
            if name in existing:
                continue
            try:
                result = self._request(
                    "POST",
                    "metadata_index/create",
                    json_body={"propertyName": name, "indexType": kind},
                )
            except IndexRejected:
                # Another worker may have created it since we listed: that is fine.
                if name not in self.list_metadata_indexes():
                    raise
                continue
            self._record_mutation(result)
        self._metadata_indexes_ready = True

    def _before_write(self) -> None:
        if not self._manage_metadata_indexes or self._metadata_indexes_ready:
            return
        with self._metadata_lock:  # concurrent first writes must not create twice
            if not self._metadata_indexes_ready:
                self.ensure_metadata_indexes()

    # --- VectorIndex ----------------------------------------------------------------------

    @staticmethod
    def _ndjson_line(item_id: str, values: np.ndarray, metadata_json: str) -> bytes:
        numbers = ",".join(map(_FORMAT_F32, values.tolist()))
        head = json.dumps({"id": item_id}, ensure_ascii=False)[:-1]
        return f'{head},"values":[{numbers}],"metadata":{metadata_json}}}\n'.encode()

    def _upsert_bodies(self, batch: CheckedBatch) -> list[bytes]:
        """NDJSON bodies of ≤ 5 000 vectors and ≤ MAX_UPLOAD_BYTES each."""
        bodies: list[bytes] = []
        lines: list[bytes] = []
        size = 0
        for row, item_id in enumerate(batch.ids):
            line = self._ndjson_line(item_id, batch.values[row], batch.metadata_json[row])
            full = len(lines) >= MAX_VECTORS_PER_UPSERT or size + len(line) > MAX_UPLOAD_BYTES
            if lines and full:
                bodies.append(b"".join(lines))
                lines, size = [], 0
            lines.append(line)
            size += len(line)
        if lines:
            bodies.append(b"".join(lines))
        return bodies

    def upsert(self, items: Sequence[IndexItem]) -> None:
        """Validate everything first, then POST NDJSON batches; records each mutationId.

        Upserts are idempotent, so a retried request (e.g. after a timeout whose write did
        land) is harmless.
        """
        checked = check_items(items, self.dim)
        if not checked:
            return
        bodies = self._upsert_bodies(checked)
        self._before_write()
        for body in bodies:
            result = self._request("POST", "upsert", data=body, content_type="application/x-ndjson")
            self._record_mutation(result)

    def query(
        self, vector: Sequence[float] | np.ndarray, k: int, *, filter: dict | None = None
    ) -> list[Match]:
        """Cosine top-k. Above 20 results Vectorize returns no metadata in the query, so it
        is fetched with ``get_by_ids`` instead (k ≤ 100)."""
        check_k(k, MAX_TOPK)
        values = check_vector(vector, self.dim, "query vector")
        conditions = normalize_filter(filter)
        body: dict[str, Any] = {
            "vector": [float(v) for v in values],
            "topK": k,
            "returnValues": False,
            "returnMetadata": "all" if k <= MAX_TOPK_WITH_METADATA else "none",
        }
        if conditions:
            body["filter"] = filter
        result = self._request("POST", "query", json_body=body) or {}
        with _expected_shape("query"):
            matches = [Match(_text(m["id"]), _finite(m["score"]),
                             _mapping(m.get("metadata") or {})) for m in _list(
                                 _mapping(result).get("matches") or [])]
        if k > MAX_TOPK_WITH_METADATA and matches:
            fetched = {item.id: item.metadata for item in self.get([m.id for m in matches])}
            matches = [Match(m.id, m.score, fetched.get(m.id, {})) for m in matches]
        return matches

    def get(self, ids: Sequence[str]) -> list[IndexItem]:
        """``get_by_ids`` in batches; order as asked, unknown ids skipped."""
        wanted = [check_id(i) for i in ids]
        unique = list(dict.fromkeys(wanted))
        found: dict[str, IndexItem] = {}
        for start in range(0, len(unique), GET_BATCH):
            chunk = unique[start : start + GET_BATCH]
            result = self._request("POST", "get_by_ids", json_body={"ids": chunk}) or []
            with _expected_shape("get_by_ids"):
                for vec in _list(result):
                    item_id = _text(_mapping(vec)["id"])
                    found[item_id] = IndexItem(
                        item_id,
                        np.asarray(_list(vec.get("values") or []), dtype=np.float32),
                        _mapping(vec.get("metadata") or {}),
                    )
        return [found[i] for i in wanted if i in found]

    def contains(self, ids: Sequence[str]) -> set[str]:
        """``get_by_ids`` in batches, keeping only the ids (the API has no lighter call).

        Vectors written but not yet processed are not found: the caller upserts those
        again, which replaces them with the same values.
        """
        return {item.id for item in self.get(ids)}

    def delete(self, ids: Sequence[str]) -> None:
        """``delete_by_ids`` in batches (async, like upserts)."""
        unique = list(dict.fromkeys(check_id(i) for i in ids))
        for start in range(0, len(unique), DELETE_BATCH):
            result = self._request(
                "POST", "delete_by_ids", json_body={"ids": unique[start : start + DELETE_BATCH]}
            )
            self._record_mutation(result)

    def info(self) -> IndexInfo:
        """Index dimensions, vector count and the last processed mutation."""
        return self._info()

    def _info(self, deadline: float | None = None) -> IndexInfo:
        result = self._request("GET", "info", deadline=deadline) or {}
        with _expected_shape("info"):
            info = _mapping(result)
            mutation, when = info.get("processedUpToMutation"), info.get("processedUpToDatetime")
            return IndexInfo(
                dimensions=_count(info.get("dimensions")),
                vector_count=_count(info.get("vectorCount")),
                processed_up_to_mutation=None if mutation is None else _text(mutation),
                processed_up_to_datetime=None if when is None else _text(when),
            )

    def count(self) -> int:
        """``vectorCount`` from info: writes not yet processed are not counted."""
        return self.info().vector_count

    @property
    def last_mutation_id(self) -> str | None:
        """The newest mutation this client made, if any."""
        with self._lock:
            return self._mutations[-1] if self._mutations else None

    def wait_for_mutation(self, mutation_id: str, timeout_s: float = 60.0) -> None:
        """Poll ``info`` until ``mutation_id`` is processed; ``IndexUnavailable`` on timeout.

        Mutations are applied in order and ``processedUpToMutation`` may jump past ours
        straight to a later one, so any of *our* later mutations also counts. (With other
        writers on the same index their ids are unknown to us: one writer per index.)
        """
        with self._lock:
            if mutation_id in self._mutations:
                done = set(self._mutations[self._mutations.index(mutation_id) :])
            else:
                done = {mutation_id}
        deadline = time.monotonic() + timeout_s
        while True:
            try:  # each poll's own retries end at the deadline too
                if self._info(deadline).processed_up_to_mutation in done:
                    return
            except IndexUnavailable:
                if time.monotonic() < deadline:
                    raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise IndexUnavailable(
                    f"Vectorize mutation {mutation_id} not processed within {timeout_s:g}s"
                )
            time.sleep(min(self.poll_interval_s, remaining))

    def wait_for_writes(self, timeout_s: float = 60.0) -> None:
        """Wait until this client's last write is visible."""
        last = self.last_mutation_id
        if last is not None:
            self.wait_for_mutation(last, timeout_s)
