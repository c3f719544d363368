"""Producers against RECORDED upstream answers (tests/fixtures/upstream) served on
127.0.0.1 by tests/upstream_server.py; Redis is a private LocalRedis. No internet."""

from __future__ import annotations

import bz2
import gzip
import io
import itertools
import json
import lzma
import os
import subprocess
import sys
import tarfile
import textwrap
import time
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from redis import Redis

from contract.retry import Backoff
from contract.settings import Settings
from contract.state import connect
from previewvec.localredis import LocalRedis
from producers import dumps
from producers.http import UpstreamRejected, UpstreamUnavailable
from producers.itunes import ITunesClient, RedisResponseCache
from producers.musicbrainz import (
    MbContactMissing,
    MusicBrainzClient,
    new_releases_query,
    partial_date_key,
)
from producers.ratelimit import RateLimiter, RateLimitTimeout
from producers.resolve import Resolver, pick_release
from tests.local_http import start_server, stop_server
from tests.upstream_server import FIXTURES, UpstreamServer

ROOT = Path(__file__).resolve().parents[2]
R1 = "a3f0c9e2-5b7d-4c1e-9f2a-1d8e6b4c7a01"
R2 = "b4e1d0f3-6c8e-4d2f-a03b-2e9f7c5d8b12"
R3 = "c5f2e1a4-7d9f-4e3a-b14c-3fa08d6e9c23"  # R1 with a pregap, a data track, a repeat, a video
R4 = "d6a3f2b5-8e0a-4f4b-825d-4ab19e7fad34"  # R1 without its tracklist
REC_A2 = "22222222-a2a2-4a2a-8a2a-a2a2a2a2a2a2"
CONTACT = "previewvec-tests@example.org"
FAST = Backoff(base_s=0.02, cap_s=0.1)


@pytest.fixture(scope="module")
def local_redis() -> Iterator[LocalRedis]:
    with LocalRedis() as server:
        yield server


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture
def r(local_redis: LocalRedis, upstream: UpstreamServer) -> Redis:
    client = connect(local_redis.url, decode=False, retry=False, health_check_interval_s=0)
    client.flushdb()
    upstream.clear()
    return client


@pytest.fixture
def settings(upstream: UpstreamServer, local_redis: LocalRedis) -> Settings:
    return Settings(mb_contact=CONTACT, musicbrainz_url=upstream.url, itunes_url=upstream.url,
                    broker_url=local_redis.url)


def make_resolver(settings: Settings, r: Redis, *, cache: bool = True,
                  retries: int = 5) -> Resolver:
    mb = MusicBrainzClient(settings, RateLimiter(r, "musicbrainz", 500), max_retries=retries,
                           backoff=FAST)
    it = ITunesClient(settings, RateLimiter(r, "itunes", 500),
                      cache=RedisResponseCache(r) if cache else None, max_retries=retries,
                      backoff=FAST)
    return Resolver(settings, mb, it)


# -- album-first resolution and the cache ----------------------------------------------
def test_album_first_uses_two_itunes_calls_and_a_rerun_uses_none(
        settings: Settings, r: Redis, upstream: UpstreamServer) -> None:
    resolver = make_resolver(settings, r)
    results = list(resolver.resolve_release(R1))
    assert [res.error_code for res in results] == [None] * 5
    assert resolver.calls == {"musicbrainz": 1, "itunes": 2, "itunes_cache_hits": 0}
    itunes = [q for q in upstream.requests if not q.path.startswith("/ws/2/")]
    assert [(q.path, q.query.get("entity")) for q in itunes] == [("/search", "album"),
                                                                ("/lookup", "song")]
    assert itunes[1].query["id"] == "1440001001"  # the studio remaster, not the live album
    by_title = {res.job.title: res for res in results if res.job}
    lumiere = by_title["Lumière"]  # length null upstream: duration neutral in the score,
    assert "duration ?" in lumiere.reason  # and the job takes the store's duration
    assert lumiere.job.duration_ms == 215000
    assert lumiere.job.artist == "Zoé Varga feat. Ana Ruiz"
    cafe = by_title["Café noir"].job
    assert cafe.to_dict() == {
        "recording_id": "44444444-a4a4-4a4a-8a4a-a4a4a4a4a4a4",
        "preview_url": "https://audio-ssl.itunes.apple.com/itunes-assets/AudioPreview115/v4/"
                       "50/30/4c/mzaf_1440001104.plus.aac.p.m4a",
        "isrc": "FRZ017900004", "artist": "Zoé Varga", "title": "Café noir",
        "duration_ms": 198000, "release_id": R1, "source": "itunes",
        "source_track_id": "1440001104",
        "source_url": "https://music.apple.com/us/album/x/1440001001?i=1440001104&uo=4",
        "match_rule": "search+fuzzy", "confidence": 1.0, "force": False}
    assert by_title["Outro"].reason.endswith("track 5/5 album=1.00")

    again = make_resolver(settings, r)  # a re-run (new process): the cache answers
    rerun = list(again.resolve_release(R1))
    assert again.calls["itunes"] == 0 and again.calls["itunes_cache_hits"] == 2
    assert [x.job for x in rerun] == [x.job for x in results]


