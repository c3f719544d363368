"""producers/musicbrainz.py against a fake web service (a session answering in the WS/2
JSON shapes, computed per request): search paging, the search window, error bodies.
Written by the API-layer review; the answers are hand-made, not recorded."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest

from contract.settings import Settings
from producers import musicbrainz
from producers.http import UpstreamRejected, UpstreamUnavailable
from producers.musicbrainz import MusicBrainzClient


class _Response:
    def __init__(self, status: int, body: Any) -> None:
        self.status_code = status
        self.content = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.headers: dict[str, str] = {}


class _Limiter:
    def acquire(self, timeout_s: float | None = None) -> float:
        return 0.0

    def penalize(self, seconds: float) -> float:
        return seconds


class _Service:
    """A release search over ``releases`` (id, date, status) that serves no result past
    ``window`` (an empty page, as a search server cut at its maximum offset), and
    lookups from ``lookups``. ``date:[A TO B]`` ranges, ``status:official`` and its
    ``NOT`` are understood; any other term matches nothing (its NOT matches all)."""

    def __init__(self, releases: list[dict[str, Any]], window: int = 10_000,
                 lookups: dict[str, Any] | None = None) -> None:
        self.releases, self.window, self.lookups = releases, window, lookups or {}
        self.headers: dict[str, str] = {}
        self.queries: list[tuple[str, int]] = []

    def get(self, url: str, params: dict[str, Any] | None = None,
            timeout: Any = None) -> _Response:
        path = urlsplit(url).path.removeprefix("/ws/2/")
        if path in self.lookups:
            return _Response(200, self.lookups[path])
        query, offset, limit = params["query"], int(params["offset"]), int(params["limit"])
        self.queries.append((query, offset))
        hits = [r for r in self.releases if self._matches(r, query)]
        page = hits[offset:offset + limit] if offset < self.window else []
        return _Response(200, {"count": len(hits), "offset": offset, "releases": page})

    @staticmethod
    def _matches(release: dict[str, Any], query: str) -> bool:
        lo, hi = re.match(r"date:\[(\S+) TO (\S+)\]", query).groups()  # type: ignore[union-attr]
        if release["date"] < lo or (hi != "*" and release["date"] > hi):
            return False
        for neg, term in re.findall(r" AND (NOT )?([a-z]+:(?:\"[^\"]*\"|\S+))", query):
            hit = term == "status:official" and release["status"] == "Official"
            if hit == bool(neg):
                return False
        return True


def _client(service: _Service) -> MusicBrainzClient:
    settings = Settings(mb_contact="tests@example.org", musicbrainz_url="http://mb.test")
    return MusicBrainzClient(settings, _Limiter(), session=service,  # type: ignore[arg-type]
                             sleep=lambda s: None)


def _releases(day: date, n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": f"rel-{day.isoformat()}-{i:05d}", "date": day.isoformat(),
             "status": "Official" if i % 3 else "Bootleg"} for i in range(start, start + n)]


def test_new_releases_past_the_search_window_are_reached_by_splitting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A month whose releases outnumber the search window, one day of it alone too:
    before, the month was one query paged until the search stopped answering, and every
    release past the window was silently missed. Now the range is split into days, and
    the day by a term and its NOT, so each query stays inside the window."""
    monkeypatch.setattr(musicbrainz, "SEARCH_WINDOW", 40, raising=False)
    first = date(2024, 1, 1)
    releases = [r for d in range(31) for r in _releases(first + timedelta(days=d), 3)]
    releases += _releases(date(2024, 1, 15), 50, start=3)  # one day: 53 > 40
    service = _Service(releases, window=40)
    got = [r["id"] for r in _client(service).new_releases(first, date(2024, 1, 31),
                                                           page_size=10)]
    assert sorted(got) == sorted(r["id"] for r in releases)  # each once, none missed
    assert all(offset < 40 for _, offset in service.queries)


