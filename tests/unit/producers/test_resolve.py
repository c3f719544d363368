"""The resolver's handling of what it is given: ISRC inputs, over-long metadata, what it
remembers of a Pseudo-Release, dump entities of an unexpected shape (in-memory sources
and MusicBrainz; dumps in a temporary folder)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from contract.jobs import TEXT_MAX_CHARS
from contract.state import RedisError
from tests.unit.producers.test_sources import (
    ALBUM,
    ARTIST,
    FakeSource,
    release,
    resolver_with,
    store,
)


@dataclass
class FakeMusicBrainz:
    """Knows no ISRC; records the ones it was asked for."""

    asked: list[str] = field(default_factory=list)

    def isrc(self, isrc: str) -> dict[str, Any]:
        self.asked.append(isrc)
        return {"isrc": isrc, "recordings": []}


# -- ISRC inputs -------------------------------------------------------------------------
def test_isrcs_are_checked_and_deduplicated_before_any_call() -> None:
    """Given spellings of one ISRC and values that are none, expect one MusicBrainz call
    for the ISRC and an ``invalid_isrc`` for each other value, without a call (one went to
    ``/isrc/NOT AN ISRC``, one to another endpoint: ``/isrc/../RELEASE/ABC?INC=X``)."""
    resolver = resolver_with(FakeSource("itunes", []))
    resolver.mb = mb = FakeMusicBrainz()
    given = ["not an isrc", "usrc17607839", " USRC17607839 ", "US-RC1-76-07839",
             "../release/abc?inc=x", "not an isrc", "\u0131SRC17607839"]
    got = {r.recording_id: r for r in resolver.resolve_isrcs(given)}
    assert mb.asked == ["USRC17607839"]
    assert {rid: r.error_code for rid, r in got.items()} == {
        "isrc:not an isrc": "invalid_isrc",
        "isrc:../release/abc?inc=x": "invalid_isrc",
        "isrc:\\u0131SRC17607839": "invalid_isrc",  # dotless i: upper() would make it "I"
        "isrc:USRC17607839": "isrc_unknown"}
    assert got["isrc:not an isrc"].reason == (
        '"not an isrc" is not an ISRC (12 characters like USRC17607839)')


def test_a_search_cut_at_the_window_is_a_resolution_of_its_own() -> None:
    """Written by the API-layer review: releases a new-releases search could not reach
    (past the search window, whatever the split) are reported, ``search_truncated``,
    after the releases it reached; nothing is passed over in silence."""
    from datetime import date

    rel = release()

    class Cut:
        def __init__(self) -> None:
            self.truncated: list[str] = []

        def new_releases(self, since: Any, until: Any, **kw: Any) -> Any:
            yield {"id": rel["id"]}
            self.truncated.append("date:[2024-03-01 TO 2024-03-01] (25 results, "
                                  "10 reachable)")

        def release(self, mbid: str) -> dict[str, Any]:
            return rel

    resolver = resolver_with(FakeSource("itunes", store()))
    resolver.mb = Cut()
    got = list(resolver.resolve_new_releases(date(2024, 3, 1), date(2024, 3, 1)))
    assert got[-1].error_code == "search_truncated" and got[-1].job is None
    assert got[-1].recording_id.startswith("new-releases:date:[2024-03-01 TO 2024-03-01]")
    assert "25 results, 10 reachable" in got[-1].reason
    assert len(got) == len(rel["media"][0]["tracks"]) + 1


def test_an_odd_musicbrainz_answer_is_one_invalid_entity_not_the_end_of_the_run() -> None:
    """Written by the API-layer review: an answer with null where an object belongs (an
    ``artist-credit`` part, an entry of a recording's ``releases``) raised AttributeError
    out of resolve_release / resolve_query / resolve_new_releases / resolve_isrcs,
    ending the whole run (a dump line of the same shape was already one
    ``invalid_entity``). Now it is that entity's ``invalid_entity``, and the run goes on."""
    odd_release = {**release(), "artist-credit": [None]}
    odd_rec = {"id": "rec-odd", "title": "Song", "length": 1000, "releases": [None]}
    good = release()["media"][0]["tracks"][1]["recording"]
    good_rec = {**good, "artist-credit": [{"name": ARTIST}],
                "releases": [{"id": "rel-1", "title": "Midnight Radio"}]}

    class Odd:
        def __init__(self) -> None:
            self.truncated: list[str] = []

        def release(self, mbid: str) -> dict[str, Any]:
            return odd_release if mbid == "rel-1" else {**release(), "id": mbid}

        def recording(self, mbid: str) -> dict[str, Any]:
            return odd_rec

        def iter_search_recordings(self, lucene: str, *a: Any, **kw: Any) -> Any:
            return iter([odd_rec, good_rec])

        def new_releases(self, since: Any, until: Any, **kw: Any) -> Any:
            return iter([{"id": "rel-1"}, {"id": "rel-2"}])

        def isrc(self, isrc: str) -> dict[str, Any]:
            return {"isrc": isrc, "recordings": [odd_rec]}

    def codes(results: Any) -> list[tuple[str, str | None]]:
        return [(x.recording_id, x.error_code) for x in results]

    resolver = resolver_with(FakeSource("itunes", store(), by_isrc=True))
    resolver.mb = Odd()
    got = list(resolver.resolve_release("rel-1"))
    assert codes(got) == [("release:rel-1", "invalid_entity")]
    assert got[0].reason.startswith(
        "MusicBrainz answer: cannot resolve this release entity (AttributeError")
    assert codes([resolver.resolve_recording("rec-x")]) == [("recording:rec-odd",
                                                             "invalid_entity")]
    assert codes(resolver.resolve_query("q")) == [("recording:rec-odd", "invalid_entity"),
                                                  (good["id"], None)]
    from datetime import date

    got = list(resolver.resolve_new_releases(date(2024, 1, 1), date(2024, 1, 31)))
    assert codes(got)[0] == ("release:rel-1", "invalid_entity")
    assert len(got) == 1 + len(release()["media"][0]["tracks"])
    assert codes(resolver.resolve_isrcs(["USRC17607839"])) == [("recording:rec-odd",
                                                                 "invalid_entity")]


def test_a_lone_surrogate_in_a_credit_or_title_does_not_cost_the_match() -> None:
    """Written by the API-layer review: JSON may escape a lone surrogate ("\\ud800"),
    which json.loads keeps and no UTF-8 text can hold. In a release's credit it made
    every track ``invalid_job`` (failed for good) although matched by ISRC; the job's
    shown title and artist take U+FFFD for it."""
    rel = release()
    rel["artist-credit"][0]["name"] += "\ud800"
    for part in (rel["media"][0]["tracks"][0], rel["media"][0]["tracks"][0]["recording"]):
        part["title"] += " \udfff"
    got = list(resolver_with(FakeSource("itunes", store(), by_isrc=True))
               .resolve_release_data(rel))
    assert [x.error_code for x in got] == [None] * len(got)
    assert got[0].job.title.endswith(" \ufffd") and got[0].job.artist.endswith("\ufffd")
    assert all(x.job.to_json().encode("utf-8") for x in got)


def test_a_video_found_by_isrc_gets_no_call() -> None:
    """Given an ISRC whose recordings are a video and its audio recording, expect the
    video ``video_recording`` without a store call, and only the audio one searched."""
    source = FakeSource("itunes", store())

    class WithVideo(FakeMusicBrainz):
        def isrc(self, isrc: str) -> dict[str, Any]:
            self.asked.append(isrc)
            return {"isrc": isrc, "recordings": [
                {"id": "rec-video", "title": ALBUM[0][0], "video": True, "length": 200000},
                {"id": "rec-audio", "title": ALBUM[0][0], "video": False,
                 "length": ALBUM[0][1] * 1000,
                 "artist-credit": [{"name": ARTIST, "artist": {"name": ARTIST}}]}]}

    resolver = resolver_with(source)
    resolver.mb = WithVideo()
    got = {r.recording_id: r for r in resolver.resolve_isrcs(["USRC17607839"])}
    assert got["rec-video"].error_code == "video_recording" and got["rec-video"].job is None
    assert set(got) == {"rec-video", "rec-audio"}
    assert source.log.count("song search") == 1  # the audio recording's alone


# -- over-long metadata ------------------------------------------------------------------
def test_a_match_with_a_title_or_credit_over_the_limit_is_a_job_with_them_clipped() -> None:
    """Given a confident match whose title (554 characters) or artist credit (30 artists,
    657 characters) is over a job's limit (512), expect a job, not ``invalid_job``: the
    title and artist clipped with an ellipsis, the ids and URLs whole."""
    title = ("Suite: " + ", ".join(f"Movement {n}" for n in range(1, 50)))[:554]
    credit = [{"name": f"Orchestra Member {n:02d}", "joinphrase": " & " if n < 30 else ""}
              for n in range(1, 31)]
    rel = release()
    mb_tracks = rel["media"][0]["tracks"]
    mb_tracks[0]["title"] = mb_tracks[0]["recording"]["title"] = title
    mb_tracks[1]["artist-credit"] = credit
    tracks = store(changes={0: (title, ALBUM[0][1], ALBUM[0][2])})
    names = " & ".join(c["name"] for c in credit)
    tracks[1] = replace(tracks[1], item=replace(tracks[1].item, artist=names))
    got = list(resolver_with(FakeSource("itunes", tracks)).resolve_release_data(rel))
    assert [r.error_code for r in got] == [None] * 6
    long_title, long_credit = got[0].job, got[1].job
    assert len(names) == 657
    assert long_title.title == title[:TEXT_MAX_CHARS - 1] + "…"
    assert long_title.artist == ARTIST and long_title.confidence == 1.0
    assert len(long_credit.artist) == TEXT_MAX_CHARS and long_credit.artist.endswith("…")
    assert long_credit.artist.startswith("Orchestra Member 01 & Orchestra Member 02 & ")
    assert long_credit.title == ALBUM[1][0]
    assert (long_title.recording_id, long_title.release_id, long_title.preview_url) == (
        "rec-0", "rel-1", "https://cdn.test/0.mp3")


# -- what a Pseudo-Release leaves behind -------------------------------------------------
def pseudo_release() -> dict[str, Any]:
    """The album's Pseudo-Release: the same recordings, transliterated, no barcode."""
    rel = release(barcode="")
    rel.update(id="rel-pseudo", title="Mayonaka Rajio", status="Pseudo-Release")
    for n, trk in enumerate(rel["media"][0]["tracks"]):
        trk["title"] = trk["recording"]["title"] = f"Hon'yaku {n}"
    return rel


def test_a_miss_on_a_pseudo_release_does_not_block_the_official_release() -> None:
    """Given the Pseudo-Release resolved first (every track missed) and then the official
    release in the same run, expect the official release resolved: its misses are not
    for good, neither in the resolver's memory nor as failures submit recorded in the
    run; its matches still are."""
    failed_in_run: set[str] = set()  # what submit records of the misses, run state

    def handled(ids: list[str]) -> dict[str, str]:
        return {rid: "in_run" for rid in ids if rid in failed_in_run}

    itunes = FakeSource("itunes", store(isrcs=False), by_search=True)
    resolver = resolver_with(itunes, handled=handled)
    pseudo = list(resolver.resolve_release_data(pseudo_release()))
    assert {r.error_code for r in pseudo} == {"no_confident_match"}
    failed_in_run.update(r.recording_id for r in pseudo)
    official = list(resolver.resolve_release_data(release()))
    assert [r.error_code for r in official] == [None] * 6
    assert itunes.log[-1] == "barcode"
    # the official release's matches are remembered: a third release costs no call
    calls = itunes.calls
    again = list(resolver.resolve_release_data(pseudo_release()))
    assert {r.error_code for r in again} == {"already_in_run"} and itunes.calls == calls


def test_a_match_on_a_pseudo_release_is_remembered() -> None:
    pseudo = release(barcode="")  # found by the album search: titles as the store's
    pseudo["status"] = "Pseudo-Release"
    itunes = FakeSource("itunes", store(isrcs=False), by_search=True)
    resolver = resolver_with(itunes, handled=lambda ids: {})
    assert all(r.ok for r in resolver.resolve_release_data(pseudo))
    again = list(resolver.resolve_release_data(release()))
    assert {r.error_code for r in again} == {"already_in_run"}
    assert itunes.log == ["album search"]


# -- dump entities of an unexpected shape ------------------------------------------------
def _dump_of(path: Path, entities: list[Any]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in entities))
    return path


