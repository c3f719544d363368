"""The HTTP API (previewvec.api) through FastAPI's TestClient, against a real Redis."""

from __future__ import annotations

import json
import random
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from redis import Redis

from contract.jobs import JOB_FIELDS, Job
from contract.layout import VECTOR_DIM
from contract.records import FeatureRecord, encode_record, make_provenance, record_key
from contract.settings import Settings
from contract.state import Runs, connect
from contract.store import open_store
from previewvec.api import create_app
from previewvec.localredis import free_port

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BODY = 20_000
RELEASE = "6f7c1a52-3b4e-4c0e-9a57-2f7d3c1e9b10"


@dataclass(frozen=True)
class FakeResolution:
    recording_id: str
    job: Job | None
    score: float
    reason: str
    error_code: str | None


class FakeResolver:
    """Resolves every input to three recordings, the last one unresolvable."""

    def _three(self, tag: str) -> Iterator[FakeResolution]:
        for i in range(3):
            rid = f"{tag}-{i}"
            if i == 2:
                yield FakeResolution(rid, None, 0.2, "title=0.20", "no_confident_match")
            else:
                job = Job(recording_id=rid, preview_url=f"https://p.scdn.co/{rid}")
                yield FakeResolution(rid, job, 0.99, "title=1.00", None)

    def resolve_release(self, mbid: str):
        return self._three("rel")

    def resolve_isrcs(self, isrcs: list[str]):
        return self._three("isrc")

    def resolve_query(self, lucene: str):
        return self._three("q")

    def resolve_new_releases(self, since, until=None):
        return self._three("new")


class BrokenResolver(FakeResolver):
    def resolve_release(self, mbid: str):
        raise ConnectionError("musicbrainz unreachable")


@pytest.fixture(scope="module")
def settings(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("api")
    (root / "store").mkdir()  # as a deployment mounts it; the API never creates it
    return Settings(broker_url=redis_url, store=str(root / "store"), index=str(root / "index"),
                    api_tokens=(TOKEN, "another-token"), api_max_body_bytes=MAX_BODY)


@pytest.fixture(scope="module")
def app(settings: Settings):
    return create_app(settings, resolver_factory=lambda s, **_: FakeResolver())


@pytest.fixture(scope="module")
def client(app) -> Iterator[TestClient]:
    # raise_server_exceptions: any unhandled error fails the test outright.
    with TestClient(app, raise_server_exceptions=True) as c:
        yield c
    app.state.background.join()


@pytest.fixture
def r(redis_url: str) -> Redis:
    return connect(redis_url)


def post(client: TestClient, body: bytes | str, headers: dict | None = None):
    return client.post("/v1/jobs", content=body,
                       headers={"Content-Type": "application/json", **AUTH, **(headers or {})})


def wait_run(client: TestClient, app, run_id: str) -> dict:
    app.state.background.join()
    resp = client.get(f"/v1/runs/{run_id}", headers=AUTH)
    assert resp.status_code == 200
    return resp.json()


# --------------------------------------------------------------------------- ops


def test_healthz_and_docs(client: TestClient, settings: Settings) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "redis": "ok"}
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/v1/jobs", "/v1/runs/{run_id}", "/v1/recordings/{recording_id}",
            "/v1/similar/{recording_id}", "/healthz"} <= set(spec["paths"])
    down = Settings(broker_url=f"redis://127.0.0.1:{free_port()}/0", api_tokens=(TOKEN,))
    with TestClient(create_app(down)) as c:
        assert c.get("/healthz").status_code == 503
        # A dead broker is a 503 for the client, not a 500.
        assert c.get("/v1/runs/x", headers=AUTH).status_code == 503