def test_album_fallbacks_live_edit_and_no_preview(settings: Settings, r: Redis) -> None:
    resolver = make_resolver(settings, r)
    got = {res.recording_id[:8]: res for res in resolver.resolve_release(R2)}
    assert got["66666666"].job is not None  # in the album
    assert got["77777777"].job is not None  # missing from the store album: song search
    assert got["77777777"].reason.endswith("via song search")
    assert got["77777777"].job.preview_url.endswith("mzaf_1550003102.plus.aac.p.m4a")
    # MB live recording (disambiguation "live, ...") must not take the studio track.
    assert got["88888888"].error_code == "no_confident_match"
    assert "version live≠studio" in got["88888888"].reason
    # Only a "(Radio Edit)" in the album; the matching album track has no preview.
    assert got["99999999"].error_code == "no_preview"
    # The barcode's album is another edition (3 tracks, other order): not trusted, the
    # mismatch is in every reason, and the cascade falls back to search.
    assert all("itunes barcode 0602498612345 not trusted: 1/3 tracks agree" in res.reason
               for res in got.values())
    assert resolver.stats["barcode_untrusted"] == 1
    # upc lookup + album search + lookup + 3 song searches
    assert resolver.calls["itunes"] == 6


def test_recording_isrcs_query_and_new_releases(settings: Settings, r: Redis,
                                                upstream: UpstreamServer) -> None:
    resolver = make_resolver(settings, r)
    one = resolver.resolve_recording(REC_A2)
    assert one.job is not None and one.job.release_id == R1  # official + earliest (1979-05)
    assert one.job.preview_url.endswith("mzaf_1440001102.plus.aac.p.m4a")  # not the live one

    isrc_results = list(resolver.resolve_isrcs(["FRZ017900002", "frz-017900004",
                                                "USXX10000001"]))
    codes = {x.recording_id: x.error_code for x in isrc_results}
    assert codes == {"isrc:USXX10000001": "isrc_unknown", REC_A2: None,
                     "44444444-a4a4-4a4a-8a4a-a4a4a4a4a4a4": None}
    assert {x.job.isrc for x in isrc_results if x.job} == {"FRZ017900002", "FRZ017900004"}

    upstream.clear()
    query = list(resolver.resolve_query('artist:"Zoé Varga"', page_size=2))
    assert len(query) == 3
    offsets = [q.query["offset"] for q in upstream.requests if q.path == "/ws/2/recording"]
    assert offsets == ["0", "2"]

    new = list(resolver.resolve_new_releases(date(2024, 1, 1), date(2024, 1, 31)))
    assert len(new) == 5 and all(x.ok for x in new)


def test_musicbrainz_error_bodies_and_null_entries_are_no_answers(
        settings: Settings, r: Redis, upstream: UpstreamServer) -> None:
    """Written by the API-layer review, with hand-made answers. A 200 carrying the web
    service's error object was a release without tracks (``no_tracks``, skipped for good,
    under ``release:?``); null entries in a search or an ISRC answer crashed the run
    (AttributeError)."""
    resolver = make_resolver(settings, r)
    upstream.fail_next(1, 200, b'{"error": "Internal Server Error", "help": "..."}',
                       path_prefix=f"/ws/2/release/{R1}")
    assert [(x.recording_id, x.error_code) for x in resolver.resolve_release(R1)] == [
        (f"release:{R1}", "upstream_unavailable")]
    upstream.fail_next(1, 200, json.dumps({"count": 2, "offset": 0, "recordings": [
        None, json.loads((FIXTURES / "mb" / "recording_a2.json").read_text("utf-8"))]}
    ).encode(), path_prefix="/ws/2/recording")
    got = list(resolver.resolve_query('artist:"Zoé Varga"'))
    assert [(x.recording_id, x.ok) for x in got] == [(REC_A2, True)]
    upstream.fail_next(1, 200, b'{"isrc": "FRZ017900009", "recordings": [null]}',
                       path_prefix="/ws/2/isrc/")
    got = list(resolver.resolve_isrcs(["FRZ017900009"]))
    assert [(x.recording_id, x.error_code) for x in got] == [("isrc:FRZ017900009",
                                                              "isrc_unknown")]


