"""Security checks with real components: the broker refuses pickle, secrets stay secret,
and the HTTP API answers hostile requests with 4xx, never 500.

Real: a private ``redis-server`` (with a password, for the secrets check), ``celery -A
workers.app worker`` and ``celery flower`` processes, moto's S3 server as the feature
store, ``previewvec api`` served by uvicorn, and HTTP servers on 127.0.0.1. The fetcher's
SSRF policy is specified in tests/unit/workers/test_fetch.py and exercised through a
worker by the hostile corpus (tests/faults/test_hostile.py: ``redirect-to-metadata``,
``metadata-url``); the job schema and the matching normaliser by property-based tests in
tests/unit/contract/test_jobs_properties.py and
tests/unit/producers/test_matching_properties.py.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from contract.jobs import JOB_FIELDS
from contract.layout import FEATURE_VERSION
from contract.records import record_key
from contract.settings import Settings
from contract.state import Runs, connect
from previewvec.localredis import LocalRedis, free_port
from producers.queue import TASK_NAME, make_client
from tests.faults.hostile_server import HostileServer
from tests.harness.pipeline import REPO, Pipeline, clean_env, wait_http, worker_cache_dir

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

SR = 22_050
RUN_TIMEOUT_S = 120.0  # deadlines against hangs, not performance assertions


@pytest.fixture(scope="module")
def cache_dir(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    return worker_cache_dir(request, tmp_path_factory)


@pytest.fixture(scope="module")
def song() -> bytes:
    """An 8 s generated song, AAC in .m4a."""
    from testkit.encode import encode_audio
    from testkit.songs import generate_song, render_synth

    score = generate_song(21, tonic=9, mode="major", tempo_bpm=104.0, drums=True,
                          duration_s=8.0, style="pop")
    return encode_audio(render_synth(score, sr=SR), SR, "m4a")


@pytest.fixture(scope="module")
def server(song: bytes) -> Iterator[HostileServer]:
    with HostileServer() as srv:
        srv.add_body("/clips/song.m4a", song)
        yield srv


# --------------------------------------------------------------------------- pickle


class PickleTrap:
    """Unpickling this *creates the file* ``path``: evidence of whether a pickle was
    ever loaded (any code could run in its place)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def test_broker_refuses_pickle_messages(cache_dir: Path, server: HostileServer,
                                        tmp_path: Path) -> None:
    """Given a worker, when a pickle-serialised task arrives (with a payload that would
    run code on loading), then it is refused unloaded, acknowledged (the queue does not
    block) and logged; so are JSON calls with the wrong arguments; a JSON job published
    after them completes."""
    pipeline = Pipeline(tmp_path / "pipe", cache_dir=cache_dir, store=str(tmp_path / "store"))
    try:
        marker = tmp_path / "unpickled-here"
        run_id = "pickle-run"
        pipeline.runs.create(run_id, queue="batch", source="security")
        pipeline.runs.mark_many_queued(run_id, ["pickled"])
        client = make_client(pipeline.settings)
        job = {"recording_id": "pickled", "preview_url": server.url("/clips/song.m4a"),
               "run_id": run_id, "trap": PickleTrap(marker)}
        client.send_task(TASK_NAME, args=[job], queue="batch", serializer="pickle")
        raw = json.loads(pipeline.raw.lindex("batch", 0))
        assert raw["content-type"] == "application/x-python-serialize"  # it is a pickle
        # JSON, but not a call the task can take: no arguments, or one too many.
        bad_calls = [client.send_task(TASK_NAME, args=[], queue="batch").id,
                     client.send_task(TASK_NAME, args=[{}, {}], queue="batch").id]

        worker = pipeline.start_worker("pickle")
        worker.wait_warm()
        after = pipeline.enqueue([json.dumps({"recording_id": "after-pickle",
                                              "preview_url": server.url("/clips/song.m4a")})])
        status = pipeline.wait_run(after.run_id, expected_total=1, timeout_s=RUN_TIMEOUT_S)
        assert status.counts["done"] == 1

        log = worker.log()
        assert "Refusing to deserialize untrusted content of type pickle" in log, log
        assert not marker.exists(), "the pickle was loaded"
        # Never executed: the recording is still queued and nothing was stored for it.
        assert pipeline.runs.status(run_id).counts["queued"] == 1
        assert not Path(pipeline.store_url, record_key(FEATURE_VERSION, "pickled")).exists()
        # Acknowledged, not parked for redelivery: nothing is left to block the queue.
        pipeline.wait_until(lambda: not pipeline.raw.hlen("unacked"), timeout_s=30,
                            what="the refused message to be acknowledged")
        assert pipeline.queue_depth("batch") == 0
        # The malformed calls fail inside Celery (TypeError, logged) and are acknowledged;
        # they name no run, so the log is their only record.
        for task_id in bad_calls:
            assert f"Task previewvec.featurize[{task_id}] raised unexpected: TypeError" in log
        assert worker.alive()
    finally:
        pipeline.close()