# --------------------------------------------------------------------------- auth, limits


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN}, {"Authorization": "Bearer "},
    {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer \u00e9\u00e9".encode()},
])
def test_auth_required(client: TestClient, headers: dict) -> None:
    for method, path in (("post", "/v1/jobs"), ("get", "/v1/runs/x"),
                         ("get", "/v1/recordings/x"), ("get", "/v1/similar/x")):
        resp = client.request(method, path, headers=headers, content=b'{"release": "x"}')
        assert resp.status_code == 401, (method, path)
        assert resp.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in resp.text


def test_second_token_works(client: TestClient) -> None:
    resp = client.get("/v1/runs/nope", headers={"Authorization": "Bearer another-token"})
    assert resp.status_code == 404


def test_body_limit(client: TestClient) -> None:
    big = json.dumps({"query": "a" * MAX_BODY})
    assert post(client, big).status_code == 413  # declared Content-Length

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(30):
            yield b"x" * 1000

    resp = client.post("/v1/jobs", content=chunks(), headers=AUTH)
    assert resp.status_code == 413
    assert post(client, b"{}", {"Content-Length": "abc"}).status_code == 400


# --------------------------------------------------------------------------- input


@pytest.mark.parametrize("body, status", [
    (b"", 400), (b"{", 400), (b"\xff\xfe", 400), (b"[" * 15_000, 400), (b"1" * 5000, 400),
    (b"NaN", 422), (b"[]", 422), (b'"x"', 422), (b"{}", 422),
    (b'{"release": "not-a-uuid"}', 422), (b'{"isrcs": []}', 422), (b'{"isrcs": ["nope"]}', 422),
    (b'{"query": ""}', 422), (b'{"query": "\\ud800"}', 422), (b'{"query": 5}', 422),
    (b'{"new_releases": {"since": "2024-13-01"}}', 422),
    (b'{"new_releases": {"since": "20240101"}}', 422),
    (b'{"new_releases": {"since": "2024-02-01", "until": "2024-01-01"}}', 422),
    (b'{"new_releases": {"until": "2024-01-01"}}', 422),
    (b'{"jobs": []}', 422), (b'{"jobs": {}}', 422), (b'{"jobs": [null]}', 422),
    (b'{"release": "6f7c1a52-3b4e-4c0e-9a57-2f7d3c1e9b10", "query": "x"}', 422),
    (b'{"query": "x", "queue": "fast"}', 422), (b'{"query": "x", "force": "yes"}', 422),
    (b'{"query": "x", "\\ud800": 1}', 422),
    (b'{"jobs": [{"recording_id": "\\ud800", "preview_url": "https://p.scdn.co/x"}]}', 422),
])
def test_malformed_input(client: TestClient, body: bytes, status: int) -> None:
    resp = post(client, body)
    assert resp.status_code == status, resp.text
    assert "detail" in resp.json()
    assert resp.json()["code"] == {400: "bad_request", 422: "invalid_request"}[status]


@pytest.mark.parametrize(("method", "path", "headers", "body", "status", "code"), [
    ("get", "/v1/runs/x", {}, None, 401, "unauthorized"),
    ("get", "/v1/runs/no-such-run", AUTH, None, 404, "not_found"),
    ("get", "/v1/nowhere", AUTH, None, 404, "not_found"),
    ("delete", "/v1/jobs", AUTH, None, 405, "method_not_allowed"),
    ("post", "/v1/jobs", AUTH, b"{", 400, "bad_request"),
    ("post", "/v1/jobs", AUTH, b'{"query": 5}', 422, "invalid_request"),
    ("post", "/v1/jobs", AUTH, b"x" * (MAX_BODY + 1), 413, "too_large"),
    ("get", "/v1/similar/x?k=0", AUTH, None, 422, "invalid_request"),
])
def test_every_error_carries_a_stable_code(client: TestClient, method: str, path: str,
                                           headers: dict, body: bytes | None, status: int,
                                           code: str) -> None:
    """Given each kind of refused request, expect a JSON body with ``detail`` and a
    stable ``code`` (401, 404, 405, 400, 413 and 422 had a ``detail`` only)."""
    resp = client.request(method, path, content=body,
                          headers={"Content-Type": "application/json", **headers})
    assert resp.status_code == status, resp.text
    assert resp.json()["code"] == code and resp.json()["detail"]