def test_new_release_listed_twice_or_under_a_merged_mbid_is_resolved_once(
        settings: Settings, r: Redis, upstream: UpstreamServer) -> None:
    """Written by the API-layer review, with hand-made answers. The search lists R1, R1
    again (results moved between pages), and an MBID merged into R1 (its lookup answers
    R1's document, with R1's id): before, R1's five recordings came out three times
    (duplicate jobs in a resolve output). Each release is looked up once per MBID and
    resolved once; the jobs carry the canonical release id."""
    old = "0ddba11e-0000-4000-8000-000000000001"
    stub = {"id": R1, "title": "Électrique nuit"}
    upstream.fail_next(1, 200, json.dumps({"count": 3, "offset": 0, "releases": [
        stub, stub, {**stub, "id": old}]}).encode(), path_prefix="/ws/2/release")
    upstream.fail_next(1, 200, (FIXTURES / "mb" / "release_r1.json").read_bytes(),
                       path_prefix=f"/ws/2/release/{old}")
    resolver = make_resolver(settings, r)
    got = list(resolver.resolve_new_releases(date(2024, 1, 1), date(2024, 1, 31)))
    assert len(got) == 5 and all(x.ok and x.job.release_id == R1 for x in got)
    assert len({x.recording_id for x in got}) == 5
    assert [q.path for q in upstream.requests_to("/ws/2/release/")] == [
        f"/ws/2/release/{R1}", f"/ws/2/release/{old}"]


def test_isrc_inputs_are_checked_and_asked_once(settings: Settings, r: Redis,
                                               upstream: UpstreamServer) -> None:
    """Given an ISRC in three spellings and values that are no ISRC, expect one
    MusicBrainz ``/isrc`` call and ``invalid_isrc`` for the others: none reaches
    MusicBrainz (``../release/abc?inc=x`` went to another endpoint) or blames it."""
    resolver = make_resolver(settings, r)
    got = list(resolver.resolve_isrcs(["frz017900002", " FRZ017900002 ", "FR-Z01-79-00002",
                                       "not an isrc", "../release/abc?inc=x"]))
    assert [q.path for q in upstream.requests_to("/ws/2/isrc/")] == ["/ws/2/isrc/FRZ017900002"]
    assert {x.recording_id: x.error_code for x in got} == {
        "isrc:not an isrc": "invalid_isrc", "isrc:../release/abc?inc=x": "invalid_isrc",
        REC_A2: None}
    assert next(x for x in got if x.ok).job.isrc == "FRZ017900002"


def test_musicbrainz_user_agent_and_missing_contact(settings: Settings, r: Redis,
                                                    upstream: UpstreamServer) -> None:
    make_resolver(settings, r).mb.release(R1)
    assert upstream.requests_to("/ws/2/")[0].user_agent == f"previewvec/0.1.0 ( {CONTACT} )"
    for contact in ("", "   "):
        bad = Settings(mb_contact=contact, musicbrainz_url=upstream.url)
        with pytest.raises(MbContactMissing) as info:
            MusicBrainzClient(bad, RateLimiter(r, "musicbrainz", 10))
        assert info.value.code == "mb_contact_missing"
        assert "PREVIEWVEC_MB_CONTACT" in str(info.value)
        with pytest.raises(MbContactMissing):
            Resolver.build(bad, redis_client=r)


