"""Preview sources behind one interface, and the identifier-first matching rules.

A source resolves a *release* (a MusicBrainz release's tracks) or a *recording*, each by
identifier or by text search. :class:`ITunesSource` and :class:`DeezerSource` wrap one
client module each (``producers/itunes.py``, ``producers/deezer.py``), with its own
rate limit shared through Redis; ``producers/resolve.py`` runs the cascade over them.

The rules, strongest first (``contract.sources.MATCH_RULES``):

``isrc``
    The store track carries one of the recording's ISRCs (Deezer only: iTunes rows have
    no ISRC). Accepted unless title, artist and duration contradict it (score below
    :data:`ISRC_SANITY`, which a live/remix version tag alone already causes; a title or
    artist in another script on each side is no contradiction, :func:`isrc_check`);
    confidence 1.
``upc+position``
    The release's barcode gave a store album and the track sits at the same disc and
    position; the text match inside the album (:func:`~producers.matching.match_score`
    with ``album=True``) must reach the threshold. Where both sides carry ISRCs and they
    differ, the position is **not** enough: a remaster or live version under its own
    ISRC is another recording.
``search+fuzzy``
    Album search then the album's tracks, or a song/track search, fuzzy-matched
    (iTunes ``/search``; Deezer ``/search/album`` and ``/search/track``).

Two vetoes hold in every rule but ``isrc``: ISRCs on both sides that differ, and a *lone
remaster* (:func:`lone_remaster`: "Song (2019 Remaster)" in an album that is not itself a
remaster edition, for a recording whose title does not say remaster) — another version,
as a best-of's remaster usually is. An album is a remaster edition when its name says so
or when at least half of its tracks do (:func:`remaster_edition`); such an edition still
matches its tracks, as MusicBrainz counts a remaster as the same recording. A song/track
search also refuses a title whose words are the recording's in another order
(:func:`reordered_title`).

A barcode is trusted only when the album it gives agrees with the release
(:func:`check_album`): at least half of the release's tracks have a store track at their
position, and at least 80 % of those agree on title and duration, or at least half of
them share an ISRC with the recording there. Otherwise the answer
is dropped with a note (``barcode … not trusted``) and the cascade falls back.

A match is only of use with a preview to analyse. Where a store lists a track twice (an
explicit duplicate, a Deezer row not ``readable`` in the region, a bonus copy), the copy
with a preview wins over one without: in a search (:func:`best_track`) and in an album
(:func:`assign_previewed`, :func:`match_album`), the best-scored track *with* a preview
is taken whenever it reaches the threshold, however much better a preview-less one
scores; a track without one is returned only when no track with one reaches the
threshold (``producers/resolve.py`` then asks the other steps and sources for it).
A preview URL that no worker would fetch (a host outside ``settings.allowed_audio_hosts``,
a relative or ``javascript:`` URL: :meth:`contract.hosts.AllowedHosts.refusal`, the rule
the workers apply) is no preview: the track reads as one without (``refused`` says why).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from contract.hosts import AllowedHosts
from contract.jobs import parse_isrc
from contract.sources import link_back
from producers.deezer import DeezerClient
from producers.itunes import ITunesClient
from producers.matching import (
    Item,
    Match,
    album_score,
    assign,
    duration_score,
    item_from_itunes,
    match_score,
    normalize,
    parse_title,
    similarity,
    written_apart,
)
from producers.ratelimit import RateLimiter

T = TypeVar("T")
K = TypeVar("K")

ISRC_SANITY = 0.5  # an ISRC hit whose text scores below this is a contradiction
AGREE_TITLE = 0.7  # a positional pair "agrees" when its titles are this similar...
BARCODE_PAIRED_MIN = 0.5  # ...and the barcode is trusted when this share of tracks pair
BARCODE_AGREE_MIN = 0.8  # ...and this share of the pairs agree


@dataclass
class Entry:
    """One MusicBrainz recording to resolve, with its release context."""

    recording_id: str
    item: Item
    isrcs: tuple[str, ...] = ()
    release_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoreTrack:
    """A source's track, in the shape the rules compare."""

    item: Item
    track_id: str
    preview_url: str | None
    link: str | None
    isrc: str | None = None
    # Why the store's preview URL was dropped (no worker would fetch it), if it was.
    refused: str = ""


