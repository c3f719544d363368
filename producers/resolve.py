"""Resolving "these recordings" into jobs with a matched store preview URL.

Album-first: a MusicBrainz release becomes ONE iTunes album search and ONE collection
lookup, after which every track of the release is matched inside that collection (a
12-track album costs 2 iTunes calls, not 12). Per-track song search is only the fallback
for tracks the collection did not match, and the path for lone recordings.

Every input recording yields one :class:`Resolution`: a :class:`~contract.jobs.Job`, or
an ``error_code``:

* ``no_confident_match`` — best candidate scored below ``settings.match_threshold``
  (``score``/``reason`` describe that best candidate, if any);
* ``no_preview`` — matched, but the store track has no preview URL;
* ``upstream_unavailable`` / ``upstream_rejected`` — MusicBrainz or iTunes failed;
* ``isrc_unknown`` — MusicBrainz knows no recording for an ISRC;
* dump line errors (``invalid_json``, ``not_an_object``, ``not_utf8``,
  ``line_too_long``, ``unknown_entity``) from :meth:`Resolver.resolve_dump`.

When a failure concerns a whole release or input rather than one recording,
``recording_id`` names the input instead: ``release:<mbid>``, ``recording:<mbid>``,
``isrc:<ISRC>``, ``line:<n>``.

ISRCs (:meth:`Resolver.resolve_isrcs`): iTunes cannot search by ISRC, so each ISRC goes
through MusicBrainz ``/isrc`` to its recording(s); recordings that share a release with
at least one other requested recording are resolved album-first through that release
(2 iTunes calls for all of them), the others by per-track search (1 call each).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from contract.errors import PreviewvecError
from contract.jobs import ISRC_PATTERN, InvalidJob, Job, normalize_isrc
from contract.settings import Settings
from producers import dumps
from producers.http import UpstreamRejected, UpstreamUnavailable
from producers.itunes import ITunesClient, RedisResponseCache
from producers.matching import (
    Item,
    Match,
    album_score,
    assign,
    item_from_itunes,
    item_from_mb,
    match_score,
)
from producers.musicbrainz import (
    MusicBrainzClient,
    artist_credit_names,
    artist_credit_string,
    partial_date_key,
)
from producers.ratelimit import RateLimiter

SOURCE = "itunes"
UpstreamError = (UpstreamUnavailable, UpstreamRejected)


@dataclass(frozen=True)
class Resolution:
    recording_id: str
    job: Job | None
    score: float
    reason: str
    error_code: str | None

    @property
    def ok(self) -> bool:
        return self.job is not None


@dataclass
class _Entry:
    """One MusicBrainz recording to resolve, with its release context."""

    recording_id: str
    item: Item
    isrcs: tuple[str, ...] = ()
    release_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _valid_isrcs(values: Iterable[Any]) -> tuple[str, ...]:
    out = []
    for value in values or ():
        if isinstance(value, str) and value.isascii():
            norm = normalize_isrc(value)
            if re.fullmatch(ISRC_PATTERN, norm) and norm not in out:
                out.append(norm)
    return tuple(out)


def pick_release(releases: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The release to stand for a recording: official first, then the earliest date
    (partial dates sort by what they give; undated last)."""
    if not releases:
        return None
    return min(releases, key=lambda r: (r.get("status") not in (None, "Official"),
                                        partial_date_key(r.get("date"))))


def _position_in(release: dict[str, Any] | None) -> tuple[int | None, int | None]:
    """(disc, track) of a recording inside a release stub from a recording/search
    answer (``media[0].track[0]`` or ``.tracks[0]`` when present)."""
    for medium in (release or {}).get("media") or []:
        tracks = medium.get("tracks") or medium.get("track") or []
        if tracks:
            pos = tracks[0].get("position")
            disc = medium.get("position")
            return (disc if isinstance(disc, int) else None,
                    pos if isinstance(pos, int) else None)
    return None, None


def _best_album(title: str, artist: str, total_tracks: int,
                albums: list[dict[str, Any]]) -> tuple[Match, dict[str, Any]] | None:
    """The best-scoring store collection for a release, with its match."""
    best: tuple[Match, dict[str, Any]] | None = None
    for row in albums:
        if row.get("wrapperType", "collection") != "collection" or not row.get(
                "collectionId"):
            continue
        m = album_score(title, artist, total_tracks, row)
        if best is None or m.score > best[0].score:
            best = (m, row)
    return best