# -- throttling and failures -----------------------------------------------------------
def test_503_is_retried_and_penalises_every_process(settings: Settings, r: Redis,
                                                    upstream: UpstreamServer) -> None:
    slow = Backoff(base_s=0.2, cap_s=0.2)  # penalty (un-jittered) 0.2 s per 503
    mb = MusicBrainzClient(settings, RateLimiter(r, "musicbrainz", 500), backoff=slow)
    upstream.fail_next(2, 503, b"<html>slow down</html>", path_prefix="/ws/2/")
    assert mb.release(R1)["id"] == R1
    assert mb.stats["throttled"] == 2 and mb.calls == 3
    times = [q.t for q in upstream.requests_to("/ws/2/")]
    assert [q.status for q in upstream.requests_to("/ws/2/")] == [503, 503, 200]
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.09

    # The penalty lives in Redis: another process's limiter (same name) must wait too.
    RateLimiter(r, "musicbrainz", 500).penalize(0.3)
    other = RateLimiter(r, "musicbrainz", 500)
    started = time.monotonic()
    other.acquire()
    assert time.monotonic() - started >= 0.25

    upstream.fail_next(100, 503, path_prefix="/ws/2/")
    resolver = make_resolver(settings, r, retries=2)
    results = list(resolver.resolve_release(R1))
    assert [(x.recording_id, x.error_code) for x in results] == [
        (f"release:{R1}", "upstream_unavailable")]
    upstream.clear()
    with pytest.raises(UpstreamRejected) as info:  # 404 release: typed, not retried
        resolver.mb.release("00000000-0000-4000-8000-000000000000")
    assert info.value.status == 404 and info.value.code == "upstream_rejected"


def test_itunes_403_empty_is_throttling_never_no_results(settings: Settings, r: Redis,
                                                         upstream: UpstreamServer) -> None:
    assert (FIXTURES / "itunes/search_album_r1.json").read_bytes().startswith(b"\n\n")
    resolver = make_resolver(settings, r, cache=False, retries=3)
    upstream.fail_next(2, 403, b"", path_prefix="/search")
    rows = resolver.itunes.search("Zoé Varga Électrique nuit", entity="album")
    assert len(rows) == 3  # retried until the real answer; blank lines stripped
    assert resolver.itunes.stats["throttled"] == 2
    assert RateLimiter(r, "itunes", 500).penalize(0) >= 0  # limiter state exists in Redis
    upstream.fail_next(100, 403, b"", path_prefix="/search")
    with pytest.raises(UpstreamUnavailable):
        resolver.itunes.search("Zoé Varga Nuit blanche")
    res = resolver.resolve_recording(REC_A2)
    assert res.error_code == "upstream_unavailable" and res.job is None
    upstream.clear()
    upstream.fail_next(1, 403, b'{"errorMessage": "Invalid value(s) for key(s): [country]"}',
                       path_prefix="/search")
    with pytest.raises(UpstreamRejected) as info:  # a 403 WITH a body is a real refusal
        resolver.itunes.search("x")
    assert info.value.status == 403


def test_itunes_403_html_page_is_throttling(settings: Settings, r: Redis,
                                           upstream: UpstreamServer) -> None:
    """Written by the API-layer review: Apple's edge answers a throttled client 403 with
    an HTML "Forbidden" page too. Before, that was upstream_rejected (not transient: the
    recording failed for good); it is throttling, retried, like the empty 403."""
    resolver = make_resolver(settings, r, cache=False, retries=3)
    upstream.fail_next(1, 403, b"<html><head><title>403 Forbidden</title></head></html>",
                       path_prefix="/search")
    assert len(resolver.itunes.search("Zo\u00e9 Varga \u00c9lectrique nuit", entity="album")) == 3
    assert resolver.itunes.stats["throttled"] == 1
    upstream.fail_next(100, 403, b"<html>Forbidden</html>", path_prefix="/search")
    res = resolver.resolve_recording(REC_A2)
    assert res.error_code == "upstream_unavailable" and res.job is None


def test_a_body_over_the_cap_is_refused_as_it_streams(settings: Settings, r: Redis,
                                                     upstream: UpstreamServer) -> None:
    """Written by the API-layer review: the whole body of any answer was read into memory,
    however large (an endless or huge answer from a broken proxy could exhaust a small
    producer box). Over the cap the answer is upstream_unavailable, not retried; the
    same client still reads answers under it (the connection was let go cleanly)."""
    resolver = make_resolver(settings, r)
    resolver.mb._json_get.max_body_bytes = 4096
    padding = json.dumps({"id": R1, "media": [], "annotation": "x" * 20_000}).encode()
    upstream.fail_next(1, 200, padding, path_prefix=f"/ws/2/release/{R1}")
    with pytest.raises(UpstreamUnavailable, match="body over 4096 bytes"):
        resolver.mb.release(R1)
    assert resolver.mb.calls == 1
    resolver.mb._json_get.max_body_bytes = 1 << 20
    assert resolver.mb.release(R1)["id"] == R1


