"""An expired preview (HTTP 403/410 from the CDN) is re-resolved once through its source
and fetched again, not failed.

Real components: a private Redis (the source's shared rate limit), the folder store, a
generated clip and a Deezer-shaped ``/track/<id>`` answer served from 127.0.0.1, and
``workers.featurize.featurize`` called directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.layout import FEATURE_VERSION
from contract.records import decode_record, record_key
from contract.settings import Settings
from contract.state import Runs, new_run_id
from tests.faults.hostile_server import Behaviour, HostileServer
from tests.harness.pipeline import ClipServer, make_clips
from workers.featurize import WorkerContext, featurize
from workers.refresh import MAX_BODY_BYTES

TRACK_ID = "3020000102"


@pytest.fixture(scope="module")
def server() -> Iterator[ClipServer]:
    srv = ClipServer().start()
    (clip,) = make_clips(1, duration_s=8.0)
    srv.add("/fresh.m4a", clip.data, clip.content_type)
    srv.add("/gone.m4a", b"", "text/plain", status=410)
    srv.add("/denied.m4a", b"", "text/plain", status=403)
    yield srv
    srv.stop()


def context(server: ClipServer, redis_url: str, tmp_path: Path, **changes) -> WorkerContext:
    settings = Settings(broker_url=redis_url, store=str(tmp_path / "store"),
                        allowed_audio_hosts=("127.0.0.1",),
                        **{"deezer_url": server.url("/api"), **changes})
    return WorkerContext.build(settings)


def deezer_answers(server: ClipServer, preview: str, **fields: object) -> None:
    body = {"id": int(TRACK_ID), "title": "Static Hearts", "isrc": "USHP10300002",
            "preview": preview, "link": f"https://www.deezer.com/track/{TRACK_ID}", **fields}
    server.add(f"/api/track/{TRACK_ID}", json.dumps(body).encode(), "application/json")


def job(server: ClipServer, path: str, rid: str, run_id: str, source: str = "deezer") -> dict:
    return {"recording_id": rid, "preview_url": server.url(path), "source": source,
            "source_track_id": TRACK_ID, "source_url": f"https://www.deezer.com/track/{TRACK_ID}",
            "match_rule": "isrc", "confidence": 1.0, "run_id": run_id}


@pytest.mark.parametrize("path", ["/gone.m4a", "/denied.m4a"])
def test_expired_preview_is_re_resolved_once_and_fetched(
        server: ClipServer, redis_url: str, tmp_path: Path, path: str) -> None:
    """Given a Deezer job whose URL now answers 410/403, expect one /track/<id> call, the
    fresh URL fetched, and a record that names the URL it was made from."""
    ctx = context(server, redis_url, tmp_path)
    deezer_answers(server, server.url("/fresh.m4a"))
    run_id = new_run_id()
    Runs.from_url(redis_url).create(run_id)
    before = server.hits.copy()

    outcome = featurize(job(server, path, f"exp-{path[1:5]}", run_id), ctx)

    assert outcome.status == "done", outcome
    hits = server.hits - before
    assert hits[path] == 1  # 403/410 is not retried against the CDN
    assert hits[f"/api/track/{TRACK_ID}"] == 1 and hits["/fresh.m4a"] == 1
    record = decode_record(ctx.store.get(record_key(FEATURE_VERSION, f"exp-{path[1:5]}")))
    prov = record.provenance
    assert prov["preview_url"] == server.url("/fresh.m4a")
    assert (prov["source"], prov["source_track_id"], prov["match_rule"]) == (
        "deezer", TRACK_ID, "isrc")
    assert prov["preview_host"] == "127.0.0.1" and prov["confidence"] == 1.0
    assert prov["source_url"] == f"https://www.deezer.com/track/{TRACK_ID}"


def test_still_expired_after_one_re_resolution_fails(
        server: ClipServer, redis_url: str, tmp_path: Path) -> None:
    """Given a source that answers another expired URL, expect exactly one re-resolution
    and the job failed with the CDN's status."""
    ctx = context(server, redis_url, tmp_path)
    deezer_answers(server, server.url("/denied.m4a"))
    before = server.hits.copy()

    outcome = featurize(job(server, "/gone.m4a", "exp-again", new_run_id()), ctx)

    assert outcome.status == "failed" and outcome.error_code == "http_403"
    hits = server.hits - before
    assert hits[f"/api/track/{TRACK_ID}"] == 1 and hits["/denied.m4a"] == 1