@dataclass(frozen=True)
class Candidate:
    """A store track chosen for a recording, with the rule and its evidence."""

    source: str
    track: StoreTrack
    rule: str
    confidence: float
    reason: str


@dataclass
class ReleaseAnswer:
    """Entry index → candidate; ``note`` says what went wrong (a barcode not trusted)."""

    matched: dict[int, Candidate] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Miss:
    """No candidate: the best one's score and why (for ``no_confident_match``)."""

    score: float
    reason: str


@dataclass(frozen=True)
class ReleaseQuery:
    barcode: str | None
    title: str
    artist: str  # the credit as printed
    search_artist: str  # the main artist's name, for text search
    total_tracks: int
    latin_artist: str = ""  # the credit in Latin letters (matching.latin_credit), if other


class PreviewSource(Protocol):
    """What the cascade asks of a source. A method a source cannot serve answers empty."""

    name: str
    limiter: RateLimiter

    @property
    def calls(self) -> int: ...

    def release_by_barcode(self, query: ReleaseQuery, entries: list[Entry]) -> ReleaseAnswer:
        ...

    def release_by_search(self, query: ReleaseQuery, entries: list[Entry]) -> ReleaseAnswer:
        ...

    def recording_by_isrc(self, entry: Entry) -> Candidate | Miss | None: ...

    def recording_by_search(self, entry: Entry) -> Candidate | Miss: ...


# -- the rules (pure) -------------------------------------------------------------------
_REMASTER = ("remaster", "remastered", "remasters", "remastering")


def _says_remaster(text: str | None) -> bool:
    return any(w in _REMASTER for w in normalize(text).split())


def lone_remaster(recording: Item, track: Item) -> bool:
    """A remastered track in an album that is not itself a remaster edition, for a
    recording whose title does not say so: another version (a best-of's remaster), which
    only an ISRC may match. A remastered *edition* of the album is the album."""
    return (_says_remaster(track.title) and not _says_remaster(recording.title)
            and not _says_remaster(track.album))


def remaster_edition(tracks: list[StoreTrack]) -> bool:
    """At least half of an album's tracks say remaster: a remastered edition, whatever
    its name says ("Rumours (Super Deluxe)" of "Dreams (2004 Remaster)" and the rest), so
    none of its remasters is a lone one."""
    return 2 * sum(_says_remaster(t.item.title) for t in tracks) >= max(len(tracks), 1)


def reordered_title(recording: Item, track: Item) -> bool:
    """The same title words in another order ("Hollow Violet" for "Violet Hollow"): the
    fuzzy title score calls it equal, but it is another song (often of the same album,
    found by a song search when the right track is missing)."""
    a, b = parse_title(recording.title).core, parse_title(track.title).core
    return a != b and sorted(a.split()) == sorted(b.split())


def _pairs(entries: list[Entry], tracks: list[StoreTrack], skip: set[int],
           used: set[str]) -> list[tuple[int, int, Match]]:
    """In-album text scores of the open entries and free tracks, without the pairs an
    identifier rules out (ISRCs on both sides that differ, a lone remaster)."""
    edition = remaster_edition(tracks)
    return [(i, j, match_score(e.item, t.item, album=True))
            for i, e in enumerate(entries) if i not in skip
            for j, t in enumerate(tracks) if t.track_id not in used
            and not (e.isrcs and t.isrc and t.isrc not in e.isrcs)
            and (edition or not lone_remaster(e.item, t.item))]


