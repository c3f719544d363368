"""Identifier-first resolution over two preview sources, against answers in the documented
shapes (tests/fixtures/upstream: iTunes ``lookup?upc``, Deezer ``/track/isrc:``,
``/album/upc:``, ``/album/<id>/tracks``, error bodies code 4 and 800) served on 127.0.0.1
by tests/upstream_server.py, or hand-made in the same shapes for one request
(``fail_next`` with a 200); Redis is a private LocalRedis. No internet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from contract.retry import Backoff
from contract.settings import Settings
from contract.state import connect
from contract.state.cache import AnswerCache
from contract.state.keys import DEEZER_CACHE_PREFIX
from previewvec.localredis import LocalRedis
from producers.deezer import DeezerClient
from producers.http import UpstreamRejected, UpstreamUnavailable
from producers.itunes import ITunesClient, RedisResponseCache
from producers.musicbrainz import MusicBrainzClient
from producers.ratelimit import RateLimiter
from producers.resolve import Resolver
from tests.upstream_server import FIXTURES, UpstreamServer

ROOT = Path(__file__).resolve().parents[2]
R1 = "a3f0c9e2-5b7d-4c1e-9f2a-1d8e6b4c7a01"
R2 = "b4e1d0f3-6c8e-4d2f-a03b-2e9f7c5d8b12"
FAST = Backoff(base_s=0.02, cap_s=0.1)
QUOTA = (FIXTURES / "deezer" / "error_quota.json").read_bytes()


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
    return Settings(mb_contact="previewvec-tests@example.org", musicbrainz_url=upstream.url,
                    itunes_url=upstream.url, deezer_url=upstream.url,
                    broker_url=local_redis.url)


def clients(settings: Settings, r: Redis, retries: int = 5
            ) -> tuple[MusicBrainzClient, ITunesClient, DeezerClient]:
    mb = MusicBrainzClient(settings, RateLimiter(r, "musicbrainz", 500), backoff=FAST)
    it = ITunesClient(settings, RateLimiter(r, "itunes", 500), cache=RedisResponseCache(r),
                      max_retries=retries, backoff=FAST)
    dz = DeezerClient(settings, RateLimiter(r, "deezer", 500),
                      cache=AnswerCache(r, prefix=DEEZER_CACHE_PREFIX), max_retries=retries,
                      backoff=FAST)
    return mb, it, dz


def release_doc(name: str, **changes: object) -> dict:
    return {**json.loads((FIXTURES / "mb" / name).read_text("utf-8")), **changes}


# -- hand-made answers -------------------------------------------------------------------
HOLLOW = [{"name": "The Hollow Pines", "joinphrase": ""}]


def mb_release(*tracks: tuple[str, int, str | None], barcode: str = "") -> dict:
    """A MusicBrainz release of The Hollow Pines: (title, seconds, ISRC) per track."""
    return {"id": "c0ffee00-0000-4000-8000-000000000000", "title": "Midnight Radio",
            "barcode": barcode, "artist-credit": HOLLOW, "media": [{"position": 1, "tracks": [
                {"position": n, "title": title, "length": s * 1000, "recording": {
                    "id": f"c0ffee00-0000-4000-8000-00000000000{n}", "title": title,
                    "length": s * 1000, "isrcs": [isrc] if isrc else []}}
                for n, (title, s, isrc) in enumerate(tracks, 1)]}]}


def mb_recording(title: str, seconds: int) -> dict:
    return {"id": "c0ffee00-0000-4000-8000-000000000009", "title": title,
            "length": seconds * 1000, "isrcs": [], "artist-credit": HOLLOW}


def itunes_answer(*rows: dict) -> bytes:
    return json.dumps({"resultCount": len(rows), "results": list(rows)}).encode()


def itunes_album(collection_id: int, track_count: int) -> dict:
    return {"wrapperType": "collection", "collectionType": "Album",
            "collectionId": collection_id, "artistName": "The Hollow Pines",
            "collectionName": "Midnight Radio", "trackCount": track_count}


def itunes_song(track_id: int, name: str, seconds: int, number: int = 1, *,
                preview: bool = True) -> dict:
    return {"wrapperType": "track", "kind": "song", "trackId": track_id,
            "artistName": "The Hollow Pines", "collectionName": "Midnight Radio",
            "trackName": name, "discNumber": 1, "trackNumber": number,
            "trackTimeMillis": seconds * 1000,
            "trackViewUrl": f"https://music.apple.com/us/album/x/1550009000?i={track_id}",
            # iTunes leaves a track without a preview as "" or without the field
            "previewUrl": "https://audio-ssl.itunes.apple.com/itunes-assets/AudioPreview115/"
                          f"v4/00/00/00/mzaf_{track_id}.plus.aac.p.m4a" if preview else ""}


def deezer_answer(*rows: dict) -> bytes:
    return json.dumps({"data": list(rows), "total": len(rows)}).encode()


def deezer_row(track_id: int, title: str, seconds: int, *, readable: bool = True,
               preview: bool = True) -> dict:
    return {"id": track_id, "readable": readable, "title": title, "duration": seconds,
            "link": f"https://www.deezer.com/track/{track_id}",
            "preview": f"https://cdnt-preview.dzcdn.net/api/1/1/a/b/c/0/{track_id}.mp3"
                       if preview else "",
            "artist": {"id": 5080001, "name": "The Hollow Pines"},
            "album": {"id": 302000009, "title": "Midnight Radio"}, "type": "track"}


# -- contract tests: the clients against the documented shapes ---------------------------
def test_deezer_client_isrc_album_and_no_data(settings: Settings, r: Redis,
                                              upstream: UpstreamServer) -> None:
    _, _, dz = clients(settings, r)
    track = dz.track_by_isrc("USHP10300002")
    assert track is not None and track["id"] == 3020000102 and track["isrc"] == "USHP10300002"
    assert track["preview"].startswith("https://cdnt-preview.dzcdn.net/")
    assert dz.track_by_isrc("USXX19999999") is None  # HTTP 200 {"error": {"code": 800}}
    album = dz.album_by_upc("0602498612345")
    assert album is not None and album.album["nb_tracks"] == 4
    assert [(t["disk_number"], t["track_position"], t["isrc"]) for t in album.tracks] == [
        (1, 1, "USHP10300001"), (1, 2, "USHP10300002"), (1, 3, "USHP10300003"),
        (1, 4, "USHP10300004")]
    assert dz.album_by_upc("0000000000000") is None
    assert dz.calls == 5  # isrc, isrc, upc + tracks, upc (no tracks call for no album)
    assert dz.track_by_isrc("USXX19999999") is None  # "no data" is stable: cached
    assert dz.calls == 5 and dz.stats["cache_hits"] == 1
    assert [q.path for q in upstream.requests][:2] == ["/track/isrc:USHP10300002",
                                                       "/track/isrc:USXX19999999"]


def test_deezer_quota_code_4_in_a_200_is_throttling(settings: Settings, r: Redis,
                                                    upstream: UpstreamServer) -> None:
    _, _, dz = clients(settings, r, retries=3)
    upstream.fail_next(2, 200, QUOTA, path_prefix="/track/")
    track = dz.track_by_isrc("USHP10300002")
    assert track is not None and track["id"] == 3020000102  # never read as an answer
    assert dz.stats["throttled"] == 2 and dz.calls == 3
    # the shared limiter was pushed forward for every process, not just this one
    assert r.get("pv:ratelimit:deezer") is not None
    upstream.fail_next(10, 200, QUOTA, path_prefix="/track/")
    with pytest.raises(UpstreamUnavailable, match="throttled"):
        dz.track_by_isrc("USHP10300001")
    assert r.keys(DEEZER_CACHE_PREFIX + "*") and len(r.keys(DEEZER_CACHE_PREFIX + "*")) == 1


@pytest.mark.parametrize("quota", [
    b'{\n  "error": {\n    "type": "Exception",\n    "message": "Quota limit exceeded",\n'
    b'    "code": 4\n  }\n}\n',
    b'\xef\xbb\xbf{ "error" : {"code": 4, "message": "Quota limit exceeded"}}',
    b'{"error": {"type": "Exception", "message": "Service busy", "code": 700}}'],
    ids=["pretty", "bom-spaced", "busy-700"])
def test_deezer_quota_in_any_json_spelling_is_throttling(
        settings: Settings, r: Redis, upstream: UpstreamServer, quota: bytes) -> None:
    """Written by the API-layer review: the quota answer pretty-printed or spaced (a
    recording proxy reformats JSON) was read as an unknown error, not retried, and the
    shared limiter not penalised."""
    _, _, dz = clients(settings, r, retries=3)
    upstream.fail_next(1, 200, quota, path_prefix="/track/")
    track = dz.track_by_isrc("USHP10300002")
    assert track is not None and track["id"] == 3020000102
    assert dz.stats["throttled"] == 1 and dz.calls == 2


@pytest.mark.parametrize("code", [500, 501, 600])
def test_a_deezer_error_the_request_causes_is_final(
        settings: Settings, r: Redis, upstream: UpstreamServer, code: int) -> None:
    """Written from the review of upstream shapes: Deezer's parameter and invalid-query
    errors (HTTP 200, documented codes) were upstream_unavailable, so the recording was
    asked again in every run; asking again gives the same answer."""
    _, _, dz = clients(settings, r, retries=3)
    body = {"error": {"type": "InvalidQueryException", "message": "Invalid query",
                      "code": code}}
    upstream.fail_next(1, 200, json.dumps(body).encode(), path_prefix="/track/")
    with pytest.raises(UpstreamRejected, match=f"error {code}"):
        dz.track_by_isrc("USHP10300002")
    assert dz.calls == 1 and dz.stats["throttled"] == 0  # not retried


def test_an_unreadable_deezer_track_is_replaced_by_its_readable_alternative(
        settings: Settings, r: Redis, upstream: UpstreamServer) -> None:
    """Written from the review of upstream shapes: a track object not ``readable`` in
    the region names a readable copy in ``alternative`` (Deezer's documented field); it
    was read as "no preview"."""
    only_deezer = Settings(**{**settings.__dict__, "sources": ("deezer",)})
    mb, _, dz = clients(only_deezer, r)
    resolver = Resolver(only_deezer, mb, None, deezer=dz)
    row = {**deezer_row(3020000101, "Static Hearts", 215, readable=False),
           "isrc": "USHP10300002",
           "alternative": {**deezer_row(3020000201, "Static Hearts", 215),
                           "isrc": "USHP10300002"}}
    upstream.fail_next(1, 200, json.dumps(row).encode(),
                       path_prefix="/track/isrc:USHP10300002")
    rec = {**mb_recording("Static Hearts", 215), "isrcs": ["USHP10300002"]}
    res = resolver.resolve_recording_data(rec)
    assert res.job is not None and res.job.match_rule == "isrc"
    assert res.job.source_track_id == "3020000201"
    assert res.job.preview_url.endswith("/3020000201.mp3")


def test_deezer_album_tracks_follow_next(settings: Settings, r: Redis,
                                        upstream: UpstreamServer) -> None:
    """Written by the API-layer review, with hand-made pages: Deezer pages lists
    (``data``, ``total``, ``next``). An album answered 25 tracks at a time lost every
    track past the first page (their barcode positions then untrusted or unmatched)."""
    _, _, dz = clients(settings, r)
    rows = [{**deezer_row(3020010000 + n, f"Song {n}", 180), "track_position": n,
             "disk_number": 1} for n in range(1, 31)]
    nxt = f"{upstream.url}/album/302000077/tracks?limit=500&index=25"
    upstream.fail_next(1, 200, json.dumps({"data": rows[:25], "total": 30, "next": nxt}
                                          ).encode(), path_prefix="/album/302000077/tracks")
    upstream.fail_next(1, 200, json.dumps({"data": rows[25:], "total": 30, "prev": nxt}
                                          ).encode(), path_prefix="/album/302000077/tracks")
    got = dz.album_tracks(302000077)
    assert [t["track_position"] for t in got] == list(range(1, 31))
    assert [q.query.get("index") for q in upstream.requests] == [None, "25"]
    # an upstream that ignores ``index`` (the same page again, still with ``next``)
    upstream.clear()
    upstream.fail_next(5, 200, json.dumps({"data": rows[:25], "total": 30, "next": nxt}
                                          ).encode(), path_prefix="/album/302000078/tracks")
    assert len(dz.album_tracks(302000078)) == 25 and dz.calls == 4


def test_itunes_lookup_upc_one_call(settings: Settings, r: Redis,
                                    upstream: UpstreamServer) -> None:
    _, it, _ = clients(settings, r)
    found = it.lookup_upc("0602498612345")
    assert found.collection is not None and found.collection["collectionId"] == 1550002001
    assert [t["trackNumber"] for t in found.tracks] == [1, 2, 3]
    assert it.lookup_upc("0000000000000").collection is None  # resultCount 0
    q = upstream.requests[0]
    assert (q.path, q.query["upc"], q.query["entity"]) == ("/lookup", "0602498612345", "song")
    assert it.calls == 2


def test_deezer_album_known_only_under_the_shortened_barcode_is_found(
        settings: Settings, r: Redis, upstream: UpstreamServer) -> None:
    """Deezer is reported to find an album by barcode only without its leading zeros:
    after "no data" for the full barcode, the shortened one is asked (once)."""
    _, _, dz = clients(settings, r)
    album = (FIXTURES / "deezer" / "album_upc_0602498612345.json").read_bytes()
    upstream.fail_next(1, 200, album, path_prefix="/album/upc:602498699999")
    found = dz.album_by_upc("0602498699999")  # the full form answers "no data" (800)
    assert found is not None and found.album["nb_tracks"] == 4
    assert [q.path for q in upstream.requests] == [
        "/album/upc:0602498699999", "/album/upc:602498699999", "/album/302000001/tracks"]
    assert dz.album_by_upc("1234567890128") is None  # no leading zero: asked once
    assert [q.path for q in upstream.requests][3:] == ["/album/upc:1234567890128"]


def test_itunes_lookup_upc_keeps_only_the_songs_of_the_collection_it_answers(
        settings: Settings, r: Redis, upstream: UpstreamServer) -> None:
    """A barcode lookup may answer other editions too (collections with their songs):
    the songs of another edition would pair by position with the wrong tracklist."""
    _, it, _ = clients(settings, r)
    edition, other = itunes_album(1550009000, 2), itunes_album(1550009500, 2)
    other["collectionName"] = "Midnight Radio (Deluxe Edition)"
    songs = [{**itunes_song(1550009101, "Paper Moons", 200, 1), "collectionId": 1550009000},
             {**itunes_song(1550009102, "Static Hearts", 215, 2),
              "collectionId": 1550009000},
             {**itunes_song(1550009501, "Intro (Demo)", 62, 1), "collectionId": 1550009500},
             {**itunes_song(1550009502, "Paper Moons", 200, 2), "collectionId": 1550009500}]
    upstream.fail_next(1, 200, itunes_answer(edition, songs[0], songs[1], other, *songs[2:]),
                       path_prefix="/lookup")
    found = it.lookup_upc("0602498699999")
    assert found.collection is not None and found.collection["collectionId"] == 1550009000
    assert [t["trackId"] for t in found.tracks] == [1550009101, 1550009102]


# -- the cascade over both sources ------------------------------------------------------
def test_barcode_release_costs_one_itunes_call(settings: Settings, r: Redis,
                                               upstream: UpstreamServer) -> None:
    mb, it, dz = clients(settings, r)
    resolver = Resolver(settings, mb, it, deezer=dz)
    release = release_doc("release_r1.json", barcode="3770000000017")
    results = list(resolver.resolve_release_data(release))
    assert [res.error_code for res in results] == [None] * 5
    assert resolver.calls == {"musicbrainz": 0, "itunes": 1, "itunes_cache_hits": 0,
                              "deezer": 0, "deezer_cache_hits": 0}
    assert {res.job.match_rule for res in results} == {"upc+position"}
    lumiere = results[2].job
    assert lumiere.source == "itunes" and lumiere.source_track_id == "1440001103"
    assert lumiere.confidence is not None and 0.75 <= lumiere.confidence <= 1
    assert lumiere.preview_host == "audio-ssl.itunes.apple.com"


def test_wrong_itunes_barcode_falls_to_deezer_isrcs(settings: Settings, r: Redis,
                                                    upstream: UpstreamServer) -> None:
    mb, it, dz = clients(settings, r)
    resolver = Resolver(settings, mb, it, deezer=dz)
    got = {res.recording_id[:8]: res for res in resolver.resolve_release(R2)}
    for rid in ("66666666", "77777777", "99999999"):
        job = got[rid].job
        assert job is not None and job.source == "deezer" and job.match_rule == "isrc"
        assert job.confidence == 1.0 and job.preview_host == "cdnt-preview.dzcdn.net"
        assert job.source_url == f"https://www.deezer.com/track/{job.source_track_id}"
        assert "itunes barcode 0602498612345 not trusted" in got[rid].reason
    assert got["99999999"].job.source_track_id == "3020000104"  # Glass, not the radio edit
    # The MB recording is live; Deezer's track 3 (studio, its own ISRC) must not match,
    # nor iTunes's studio "Undertow" found by song search.
    assert got["88888888"].job is None and got["88888888"].error_code == "no_confident_match"
    # the live take: one song search on each source (nothing to find)
    assert resolver.calls["itunes"] == 2  # upc lookup + song search
    assert resolver.calls["deezer"] == 3  # /album/upc: + /album/<id>/tracks + track search


def test_deezer_only_and_isrc_per_recording(upstream: UpstreamServer, r: Redis,
                                            settings: Settings) -> None:
    only_deezer = Settings(**{**settings.__dict__, "sources": ("deezer",),
                              "allowed_audio_hosts": ()})
    assert "mzstatic.com" not in only_deezer.allowed_audio_hosts
    assert "dzcdn.net" in only_deezer.allowed_audio_hosts
    mb, _, dz = clients(only_deezer, r)
    resolver = Resolver(only_deezer, mb, None, deezer=dz)
    entry_release = release_doc("release_r2.json", barcode="")  # no barcode: per ISRC
    got = {res.recording_id[:8]: res for res in resolver.resolve_release_data(entry_release)}
    assert got["77777777"].job is not None and got["77777777"].job.match_rule == "isrc"
    assert got["66666666"].job is None  # Deezer knows no track for USHP10300001 (800)
    assert got["88888888"].reason.endswith("deezer: no store candidates")
    # one /track/isrc: per recording with an ISRC, one /search/album for the three left
    # (an empty answer), one /search/track for each of them
    assert resolver.calls["deezer"] == 3 + 1 + 3


def test_deezer_isrc_lookup_answering_another_isrc_is_no_isrc_match(
        settings: Settings, r: Redis, upstream: UpstreamServer) -> None:
    """Written by the API-layer review, with a hand-made answer: ``/track/isrc:X``
    answering a track whose own ``isrc`` is another (a substitute: the remaster, the
    live take under its own code) was taken with the ``isrc`` rule at confidence 1."""
    mb, _, dz = clients(settings, r)
    resolver = Resolver(settings, mb, None, deezer=dz)
    other = {**deezer_row(3020000199, "Static Hearts", 215), "isrc": "USHP12100002"}
    upstream.fail_next(1, 200, json.dumps(other).encode(),
                       path_prefix="/track/isrc:USHP10300002")
    rec = {**mb_recording("Static Hearts", 215), "isrcs": ["USHP10300002"]}
    res = resolver.resolve_recording_data(rec)
    assert (res.job, res.error_code) == (None, "no_confident_match")  # search: nothing
    assert res.reason == ("deezer: /track/isrc:USHP10300002 answered a track with ISRC "
                          "USHP12100002")


# -- a match needs a preview ----------------------------------------------------------
def test_itunes_song_search_takes_the_duplicate_with_a_preview(
        settings: Settings, r: Redis, upstream: UpstreamServer) -> None:
    mb, it, _ = clients(settings, r)
    resolver = Resolver(settings, mb, it)  # iTunes only
    upstream.fail_next(1, 200, itunes_answer(
        itunes_song(1550009001, "Static Hearts", 215, preview=False),
        itunes_song(1550009002, "Static Hearts", 215)), path_prefix="/search")
    res = resolver.resolve_recording_data(mb_recording("Static Hearts", 215))
    assert res.job is not None and res.job.source_track_id == "1550009002"
    assert res.job.preview_url.endswith("mzaf_1550009002.plus.aac.p.m4a")
    assert resolver.calls["itunes"] == 1


@pytest.mark.parametrize("preview_url", [
    "https://evil.example.com/itunes-assets/mzaf_1.plus.aac.p.m4a",
    "https://audio-ssl.itunes.apple.com.evil.example/itunes-assets/mzaf_1.plus.aac.p.m4a",
    "https://127.0.0.1:8080/itunes-assets/mzaf_1.plus.aac.p.m4a",
    "javascript:alert(1)",
    "/itunes-assets/mzaf_1.plus.aac.p.m4a",
], ids=["other-host", "lookalike-host", "ip-literal", "javascript", "relative"])
def test_a_preview_no_worker_would_fetch_is_no_preview_and_the_next_source_is_asked(
        settings: Settings, r: Redis, upstream: UpstreamServer, preview_url: str) -> None:
    """From the resolution audit: an iTunes previewUrl on a host outside
    ``allowed_audio_hosts`` became a job at confidence 1 that every worker then failed as
    ``host_not_allowed`` (and a ``javascript:`` or relative one ended the search as
    ``invalid_job``), while Deezer had the track. Given such a preview, expect it read
    as none: Deezer's track is the job; with Deezer empty, ``no_preview`` saying why."""
    mb, it, dz = clients(settings, r)
    row = {**itunes_song(1550009001, "Static Hearts", 215), "previewUrl": preview_url}
    upstream.fail_next(1, 200, itunes_answer(row), path_prefix="/search")
    upstream.fail_next(1, 200, deezer_answer(deezer_row(3020009002, "Static Hearts", 215)),
                       path_prefix="/search/track")
    res = Resolver(settings, mb, it, deezer=dz).resolve_recording_data(
        mb_recording("Static Hearts", 215))
    assert res.job is not None and res.job.source == "deezer"
    assert res.job.preview_url.startswith("https://cdnt-preview.dzcdn.net/")

    r.flushdb()  # the answer caches
    upstream.fail_next(1, 200, itunes_answer(row), path_prefix="/search")
    upstream.fail_next(1, 200, deezer_answer(), path_prefix="/search/track")
    alone = Resolver(settings, mb, it, deezer=dz).resolve_recording_data(
        mb_recording("Static Hearts", 215))
    assert alone.job is None and alone.error_code == "no_preview"
    assert "store track's preview refused: " in alone.reason


def test_an_allowed_preview_wins_over_a_copy_on_another_host_in_one_search(
        settings: Settings, r: Redis, upstream: UpstreamServer) -> None:
    """A subdomain of an allowed host is allowed, as the workers allow it; a copy on
    another host listed first is passed over, with one call."""
    mb, it, _ = clients(settings, r)
    evil = {**itunes_song(1550009001, "Static Hearts", 215),
            "previewUrl": "https://cdn.evil.example/mzaf_1550009001.plus.aac.p.m4a"}
    sub = {**itunes_song(1550009002, "Static Hearts", 215),
           "previewUrl": "https://is5-ssl.mzstatic.com/mzaf_1550009002.plus.aac.p.m4a"}
    upstream.fail_next(1, 200, itunes_answer(evil, sub), path_prefix="/search")
    resolver = Resolver(settings, mb, it)
    res = resolver.resolve_recording_data(mb_recording("Static Hearts", 215))
    assert res.job is not None and res.job.source_track_id == "1550009002"
    assert resolver.calls["itunes"] == 1


def test_an_artist_without_latin_letters_is_searched_and_matched_in_its_latin_spelling(
        settings: Settings, r: Redis, upstream: UpstreamServer) -> None:
    """From the resolution audit: 宇多田ヒカル (sort name "Utada, Hikaru") was searched
    for as written and the store's "Hikaru Utada" scored artist=0.70: no match."""
    mb, it, _ = clients(settings, r)
    rec = {**mb_recording("First Love", 257), "artist-credit": [
        {"name": "宇多田ヒカル", "joinphrase": "",
         "artist": {"name": "宇多田ヒカル", "sort-name": "Utada, Hikaru"}}]}
    row = {**itunes_song(1550009001, "First Love", 257), "artistName": "Hikaru Utada"}
    upstream.fail_next(1, 200, itunes_answer(row), path_prefix="/search")
    res = Resolver(settings, mb, it).resolve_recording_data(rec)
    assert res.job is not None and res.job.source_track_id == "1550009001"
    assert res.job.artist == "宇多田ヒカル"  # the job names the credit as MusicBrainz has it
    (query,) = [q.query["term"] for q in upstream.requests_to("/search")]
    assert query == "Hikaru Utada First Love"


def test_a_song_search_answering_only_other_versions_matches_none(
        settings: Settings, r: Redis, upstream: UpstreamServer) -> None:
    """From the resolution audit: with the studio track missing from the answer,
    "(Stripped)", "(Lofi)" or "(Spotify Sessions)" scored 0.79-0.93 on artist and
    duration and became the studio recording's job."""
    mb, it, _ = clients(settings, r)
    rows = [itunes_song(1550009001 + n, f"Static Hearts ({suffix})", 215)
            for n, suffix in enumerate(["Stripped", "Lofi", "8D Audio", "Techno", "Phonk",
                                        "Spotify Sessions", "Spotify Singles", "Cover"])]
    upstream.fail_next(1, 200, itunes_answer(*rows), path_prefix="/search")
    res = Resolver(settings, mb, it).resolve_recording_data(mb_recording("Static Hearts", 215))
    assert res.job is None and res.error_code == "no_confident_match"
    assert res.score < settings.match_threshold


@pytest.mark.parametrize("preview", [False, True], ids=["no-preview", "dead-preview"])
def test_deezer_unreadable_row_loses_to_its_readable_duplicate(
        settings: Settings, r: Redis, upstream: UpstreamServer, preview: bool) -> None:
    only_deezer = Settings(**{**settings.__dict__, "sources": ("deezer",)})
    mb, _, dz = clients(only_deezer, r)
    resolver = Resolver(only_deezer, mb, None, deezer=dz)
    upstream.fail_next(1, 200, deezer_answer(
        deezer_row(3020009001, "Static Hearts", 215, readable=False, preview=preview),
        deezer_row(3020009002, "Static Hearts", 215)), path_prefix="/search/track")
    res = resolver.resolve_recording_data(mb_recording("Static Hearts", 215))
    assert res.job is not None and res.job.source_track_id == "3020009002"
    assert resolver.calls["deezer"] == 1


def test_a_deezer_search_keeps_its_fields_whole_when_a_title_has_double_quotes(
        settings: Settings, r: Redis, upstream: UpstreamServer) -> None:
    only_deezer = Settings(**{**settings.__dict__, "sources": ("deezer",)})
    mb, _, dz = clients(only_deezer, r)
    resolver = Resolver(only_deezer, mb, None, deezer=dz)
    upstream.fail_next(1, 200, deezer_answer(deezer_row(3020009003, 'Glass (12" Mix)', 250)),
                       path_prefix="/search/track")
    res = resolver.resolve_recording_data(mb_recording('Glass (12" Mix)', 250))
    assert res.job is not None and res.job.source_track_id == "3020009003"
    (query,) = [q.query["q"] for q in upstream.requests_to("/search/track")]
    assert query == 'artist:"The Hollow Pines" track:"Glass (12 Mix)"'


def test_itunes_album_track_without_preview_loses_to_its_bonus_copy(
        settings: Settings, r: Redis, upstream: UpstreamServer) -> None:
    """Album search then lookup: the album lists "Static Hearts" at 2 without a preview
    and again at 3 (a bonus copy) with one; position 2 scores higher, 3 still clears the
    threshold, and only 3 has a preview to analyse."""
    mb, it, _ = clients(settings, r)
    resolver = Resolver(settings, mb, it)
    upstream.fail_next(1, 200, itunes_answer(itunes_album(1550009000, 3)), path_prefix="/search")
    upstream.fail_next(1, 200, itunes_answer(
        itunes_album(1550009000, 3), itunes_song(1550009101, "Paper Moons", 200, 1),
        itunes_song(1550009102, "Static Hearts", 215, 2, preview=False),
        itunes_song(1550009103, "Static Hearts", 215, 3)), path_prefix="/lookup")
    got = list(resolver.resolve_release_data(
        mb_release(("Paper Moons", 200, None), ("Static Hearts", 215, None))))
    assert [res.job.source_track_id for res in got] == ["1550009101", "1550009103"]
    assert all(res.job.match_rule == "search+fuzzy" for res in got)
    assert resolver.calls["itunes"] == 2


def test_itunes_barcode_track_without_preview_is_asked_of_deezer(
        settings: Settings, r: Redis, upstream: UpstreamServer) -> None:
    mb, it, dz = clients(settings, r)
    resolver = Resolver(settings, mb, it, deezer=dz)
    upstream.fail_next(1, 200, itunes_answer(
        itunes_album(1550009000, 3), itunes_song(1550009101, "Paper Moons", 200, 1),
        itunes_song(1550009102, "Static Hearts", 215, 2, preview=False),
        itunes_song(1550009104, "Glass", 250, 3)), path_prefix="/lookup")
    got = list(resolver.resolve_release_data(mb_release(
        ("Paper Moons", 200, "USHP10300001"), ("Static Hearts", 215, "USHP10300002"),
        ("Glass", 250, "USHP10300004"), barcode="0602498699999")))
    assert [(res.job.source, res.job.match_rule) for res in got] == [
        ("itunes", "upc+position"), ("deezer", "isrc"), ("itunes", "upc+position")]
    assert got[1].job.source_track_id == "3020000102"  # Deezer's, with its preview
    # the upc lookup, then Deezer's /track/isrc: for the one track left (not its album)
    assert resolver.calls["itunes"] == 1 and resolver.calls["deezer"] == 1
    assert [q.path for q in upstream.requests] == ["/lookup", "/track/isrc:USHP10300002"]


# -- a failure that may pass is not a miss ------------------------------------------------
@pytest.mark.parametrize("body", [b"<html><body>Service Unavailable</body></html>", b""],
                         ids=["html", "empty"])
def test_itunes_unusable_answer_and_a_weak_deezer_match_is_upstream_unavailable(
        settings: Settings, r: Redis, upstream: UpstreamServer, body: bytes) -> None:
    mb, it, dz = clients(settings, r)
    resolver = Resolver(settings, mb, it, deezer=dz, handled=lambda ids: {})
    upstream.fail_next(1, 200, body, path_prefix="/search")  # iTunes's song search
    upstream.fail_next(1, 200, deezer_answer(deezer_row(3020009005, "Outro", 63)),
                       path_prefix="/search/track")
    res = resolver.resolve_recording_data(mb_recording("Intro", 62))
    assert res.error_code == "upstream_unavailable" and res.job is None
    assert res.reason.startswith("iTunes search: malformed JSON body")
    assert res.score == pytest.approx(0.31, abs=0.01)  # Deezer's "Outro": no match
    # not remembered as a miss: asked again, iTunes answers (nothing) and the miss is real
    again = resolver.resolve_recording_data(mb_recording("Intro", 62))
    assert again.error_code == "no_confident_match"
    assert [q.path for q in upstream.requests] == ["/search", "/search/track", "/search"]


def test_a_started_itunes_step_finishes_with_deezer_free(
        settings: Settings, r: Redis, upstream: UpstreamServer) -> None:
    """Written by the API-layer review. iTunes's album step is two calls (album search,
    then the album's songs); at iTunes's rate the second slot is one interval (here
    1.5 s, in production 3 s) away, beyond the wait a source is given while Deezer is
    free (``BUSY_S``). Before, that second slot was refused: the search's answer thrown
    away, the step read as "iTunes busy, not asked", and every track of R1 came out
    ``no_confident_match`` on Deezer's empty answers (failed for good, remembered). With
    both sources on (the default) no iTunes album step could complete. The bound now
    decides whether a step starts; a started step waits its turn, its retries included
    (one 403 here: the retry waits out the shared penalty)."""
    mb, _, dz = clients(settings, r)
    it = ITunesClient(settings, RateLimiter(r, "itunes", 1 / 1.5), cache=RedisResponseCache(r),
                      backoff=Backoff(base_s=1.2, cap_s=1.2))
    resolver = Resolver(settings, mb, it, deezer=dz, handled=lambda ids: {})
    got = list(resolver.resolve_release(R1))
    assert [x.error_code for x in got] == [None] * 5
    assert {x.job.source for x in got if x.job} == {"itunes"}
    assert [q.path for q in upstream.requests if not q.path.startswith(("/ws/", "/track/"))
            ] == ["/search", "/lookup"]
    r.flushdb()
    upstream.clear()
    upstream.fail_next(1, 403, b"", path_prefix="/search")  # throttled once, then answers
    again = list(Resolver(settings, mb, it, deezer=dz).resolve_release(R1))
    assert [x.error_code for x in again] == [None] * 5 and it.stats["throttled"] == 1


def test_stored_release_costs_no_call(settings: Settings, r: Redis) -> None:
    mb, it, dz = clients(settings, r)
    resolver = Resolver(settings, mb, it, deezer=dz, stored=lambda rid: True)
    results = list(resolver.resolve_release_data(release_doc("release_r2.json")))
    assert {res.error_code for res in results} == {"already_stored"}
    assert resolver.calls["itunes"] == resolver.calls["deezer"] == 0


# -- two rate limits, held across two processes ----------------------------------------
TWO_LIMITS = textwrap.dedent("""
    import sys, threading
    from contract.settings import Settings
    from contract.state import connect
    from producers.resolve import Resolver
    url, redis_url, n, tag = sys.argv[1:5]
    n = int(n)
    settings = Settings(itunes_url=url, deezer_url=url, broker_url=redis_url,
                        itunes_rate_per_min=240, deezer_rate_per_s=20)
    resolver = Resolver.build(settings, redis_client=connect(redis_url, decode=False,
                              retry=False), need_musicbrainz=False)
    for client in (resolver.itunes, resolver.deezer):
        client.session.headers["User-Agent"] = tag
    print("ready", flush=True)
    sys.stdin.readline()
    def itunes():
        for i in range(n):  # distinct barcodes: no cache hits
            resolver.itunes.lookup_upc(f"99{ord(tag[-1])}{i:09d}")
    def deezer():
        for i in range(3 * n):
            resolver.deezer.track_by_isrc(f"USXX{tag[-1].upper()}{i:07d}")
    threads = [threading.Thread(target=f) for f in (itunes, deezer)]
    for t in threads: t.start()
    for t in threads: t.join()
""")


def _check_spacing(times: list[float], rate: float, burst: int = 1) -> None:
    slack = 0.03  # scheduling/network jitter between the grant and the server's clock
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            assert j - i <= burst + rate * (times[j] - times[i] + slack), (i, j, times)


def test_two_rate_limits_hold_across_two_processes(local_redis: LocalRedis, r: Redis,
                                                   upstream: UpstreamServer) -> None:
    n = 5
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", TWO_LIMITS, upstream.url,
                               local_redis.url, str(n), tag], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=env, text=True)
             for tag in ("proc-a", "proc-b")]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            assert p.wait(timeout=60) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    itunes = sorted(q.t for q in upstream.requests_to("/lookup"))
    deezer = sorted(q.t for q in upstream.requests_to("/track/isrc:"))
    assert len(itunes) == 2 * n and len(deezer) == 6 * n
    assert {q.user_agent for q in upstream.requests_to("/lookup")} == {"proc-a", "proc-b"}
    _check_spacing(itunes, 4.0)
    _check_spacing(deezer, 20.0)
    # Each limit is its own: Deezer's 30 calls (1.5 s at 20/s) are not held to iTunes's
    # pace (10 calls need 2.25 s at 4/s, and would take 7.5 s for 30).
    assert deezer[-1] - deezer[0] < itunes[-1] - itunes[0]
    assert itunes[-1] - itunes[0] >= (2 * n - 1) / 4.0 - 0.1