def test_invalid_job_field_errors(client: TestClient) -> None:
    jobs = [{"recording_id": "a", "preview_url": "https://p.scdn.co/a"},
            {"recording_id": "b"},
            {"recording_id": "c", "preview_url": "ftp://x/c"},
            {"recording_id": "d", "preview_url": "https://p.scdn.co/d", "colour": "red"}]
    resp = post(client, json.dumps({"jobs": jobs}))
    assert resp.status_code == 422
    locs = [e["loc"] for e in resp.json()["detail"]]
    assert locs == [["body", "jobs", 1, "preview_url"], ["body", "jobs", 2, "preview_url"],
                    ["body", "jobs", 3, "colour"]]
    assert all(e["type"] == "invalid_job" for e in resp.json()["detail"])


def test_a_repeated_key_is_refused(client: TestClient) -> None:
    # json.loads keeps the last value: {"recording_id": "a", "recording_id": "b"} queued b.
    body = ('{"jobs": [{"recording_id": "a", "recording_id": "b", '
            '"preview_url": "https://p.scdn.co/b"}]}')
    resp = post(client, body)
    assert resp.status_code == 400, resp.text
    assert "duplicate key 'recording_id'" in resp.json()["detail"]
    resp = post(client, '{"query": "x", "query": "y"}')
    assert resp.status_code == 400 and "duplicate key 'query'" in resp.json()["detail"]


def test_a_repeated_recording_is_published_once(client: TestClient, app, r: Redis) -> None:
    same = {"recording_id": "api-rep-a", "preview_url": "https://p.scdn.co/rep-a"}
    other = {"recording_id": "api-rep-b", "preview_url": "https://p.scdn.co/rep-b"}
    resp = post(client, json.dumps({"jobs": [same, other, same]}))
    assert resp.status_code == 202, resp.text
    assert resp.json()["accepted"] == 2
    run = wait_run(client, app, resp.json()["run_id"])
    assert run["counts"]["queued"] == 2 and run["submitted"] == 2
    queued = [m for m in r.lrange("ondemand", 0, -1) if resp.json()["run_id"] in m]
    assert len(queued) == 2

    conflicting = {**same, "preview_url": "https://p.scdn.co/rep-a2"}
    resp = post(client, json.dumps({"jobs": [same, other, conflicting]}))
    assert resp.status_code == 422, resp.text
    [error] = resp.json()["detail"]
    assert error["loc"] == ["body", "jobs", 2]
    assert error["msg"].startswith("conflicting duplicate of jobs[0]")


# --------------------------------------------------------------------------- runs


def test_a_job_from_a_host_no_worker_fetches_is_refused_up_front(client: TestClient,
                                                                 r: Redis) -> None:
    """From the data-scientist review: a job whose preview is on a host outside the
    allowlist (or an address) was accepted (202) and then failed on a worker."""
    before = r.llen("ondemand")
    jobs = [{"recording_id": "host-ok", "preview_url": "https://p.scdn.co/ok"},
            {"recording_id": "host-evil", "preview_url": "https://evil.example/x.mp3"},
            {"recording_id": "host-local", "preview_url": "http://127.0.0.1/x.mp3"}]
    resp = post(client, json.dumps({"jobs": jobs}))
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert [(d["loc"], d["type"]) for d in detail] == [
        (["body", "jobs", 1, "preview_url"], "host_not_allowed"),
        (["body", "jobs", 2, "preview_url"], "host_not_allowed")]
    assert r.llen("ondemand") == before  # nothing of it was queued