def _position(item: Item) -> tuple[int, int] | None:
    return ((item.disc or 1), item.track) if item.track else None


def _agrees(a: Item, b: Item) -> bool:
    title = similarity(parse_title(a.title).core, parse_title(b.title).core)
    return title >= AGREE_TITLE and duration_score(a.duration_ms, b.duration_ms) != 0.0


def check_album(entries: list[Entry], tracks: list[StoreTrack], label: str) -> str:
    """"" when the store album agrees with the release; else why it is not trusted."""
    by_pos = {p: t for t in tracks if (p := _position(t.item))}
    pairs = [(e, by_pos[p]) for e in entries if (p := _position(e.item)) in by_pos]
    agree = sum(_agrees(e.item, t.item) for e, t in pairs)
    isrc_hits = sum(bool(t.isrc and t.isrc in e.isrcs) for e, t in pairs)
    paired_ok = len(pairs) >= max(1, math.ceil(BARCODE_PAIRED_MIN * len(entries)))
    # Shared ISRCs are the stronger evidence: a wrong barcode shares none.
    isrc_ok = isrc_hits >= max(1, math.ceil(BARCODE_PAIRED_MIN * len(pairs)))
    if paired_ok and (agree >= BARCODE_AGREE_MIN * len(pairs) or isrc_ok):
        return ""
    return (f"{label} not trusted: {agree}/{len(pairs)} tracks agree by position "
            f"(release {len(entries)} tracks, store {len(tracks)})")


def _index(tracks: list[StoreTrack], key: Callable[[StoreTrack], K | None]) -> dict[K, int]:
    """Key → index of the track with that key; of several, the last with a preview (an
    album may list a track twice, once without one)."""
    out: dict[K, int] = {}
    for j, t in enumerate(tracks):
        k = key(t)
        if k and (k not in out or t.preview_url or not tracks[out[k]].preview_url):
            out[k] = j
    return out


def match_album(entries: list[Entry], tracks: list[StoreTrack], source: str,
                threshold: float) -> dict[int, Candidate]:
    """ISRC first, then disc/position checked by the text match; one track per entry."""
    out: dict[int, Candidate] = {}
    used: set[int] = set()
    by_isrc = _index(tracks, lambda t: t.isrc)
    for i, e in enumerate(entries):
        j = next((by_isrc[x] for x in e.isrcs if x in by_isrc), None)
        if j is None or j in used:
            continue
        m = isrc_check(e.item, tracks[j].item, album=True)
        if m.score >= ISRC_SANITY:
            out[i] = Candidate(source, tracks[j], "isrc", 1.0, f"isrc {tracks[j].isrc} "
                               f"{m.reason}")
            used.add(j)
    by_pos = _index(tracks, lambda t: _position(t.item))
    edition = remaster_edition(tracks)
    for i, e in enumerate(entries):
        j = by_pos.get(_position(e.item))  # type: ignore[arg-type]
        if i in out or j is None or j in used:
            continue
        if e.isrcs and tracks[j].isrc and tracks[j].isrc not in e.isrcs:
            continue  # another recording under its own ISRC (a remaster, a live take)
        if not edition and lone_remaster(e.item, tracks[j].item):
            continue
        m = match_score(e.item, tracks[j].item, album=True)
        if m.score >= threshold:
            out[i] = Candidate(source, tracks[j], "upc+position", m.score, m.reason)
            used.add(j)
    return out


def isrc_candidate(entry: Entry, track: StoreTrack, source: str) -> Candidate | Miss:
    """A track found by the recording's ISRC, unless its text contradicts it."""
    m = isrc_check(entry.item, track.item)
    if m.score < ISRC_SANITY:
        return Miss(m.score, f"isrc {track.isrc}: contradicted ({m.reason})")
    return Candidate(source, track, "isrc", 1.0, f"isrc {track.isrc} {m.reason}")