# --------------------------------------------------------------------------- secrets


@dataclass(frozen=True)
class Secrets:
    redis_password: str
    aws_access_key_id: str
    aws_secret_access_key: str
    vectorize_api_token: str
    api_tokens: tuple[str, str]
    flower_password: str

    def values(self) -> dict[str, str]:
        return {"redis password": self.redis_password,
                "R2/S3 access key id": self.aws_access_key_id,
                "R2/S3 secret access key": self.aws_secret_access_key,
                "Vectorize API token": self.vectorize_api_token,
                "API token 1": self.api_tokens[0], "API token 2": self.api_tokens[1],
                "Flower password": self.flower_password}


def _make_secrets() -> Secrets:
    return Secrets(
        redis_password="redispw" + secrets.token_hex(12),
        aws_access_key_id="AKIAPV" + secrets.token_hex(7).upper(),
        aws_secret_access_key=secrets.token_urlsafe(30),
        vectorize_api_token="cfvt_" + secrets.token_urlsafe(24),
        api_tokens=("apitok_" + secrets.token_urlsafe(16), "apitok_" + secrets.token_urlsafe(16)),
        flower_password="flowerpw" + secrets.token_hex(10),
    )


def _redis_dump(client: Any) -> str:
    """Every key and value in the Redis database, as text."""
    out = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == "string":
            value: Any = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = sorted(client.smembers(key))
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        else:
            value = f"<{kind}>"
        out.append(f"{key} {value!r}")
    return "\n".join(out)


def _decoded_messages(raw_messages: list[str]) -> str:
    """Queue messages with their base64 bodies decoded (task args are inside)."""
    out = []
    for raw in raw_messages:
        message = json.loads(raw)
        body = message.get("body", "")
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body).decode("utf-8", "replace")
        out.append(raw + "\n" + body)
    return "\n".join(out)