def test_host_errors_are_capped_like_other_field_errors(client: TestClient) -> None:
    """Given many jobs on a host no worker fetches, expect at most MAX_ERRORS field errors
    in the 422, as for every other field error: each job's error was listed, so 10 000
    such jobs (a 700 KB body) got a 1.5 MB answer."""
    from previewvec.api import MAX_ERRORS

    jobs = [{"recording_id": f"cap-{i}", "preview_url": f"https://evil.example/{i}"}
            for i in range(MAX_ERRORS + 30)]
    resp = post(client, json.dumps({"jobs": jobs}))
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert len(detail) == MAX_ERRORS
    assert detail[0]["loc"] == ["body", "jobs", 0, "preview_url"]
    assert all(d["type"] == "host_not_allowed" for d in detail)


def test_jobs_are_accepted_and_published(client: TestClient, app, r: Redis) -> None:
    jobs = [{"recording_id": f"api-job-{i}", "preview_url": f"https://p.scdn.co/{i}",
             "isrc": "us-rc1-76-07839"} for i in range(5)]
    resp = post(client, json.dumps({"jobs": jobs}))
    assert resp.status_code == 202, resp.text
    out = resp.json()
    assert out["accepted"] == 5 and out["queue"] == "ondemand"
    run_id = out["run_id"]
    assert client.get(out["status_url"], headers=AUTH).status_code == 200  # visible at once
    run = wait_run(client, app, run_id)
    assert run["counts"]["queued"] == 5 and run["submitted"] == 5
    assert run["resolution"]["state"] == "finished" and run["resolution"]["resolved"] == 5
    queued = [json.loads(m) for m in r.lrange("ondemand", 0, -1)]
    assert sum(run_id in json.dumps(m) for m in queued) == 5


def test_resolved_inputs_run_in_background(client: TestClient, app) -> None:
    for body in ({"release": RELEASE}, {"isrcs": ["USRC17607839"]},
                 {"query": 'artist:"Nina Simone"', "force": True},
                 {"new_releases": {"since": "2024-01-01", "until": None}}):
        resp = post(client, json.dumps(body))
        assert resp.status_code == 202, resp.text
        expected_queue = "batch" if "query" in body else "ondemand"
        assert resp.json()["queue"] == expected_queue
        run = wait_run(client, app, resp.json()["run_id"])
        assert run["resolution"] == {"resolved": 2, "unresolved": 1, "skipped_existing": 0,
                                     "skipped_video": 0, "skipped_no_tracks": 0,
                                     "skipped_queued": 0, "state": "finished"}
        assert run["counts"]["queued"] == 2 and run["counts"]["failed"] == 1
        (failure,) = run["failures"]
        assert failure["code"] == "no_confident_match" and failure["message"] == "title=0.20"


def test_resolver_failure_is_reported(settings: Settings) -> None:
    app = create_app(settings, resolver_factory=lambda s, **_: BrokenResolver())
    with TestClient(app) as c:
        resp = post(c, json.dumps({"release": RELEASE}))
        assert resp.status_code == 202
        run = wait_run(c, app, resp.json()["run_id"])
    assert run["resolution"]["state"] == "failed"
    assert "musicbrainz unreachable" in run["resolution"]["error"]


def test_unconfigured_resolution_is_503(settings: Settings) -> None:
    from contract.errors import PreviewvecError

    class Unconfigured(PreviewvecError):
        code = "mb_contact_missing"

    def factory(_: Settings, **__: object):
        raise Unconfigured("PREVIEWVEC_MB_CONTACT is empty")

    with TestClient(create_app(settings, resolver_factory=factory)) as c:
        resp = post(c, json.dumps({"query": "x"}))
        assert resp.status_code == 503 and "mb_contact_missing" in resp.json()["detail"]
        assert post(c, json.dumps({"jobs": [{"recording_id": "u1",  # needs no resolver
                                             "preview_url": "https://p.scdn.co/u"}]})
                    ).status_code == 202