def isrc_check(recording: Item, track: Item, *, album: bool = False) -> Match:
    """The text match of an ISRC hit: :func:`match_score`, or :data:`ISRC_SANITY` when a
    title or artist written in another script is all that disagrees
    (:func:`~producers.matching.written_apart`: "Группа крови" as "Gruppa krovi").

    The credit is read as written, not in its Latin spelling (:attr:`Item.latin_artist`):
    a credit in another script is excused by ``written_apart`` here, and only while the
    durations agree, so an ISRC on a track 40 s longer stays a contradiction."""
    m = match_score(replace(recording, latin_artist="", latin_lead=()), track, album=album)
    if m.score < ISRC_SANITY and (apart := written_apart(recording, track)):
        return Match(ISRC_SANITY, f"{m.reason} ({apart})")
    return m


def best_scored(rows: Iterable[T], score: Callable[[T], Match | None]) -> tuple[Match, T] | None:
    """The row with the highest score; ``score`` returns None for a row to skip."""
    best: tuple[Match, T] | None = None
    for row in rows:
        m = score(row)
        if m is not None and (best is None or m.score > best[0].score):
            best = (m, row)
    return best


def _score_of(pair: tuple[Match, Any]) -> float:
    return pair[0].score  # max() keeps the first of equal scores, as best_scored does


def best_track(tracks: Iterable[StoreTrack], score: Callable[[StoreTrack], Match | None],
               threshold: float) -> tuple[Match, StoreTrack] | None:
    """The best-scored track with a preview if it reaches ``threshold``, else the
    best-scored track (a match without a preview, or a miss to report); ``score`` returns
    None for a track to skip. A duplicate or another edition scoring a little higher
    without a preview is of no use, while a preview-less track never lowers the bar:
    another version with a preview (scored under the threshold) does not win."""
    scored = [(m, t) for t in tracks if (m := score(t)) is not None]
    best = max((p for p in scored if p[1].preview_url), key=_score_of, default=None)
    if best is None or best[0].score < threshold:
        best = max(scored, key=_score_of, default=None)
    return best


def assign_previewed(pairs: list[tuple[int, int, Match]], tracks: list[StoreTrack],
                     threshold: float) -> dict[int, tuple[int, Match]]:
    """:func:`~producers.matching.assign` over the tracks with a preview first, then the
    entries left over every track left: an entry takes a track without a preview only
    when no track with one reaches ``threshold`` for it."""
    first = assign([p for p in pairs if tracks[p[1]].preview_url], threshold)
    taken = {j for j, _ in first.values()}
    rest = assign([p for p in pairs if p[0] not in first and p[1] not in taken], threshold)
    return first | rest


class _StoreSource:
    """What every store source shares: one client (with its rate limiter), a threshold
    and the hosts workers fetch previews from."""

    name: str

    def __init__(self, client: ITunesClient | DeezerClient, threshold: float, *,
                 audio_hosts: Iterable[str]) -> None:
        self.client = client
        self.limiter = client.limiter
        self.threshold = threshold
        self.audio_hosts = AllowedHosts(audio_hosts)

    def _fetchable(self, track: StoreTrack) -> StoreTrack:
        """``track``, without its preview URL when no worker would fetch it: a job for it
        would only fail as ``host_not_allowed`` or ``invalid_job``, while another copy,
        step or source may have the track with a preview that plays."""
        why = self.audio_hosts.refusal(track.preview_url) if track.preview_url else ""
        return replace(track, preview_url=None, refused=why) if why else track

    @property
    def calls(self) -> int:
        return self.client.calls

    def _barcode_answer(self, barcode: str, entries: list[Entry],
                        tracks: list[StoreTrack] | None) -> ReleaseAnswer:
        """The album a barcode gave (None: none), matched by position if it is trusted."""
        if tracks is None:
            return ReleaseAnswer(note=f"{self.name}: no album for barcode {barcode}")
        problem = check_album(entries, tracks, f"{self.name} barcode {barcode}")
        if problem:
            return ReleaseAnswer(note=problem)
        return ReleaseAnswer(match_album(entries, tracks, self.name, self.threshold))

    def _best_of_search(self, tracks: list[StoreTrack],
                        score: Callable[[StoreTrack], Match | None], via: str
                        ) -> Candidate | Miss:
        """The best track of one search (:func:`best_track`), if it clears the threshold."""
        best = best_track(tracks, score, self.threshold)
        if best is None:
            return Miss(0.0, f"{self.name}: no store candidates")
        m, track = best
        if m.score < self.threshold:
            return Miss(m.score, f"{self.name} best {track.item.title!r} by "
                                 f"{track.item.artist!r}: {m.reason}")
        return Candidate(self.name, track, "search+fuzzy", m.score, f"{m.reason} via {via}")