def test_a_day_past_every_split_is_reported_truncated(monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    """More releases on one day than any split brings inside the window: the reachable
    ones come out and the cut is noted (``truncated``), not passed over in silence."""
    monkeypatch.setattr(musicbrainz, "SEARCH_WINDOW", 10, raising=False)
    monkeypatch.setattr(musicbrainz, "DAY_SPLIT_TERMS", ("status:official",))
    day = date(2024, 3, 1)
    releases = [{**r, "status": "Official"} for r in _releases(day, 25)]
    client = _client(_Service(releases, window=10))
    got = list(client.new_releases(day, day, page_size=5))
    assert len(got) == 10 and len({r["id"] for r in got}) == 10
    assert client.truncated == [
        "date:[2024-03-01 TO 2024-03-01] AND status:official (25 results, 10 reachable)"]


def test_splits_that_do_not_narrow_end_in_a_truncation_not_a_flood(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A day none of the split terms divides (every release official, the other terms
    unknown to the index), and an upstream that ignores the query altogether: each
    term is tried once (two queries), then the window is paged and the cut noted. No
    endless recursion, no thousands of queries."""
    monkeypatch.setattr(musicbrainz, "SEARCH_WINDOW", 40)
    day = date(2024, 3, 1)
    releases = [{**r, "status": "Official"} for r in _releases(day, 100)]
    service = _Service(releases, window=40)
    client = _client(service)
    assert len(list(client.new_releases(day, day, page_size=10))) == 40
    assert len(service.queries) <= 1 + 2 * len(musicbrainz.DAY_SPLIT_TERMS) + 4
    assert len(client.truncated) == 1

    class Deaf(_Service):  # answers every query with the same day's first results
        def get(self, url: str, params: dict[str, Any] | None = None,
                timeout: Any = None) -> _Response:
            offset = int(params["offset"])
            self.queries.append((params["query"], offset))
            page = self.releases[offset:offset + int(params["limit"])] if offset < 40 else []
            return _Response(200, {"count": 100, "offset": offset, "releases": page})

    deaf = Deaf(releases)
    client = _client(deaf)
    got = list(client.new_releases(date(2024, 1, 1), date(2024, 12, 31), page_size=10))
    assert len(got) == 40 and len(deaf.queries) <= 3 + 4
    assert client.truncated == ["date:[2024-01-01 TO 2024-12-31] (100 results, "
                                "40 reachable)"]


def test_paging_skips_repeats_nulls_and_stops_when_offset_is_ignored() -> None:
    """Results that move between pages (an item on two pages), null entries, and an
    upstream that ignores ``offset`` (the same page again, ``count`` large): each item
    once, and no paging on through ``count`` asking the same page."""
    class Repeating(_Service):
        def get(self, url: str, params: dict[str, Any] | None = None,
                timeout: Any = None) -> _Response:
            self.queries.append((params["query"], int(params["offset"])))
            return _Response(200, {"count": 1000, "offset": 0,
                                   "releases": [None, {"id": "a"}, {"id": "b"}, 7]})

    service = Repeating([])
    got = list(_client(service).iter_search_releases("date:2024-01-01", page_size=4))
    assert [r["id"] for r in got] == ["a", "b"]
    assert len(service.queries) == 2  # the second page brought nothing new: stop


def test_an_error_body_or_a_lookup_without_id_is_no_release() -> None:
    """A 200 whose body is the web service's error object (a proxy in front of it), or a
    lookup answer without an ``id``: before, read as a release without tracks and skipped
    for good (``no_tracks``); now upstream_unavailable."""
    mbid = "a3f0c9e2-5b7d-4c1e-9f2a-1d8e6b4c7a01"
    for body in ({"error": "Not Found", "help": "For usage, please see: ..."},
                 {"title": "x", "media": []}):
        client = _client(_Service([], lookups={f"release/{mbid}": body}))
        with pytest.raises(UpstreamUnavailable) as info:
            client.release(mbid)
        assert info.value.code == "upstream_unavailable"


def test_an_id_is_one_path_segment_never_a_path() -> None:
    """An id from an input or an answer ("../isrc/X?inc=y") went into the lookup URL as
    it was: another endpoint of the web service answered, read as the entity asked."""
    class Recorder(_Service):
        def get(self, url: str, params: dict[str, Any] | None = None,
                timeout: Any = None) -> _Response:
            self.queries.append((url, 0))
            return _Response(404, b'{"error": "Not Found"}')

    service = Recorder([])
    client = _client(service)
    with pytest.raises(UpstreamRejected):
        client.release("../isrc/FRZ017900002?inc=x")
    assert client.isrc("AB/../C") == {"isrc": "AB/../C", "recordings": []}
    with pytest.raises(UpstreamRejected):  # a number where an answer had an id: asked
        client.release(5)  # type: ignore[arg-type]
    assert [url for url, _ in service.queries] == [
        "http://mb.test/ws/2/release/..%2Fisrc%2FFRZ017900002%3Finc%3Dx",
        "http://mb.test/ws/2/isrc/AB%2F..%2FC", "http://mb.test/ws/2/release/5"]