def _odd_entities() -> list[dict[str, Any]]:
    """Entities whose shape broke the resolver (each stopped a dump for good)."""
    various = {**release(), "id": "rel-various", "artist-credit": "Various"}
    not_objects = {**release(), "id": "rel-credits", "artist-credit": [1, "x"]}
    recording = {"id": "rec-odd", "title": "Song", "length": 1000, "releases": "x"}
    return [various, not_objects, recording]


def test_an_entity_that_breaks_the_resolver_is_one_invalid_entity_and_the_dump_goes_on(
        tmp_path: Path) -> None:
    """Given a dump with odd entities between two good releases, expect one
    ``invalid_entity`` per odd entity, named after it and saying what broke, and both
    good releases resolved, in one pass and with several lines in flight alike."""
    good_1, good_2 = release(), {**release(), "id": "rel-2"}
    dump = _dump_of(tmp_path / "release", [good_1, *_odd_entities(), good_2])
    for in_flight in (1, 4):
        resolver = resolver_with(FakeSource("itunes", store()))
        resolver.in_flight = in_flight
        got = list(resolver.resolve_dump(dump))
        odd = [(n, r.recording_id, r.error_code) for n, r in got if not r.ok]
        assert odd == [(2, "release:rel-various", "invalid_entity"),
                       (3, "release:rel-credits", "invalid_entity"),
                       (4, "recording:rec-odd", "invalid_entity")]
        assert [n for n, r in got if r.ok] == [1] * 6 + [5] * 6
        reasons = {r.recording_id: r.reason for _, r in got if not r.ok}
        assert reasons["release:rel-various"].startswith(
            "line 2: cannot resolve this release entity (AttributeError: ")


def test_an_entity_without_a_usable_id_is_named_by_its_line(tmp_path: Path) -> None:
    dump = _dump_of(tmp_path / "release", [{**release(), "id": 7, "artist-credit": "V"}])
    [(n, res)] = list(resolver_with(FakeSource("itunes", store())).resolve_dump(dump))
    assert (n, res.recording_id, res.error_code) == (1, "line:1", "invalid_entity")


def test_redis_down_while_resolving_a_dump_entity_stops_the_run(tmp_path: Path) -> None:
    """Given the known-recordings lookup failing with a Redis error, expect the error to
    surface (the run stops and resumes from its cursor), not an ``invalid_entity``."""
    def handled(ids: Any) -> dict[str, str]:
        raise RedisError("Connection refused")

    dump = _dump_of(tmp_path / "release", [release()])
    resolver = resolver_with(FakeSource("itunes", store()), handled=handled)
    with pytest.raises(RedisError):
        list(resolver.resolve_dump(dump))