# -- iTunes -----------------------------------------------------------------------------
def _str(value: Any) -> str | None:
    """A non-empty string field, else None: an answer's null or number is no URL/name."""
    return value if isinstance(value, str) and value else None


def _obj(value: Any) -> dict[str, Any]:
    """An object field, else an empty one (null, or a bare string where an object is
    documented)."""
    return value if isinstance(value, dict) else {}


def _quoted(text: str) -> str:
    """``text`` inside a quoted field of Deezer's advanced search: a double quote of its
    own ('12" Mix', 'The "Heroes" Sessions') would end the field early."""
    return " ".join(text.replace('"', " ").replace("\\", " ").split())


def _deezer_edited(code: Any) -> bool | None:
    """Deezer's ``explicit_content_lyrics``: 0 not explicit, 1 explicit, 3 edited (a
    clean copy); 2 unknown, 6 no advice, and anything else say nothing."""
    if isinstance(code, bool) or not isinstance(code, int):
        return None
    return {0: False, 1: False, 3: True}.get(code)


def itunes_track(row: dict[str, Any]) -> StoreTrack:
    tid = str(row.get("trackId") or "")
    return StoreTrack(item_from_itunes(row), tid, _str(row.get("previewUrl")),
                      _str(row.get("trackViewUrl")) or (link_back("itunes", tid) if tid
                                                        else None))


class ITunesSource(_StoreSource):
    name = "itunes"
    client: ITunesClient

    def __init__(self, client: ITunesClient, threshold: float, *, audio_hosts: Iterable[str],
                 album_search_limit: int = 10, song_search_limit: int = 10) -> None:
        super().__init__(client, threshold, audio_hosts=audio_hosts)
        self.album_search_limit = album_search_limit
        self.song_search_limit = song_search_limit

    def release_by_barcode(self, query: ReleaseQuery, entries: list[Entry]) -> ReleaseAnswer:
        """ONE call: ``lookup?upc=…&entity=song``."""
        if not query.barcode:
            return ReleaseAnswer()
        found = self.client.lookup_upc(query.barcode)
        tracks = None if found.collection is None else [self._track(r) for r in found.tracks]
        return self._barcode_answer(query.barcode, entries, tracks)

    def release_by_search(self, query: ReleaseQuery, entries: list[Entry]) -> ReleaseAnswer:
        """Two calls: album search, then the best album's songs; fuzzy assignment."""
        albums = self.client.search(f"{query.search_artist} {query.title}".strip(),
                                    entity="album", limit=self.album_search_limit)
        best = best_scored(albums, lambda row: None if row.get(
            "wrapperType", "collection") != "collection" or not row.get("collectionId")
            else album_score(query.title, query.artist, query.total_tracks, row,
                             latin_artist=query.latin_artist))
        if best is None or best[0].score < self.threshold:
            return ReleaseAnswer()
        tracks = [self._track(r)
                  for r in self.client.lookup_collection(best[1]["collectionId"]).tracks]
        pairs = _pairs(entries, tracks, set(), set())
        note = f" album={best[0].score:.2f}"
        return ReleaseAnswer({i: Candidate(self.name, tracks[j], "search+fuzzy", m.score,
                                           m.reason + note)
                              for i, (j, m) in assign_previewed(pairs, tracks,
                                                                self.threshold).items()})

    def recording_by_isrc(self, entry: Entry) -> Candidate | Miss | None:
        return None  # the iTunes Search API has no ISRC lookup

    def _track(self, row: dict[str, Any]) -> StoreTrack:
        return self._fetchable(itunes_track(row))

    def recording_by_search(self, entry: Entry) -> Candidate | Miss:
        """One song search; the best candidate by :func:`match_score`. A main artist
        written without Latin letters is searched for in its Latin spelling, which the
        storefronts outside its country print ("Hikaru Utada", not 宇多田ヒカル)."""
        item = entry.item
        main = (item.latin_lead or item.artists or (item.artist,))[0]
        rows = self.client.search(f"{main} {entry.item.title}".strip(), entity="song",
                                  limit=self.song_search_limit)

        songs = [self._track(row) for row in rows
                 if row.get("wrapperType", "track") == "track"
                 and row.get("kind", "song") == "song"]

        def score(track: StoreTrack) -> Match | None:
            if lone_remaster(entry.item, track.item) or reordered_title(entry.item, track.item):
                return None
            return match_score(entry.item, track.item)

        return self._best_of_search(songs, score, "song search")