def test_secrets_never_leave_settings(cache_dir: Path, server: HostileServer,
                                      moto_endpoint: str, tmp_path: Path) -> None:
    """Given secret-looking credentials in a worker's environment (R2/S3 keys, the
    Vectorize token, API tokens, the Redis password) and Flower watching, when jobs
    succeed and fail, then no secret appears in any log line, queued message (task
    arguments), task result or run record in Redis, stored record, Flower page or API
    answer, or the Settings repr."""
    import boto3

    sec = _make_secrets()
    bucket = "pv-security"
    boto3.session.Session().client(
        "s3", endpoint_url=moto_endpoint, region_name="us-east-1",
        aws_access_key_id=sec.aws_access_key_id,
        aws_secret_access_key=sec.aws_secret_access_key).create_bucket(Bucket=bucket)
    env = {
        "AWS_ACCESS_KEY_ID": sec.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": sec.aws_secret_access_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": moto_endpoint,
        "PREVIEWVEC_VECTORIZE_ACCOUNT_ID": "acct-0123",
        "PREVIEWVEC_VECTORIZE_API_TOKEN": sec.vectorize_api_token,
        "PREVIEWVEC_API_TOKENS": ",".join(sec.api_tokens),
    }
    pipeline = Pipeline(tmp_path / "pipe", cache_dir=cache_dir,
                        store=f"s3://{bucket}/features-root", extra_env=env)
    flower: subprocess.Popen[bytes] | None = None
    flower_log = tmp_path / "flower.log"
    try:
        # Password-protect Redis, then point everything at the authenticated URL.
        url = f"redis://:{sec.redis_password}@127.0.0.1:{pipeline.redis.port}/0"
        pipeline.raw.config_set("requirepass", sec.redis_password)
        pipeline.env["PREVIEWVEC_BROKER_URL"] = url
        pipeline.settings = Settings.from_env(pipeline.env)
        pipeline.runs = Runs.from_url(url)
        pipeline.raw = connect(url)

        good = server.url("/clips/song.m4a")
        report = pipeline.enqueue([
            json.dumps({"recording_id": "sec-good", "preview_url": good}),
            json.dumps({"recording_id": "sec-404", "preview_url": server.url("/nope.m4a")}),
            json.dumps({"recording_id": "sec-html",
                        "preview_url": server.add_body("/page.m4a", b"<html></html>")}),
        ])
        malformed_run = "sec-malformed"
        pipeline.runs.create(malformed_run, queue="batch", source="security")
        make_client(pipeline.settings).send_task(
            TASK_NAME, args=[{"recording_id": "sec-bad", "preview_url": "gopher://x/",
                              "run_id": malformed_run}], queue="batch")
        queued_messages = list(pipeline.raw.lrange("batch", 0, -1))
        assert len(queued_messages) == 4

        # Flower first (it only sees events sent while it listens), with basic auth as
        # deployed (infra/docker-compose.yml).
        port = free_port()
        with open(flower_log, "wb") as log:
            flower = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers.app", "flower",
                 "--address=127.0.0.1", f"--port={port}"],
                env={**pipeline.env, "FLOWER_BASIC_AUTH": f"admin:{sec.flower_password}"},
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthcheck", timeout_s=60, alive=flower)
        auth = ("admin", sec.flower_password)

        worker = pipeline.start_worker("secrets")
        status = pipeline.wait_run(report.run_id, expected_total=3, timeout_s=RUN_TIMEOUT_S)
        assert (status.counts["done"], status.counts["failed"]) == (1, 2), status.counts
        pipeline.wait_run(malformed_run, expected_total=1, timeout_s=RUN_TIMEOUT_S)

        def flower_has_all_tasks() -> bool:
            tasks = requests.get(f"{base}/api/tasks", auth=auth, timeout=10).json()
            return sum(t.get("state") == "SUCCESS" for t in tasks.values()) >= 4

        pipeline.wait_until(flower_has_all_tasks, timeout_s=60, what="Flower to see the tasks")
        assert requests.get(f"{base}/api/tasks", timeout=10).status_code == 401  # no auth

        flower_pages: dict[str, str] = {}
        worker_name = next(iter(requests.get(f"{base}/api/workers?refresh=1", auth=auth,
                                             timeout=30).json()))
        tasks = requests.get(f"{base}/api/tasks", auth=auth, timeout=10).json()
        assert len(tasks) == 4
        paths = ["/api/workers?refresh=1", "/api/tasks", "/api/task/types",
                 "/api/queues/length", "/", "/workers", "/tasks", "/broker", "/metrics",
                 f"/worker/{worker_name}"]
        paths += [f"/api/task/info/{task_id}" for task_id in tasks]
        paths += [f"/task/{task_id}" for task_id in tasks]
        for path in paths:
            resp = requests.get(base + path, auth=auth, timeout=30)
            assert resp.status_code == 200, (path, resp.status_code)
            flower_pages[path] = resp.text
        assert all(task_id in flower_pages["/api/tasks"] for task_id in tasks)
        assert "sec-good" in flower_pages["/api/tasks"]  # task args and results are there

        s3 = boto3.session.Session().client(
            "s3", endpoint_url=moto_endpoint, region_name="us-east-1",
            aws_access_key_id=sec.aws_access_key_id,
            aws_secret_access_key=sec.aws_secret_access_key)
        keys = [obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        # The one good job's record, and the registry entry of the version it was computed
        # under (contract/versions.py); both are searched for secrets below.
        assert len([k for k in keys if "/features/" in f"/{k}"]) == 1, keys
        assert len([k for k in keys if "/versions/" in f"/{k}"]) == 1, keys
        assert len(keys) == 2, keys
        stored = [s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode() for key in keys]

        haystacks = {
            "worker log": worker.log(),
            "flower log": flower_log.read_text(errors="replace"),
            "queued messages (task arguments)": _decoded_messages(queued_messages),
            "redis (runs, results, unacked)": _redis_dump(pipeline.raw),
            "stored records": "\n".join(stored),
            **{f"flower {path}": text for path, text in flower_pages.items()},
            "Settings repr": repr(pipeline.settings) + str(pipeline.settings),
        }
        assert "succeeded" in haystacks["worker log"]
        assert "sec-404" in haystacks["redis (runs, results, unacked)"]
        leaks = {(what, where) for what, value in sec.values().items()
                 for where, text in haystacks.items() if value in text}
        assert not leaks, sorted(leaks)
    finally:
        if flower is not None and flower.poll() is None:
            flower.terminate()
            try:
                flower.wait(timeout=10)
            except subprocess.TimeoutExpired:
                flower.kill()
                flower.wait()
        pipeline.close()


# --------------------------------------------------------------------------- HTTP API

MAX_BODY = 20_000


@dataclass(frozen=True)
class Api:
    base: str
    token: str
    log_path: Path


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """``previewvec api`` (uvicorn) in its own process against a private Redis."""
    root = tmp_path_factory.mktemp("api")
    token = "apitok_" + secrets.token_urlsafe(16)
    port = free_port()
    log_path = root / "api.log"
    with LocalRedis(data_dir=root / "redis") as redis_server:
        env = {**clean_env(), "PREVIEWVEC_BROKER_URL": redis_server.url,
               "PREVIEWVEC_STORE": str(root / "store"), "PREVIEWVEC_INDEX": str(root / "index"),
               "PREVIEWVEC_API_TOKENS": token,
               "PREVIEWVEC_API_MAX_BODY_BYTES": str(MAX_BODY)}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "previewvec.cli", "api", "--host", "127.0.0.1",
                 "--port", str(port)], env=env, cwd=REPO, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/healthz", timeout_s=60, alive=proc)
            yield Api(base, token, log_path)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert token not in log_path.read_text(errors="replace"), "the API logged its token"