@pytest.mark.parametrize(("source", "sources"), [("itunes", "itunes,deezer"),
                                                 ("deezer", "itunes")])
def test_only_an_enabled_source_with_expiring_urls_is_asked(
        server: ClipServer, redis_url: str, tmp_path: Path, source: str, sources: str) -> None:
    """iTunes URLs do not expire (a 410 is final); a disabled source is never called."""
    ctx = context(server, redis_url, tmp_path,
                  sources=tuple(sources.split(",")))
    deezer_answers(server, server.url("/fresh.m4a"))
    before = server.hits.copy()

    outcome = featurize(job(server, "/gone.m4a", f"exp-{source}", new_run_id(), source), ctx)

    assert outcome.status == "failed" and outcome.error_code == "http_410"
    assert (server.hits - before)[f"/api/track/{TRACK_ID}"] == 0


def test_a_track_no_longer_playable_in_the_region_is_not_fetched(
        server: ClipServer, redis_url: str, tmp_path: Path) -> None:
    """Given a /track/<id> answer with ``readable: false``, expect its preview URL left
    alone (it does not play) and the job failed with the CDN's first status."""
    ctx = context(server, redis_url, tmp_path)
    deezer_answers(server, server.url("/fresh.m4a"), readable=False)
    before = server.hits.copy()

    outcome = featurize(job(server, "/gone.m4a", "exp-unreadable", new_run_id()), ctx)

    assert outcome.status == "failed" and outcome.error_code == "http_410"
    hits = server.hits - before
    assert hits[f"/api/track/{TRACK_ID}"] == 1 and hits["/fresh.m4a"] == 0


_JSON = "application/json"


# A deadline against hangs, not a performance assertion: the drips last 30 s, so a
# refresh outside the 2 s budget never finishes in time.
@pytest.mark.timeout(25, func_only=True)
@pytest.mark.parametrize("behaviour", [
    Behaviour("gzip_bomb", content_type=_JSON),  # 10 MB of gzip inflating to gigabytes
    Behaviour("drip_body", content_type=_JSON, interval_s=0.2),  # for 30 s
    Behaviour("drip_headers", interval_s=0.2),  # slowloris, for 30 s
    Behaviour("endless_chunked", body=b" ", content_type=_JSON),
    Behaviour("body", body=b'{"preview": "' + b" " * MAX_BODY_BYTES + b'"}',
              content_type=_JSON),
], ids=lambda b: b.kind)
def test_a_hostile_source_api_costs_the_job_its_fetch_budget_at_most(
        server: ClipServer, redis_url: str, tmp_path: Path, behaviour: Behaviour) -> None:
    """Given an expired preview whose source API sends a gzip bomb, drips its headers or
    body, or sends more than MAX_BODY_BYTES, expect the refresh abandoned inside the
    job's 2 s fetch budget (a second budget, or none, would outlast the task's time
    limit: drips run 30 s) and the job failed with the CDN's own status."""
    with HostileServer() as api:
        api.add(f"/api/track/{TRACK_ID}", behaviour)
        ctx = context(server, redis_url, tmp_path, deezer_url=api.url("/api"),
                      fetch_total_timeout_s=2.0)
        before = server.hits.copy()

        outcome = featurize(job(server, "/gone.m4a", f"exp-{behaviour.kind}",
                                new_run_id()), ctx)

        assert (outcome.status, outcome.error_code) == ("failed", "http_410"), outcome
        assert api.hits(f"/api/track/{TRACK_ID}") == 1  # one call, no retry
        # Asked for uncompressed JSON: a compressed answer is refused, never inflated.
        assert ctx.refresher is not None
        assert ctx.refresher.session.headers["Accept-Encoding"] == "identity"
        assert (server.hits - before)["/fresh.m4a"] == 0