# -- Deezer -----------------------------------------------------------------------------
def deezer_track(row: dict[str, Any], album: str | None = None) -> StoreTrack:
    """A Deezer track object as a :class:`StoreTrack`; a row not ``readable`` (not
    playable in the region) has no preview, whatever its ``preview`` field says, unless
    it names a readable copy in ``alternative`` (Deezer's field for that case), which is
    taken instead (its own ISRC and title are what the match checks)."""
    alternative = _obj(row.get("alternative"))
    if row.get("readable", True) is False and alternative.get("readable") is True \
            and _str(alternative.get("preview")):
        return deezer_track(alternative, album)

    def _int(v: Any) -> int | None:
        return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None

    duration = _int(row.get("duration"))
    tid = str(row.get("id") or "")
    title = _str(row.get("title")) or _str(row.get("title_short")) or ""
    version = row.get("title_version")
    # ``title`` is documented as the full title, ``title_short`` plus ``title_version``
    # ("(Live)"); should a row carry the version only in its own field, the version must
    # still be read, or a live take would pass for the studio recording.
    if isinstance(version, str) and version.strip() and version.strip() not in title:
        title = f"{title} {version.strip()}"
    # A full track object lists every main artist in ``contributors``; ``artist`` is the
    # first of them only ("Señorita": Shawn Mendes, not "Shawn Mendes & Camila Cabello").
    contributors = row.get("contributors")
    mains = tuple(name for c in (contributors if isinstance(contributors, list) else [])
                  if _obj(c).get("role") == "Main" and (name := _str(_obj(c).get("name"))))
    item = Item(title=title,
                artist=_str(_obj(row.get("artist")).get("name")) or "",
                artists=mains,
                duration_ms=duration * 1000 if duration else None,
                disc=_int(row.get("disk_number")), track=_int(row.get("track_position")),
                album=album or _str(_obj(row.get("album")).get("title")),
                edited=_deezer_edited(row.get("explicit_content_lyrics")))
    isrc = row.get("isrc")
    preview = _str(row.get("preview")) if row.get("readable", True) is not False else None
    return StoreTrack(item, tid, preview,
                      _str(row.get("link")) or (link_back("deezer", tid) if tid else None),
                      # normalised as the recording's are ("us-hp1-03-00002" is one)
                      parse_isrc(isrc) or (isrc.upper() if isinstance(isrc, str) and isrc
                                           else None))