def _post(api: Api, body: bytes | Iterator[bytes], **headers: str) -> requests.Response:
    return requests.post(f"{api.base}/v1/jobs", data=body, timeout=30,
                         headers={"Content-Type": "application/json", **headers})


def test_api_refuses_missing_and_wrong_tokens(api: Api) -> None:
    run = f"{api.base}/v1/runs/no-such-run"
    good = f"Bearer {api.token}"
    refused = {
        "none": {},
        "empty bearer": {"Authorization": "Bearer "},
        "wrong token": {"Authorization": "Bearer " + "x" * len(api.token)},
        "token prefix": {"Authorization": good[:-1]},
        "token + suffix": {"Authorization": good + "x"},
        "upper-cased": {"Authorization": good.upper()},
        "basic scheme": {"Authorization": "Basic " + base64.b64encode(
            f"user:{api.token}".encode()).decode()},
        "raw token": {"Authorization": api.token},
        "other header": {"X-Api-Token": api.token},
        "non-latin-1": {"Authorization": "Bearer " + api.token + "é"},
    }
    for what, headers in refused.items():
        encoded = {k: v.encode("utf-8") for k, v in headers.items()}  # raw bytes on the wire
        resp = requests.get(run, headers=encoded, timeout=10)
        assert resp.status_code == 401, (what, resp.status_code, resp.text)
        assert api.token not in resp.text
        assert resp.headers.get("WWW-Authenticate") == "Bearer"
    assert requests.get(f"{run}?token={api.token}", timeout=10).status_code == 401
    assert requests.get(run, headers={"Authorization": good}, timeout=10).status_code == 404
    assert _post(api, b"{\"jobs\": []}").status_code == 401
    assert _post(api, b'{"release": "x"}').status_code == 401