def test_run_failures_paginate(client: TestClient, redis_url: str) -> None:
    runs = Runs.from_url(redis_url)
    runs.create("paged-run", queue="batch")
    for i in range(250):
        runs.fail("paged-run", f"rec-{i}", "fetch_failed", "boom")
    seen: list[str] = []
    cursor = 0
    for _ in range(100):
        page = client.get("/v1/runs/paged-run", params={"cursor": cursor, "limit": 100},
                          headers=AUTH).json()
        seen += [f["recording_id"] for f in page["failures"]]
        cursor = page["failures_next"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(f"rec-{i}" for i in range(250))
    assert client.get("/v1/runs/paged-run", params={"limit": 0},
                      headers=AUTH).status_code == 422
    assert client.get("/v1/runs/no-such-run", headers=AUTH).status_code == 404


# --------------------------------------------------------------------------- features


def test_a_mistyped_store_folder_is_a_fault_and_is_never_created(
        settings: Settings, tmp_path: Path) -> None:
    """From the data-scientist review: the API opened a missing store folder by creating
    it, then answered 404 "no stored record"."""
    typo = replace(settings, store=str(tmp_path / "stroe"), index=str(tmp_path / "idx"))
    app = create_app(typo, resolver_factory=lambda s, **_: FakeResolver())
    with TestClient(app, raise_server_exceptions=True) as c:
        got = c.get("/v1/recordings/stored-1", headers=AUTH)
        assert got.status_code == 503 and got.json()["code"] == "store_folder_missing"
        got = c.get("/v1/similar/stored-1", headers=AUTH)
        assert got.status_code == 503 and got.json()["code"] == "store_folder_missing"
    app.state.background.join()
    assert not (tmp_path / "stroe").exists()


def test_recordings(client: TestClient, settings: Settings) -> None:
    assert client.get("/v1/recordings/absent", headers=AUTH).status_code == 404
    assert client.get("/v1/recordings/..", headers=AUTH).status_code == 404
    assert client.get("/v1/recordings/" + "x" * 100, headers=AUTH).status_code == 404
    record = FeatureRecord(
        recording_id="stored-1", vector=[0.5] * VECTOR_DIM,
        descriptors={"tempo_bpm": 120.0, "key": "A", "mode": "minor"},
        provenance=make_provenance(preview_url="https://p.scdn.co/1", audio_sha256="ab" * 32,
                                   source="spotify", run_id="r1", decoder="test"))
    open_store(settings.store).put(record.key, encode_record(record))
    got = client.get("/v1/recordings/stored-1", headers=AUTH).json()
    assert got["descriptors"]["tempo_bpm"] == 120.0
    assert got["provenance"]["preview_url"] == "https://p.scdn.co/1"
    assert "vector" not in got
    with_vector = client.get("/v1/recordings/stored-1?vector=true", headers=AUTH).json()
    assert len(with_vector["vector"]) == VECTOR_DIM
    typo = client.get("/v1/recordings/stored-1?vectors=true", headers=AUTH)
    assert typo.status_code == 422 and typo.json()["detail"][0]["loc"] == ["query", "vectors"]
    # a record under another recording's key is not that recording: said, with the key
    misplaced = open_store(settings.store)
    misplaced.put(record_key(record.feature_version, "stored-2"), encode_record(record))
    resp = client.get("/v1/recordings/stored-2", headers=AUTH)
    assert resp.status_code == 500 and "stored-2" in resp.json()["detail"]
    assert "stored-1" in resp.json()["detail"]
    assert resp.json()["code"] == "corrupt_record"  # a stable code, as every fault has


@pytest.mark.parametrize("query", ["k=0", "k=101", "k=x", "mode=dorian", "key=H",
                                   "tempo_min=nan", "tempo_max=-5", "tempo_min=inf",
                                   "tempo_min=200&tempo_max=100",
                                   # unknown names (from the data-scientist review: they
                                   # were ignored and the answer unfiltered)
                                   "k=2&tempo=100", "tempo-min=100", "k=2&foo=1"])
def test_similar_bad_query(client: TestClient, query: str) -> None:
    assert client.get(f"/v1/similar/absent?{query}", headers=AUTH).status_code == 422


def test_similar(client: TestClient, settings: Settings) -> None:
    resp = client.get("/v1/similar/absent?k=5&key=F%23&mode=minor&tempo_min=90",
                      headers=AUTH)
    assert resp.status_code == 404
    from reducer.reduce import Reducer

    rng = random.Random(7)
    store = open_store(settings.store)
    for i, key in enumerate(("A", "A", "C", "A")):
        record = FeatureRecord(
            recording_id=f"sim-{i}", vector=[rng.random() for _ in range(VECTOR_DIM)],
            descriptors={"tempo_bpm": 100.0 + i, "key": key, "mode": "minor"},
            provenance=make_provenance(preview_url="https://p.scdn.co/s", audio_sha256="cd" * 32,
                                       source="spotify", run_id="r1", decoder="test"))
        store.put(record.key, encode_record(record))
    Reducer.build(settings).reindex(refit=True)
    resp = client.get("/v1/similar/sim-0?k=5&key=A&tempo_min=100&tempo_max=110", headers=AUTH)
    assert resp.status_code == 200, resp.text
    ids = [m["recording_id"] for m in resp.json()["matches"]]
    assert sorted(ids) == ["sim-1", "sim-3"]  # itself and the C-key track are left out
    assert all(m["descriptors"]["key"] == "A" for m in resp.json()["matches"])


# --------------------------------------------------------------------------- fuzz

_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
            | st.text(max_size=20))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