class DeezerSource(_StoreSource):
    name = "deezer"
    client: DeezerClient

    def _track(self, row: dict[str, Any], album: str | None = None) -> StoreTrack:
        return self._fetchable(deezer_track(row, album))

    def release_by_barcode(self, query: ReleaseQuery, entries: list[Entry]) -> ReleaseAnswer:
        """Two calls: ``/album/upc:…`` then ``/album/<id>/tracks`` (which carry ISRCs)."""
        if not query.barcode:
            return ReleaseAnswer()
        found = self.client.album_by_upc(query.barcode)
        tracks = None if found is None else [
            self._track(r, _str(found.album.get("title"))) for r in found.tracks]
        return self._barcode_answer(query.barcode, entries, tracks)

    def release_by_search(self, query: ReleaseQuery, entries: list[Entry]) -> ReleaseAnswer:
        """Two calls: ``/search/album``, then the best album's tracks; fuzzy assignment
        (ISRCs, when both sides have them, still win inside the album)."""
        rows = self.client.search(
            "album", f'artist:"{_quoted(query.search_artist)}" album:"{_quoted(query.title)}"')

        def score(row: dict[str, Any]) -> Match | None:
            if not row.get("id"):
                return None
            as_collection = {"collectionName": _str(row.get("title")),
                             "artistName": _str(_obj(row.get("artist")).get("name")),
                             "trackCount": row.get("nb_tracks")}
            return album_score(query.title, query.artist, query.total_tracks, as_collection,
                               latin_artist=query.latin_artist)

        best = best_scored(rows, score)
        if best is None or best[0].score < self.threshold:
            return ReleaseAnswer()
        tracks = [self._track(r, _str(best[1].get("title")))
                  for r in self.client.album_tracks(best[1]["id"])]
        matched = match_album(entries, tracks, self.name, self.threshold)
        matched = {i: c for i, c in matched.items() if c.rule == "isrc"}
        used = {c.track.track_id for c in matched.values()}
        pairs = _pairs(entries, tracks, set(matched), used)
        note = f" album={best[0].score:.2f}"
        for i, (j, m) in assign_previewed(pairs, tracks, self.threshold).items():
            matched[i] = Candidate(self.name, tracks[j], "search+fuzzy", m.score,
                                   m.reason + note)
        return ReleaseAnswer(matched)

    def recording_by_isrc(self, entry: Entry) -> Candidate | Miss | None:
        """One call per ISRC tried (``/track/isrc:…``), until one is found; a track that
        carries an ISRC that is none of the recording's is not found by it."""
        miss: Miss | None = None
        for isrc in entry.isrcs:
            row = self.client.track_by_isrc(isrc)
            if row is None:
                continue
            track = self._track(row)
            if track.isrc and track.isrc not in entry.isrcs:
                # Another recording's track (Deezer may answer a substitute): its ISRC
                # says it is not this one, so it is no ISRC match.
                miss = miss or Miss(0.0, f"{self.name}: /track/isrc:{isrc} answered a "
                                         f"track with ISRC {track.isrc}")
                continue
            got = isrc_candidate(entry, track, self.name)
            if isinstance(got, Candidate):
                return got
            miss = got
        return miss

    def recording_by_search(self, entry: Entry) -> Candidate | Miss:
        """One ``/search/track`` call; the best candidate by :func:`match_score`."""
        main = entry.item.artists[0] if entry.item.artists else entry.item.artist
        rows = self.client.search("track",
                                  f'artist:"{_quoted(main)}" track:"{_quoted(entry.item.title)}"')

        def score(track: StoreTrack) -> Match | None:
            if lone_remaster(entry.item, track.item) or reordered_title(
                    entry.item, track.item) or (
                    entry.isrcs and track.isrc and track.isrc not in entry.isrcs):
                return None
            return match_score(entry.item, track.item)

        return self._best_of_search([self._track(row) for row in rows], score,
                                    "deezer track search")
