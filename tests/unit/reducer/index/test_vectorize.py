"""reducer/index/vectorize.py against answers shaped unlike Vectorize's documentation
(a proxy's, a changed API), served from 127.0.0.1: typed IndexUnavailable, never a
traceback; and a wait that keeps its bound when each poll is slow."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import numpy as np
import pytest

from reducer.index import IndexUnavailable
from reducer.index.vectorize import MAX_TOPK, VectorizeIndex
from tests.local_http import start_server, stop_server

DIM = 4


class CannedVectorize(BaseHTTPRequestHandler):
    """Answers every call with ``success: true`` and the ``result`` set for its last path
    segment (``query``, ``get_by_ids``, ``info``); ``delay_s`` before answering."""

    results: ClassVar[dict[str, Any]] = {}
    delay_s: ClassVar[float] = 0.0
    served: ClassVar[list[str]] = []

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.served.append(self.path)
        time.sleep(self.delay_s)
        op = self.path.rstrip("/").rsplit("/", 1)[-1]
        body = json.dumps({"success": True, "errors": [], "messages": [],
                           "result": self.results.get(op)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # The client may have given up waiting (the bounded-wait test).
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    CannedVectorize.results, CannedVectorize.delay_s, CannedVectorize.served = {}, 0.0, []
    httpd = start_server(CannedVectorize)
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/client/v4"
    finally:
        stop_server(httpd)


def client(base_url: str, **options: Any) -> VectorizeIndex:
    settings: dict[str, Any] = {"max_attempts": 2, "backoff_base_s": 0.01,
                                "backoff_max_s": 0.02, "manage_metadata_indexes": False}
    return VectorizeIndex("pv-test", account_id="acct", api_token="token", dim=DIM,
                          base_url=base_url, **{**settings, **options})


@pytest.mark.parametrize("result", [
    "matches", {"matches": {"id": "a"}}, {"matches": ["a"]},
    {"matches": [{"score": 0.9}]}, {"matches": [{"id": "a"}]},
    {"matches": [{"id": "a", "score": None}]}, {"matches": [{"id": "a", "score": "NaN"}]},
    {"matches": [{"id": "a", "score": float("nan")}]},
    {"matches": [{"id": "a", "score": 0.9, "metadata": ["x"]}]},
])
def test_a_query_answer_of_another_shape_is_index_unavailable(server: str, result: Any) -> None:
    CannedVectorize.results["query"] = result
    with pytest.raises(IndexUnavailable, match="query answered in an unexpected shape"):
        client(server).query(np.ones(DIM), 3)


@pytest.mark.parametrize("result", [{"id": "a"}, [{"values": [1.0]}], [{"id": "a",
                                     "values": "1,2"}], ["a"]])
def test_a_get_by_ids_answer_of_another_shape_is_index_unavailable(
        server: str, result: Any) -> None:
    CannedVectorize.results["get_by_ids"] = result
    with pytest.raises(IndexUnavailable, match="get_by_ids answered in an unexpected shape"):
        client(server).get(["a"])


@pytest.mark.parametrize("result", ["info", {"dimensions": "abc"}, {"vectorCount": [1]},
                                    {"vectorCount": -1}, {"processedUpToMutation": 7}])
def test_an_info_answer_of_another_shape_is_index_unavailable(server: str, result: Any) -> None:
    CannedVectorize.results["info"] = result
    with pytest.raises(IndexUnavailable, match="info answered in an unexpected shape"):
        client(server).count()


def test_well_formed_answers_still_read(server: str) -> None:
    CannedVectorize.results.update(
        query={"count": 1, "matches": [{"id": "a", "score": 0.5, "metadata": {"key": "C"}}]},
        info={"dimensions": DIM, "vectorCount": 3, "processedUpToMutation": None},
    )
    (match,) = client(server).query(np.ones(DIM), 3)
    assert (match.id, match.score, match.metadata) == ("a", 0.5, {"key": "C"})
    assert client(server).count() == 3


def test_the_wait_for_a_write_keeps_its_bound_when_each_poll_is_slow(server: str) -> None:
    """Each info poll takes longer than the whole wait (its own read timeout and retries
    would add up to many times it): the wait still ends near its bound, typed."""
    CannedVectorize.results["info"] = {"dimensions": DIM, "vectorCount": 0,
                                       "processedUpToMutation": "older"}
    CannedVectorize.delay_s = 2.0
    index = client(server, read_timeout_s=1.0, max_attempts=3, poll_interval_s=0.05)
    index._mutations.append("ours")
    with pytest.raises(IndexUnavailable):
        index.wait_for_writes(timeout_s=0.5)
    # One poll, cut at the wait's bound: before, it ran its 3 attempts of 1 s each.
    assert len(CannedVectorize.served) == 1


def test_the_query_cap_is_the_clients_max_k() -> None:
    assert VectorizeIndex.max_k == MAX_TOPK == 100


def test_a_408_is_retried_as_transient(server: str) -> None:
    """HTTP 408 (request timeout, e.g. from a proxy) is worth another attempt: after
    every attempt it is index_unavailable, not a permanent index_rejected."""

    class Timeout408(CannedVectorize):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.served.append(self.path)
            self.send_response(408)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _answer

    httpd = start_server(Timeout408)
    try:
        with pytest.raises(IndexUnavailable, match="HTTP 408"):
            client(f"http://127.0.0.1:{httpd.server_address[1]}/client/v4").count()
    finally:
        stop_server(httpd)
    assert len(CannedVectorize.served) == 2  # max_attempts