def _by_release(entries: Iterable[_Entry]) -> dict[str, list[_Entry]]:
    """Entries grouped by their release id (entries without one left out), in order."""
    by_release: dict[str, list[_Entry]] = {}
    for entry in entries:
        if entry.release_id:
            by_release.setdefault(entry.release_id, []).append(entry)
    return by_release


def _error(recording_id: str, exc: PreviewvecError, score: float = 0.0) -> Resolution:
    return Resolution(recording_id, None, score, exc.message, exc.code)


class Resolver:
    """MusicBrainz → iTunes resolution. ``mb`` may be None when only dumps are resolved."""

    def __init__(self, settings: Settings, mb: MusicBrainzClient | None, itunes: ITunesClient,
                 *, album_search_limit: int = 10, song_search_limit: int = 10) -> None:
        self.settings = settings
        self.mb = mb
        self.itunes = itunes
        self.threshold = settings.match_threshold
        self.album_search_limit = album_search_limit
        self.song_search_limit = song_search_limit

    @classmethod
    def build(cls, settings: Settings, *, redis_client=None,
              need_musicbrainz: bool = True) -> Resolver:
        """Clients on ``settings`` with limiters and the iTunes cache on the broker's Redis.

        Raises ``mb_contact_missing`` when MusicBrainz is needed and no contact is set."""
        if redis_client is None:
            from contract.state import connect

            # bytes replies and no command retry, as before: a limiter or cache call
            # fails fast and the upstream call's own retry policy decides
            redis_client = connect(settings.broker_url, decode=False, retry=False,
                                   health_check_interval_s=0)
        mb = None
        if need_musicbrainz or settings.mb_contact.strip():
            mb = MusicBrainzClient(
                settings, RateLimiter(redis_client, "musicbrainz", settings.mb_rate_per_s))
        itunes = ITunesClient(
            settings, RateLimiter(redis_client, "itunes", settings.itunes_rate_per_min / 60),
            cache=RedisResponseCache(redis_client))
        return cls(settings, mb, itunes)

    @property
    def calls(self) -> dict[str, int]:
        """HTTP requests sent so far (retries included) and iTunes cache hits."""
        return {"musicbrainz": self.mb.calls if self.mb else 0,
                "itunes": self.itunes.calls,
                "itunes_cache_hits": self.itunes.stats["cache_hits"]}

    def _need_mb(self) -> MusicBrainzClient:
        if self.mb is None:
            from producers.musicbrainz import MbContactMissing

            raise MbContactMissing("this resolution needs MusicBrainz: set PREVIEWVEC_MB_CONTACT")
        return self.mb

    # -- building blocks ---------------------------------------------------------------
    def _job(self, entry: _Entry, row: dict[str, Any], match: Match) -> Resolution:
        preview = row.get("previewUrl")
        if not preview:
            return Resolution(entry.recording_id, None, match.score,
                              match.reason + " (store track has no preview)", "no_preview")
        item = entry.item
        try:
            job = Job(recording_id=entry.recording_id, preview_url=preview,
                      isrc=entry.isrcs[0] if entry.isrcs else None,
                      artist=item.artist or row.get("artistName") or None,
                      title=item.title or row.get("trackName") or None,
                      duration_ms=item.duration_ms or item_from_itunes(row).duration_ms,
                      release_id=entry.release_id, source=SOURCE)
        except InvalidJob as exc:
            return Resolution(entry.recording_id, None, match.score, str(exc), exc.code)
        return Resolution(entry.recording_id, job, match.score, match.reason, None)

    def _search_term(self, item: Item) -> str:
        main = item.artists[0] if item.artists else item.artist
        return f"{main} {item.title}".strip()

    def _resolve_single(self, entry: _Entry) -> Resolution:
        """Per-track fallback: one song search, best candidate by :func:`match_score`."""
        try:
            rows = self.itunes.search(self._search_term(entry.item), entity="song",
                                      limit=self.song_search_limit)
        except UpstreamError as exc:
            return _error(entry.recording_id, exc)
        best: tuple[Match, dict[str, Any]] | None = None
        for row in rows:
            if row.get("wrapperType", "track") != "track" or row.get("kind", "song") != "song":
                continue
            m = match_score(entry.item, item_from_itunes(row))
            if best is None or m.score > best[0].score:
                best = (m, row)
        if best is None:
            return Resolution(entry.recording_id, None, 0.0, "no store candidates",
                              "no_confident_match")
        m, row = best
        if m.score < self.threshold:
            return Resolution(entry.recording_id, None, m.score,
                              f"best {row.get('trackName')!r} by {row.get('artistName')!r}: "
                              f"{m.reason}", "no_confident_match")
        return self._job(entry, row, Match(m.score, m.reason + " via song search"))

    def _release_entries(self, release: dict[str, Any]) -> list[_Entry]:
        title = release.get("title") or ""
        credit = release.get("artist-credit")
        rid = release.get("id")
        entries = []
        for medium in release.get("media") or []:
            disc = medium.get("position") if isinstance(medium.get("position"), int) else None
            for trk in medium.get("tracks") or medium.get("track") or []:
                rec = trk.get("recording") or {}
                if not rec.get("id"):
                    continue
                entries.append(_Entry(rec["id"], item_from_mb(rec, track=trk, disc=disc,
                                                               album=title,
                                                               release_credit=credit),
                                      _valid_isrcs(rec.get("isrcs")), rid))
        return entries

    def resolve_release_data(self, release: dict[str, Any],
                             only: dict[str, tuple[str, ...]] | None = None
                             ) -> Iterator[Resolution]:
        """Album-first resolution of a full release document (lookup or dump entity).

        ``only``: restrict to these recording ids (value: ISRCs to put on the job)."""
        entries, total_tracks = self._release_entries_only(release, only)
        if not entries:
            return
        try:
            matched, tracks, album_note = self._album_matches(release, entries, total_tracks)
        except UpstreamError as exc:
            for e in entries:
                yield _error(e.recording_id, exc)
            return
        for i, entry in enumerate(entries):
            if i in matched:
                j, m = matched[i]
                yield self._job(entry, tracks[j], Match(m.score, m.reason + album_note))
            else:
                yield self._resolve_single(entry)

    def _release_entries_only(self, release: dict[str, Any],
                              only: dict[str, tuple[str, ...]] | None
                              ) -> tuple[list[_Entry], int]:
        """The release's entries (restricted to ``only``), and its total track count."""
        entries = self._release_entries(release)
        total_tracks = len(entries)
        if only is not None:
            entries = [e for e in entries if e.recording_id in only]
            for e in entries:
                e.isrcs = only[e.recording_id] or e.isrcs
        return entries, total_tracks

    def _album_matches(self, release: dict[str, Any], entries: list[_Entry],
                       total_tracks: int
                       ) -> tuple[dict[int, tuple[int, Match]], list[dict[str, Any]], str]:
        """Entries matched to the tracks of the best store album: (entry index → (track
        index, match), the album's tracks, a note for the reason). Raises UpstreamError."""
        title = release.get("title") or ""
        artist = artist_credit_string(release.get("artist-credit"))
        names = artist_credit_names(release.get("artist-credit"))
        albums = self.itunes.search(f"{names[0] if names else artist} {title}".strip(),
                                    entity="album", limit=self.album_search_limit)
        best = _best_album(title, artist, total_tracks, albums)
        if best is None or best[0].score < self.threshold:
            return {}, [], ""
        tracks = self.itunes.lookup_collection(best[1]["collectionId"]).tracks
        store_items = [item_from_itunes(t) for t in tracks]
        pairs = [(i, j, match_score(e.item, s, album=True))
                 for i, e in enumerate(entries) for j, s in enumerate(store_items)]
        return assign(pairs, self.threshold), tracks, f" album={best[0].score:.2f}"

    # -- public entry points -----------------------------------------------------------
    def resolve_release(self, release_mbid: str) -> Iterator[Resolution]:
        try:
            release = self._need_mb().release(release_mbid)
        except UpstreamError as exc:
            yield _error(f"release:{release_mbid}", exc)
            return
        yield from self.resolve_release_data(release)

    def _recording_entry(self, rec: dict[str, Any], isrcs: tuple[str, ...] = ()) -> _Entry:
        release = pick_release(rec.get("releases"))
        disc, pos = _position_in(release)
        item = item_from_mb(rec, album=(release or {}).get("title"))
        if pos:
            item = Item(item.title, item.artist, item.artists, item.duration_ms, disc, pos,
                        item.album, item.disambiguation)
        return _Entry(rec["id"], item, isrcs or _valid_isrcs(rec.get("isrcs")),
                      (release or {}).get("id"))

    def resolve_recording_data(self, rec: dict[str, Any]) -> Resolution:
        if not rec.get("id"):
            return Resolution("recording:?", None, 0.0, "recording without id",
                              "unknown_entity")
        return self._resolve_single(self._recording_entry(rec))

    def resolve_recording(self, mbid: str) -> Resolution:
        try:
            rec = self._need_mb().recording(mbid)
        except UpstreamError as exc:
            return _error(f"recording:{mbid}", exc)
        return self.resolve_recording_data(rec)

    def resolve_isrcs(self, isrcs: Iterable[str]) -> Iterator[Resolution]:
        mb = self._need_mb()
        entries: dict[str, _Entry] = {}
        yield from self._isrc_entries(mb, isrcs, entries)
        done: set[str] = set()
        for release_id, group in _by_release(entries.values()).items():
            if len(group) < 2:
                continue
            try:
                release = mb.release(release_id)
            except UpstreamError:
                continue  # per-track search below
            wanted = {e.recording_id: e.isrcs for e in group}
            for res in self.resolve_release_data(release, only=wanted):
                done.add(res.recording_id)
                yield res
        for entry in entries.values():
            if entry.recording_id not in done:
                yield self._resolve_single(entry)

    def _isrc_entries(self, mb: MusicBrainzClient, isrcs: Iterable[str],
                      entries: dict[str, _Entry]) -> Iterator[Resolution]:
        """Look each ISRC up, adding its recordings to ``entries`` (first seen wins);
        yields the ISRCs that failed or are unknown."""
        for raw in isrcs:
            isrc = normalize_isrc(raw.strip())
            try:
                data = mb.isrc(isrc)
            except UpstreamError as exc:
                yield _error(f"isrc:{isrc}", exc)
                continue
            recs = [r for r in data.get("recordings") or [] if r.get("id")]
            if not recs:
                yield Resolution(f"isrc:{isrc}", None, 0.0,
                                 f"MusicBrainz has no recording with ISRC {isrc}",
                                 "isrc_unknown")
            for rec in recs:
                if rec["id"] not in entries:
                    entries[rec["id"]] = self._recording_entry(rec, _valid_isrcs([isrc]))

    def resolve_query(self, lucene: str, max_results: int | None = None, *,
                      page_size: int = 100) -> Iterator[Resolution]:
        """Every recording a MusicBrainz recording search returns, per-track."""
        try:
            for rec in self._need_mb().iter_search_recordings(lucene, max_results,
                                                              page_size=page_size):
                yield self.resolve_recording_data(rec)
        except UpstreamError as exc:
            yield _error(f"query:{lucene}"[:64], exc)

    def resolve_new_releases(self, since: date, until: date | None = None, *,
                             max_results: int | None = None,
                             page_size: int = 100) -> Iterator[Resolution]:
        """Releases dated in [since, until] (MusicBrainz ``date``), each album-first."""
        try:
            for stub in self._need_mb().new_releases(since, until, max_results=max_results,
                                                     page_size=page_size):
                if stub.get("id"):
                    yield from self.resolve_release(stub["id"])
        except UpstreamError as exc:
            yield _error(f"new-releases:{since.isoformat()}", exc)

    def resolve_dump(self, path: str | Path, start_line: int = 0
                     ) -> Iterator[tuple[int, Resolution]]:
        """Stream a MusicBrainz JSON dump: release entities album-first, recording
        entities per-track; bad lines become error resolutions (``line:<n>``)."""
        for line_no, item in dumps.iter_dump(path, start_line):
            if isinstance(item, dumps.DumpError):
                yield line_no, Resolution(f"line:{line_no}", None, 0.0, item.message,
                                          item.code)
                continue
            kind = dumps.entity_type(item)
            if kind == "release":
                for res in self.resolve_release_data(item):
                    yield line_no, res
            elif kind == "recording":
                yield line_no, self.resolve_recording_data(item)
            else:
                yield line_no, Resolution(f"line:{line_no}", None, 0.0,
                                          "neither a release nor a recording entity",
                                          "unknown_entity")