def test_bounded_limiter_refuses_a_far_slot_without_reserving(r: Redis) -> None:
    """A thread with another source to ask does not queue behind a busy one."""
    from producers.ratelimit import RateLimitTimeout

    limiter = RateLimiter(r, "bounded-test", rate_per_s=2.0)
    limiter.acquire()  # the next slot is 0.5 s away
    with limiter.bounded(0.1), pytest.raises(RateLimitTimeout):
        limiter.acquire()
    assert 0.3 < limiter.next_wait_s() <= 0.5  # nothing was reserved
    with limiter.bounded(1.0):
        assert limiter.acquire() > 0.3  # within the bound: granted and waited
    assert limiter.grants == 2


def test_a_bounded_block_refuses_only_its_first_slot(r: Redis) -> None:
    """Written by the API-layer review: the bound decides whether work on a source starts;
    once a slot is granted, the block's next acquire() waits its turn (a step's second
    call), and the bound holds again in the next block."""
    from producers.ratelimit import RateLimitTimeout

    limiter = RateLimiter(r, "bounded-step", rate_per_s=4.0)  # slots 0.25 s apart
    with limiter.bounded(0.1):
        limiter.acquire()
        assert limiter.acquire() > 0.1  # granted beyond the bound: the step goes on
    with limiter.bounded(0.1), pytest.raises(RateLimitTimeout):
        limiter.acquire()
    assert limiter.grants == 2


def test_dump_with_releases_in_flight_keeps_line_order(settings: Settings, r: Redis,
                                                       tmp_path: Path) -> None:
    """Several releases resolve at once (threads waiting on the limits); the results come
    out in line order, equal to resolving one line at a time."""
    docs = [release_doc("release_r1.json", barcode="3770000000017"),
            release_doc("release_r2.json"), release_doc("release_r1.json"),
            release_doc("release_r2.json", barcode="")] * 3
    path = tmp_path / "release"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), "utf-8")
    mb, it, dz = clients(settings, r)
    serial = list(Resolver(settings, mb, it, deezer=dz).resolve_dump(path))
    r.flushdb()
    mb, it, dz = clients(settings, r)
    parallel = list(Resolver(settings, mb, it, deezer=dz, in_flight=4).resolve_dump(path))
    assert [n for n, _ in parallel] == [n for n, _ in serial]
    assert [n for n, _ in parallel] == sorted(n for n, _ in parallel)
    assert [(res.recording_id, res.job) for _, res in parallel] == [
        (res.recording_id, res.job) for _, res in serial]