class _OddBodies(BaseHTTPRequestHandler):
    """Written by the API-layer review: a release answer that trickles in (a byte every
    0.1 s, each wait far under the read timeout), and one gzip-encoded."""

    protocol_version = "HTTP/1.1"
    body = (FIXTURES / "mb" / "release_r1.json").read_bytes()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if "gzip" in self.path:
            packed = gzip.compress(self.body)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(packed)))
            self.end_headers()
            self.wfile.write(packed)
            return
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        try:
            for i in range(len(self.body)):
                self.wfile.write(self.body[i:i + 1])
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass  # the client gave up: as it should

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_body_that_trickles_in_is_given_up_and_gzip_is_read(r: Redis) -> None:
    """Written by the API-layer review: the read timeout bounds each wait for bytes, not
    the whole body, so an answer trickling in held the producer for as long as it took
    (hours for a release). Past ``max_read_s`` it is a network error (retried, then
    upstream_unavailable). A gzip-encoded answer still reads whole."""
    server = start_server(_OddBodies)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        settings = Settings(mb_contact=CONTACT, musicbrainz_url=url)
        mb = MusicBrainzClient(settings, RateLimiter(r, "musicbrainz", 500), max_retries=1,
                               backoff=FAST, sleep=lambda s: None)
        mb._json_get.max_read_s = 0.3
        with pytest.raises(UpstreamUnavailable, match=r"body not read within 0\.3 s"):
            mb.release("trickle")
        assert mb.calls == 2
        mb._json_get.max_read_s = 60
        assert mb.release("gzip")["id"] == R1
    finally:
        stop_server(server)


# -- the shared rate limiter ----------------------------------------------------------
WORKER = textwrap.dedent("""
    import sys, requests
    from contract.state import connect
    from producers.ratelimit import RateLimiter
    url, redis_url, n, rate, tag = sys.argv[1:6]
    n, rate = int(n), float(rate)
    limiter = RateLimiter(connect(redis_url, decode=False, retry=False), "shared-test", rate)
    session = requests.Session()
    session.headers["User-Agent"] = tag
    session.get(url + "/ping?warmup=1").raise_for_status()  # connect before the clock runs
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(n):
        limiter.acquire()
        session.get(url + "/ping", params={"i": i}).raise_for_status()
""")


def test_rate_limit_holds_across_two_processes(local_redis: LocalRedis, r: Redis,
                                               upstream: UpstreamServer) -> None:
    n, rate, burst = 12, 10.0, 1
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, upstream.url, local_redis.url,
                               str(n), str(rate), tag], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=env, text=True)
             for tag in ("proc-a", "proc-b")]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:  # both start hammering at the same moment
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            assert p.wait(timeout=30) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    hits = [q for q in upstream.requests if q.path == "/ping" and "i" in q.query]
    assert len(hits) == 2 * n
    assert {q.user_agent for q in hits} == {"proc-a", "proc-b"}
    times = sorted(q.t for q in hits)
    slack = 0.03  # scheduling/network jitter between the grant and the server's clock
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            assert j - i <= burst + rate * (times[j] - times[i] + slack), (i, j, times)
    assert times[-1] - times[0] >= (2 * n - burst) / rate - 0.1


def test_limiter_burst_timeout_and_no_busy_loop(r: Redis) -> None:
    sleeps: list[float] = []
    limiter = RateLimiter(r, "unit", rate_per_s=2.0, burst=3, sleep=sleeps.append)
    for _ in range(3):
        assert limiter.acquire() == 0.0  # the burst goes straight through
    wait = limiter.acquire()  # then one sleep of the computed wait, no polling
    assert 0.4 <= wait <= 0.5 and sleeps == [wait]
    with pytest.raises(RateLimitTimeout) as info:
        limiter.acquire(timeout_s=0.1)
    assert info.value.code == "rate_limited"
    assert len(sleeps) == 1  # a refused acquire reserves nothing and does not sleep


# -- helpers ----------------------------------------------------------------------------
def test_partial_dates_and_release_choice() -> None:
    assert partial_date_key("1977") < partial_date_key("1977-05") < partial_date_key(
        "1977-05-08") < partial_date_key(None)
    releases = [{"id": "bootleg", "status": "Bootleg", "date": "1970"},
                {"id": "late", "status": "Official", "date": "1990-01-01"},
                {"id": "early", "status": "Official", "date": "1977"},
                {"id": "undated", "status": "Official"}]
    assert pick_release(releases)["id"] == "early"
    assert new_releases_query(date(2024, 1, 1)) == "date:[2024-01-01 TO *]"