def test_api_refuses_oversized_bodies(api: Api) -> None:
    auth = {"Authorization": f"Bearer {api.token}"}
    big = b'{"query": "' + b"a" * (2 * MAX_BODY) + b'"}'
    assert _post(api, big, **auth).status_code == 413  # declared by Content-Length
    assert _post(api, big).status_code == 413  # before authentication: never buffered

    def streamed() -> Iterator[bytes]:  # chunked: no Content-Length to judge by
        for _ in range(4 * MAX_BODY // 1000):
            yield b" " * 1000

    resp = _post(api, streamed(), **auth)
    assert resp.status_code == 413, resp.text
    assert requests.get(f"{api.base}/healthz", timeout=10).status_code == 200


@pytest.mark.parametrize(("body", "status"), [
    (b"", 400),
    (b"not json", 400),
    (b"\xff\xfe{}", 400),  # not UTF-8
    (b"[" * 5000 + b"]" * 5000, 400),  # nesting deeper than the parser's recursion limit
    (b'{"jobs": [' + b"1" * 5000 + b"]}", 400),  # an integer too long to convert
    (b"[]", 422),
    (b'{"release": "../../etc/passwd"}', 422),
    (b'{"jobs": [{"recording_id": "\\ud800", "preview_url": "http://x/"}]}', 422),
    (b'{"jobs": [{"recording_id": "a", "preview_url": "file:///etc/passwd"}]}', 422),
    (b'{"isrcs": ["US-RC1-76-07839", {"$gt": ""}]}', 422),
    (b'{"new_releases": {"since": "2026-02-30"}}', 422),
    (b'{"query": "x", "release": "6f7c1a52-3b4e-4c0e-9a57-2f7d3c1e9b10"}', 422),
])
def test_api_refuses_malformed_input_with_4xx(api: Api, body: bytes, status: int) -> None:
    resp = _post(api, body, Authorization=f"Bearer {api.token}")
    assert resp.status_code == status, resp.text
    assert "detail" in resp.json()


_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
            | st.text(max_size=20))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
_job = st.dictionaries(st.sampled_from([*JOB_FIELDS, "extra"]),
                       _json | st.sampled_from(["https://p.scdn.co/x", "USRC17607839", "a"]),
                       max_size=6)
_bodies = st.one_of(
    st.binary(max_size=300),
    _json.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["release", "isrcs", "query", "new_releases", "jobs",
                                     "queue", "force"]) | st.text(max_size=6),
                    _json, max_size=4).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"jobs": st.lists(_job, max_size=4)}).map(
        lambda v: json.dumps(v).encode()),
)


@hsettings(max_examples=150, deadline=None, derandomize=True,
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(body=_bodies, content_type=st.sampled_from(["application/json", "text/plain", ""]))
def test_api_fuzzed_bodies_never_500(api: Api, body: bytes, content_type: str) -> None:
    """Over real HTTP: whatever the body, a 2xx/4xx JSON answer, never a server error."""
    resp = requests.post(f"{api.base}/v1/jobs", data=body, timeout=30,
                         headers={"Content-Type": content_type,
                                  "Authorization": f"Bearer {api.token}"})
    assert resp.status_code in (202, 400, 413, 422), (resp.status_code, resp.text)
    resp.json()


def test_api_fuzz_left_no_server_errors(api: Api) -> None:
    """The API's own log agrees: no 500 and no traceback during the tests above."""
    deadline = time.monotonic() + 5
    text = api.log_path.read_text(errors="replace")
    while "POST /v1/jobs" not in text and time.monotonic() < deadline:
        time.sleep(0.1)
        text = api.log_path.read_text(errors="replace")
    assert " 500 " not in text and "Traceback" not in text, text[-3000:]