_keys = st.sampled_from(["release", "isrcs", "query", "new_releases", "jobs", "queue",
                         "force", "since", "until"]) | st.text(max_size=6)
_job = st.dictionaries(st.sampled_from([*JOB_FIELDS, "extra"]),
                       _json | st.sampled_from(["https://p.scdn.co/x", "USRC17607839", "a"]),
                       max_size=6)
_bodies = st.one_of(
    st.binary(max_size=200),
    _json.map(json.dumps),
    st.dictionaries(_keys, _json, max_size=4).map(json.dumps),
    st.fixed_dictionaries({"jobs": st.lists(_job, max_size=4)}).map(json.dumps),
    st.fixed_dictionaries({"new_releases": st.dictionaries(_keys, _json | st.dates().map(str),
                                                           max_size=3)}).map(json.dumps),
    st.fixed_dictionaries({"isrcs": st.lists(st.text(max_size=14), max_size=3),
                           "queue": st.sampled_from(["ondemand", "batch", "x"])}).map(json.dumps),
)


@hsettings(max_examples=300, deadline=None, derandomize=True,
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(body=_bodies)
def test_fuzz_never_500(client: TestClient, body: bytes | str) -> None:
    resp = post(client, body)
    assert resp.status_code in (202, 400, 413, 422), (resp.status_code, resp.text)
    resp.json()  # always a JSON answer


@hsettings(max_examples=150, deadline=None, derandomize=True,
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ident=st.text(min_size=1, max_size=80),
       endpoint=st.sampled_from(["runs", "recordings", "similar"]),
       query=st.dictionaries(st.sampled_from(["k", "cursor", "limit", "vector", "tempo_min",
                                              "key", "mode", "x"]),
                             st.text(max_size=8), max_size=3))
def test_fuzz_get_never_500(client: TestClient, ident: str, endpoint: str,
                            query: dict[str, str]) -> None:
    path = f"/v1/{endpoint}/" + urllib.parse.quote(ident, safe="")
    resp = client.get(path, params=query, headers=AUTH)
    assert resp.status_code in (200, 404, 422), (resp.status_code, resp.text)
    resp.json()


def test_settle(app) -> None:
    """Let background submissions from the tests above finish before Redis goes away."""
    app.state.background.join()


def test_tokens_never_in_openapi(client: TestClient) -> None:
    assert TOKEN not in client.get("/openapi.json").text


def test_a_submission_resolves_against_its_own_run_and_the_store(settings: Settings) -> None:
    """Given a release submitted, expect its resolver built for that run (recordings
    queued in any run or handled in it are not resolved again) and, without force, the
    store (stored recordings are not either); with force, no store."""
    seen: list[dict[str, object]] = []

    def factory(_: Settings, **kwargs: object) -> FakeResolver:
        seen.append(kwargs)
        return FakeResolver()

    with TestClient(create_app(settings, resolver_factory=factory)) as c:
        first = post(c, json.dumps({"release": RELEASE})).json()
        forced = post(c, json.dumps({"release": RELEASE, "force": True})).json()
    assert [k["run_id"] for k in seen] == [first["run_id"], forced["run_id"]]
    assert seen[0]["store"] is not None and seen[1]["store"] is None
    assert all(k["runs"] is not None for k in seen)


# --------------------------------------------------------------------------- backend faults


def _stored_settings(settings: Settings, root, **changes: str) -> Settings:
    """Settings with a store of their own holding one record, and ``changes``."""
    import dataclasses

    store = str(root / "store")
    record = FeatureRecord(
        recording_id="lonely-1", vector=[0.25] * VECTOR_DIM,
        descriptors={"tempo_bpm": 90.0, "key": "C", "mode": "major"},
        provenance=make_provenance(preview_url="https://p.scdn.co/l", audio_sha256="ef" * 32,
                                   source="spotify", run_id="r1", decoder="test"))
    open_store(store).put(record.key, encode_record(record))
    return dataclasses.replace(settings, **{"store": store, "index": str(root / "index"),
                                            **changes})


@pytest.mark.parametrize(("changes", "paths", "code"), [
    ({"store": "/etc/passwd/store"}, ["recordings/lonely-1", "similar/lonely-1"],
     "store_folder_missing"),  # read only since the data-scientist review: not created
    ({"store": "ftp://x/features"}, ["recordings/lonely-1", "similar/lonely-1"],
     "bad_config"),
    ({"index": "/etc/passwd"}, ["similar/lonely-1"], "index_error"),
    ({"index": "ftp://x"}, ["similar/lonely-1"], "bad_config"),
], ids=["store-folder-unusable", "store-url-unsupported", "index-folder-unusable",
        "index-url-unsupported"])
def test_a_store_or_index_that_cannot_be_used_is_503(settings: Settings, tmp_path,
                                                     changes: dict, paths: list[str],
                                                     code: str) -> None:
    """Given a store or an index that cannot be opened (a file where the folder goes, an
    unsupported URL), expect 503 with the typed code: not a 500 with a traceback in the
    log, nor a 404 that says the recording is not stored."""
    app = create_app(_stored_settings(settings, tmp_path, **changes))
    with TestClient(app, raise_server_exceptions=True) as c:
        for path in paths:
            resp = c.get(f"/v1/{path}", headers=AUTH)
            assert resp.status_code == 503, (path, resp.status_code, resp.text)
            assert resp.json()["code"] == code, resp.text


def test_similar_on_an_empty_index_is_404_not_an_empty_answer(settings: Settings,
                                                              tmp_path) -> None:
    """Given a stored recording and an index nothing was reduced into yet, expect 404
    `nothing_stored` (as `previewvec similar` exits 6), not 200 with no matches."""
    with TestClient(create_app(_stored_settings(settings, tmp_path))) as c:
        resp = c.get("/v1/similar/lonely-1", headers=AUTH)
    assert resp.status_code == 404, resp.text
    assert resp.json()["code"] == "nothing_stored"


def test_redis_refusing_writes_is_503(client: TestClient, r: Redis) -> None:
    """Given Redis at its maxmemory (noeviction), expect a submission to get 503 with
    Retry-After, as when it is down, not a 500."""
    r.config_set("maxmemory", "1")
    try:
        resp = post(client, json.dumps({"jobs": [{"recording_id": "oom-1",
                                                  "preview_url": "https://p.scdn.co/o"}]}))
    finally:
        r.config_set("maxmemory", "0")
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"] and resp.json()["code"] == "broker_refused"


def test_a_corrupt_index_is_503(settings: Settings, tmp_path) -> None:
    """Given an index whose data files were overwritten, expect 503 `index_error`, not a
    500 with LanceDB's RuntimeError in the log."""
    from pathlib import Path

    from reducer.reduce import Reducer

    stored = _stored_settings(settings, tmp_path)
    Reducer.build(stored).reindex(refit=True)
    data = list(Path(stored.index).glob("**/data/*.lance"))
    assert data
    for path in data:
        path.write_bytes(b"garbage")
    with TestClient(create_app(stored), raise_server_exceptions=True) as c:
        resp = c.get("/v1/similar/lonely-1", headers=AUTH)
    assert resp.status_code == 503, resp.text
    assert resp.json()["code"] == "index_error"


def test_healthz_answers_head(client: TestClient) -> None:
    """Uptime monitors and some load balancers probe with HEAD: 200 (503 when Redis is
    down), with no body, not 405."""
    resp = client.head("/healthz")
    assert resp.status_code == 200 and resp.content == b""
    down = Settings(broker_url=f"redis://127.0.0.1:{free_port()}/0", api_tokens=(TOKEN,))
    with TestClient(create_app(down)) as c:
        assert c.head("/healthz").status_code == 503


def test_a_body_that_stops_arriving_is_408_not_a_held_request() -> None:
    """Given a client that declares a body and stops sending it (slowloris), expect the
    body limit to give up with 408 and close, not hold the request for ever: uvicorn has
    no read timeout of its own once the headers are in."""
    import asyncio

    from previewvec.api import BodyLimitMiddleware

    async def never_called(scope, receive, send) -> None:
        raise AssertionError("the app saw a body that never arrived")

    async def scenario() -> list[dict]:
        stalled = asyncio.Event()  # never set: the rest of the body never comes
        parts = [{"type": "http.request", "body": b'{"que', "more_body": True}]

        async def receive() -> dict:
            if parts:
                return parts.pop(0)
            await stalled.wait()
            return {"type": "http.disconnect"}

        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        middleware = BodyLimitMiddleware(never_called, max_bytes=MAX_BODY,
                                         read_timeout_s=0.05)
        scope = {"type": "http", "method": "POST", "path": "/v1/jobs",
                 "headers": [(b"content-length", b"100")]}
        await middleware(scope, receive, send)
        return sent

    sent = asyncio.run(scenario())
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 408
    assert (b"connection", b"close") in start["headers"]


def test_submissions_waiting_to_resolve_are_bounded(settings: Settings) -> None:
    """Given resolution slower than submissions (MusicBrainz at one call a second), expect
    429 with Retry-After once `max_pending` submissions wait for a background thread,
    rather than an in-memory backlog that grows without bound (and is lost on restart);
    submissions are accepted again once the backlog drains."""
    import threading

    from previewvec.api import Background

    release = threading.Event()

    class SlowResolver(FakeResolver):
        def resolve_query(self, lucene: str):
            release.wait(60)
            return self._three("slow")

    background = Background(workers=1, max_pending=2)
    app = create_app(settings, resolver_factory=lambda s, **_: SlowResolver(),
                     background=background)
    with TestClient(app) as c:
        statuses = [post(c, json.dumps({"query": f"q{i}"})) for i in range(4)]
        assert [r.status_code for r in statuses[:2]] == [202, 202]
        refused = statuses[3]
        assert refused.status_code == 429 and refused.headers["retry-after"]
        assert refused.json()["code"] == "too_many_pending"
        release.set()
        background.join()
        assert post(c, json.dumps({"query": "again"})).status_code == 202
        background.join()