# -- dumps ------------------------------------------------------------------------------
def _dump_lines() -> list[bytes]:
    release = (FIXTURES / "mb/release_r1.json").read_text("utf-8")
    recording = (FIXTURES / "mb/recording_a2.json").read_text("utf-8")
    return [json.dumps(json.loads(release), ensure_ascii=False).encode() + b"\n",
            b"{not json\n",
            b"\n",
            json.dumps(json.loads(recording), ensure_ascii=False).encode() + b"\n",
            b"[1, 2]\n",
            b"\xff\xfe\n"]


@pytest.mark.parametrize("suffix", ["", ".gz", ".xz", ".bz2", ".tar.xz"])
def test_dump_reader_formats_errors_and_resume(tmp_path: Path, suffix: str) -> None:
    data = b"".join(_dump_lines())
    path = tmp_path / f"release{suffix}"
    if suffix == ".tar.xz":
        with tarfile.open(path, "w:xz") as tar:
            for name, payload in (("TIMESTAMP", b"2024-06-01"), ("mbdump/release", data)):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    else:
        opener = {"": open, ".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}[suffix]
        with opener(path, "wb") as fh:
            fh.write(data)
    items = list(dumps.iter_dump(path))
    assert [n for n, _ in items] == [1, 2, 4, 5, 6]  # the blank line 3 is skipped
    kinds = [x.code if isinstance(x, dumps.DumpError) else dumps.entity_type(x)
             for _, x in items]
    assert kinds == ["release", "invalid_json", "recording", "not_an_object", "not_utf8"]
    assert [n for n, _ in dumps.iter_dump(path, start_line=4)] == [4, 5, 6]


def test_dump_reader_is_lazy() -> None:
    class Counting(io.BytesIO):
        read_bytes = 0

        def readline(self, size: int | None = -1) -> bytes:
            line = super().readline(size)
            Counting.read_bytes += len(line)
            return line

    line = json.dumps({"id": "x", "title": "t" * 100, "length": None}).encode() + b"\n"
    stream = Counting(line * 5000)
    it = dumps.iter_lines(stream)
    first = [next(it) for _ in range(3)]
    assert [n for n, _ in first] == [1, 2, 3]
    assert Counting.read_bytes == 3 * len(line)


def test_resolve_dump_release_album_first_and_resume(settings: Settings, r: Redis,
                                                     tmp_path: Path) -> None:
    path = tmp_path / "dump.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"".join(_dump_lines()))
    resolver = make_resolver(settings, r)
    out = list(resolver.resolve_dump(path))
    assert [n for n, _ in out] == [1] * 5 + [2, 4, 5, 6]
    assert all(res.ok for n, res in out if n == 1)
    assert resolver.calls["musicbrainz"] == 0  # the dump entity has everything
    assert resolver.calls["itunes"] == 3  # album search + lookup, then one song search
    assert out[5][1].recording_id == "line:2" and out[5][1].error_code == "invalid_json"
    assert out[6][1].recording_id == REC_A2 and out[6][1].ok
    resumed = list(resolver.resolve_dump(path, start_line=4))
    assert [n for n, _ in resumed] == [4, 5, 6]


def test_pregap_data_track_repeat_and_video_served_by_musicbrainz(
        settings: Settings, r: Redis, upstream: UpstreamServer) -> None:
    """Given the web service's shape of a CD+DVD release (R1's tracks with the intro as a
    hidden pregap track, the outro as a data track, a bonus disc repeating a recording,
    and a DVD with a video), expect each audio recording resolved once from the album's two
    iTunes calls, the video skipped without a call; and a release without a tracklist
    answered with one ``no_tracks``."""
    resolver = make_resolver(settings, r)
    got = list(resolver.resolve_release(R3))
    codes = {res.recording_id[:8]: res.error_code for res in got}
    assert codes == {"11111111": None, "22222222": None, "33333333": None,
                     "44444444": None, "55555555": None, "12121212": "video_recording"}
    assert len(got) == 6  # the bonus disc's repeat is not resolved again
    assert resolver.calls == {"musicbrainz": 1, "itunes": 2, "itunes_cache_hits": 0}
    intro = next(res for res in got if res.recording_id.startswith("11111111"))
    assert intro.job.preview_url.endswith("mzaf_1440001101.plus.aac.p.m4a")

    empty = list(resolver.resolve_release(R4))
    assert [(res.recording_id, res.error_code) for res in empty] == [
        (f"release:{R4}", "no_tracks")]
    assert resolver.calls["musicbrainz"] == 2 and resolver.calls["itunes"] == 2
