"""Resolving "these recordings" into jobs with a matched store preview URL.

Identifier-first, over every enabled preview source (``PREVIEWVEC_SOURCES``, in
priority order; :mod:`producers.sources` holds the rules). A MusicBrainz release is
resolved in this cascade, each step only for the tracks the steps before left open:

1. **barcode** (``release.barcode``): iTunes ``lookup?upc=…&entity=song`` (ONE call) or
   Deezer ``/album/upc:…`` + ``/album/<id>/tracks`` (two calls, with ISRCs); tracks match
   by ISRC (``isrc``), else by disc/position checked against title and duration
   (``upc+position``). An album that disagrees with the release is not trusted: the
   mismatch goes into the reason and the cascade falls back;
2. **ISRC per recording**: Deezer ``/track/isrc:…`` (one call per recording);
3. **text**: the iTunes album search and collection lookup of before (two calls), then a
   song search per track left (``search+fuzzy``).

Only *free* sources are asked, in priority order: a source whose shared limiter has no
slot within :data:`BUSY_S` is skipped while another is free (when all are busy, the one
that frees up first is asked), so a release is never held up by the slower source. Dumps
keep several releases in flight (:meth:`Resolver.resolve_dump`): iTunes takes what its
20 calls/min allow and Deezer the rest. The price is recall: a track only iTunes has is
missed when iTunes was busy for its release (measured in benchmarks/resolution.py).

**Do no call twice.** Before a release is resolved its recordings are looked up: stored
at the current feature version (``stored``), queued in any run or already handled by this
run (queued, done, skipped or failed for good: ``handled``, contract/state/pending.py),
or resolved by this resolver moments ago (the batch submit has not published yet). A
release whose recordings are all known costs no call at all; one with some known resolves
only the others. A miss on a Pseudo-Release (transliterated titles, no barcode) is not
known: the official release of the same recordings is still resolved. Which releases
end up fully known depends on the order they come in: see producers/plan.py.

Every recording of a release is read, the hidden pregap track and the data tracks
included (MusicBrainz serialises them apart from ``tracks``), once: a recording on the
release twice (two discs, a bonus reprise) is resolved for its first track only.

Every input recording yields one :class:`Resolution`: a :class:`~contract.jobs.Job`
(carrying ``source``, ``source_track_id``, ``source_url``, ``match_rule`` and
``confidence``), or an ``error_code``:

* ``no_confident_match`` — best candidate scored below ``settings.match_threshold``
  (``score``/``reason`` describe that best candidate, if any);
* ``no_preview`` — matched, but no source has the track with a preview URL that a
  worker would fetch (one on a host outside ``settings.allowed_audio_hosts``, or not an
  http(s) URL, counts as none: producers/sources.py). A match without one leaves the
  track open: the later steps and sources are still asked, and the first such match is
  the answer only when none of them has a match with one;
* ``already_stored`` — the recording has a record (no call made for it);
* ``already_queued`` — a job of the recording is queued in another run (no call);
* ``already_in_run`` — this run has it queued, done, skipped or failed for good already,
  or resolved it earlier (no call; submit leaves its state alone);
* ``video_recording`` — the recording is a video (``"video": true``, e.g. the DVD of a
  CD+DVD release): no call, no audio preview is matched to it (submit: skipped);
* ``no_tracks`` — the release lists no recording at all (no media, or media without
  tracks): ``release:<mbid>``, no call (submit: skipped);
* ``upstream_unavailable`` — MusicBrainz failed, or a source failed for the recording
  (:class:`~producers.http.UpstreamUnavailable`) and no source has a match with a
  preview: the failed one may have it, so this is retried and not remembered as a miss,
  even when another source gave a weak candidate (``score``) or a match without one;
* ``upstream_rejected`` — MusicBrainz refused the request, or a source did and no
  source gave any candidate;
* ``isrc_unknown`` — MusicBrainz knows no recording for an ISRC;
* ``search_truncated`` — a MusicBrainz search (``query:…``, ``new-releases:…``) matched
  more results than the search serves (:data:`~producers.musicbrainz.SEARCH_WINDOW`), even
  split into narrower windows: the rest was not reached (the results before were resolved);
* ``invalid_isrc`` — an input is not an ISRC, even normalised (no call made);
* dump line errors (``invalid_json``, ``not_an_object``, ``not_utf8``,
  ``line_too_long``, ``unknown_entity``) from :meth:`Resolver.resolve_dump`;
* ``invalid_entity`` — a dump entity of an unexpected shape made resolving it fail
  (e.g. a bare-string ``artist-credit``): one resolution for the entity
  (``release:<mbid>``, ``recording:<mbid>``, else ``line:<n>``) whose reason names the
  line and the exception; the dump goes on. Redis, store and upstream failures still stop
  the run (it resumes from its cursor).

When a failure concerns a whole release or input rather than one recording,
``recording_id`` names the input instead: ``release:<mbid>``, ``recording:<mbid>``,
``isrc:<ISRC>``, ``line:<n>``.

ISRCs (:meth:`Resolver.resolve_isrcs`): each is normalised (spaces, case, hyphens) and
checked first; each distinct valid ISRC goes through MusicBrainz ``/isrc`` to
its recording(s); recordings that share a release with at least one other requested
recording are resolved through that release, the others one by one.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

from contract.errors import InputUnreadable, PreviewvecError, is_transient
from contract.jobs import TEXT_MAX_CHARS, InvalidJob, Job, parse_isrc
from contract.settings import Settings
from contract.state import RedisError
from contract.state.cache import AnswerCache
from contract.state.keys import DEEZER_CACHE_PREFIX
from producers import dumps
from producers.deezer import DeezerClient
from producers.http import UpstreamRejected, UpstreamUnavailable
from producers.itunes import ITunesClient, RedisResponseCache
from producers.matching import item_from_mb, latin_credit
from producers.musicbrainz import (
    MusicBrainzClient,
    artist_credit_names,
    artist_credit_string,
    medium_tracks,
    partial_date_key,
)
from producers.ratelimit import RateLimiter, RateLimitTimeout
from producers.sources import (
    Candidate,
    DeezerSource,
    Entry,
    ITunesSource,
    Miss,
    PreviewSource,
    ReleaseAnswer,
    ReleaseQuery,
)

SOURCE = "itunes"  # the source of jobs before there were several
ALREADY_STORED = "already_stored"
ALREADY_QUEUED = "already_queued"
ALREADY_IN_RUN = "already_in_run"
INVALID_ISRC = "invalid_isrc"
PSEUDO_RELEASE = "Pseudo-Release"  # MusicBrainz release status
_KNOWN = {"stored": (ALREADY_STORED, "has a record at the current feature version"),
          "queued": (ALREADY_QUEUED, "a job of it is queued in another run"),
          "in_run": (ALREADY_IN_RUN, "this run has it already")}
# Recordings this resolver resolved (or failed to, for good), remembered until submit has
# surely published them (it publishes every 500 jobs; a few releases are in flight) and
# recorded their failures: ≈ 200 B each, 10 MB at most.
RECENT_RESOLVED = 50_000
BUSY_S = 1.0  # a source whose next slot is further away is not asked while one is free
UpstreamError = (UpstreamUnavailable, UpstreamRejected)
INVALID_ENTITY = "invalid_entity"
log = logging.getLogger(__name__)
_Entry = Entry  # the name this module used before producers/sources.py
_T = TypeVar("_T")


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


def _valid_isrcs(values: Iterable[Any]) -> tuple[str, ...]:
    parsed = (parse_isrc(value) for value in values or ())
    return tuple(dict.fromkeys(isrc for isrc in parsed if isrc))  # repeats dropped, in order


_SURROGATE = re.compile("[\ud800-\udfff]")


def _clip(text: str | None, max_chars: int = TEXT_MAX_CHARS) -> str | None:
    """``text`` cut to ``max_chars`` with an ellipsis, a lone surrogate (a JSON
    ``"\\ud800"`` escape with no pair, which no UTF-8 text can hold) as U+FFFD: a
    job's title and artist are shown, not matched on, so a 30-artist credit or one
    broken character must not cost a confident match."""
    if text is None:
        return None
    text = _SURROGATE.sub("\ufffd", text)
    if len(text) <= max_chars:
        return text
    return text[:max_chars - 1] + "…"


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


def _by_release(entries: Iterable[_Entry]) -> dict[str, list[_Entry]]:
    """Entries grouped by their release id (entries without one left out), in order."""
    by_release: dict[str, list[_Entry]] = {}
    for entry in entries:
        if entry.release_id:
            by_release.setdefault(entry.release_id, []).append(entry)
    return by_release


def _error(recording_id: str, exc: PreviewvecError, score: float = 0.0) -> Resolution:
    return Resolution(recording_id, None, score, exc.message, exc.code)


def _barcode(release: dict[str, Any]) -> str | None:
    """The release's UPC/EAN, ASCII digits only (8-14 of them), or None."""
    raw = release.get("barcode")
    # not str.isdigit(): it also takes "٠٦٠٢…" and "²", which no store knows
    if isinstance(raw, str) and re.fullmatch(r"[0-9]{8,14}", raw.strip()):
        return raw.strip()
    return None


class _Cascade:
    """One release's resolution state: what is found, what failed, what was noted.

    Only a match with a preview settles a track (``found``). A match without one leaves
    the track open for the next steps and sources, and the first such match is kept
    (``bare``) as the answer when none of them has the track with a preview."""

    def __init__(self, entries: list[Entry], wanted: list[int]) -> None:
        self.entries, self.wanted = entries, wanted
        self.found: dict[int, Candidate] = {}
        self.bare: dict[int, Candidate] = {}
        self.misses: dict[int, Miss] = {}
        self.notes: list[str] = []
        self.errors: dict[int, list[PreviewvecError]] = {}  # of the calls made for a track

    def pending(self) -> list[int]:
        return [i for i in self.wanted if i not in self.found]

    def take(self, answer: ReleaseAnswer) -> None:
        if answer.note:
            self.notes.append(answer.note)
        for i, cand in answer.matched.items():
            if i in self.wanted and i not in self.found:
                self._keep(i, cand)

    def offer(self, i: int, got: Candidate | Miss | None) -> None:
        if isinstance(got, Candidate):
            self._keep(i, got)
        elif isinstance(got, Miss) and (i not in self.misses
                                        or got.score > self.misses[i].score):
            self.misses[i] = got

    def _keep(self, i: int, cand: Candidate) -> None:
        if cand.track.preview_url:
            self.found[i] = cand
        else:
            self.bare.setdefault(i, cand)

    def attempt(self, source: PreviewSource, bound: float | None,
                call: Callable[[PreviewSource], Any], tracks: list[int]) -> Any:
        """``call(source)`` for ``tracks`` with its waits bounded; None after an upstream
        error (noted against those tracks, not the release: one track's failed search
        says nothing of another's miss) or when the source's slot went further than
        ``bound`` (busy: not asked)."""
        try:
            with source.limiter.bounded(bound):
                return call(source)
        except RateLimitTimeout:
            return None
        except UpstreamError as exc:
            for i in tracks:
                self.errors.setdefault(i, []).append(exc)
            return None


NO_TRACKS = "no_tracks"
VIDEO_RECORDING = "video_recording"
_VIDEO_REASON = "a video recording: audio previews are not matched to it (no call made)"


@dataclass
class _Tracklist:
    """A release's recordings as the resolver reads them (``Resolver._release_entries``)."""

    entries: list[Entry]  # audio recordings, each once
    videos: list[str]  # video recordings' ids, each once: skipped without a call
    audio_tracks: int  # tracks of audio recordings, repeats included (the album's size)


class Resolver:
    """MusicBrainz → preview sources. ``mb`` may be None when only dumps are resolved.

    ``itunes``/``deezer`` are the clients of the sources ``settings.sources`` enables
    (a missing client leaves its source out); ``stored(recording_id)`` says whether a
    record exists already; ``handled(recording_ids)`` which of them are queued somewhere
    or handled by the run being submitted (``{id: "queued" | "in_run"}``). Known
    recordings are not resolved, releases entirely known cost no call. With ``handled``
    the resolver also remembers what it resolved (the run will have it once published)."""

    def __init__(self, settings: Settings, mb: MusicBrainzClient | None,
                 itunes: ITunesClient | None, *, deezer: DeezerClient | None = None,
                 stored: Callable[[str], bool] | None = None,
                 handled: Callable[[Sequence[str]], dict[str, str]] | None = None,
                 in_flight: int = 1,
                 album_search_limit: int = 10, song_search_limit: int = 10) -> None:
        self.settings = settings
        self.mb = mb
        self.itunes = itunes
        self.deezer = deezer
        self.threshold = settings.match_threshold
        self.stored = stored
        self.handled = handled
        self._recent: OrderedDict[str, None] = OrderedDict()
        # Missed on a Pseudo-Release and not resolved since: the run's failure of them is
        # not for good (see _remember).
        self._pseudo_missed: OrderedDict[str, None] = OrderedDict()
        self._recent_lock = threading.Lock()
        self.in_flight = max(1, in_flight)
        self.busy_s = BUSY_S
        built: dict[str, PreviewSource] = {}
        if itunes is not None:
            built["itunes"] = ITunesSource(itunes, self.threshold,
                                           audio_hosts=settings.allowed_audio_hosts,
                                           album_search_limit=album_search_limit,
                                           song_search_limit=song_search_limit)
        if deezer is not None:
            built["deezer"] = DeezerSource(deezer, self.threshold,
                                           audio_hosts=settings.allowed_audio_hosts)
        self.sources: list[PreviewSource] = [built[n] for n in settings.sources if n in built]
        self.stats = {"barcode_untrusted": 0, "releases_skipped": 0, "recordings_known": 0}

    @classmethod
    def build(cls, settings: Settings, *, redis_client=None, need_musicbrainz: bool = True,
              stored: Callable[[str], bool] | None = None,
              handled: Callable[[Sequence[str]], dict[str, str]] | None = None) -> Resolver:
        """Clients on ``settings`` with limiters and answer caches on the broker's Redis.

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
        itunes = deezer = None
        if "itunes" in settings.sources:
            itunes = ITunesClient(
                settings, RateLimiter(redis_client, "itunes", settings.itunes_rate_per_min / 60),
                cache=RedisResponseCache(redis_client))
        if "deezer" in settings.sources:
            deezer = DeezerClient(
                settings, RateLimiter(redis_client, "deezer", settings.deezer_rate_per_s),
                cache=AnswerCache(redis_client, prefix=DEEZER_CACHE_PREFIX))
        # Several releases in flight, so each source's limit is used at once.
        return cls(settings, mb, itunes, deezer=deezer, stored=stored, handled=handled,
                   in_flight=4 * len(settings.sources))

    @property
    def calls(self) -> dict[str, int]:
        """HTTP requests sent so far (retries included) and answer-cache hits."""
        out = {"musicbrainz": self.mb.calls if self.mb else 0,
               "itunes": self.itunes.calls if self.itunes else 0,
               "itunes_cache_hits": self.itunes.stats["cache_hits"] if self.itunes else 0}
        if self.deezer is not None:
            out.update(deezer=self.deezer.calls,
                       deezer_cache_hits=self.deezer.stats["cache_hits"])
        return out

    def _need_mb(self) -> MusicBrainzClient:
        if self.mb is None:
            from producers.musicbrainz import MbContactMissing

            raise MbContactMissing("this resolution needs MusicBrainz: set PREVIEWVEC_MB_CONTACT")
        return self.mb

    def _ordered(self) -> list[tuple[PreviewSource, float | None]]:
        """The sources to ask, in priority order, each with the longest wait for its slot:
        those with a slot within ``busy_s`` (bounded by it, as another thread may take the
        slot first); when every source is busy, the one that frees up first (unbounded).
        A busy source is not asked while another is free, so a release is never held up
        by the slower source."""
        if len(self.sources) < 2:
            return [(s, None) for s in self.sources]
        waits = {s.name: s.limiter.next_wait_s() for s in self.sources}
        free = [(s, self.busy_s) for s in self.sources if waits[s.name] <= self.busy_s]
        return free or [(min(self.sources, key=lambda s: waits[s.name]), None)]

    # -- building blocks ---------------------------------------------------------------
    def _job(self, entry: Entry, cand: Candidate, notes: list[str]) -> Resolution:
        track = cand.track
        reason = "; ".join([*notes, cand.reason])  # the match evidence last
        if not track.preview_url:
            why = (f"store track's preview refused: {track.refused}" if track.refused
                   else "store track has no preview")
            return Resolution(entry.recording_id, None, cand.confidence,
                              f"{reason} ({why})", "no_preview")
        item = entry.item
        try:
            job = Job(recording_id=entry.recording_id, preview_url=track.preview_url,
                      isrc=entry.isrcs[0] if entry.isrcs else None,
                      artist=_clip(item.artist or track.item.artist or None),
                      title=_clip(item.title or track.item.title or None),
                      duration_ms=item.duration_ms or track.item.duration_ms,
                      release_id=entry.release_id, source=cand.source,
                      source_track_id=track.track_id or None, source_url=track.link,
                      match_rule=cand.rule, confidence=round(cand.confidence, 4))
        except InvalidJob as exc:
            return Resolution(entry.recording_id, None, cand.confidence, str(exc), exc.code)
        return Resolution(entry.recording_id, job, cand.confidence, reason, None)

    def _outcome(self, state: _Cascade, i: int) -> Resolution:
        entry = state.entries[i]
        if i in state.found:
            return self._job(entry, state.found[i], state.notes)
        miss = state.misses.get(i)
        errors = state.errors.get(i, [])
        # A source that failed may have the track, with a preview: a weak miss or a match
        # without a preview elsewhere is no answer for good (and would be remembered).
        unavailable = [exc for exc in errors if is_transient(exc.code)]
        if unavailable:
            return _error(entry.recording_id, unavailable[-1], miss.score if miss else 0.0)
        if i in state.bare:  # no_preview: no source has the track with one
            return self._job(entry, state.bare[i], state.notes)
        if errors and (miss is None or miss.score == 0.0):
            return _error(entry.recording_id, errors[-1])
        miss = miss or Miss(0.0, "no store candidates")
        return Resolution(entry.recording_id, None, miss.score,
                          "; ".join([*state.notes, miss.reason]), "no_confident_match")

    def _resolve_single(self, entry: Entry) -> Resolution:
        """A lone recording: ISRC on the sources that have it, then song search."""
        state = _Cascade([entry], [0])
        self._per_recording(state)
        return self._outcome(state, 0)

    def _per_recording(self, state: _Cascade) -> None:
        """Steps 2 and 3b: ISRC lookups for every open track, then song searches."""
        self._per_recording_isrc(state)
        for i in state.pending():
            for src, bound in self._ordered():
                if i in state.found:
                    break
                state.offer(i, state.attempt(
                    src, bound, lambda s, e=state.entries[i]: s.recording_by_search(e), [i]))

    def _release_entries(self, release: dict[str, Any]) -> _Tracklist:
        """Every recording of the release once (the first track of a recording that
        appears twice, e.g. on two discs, stands for it): pregap, tracks and data tracks
        of each medium; video recordings apart, as they get no call."""
        title = release.get("title") or ""
        credit = release.get("artist-credit")
        rid = release.get("id")
        out = _Tracklist([], [], 0)
        seen: set[str] = set()
        for medium in release.get("media") or []:
            if not isinstance(medium, dict):
                continue
            disc = medium.get("position") if isinstance(medium.get("position"), int) else None
            for trk in medium_tracks(medium):
                rec = trk.get("recording") or {}
                if not isinstance(rec, dict) or not rec.get("id"):
                    continue
                if rec.get("video") is not True:
                    out.audio_tracks += 1  # the album's size, repeats included
                if rec["id"] in seen:
                    continue
                seen.add(rec["id"])
                if rec.get("video") is True:
                    out.videos.append(rec["id"])
                    continue
                out.entries.append(Entry(rec["id"], item_from_mb(rec, track=trk, disc=disc,
                                                                  album=title,
                                                                  release_credit=credit),
                                         _valid_isrcs(rec.get("isrcs")), rid))
        return out

    def resolve_release_data(self, release: dict[str, Any],
                             only: dict[str, tuple[str, ...]] | None = None
                             ) -> Iterator[Resolution]:
        """Resolve a full release document (lookup or dump entity) through the cascade.

        ``only``: restrict to these recording ids (value: ISRCs to put on the job)."""
        yield from self._resolve_release(release, only)

    def _resolve_release(self, release: dict[str, Any],
                         only: dict[str, tuple[str, ...]] | None) -> list[Resolution]:
        tracklist = self._release_entries(release)
        entries = tracklist.entries
        if not entries and not tracklist.videos and only is None:
            return [Resolution(f"release:{release.get('id') or '?'}", None, 0.0,
                               "MusicBrainz lists no recordings on this release "
                               "(no tracklist entered yet)", NO_TRACKS)]
        videos = [Resolution(rid, None, 0.0, _VIDEO_REASON, VIDEO_RECORDING)
                  for rid in tracklist.videos if only is None or rid in only]
        wanted = [i for i, e in enumerate(entries) if only is None or e.recording_id in only]
        for i in wanted:
            if only is not None:
                entries[i].isrcs = only[entries[i].recording_id] or entries[i].isrcs
        if not wanted:
            return videos
        known = self._known([entries[i].recording_id for i in wanted])
        skipped = videos + [self._known_resolution(entries[i].recording_id, known)
                            for i in wanted if entries[i].recording_id in known]
        self.stats["recordings_known"] += len(skipped) - len(videos)
        wanted = [i for i in wanted if entries[i].recording_id not in known]
        if not wanted:
            self.stats["releases_skipped"] += 1
            return skipped
        names = artist_credit_names(release.get("artist-credit"))
        artist = artist_credit_string(release.get("artist-credit"))
        query = ReleaseQuery(_barcode(release), release.get("title") or "", artist,
                             names[0] if names else artist, tracklist.audio_tracks,
                             latin_credit(release.get("artist-credit")))
        state = _Cascade(entries, wanted)
        if query.barcode:
            for src, bound in self._ordered():
                if state.pending() and not self._per_track_cheaper(src, state):
                    state.take(state.attempt(src, bound, lambda s: s.release_by_barcode(
                        query, entries), state.pending()) or ReleaseAnswer())
        untrusted = sum("not trusted" in n for n in state.notes)
        self.stats["barcode_untrusted"] += untrusted
        self._per_recording_isrc(state)
        if len(state.pending()) >= 2 or (state.pending() and not state.found):
            for src, bound in self._ordered():
                if state.pending():
                    state.take(state.attempt(src, bound, lambda s: s.release_by_search(
                        query, entries), state.pending()) or ReleaseAnswer())
        self._per_recording(state)
        out = [self._outcome(state, i) for i in wanted]
        self._remember_release(release, out)
        return skipped + out

    def _known(self, recording_ids: list[str]) -> dict[str, str]:
        """Recording id → why it needs no resolution ("in_run", "queued", "stored")."""
        out: dict[str, str] = {}
        if self.handled is not None:
            with self._recent_lock:
                out = {rid: "in_run" for rid in recording_ids if rid in self._recent}
                retry = {rid for rid in recording_ids if rid in self._pseudo_missed}
            rest = [rid for rid in recording_ids if rid not in out]
            if rest:
                # "in_run" for a pseudo-release miss is that miss, recorded as a failure
                # of the run by submit: not for good, so it is resolved again
                out.update((rid, why) for rid, why in self.handled(rest).items()
                           if not (why == "in_run" and rid in retry))
        if self.stored is not None:
            for rid in recording_ids:
                if rid not in out and self.stored(rid):
                    out[rid] = "stored"
        return out

    @staticmethod
    def _known_resolution(recording_id: str, known: dict[str, str]) -> Resolution:
        code, why = _KNOWN[known[recording_id]]
        return Resolution(recording_id, None, 0.0, f"{why}: no call made", code)

    def _remember_release(self, release: dict[str, Any], out: list[Resolution]) -> None:
        """Remember a release's matches and its misses for good (not the transient ones).

        A miss on a Pseudo-Release is not for good: its transliterated titles and missing
        barcode miss tracks the official release of the same recordings finds, and that
        release may come later in the run."""
        final = [res for res in out
                 if res.job is not None or not is_transient(res.error_code or "")]
        if release.get("status") != PSEUDO_RELEASE:
            self._remember(res.recording_id for res in final)
            return
        self._remember(res.recording_id for res in final if res.job is not None)
        self._remember((res.recording_id for res in final if res.job is None),
                       for_good=False)

    def _remember(self, recording_ids: Iterable[str], *, for_good: bool = True) -> None:
        """Note recordings resolved, so later releases skip them (``in_run``); or, not
        ``for_good``, so their failures in the run do not make them skipped."""
        if self.handled is None:  # not submitting: nothing to skip against
            return
        with self._recent_lock:
            for rid in recording_ids:
                if for_good:
                    self._pseudo_missed.pop(rid, None)
                    _note(self._recent, rid)
                elif rid not in self._recent:  # matched through another release: kept
                    _note(self._pseudo_missed, rid)

    def _per_track_cheaper(self, src: PreviewSource, state: _Cascade) -> bool:
        """A second source's album costs two calls: for one or two open tracks with ISRCs,
        asking per ISRC is cheaper."""
        pending = state.pending()
        return (bool(state.found) and src.name == "deezer" and len(pending) <= 2
                and all(state.entries[i].isrcs for i in pending))

    def _per_recording_isrc(self, state: _Cascade) -> None:
        for i in state.pending():
            for src, bound in self._ordered():
                if i in state.found or not state.entries[i].isrcs:
                    break
                state.offer(i, state.attempt(
                    src, bound, lambda s, e=state.entries[i]: s.recording_by_isrc(e), [i]))

    # -- public entry points -----------------------------------------------------------
    def resolve_release(self, release_mbid: str) -> Iterator[Resolution]:
        try:
            release = self._need_mb().release(release_mbid)
        except UpstreamError as exc:
            yield _error(f"release:{release_mbid}", exc)
            return
        yield from _answered("release", release, f"release:{release_mbid}",
                             lambda: self._resolve_release(release, None))

    def _recording_entry(self, rec: dict[str, Any], isrcs: tuple[str, ...] = ()) -> _Entry:
        release = pick_release(rec.get("releases"))
        disc, pos = _position_in(release)
        item = item_from_mb(rec, album=(release or {}).get("title"))
        if pos:
            item = replace(item, disc=disc, track=pos)
        return _Entry(rec["id"], item, isrcs or _valid_isrcs(rec.get("isrcs")),
                      (release or {}).get("id"))

    def resolve_recording_data(self, rec: dict[str, Any]) -> Resolution:
        if not rec.get("id"):
            return Resolution("recording:?", None, 0.0, "recording without id",
                              "unknown_entity")
        if rec.get("video") is True:
            return Resolution(rec["id"], None, 0.0, _VIDEO_REASON, VIDEO_RECORDING)
        known = self._known([rec["id"]])
        if known:
            self.stats["recordings_known"] += 1
            return self._known_resolution(rec["id"], known)
        res = self._resolve_single(self._recording_entry(rec))
        if res.job is not None or not is_transient(res.error_code or ""):
            self._remember([res.recording_id])
        return res

    def resolve_recording(self, mbid: str) -> Resolution:
        try:
            rec = self._need_mb().recording(mbid)
        except UpstreamError as exc:
            return _error(f"recording:{mbid}", exc)
        return _answered("recording", rec, f"recording:{mbid}",
                         lambda: [self.resolve_recording_data(rec)])[0]

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
            got = _answered("release", release, f"release:{release_id}",
                            lambda release=release, wanted=wanted: self._resolve_release(
                                release, wanted))
            if got and got[0].error_code == INVALID_ENTITY:
                continue  # an odd release document: its recordings one by one below
            for res in got:
                done.add(res.recording_id)
                yield res
        for entry in entries.values():
            if entry.recording_id not in done:
                yield self._resolve_single(entry)

    def _isrc_entries(self, mb: MusicBrainzClient, isrcs: Iterable[str],
                      entries: dict[str, _Entry]) -> Iterator[Resolution]:
        """Look each ISRC up, adding its recordings to ``entries`` (first seen wins);
        yields the ISRCs that are invalid, failed or are unknown.

        Every value is checked and normalised before the first call: an invalid one
        (which would otherwise reach MusicBrainz's path as it is) costs no call, and
        spellings of one ISRC (case, hyphens, spaces) cost one (1 request/s)."""
        valid: dict[str, None] = {}
        invalid: dict[str, None] = {}
        for raw in isrcs:
            isrc = parse_isrc(raw)
            if isrc is not None:
                valid[isrc] = None
            else:
                invalid[raw if isinstance(raw, str) else repr(raw)] = None
        for raw in invalid:
            shown = ascii(raw)[1:-1][:64]  # printable, and short enough to be an id
            yield Resolution(f"isrc:{shown}", None, 0.0,
                             f'"{shown}" is not an ISRC (12 characters like USRC17607839)',
                             INVALID_ISRC)
        for isrc in valid:
            try:
                data = mb.isrc(isrc)
            except UpstreamError as exc:
                yield _error(f"isrc:{isrc}", exc)
                continue
            recs = [r for r in data.get("recordings") or []
                    if isinstance(r, dict) and isinstance(r.get("id"), str) and r["id"]]
            if not recs:
                yield Resolution(f"isrc:{isrc}", None, 0.0,
                                 f"MusicBrainz has no recording with ISRC {isrc}",
                                 "isrc_unknown")
            for rec in recs:
                if rec.get("video") is True:  # its ISRC names a music video: no call
                    if rec["id"] not in entries:
                        yield Resolution(rec["id"], None, 0.0, _VIDEO_REASON, VIDEO_RECORDING)
                    continue
                if rec["id"] not in entries:
                    got = _answered("recording", rec, f"isrc:{isrc}", lambda rec=rec, isrc=isrc: [
                        self._recording_entry(rec, _valid_isrcs([isrc]))])
                    if isinstance(got[0], Resolution):
                        yield got[0]
                    else:
                        entries[rec["id"]] = got[0]

    def resolve_query(self, lucene: str, max_results: int | None = None, *,
                      page_size: int = 100) -> Iterator[Resolution]:
        """Every recording a MusicBrainz recording search returns, per-track."""
        mb = self._need_mb()
        cut = len(mb.truncated)
        try:
            for rec in mb.iter_search_recordings(lucene, max_results, page_size=page_size):
                yield from _answered("recording", rec, "recording:?",
                                     lambda rec=rec: [self.resolve_recording_data(rec)])
        except UpstreamError as exc:
            yield _error(f"query:{lucene}"[:64], exc)
        yield from _truncated("query", mb.truncated[cut:])

    def resolve_new_releases(self, since: date, until: date | None = None, *,
                             max_results: int | None = None,
                             page_size: int = 100) -> Iterator[Resolution]:
        """Releases dated in [since, until] (MusicBrainz ``date``), each album-first, once:
        a release listed twice, or under an MBID merged into one already resolved (the
        lookup answers the release it was merged into), is resolved the first time only."""
        mb = self._need_mb()
        cut = len(mb.truncated)
        done: set[str] = set()
        try:
            for stub in mb.new_releases(since, until, max_results=max_results,
                                        page_size=page_size):
                mbid = stub.get("id")
                if not isinstance(mbid, str) or not mbid or mbid in done:
                    continue
                done.add(mbid)
                try:
                    release = mb.release(mbid)
                except UpstreamError as exc:
                    yield _error(f"release:{mbid}", exc)
                    continue
                canonical = release["id"]
                if canonical != mbid:
                    if canonical in done:
                        continue  # merged into a release resolved already
                    done.add(canonical)
                yield from _answered("release", release, f"release:{mbid}",
                                     lambda release=release: self._resolve_release(release,
                                                                                   None))
        except UpstreamError as exc:
            yield _error(f"new-releases:{since.isoformat()}", exc)
        yield from _truncated("new-releases", mb.truncated[cut:])

    def resolve_dump(self, path: str | Path, start_line: int = 0, *,
                     plan: Any = None) -> Iterator[tuple[int, Resolution]]:
        """Stream a MusicBrainz JSON dump: release entities through the cascade, recording
        entities one by one; bad lines become error resolutions (``line:<n>``). A dump
        that cannot be read on (corrupt, truncated) raises
        :class:`~contract.errors.InputUnreadable` after every line read before is out.

        Up to ``in_flight`` lines are resolved at once (threads: the work is waiting on
        rate limits), so each source's limit is used while the other's waits; results
        still come out in line order, which the resumable cursor needs.

        With a :class:`producers.plan.Plan` the lines come in its passes (the cover, then
        the rest) and are paired with their plan positions instead of line numbers;
        ``start_line`` is then the first position to do."""
        if plan is None:
            lines: Iterable[tuple[int, int, Any]] = (
                (n, n, item) for n, item in dumps.iter_dump(path, start_line))
        else:
            from producers.plan import iter_planned

            lines = iter_planned(path, plan, start_line)
        if self.in_flight < 2:
            for key, line_no, item in lines:
                for res in self._resolve_line(line_no, item):
                    yield key, res
            return
        window: deque[tuple[int, Future[list[Resolution]]]] = deque()
        with ThreadPoolExecutor(self.in_flight, thread_name_prefix="resolve") as pool:
            try:
                for key, line_no, item in lines:
                    window.append((key, pool.submit(self._resolve_line, line_no, item)))
                    yield from self._make_room(window)
            except InputUnreadable:
                # The dump broke off (corrupt, truncated): the lines read before still
                # come out, whole, then the error (submit publishes them; nothing lost).
                while window:
                    yield from _drain_one(window)
                raise
            while window:
                yield from _drain_one(window)

    def _make_room(self, window: deque[tuple[int, Future[list[Resolution]]]]
                   ) -> Iterator[tuple[int, Resolution]]:
        """Yield the finished head of the window; then wait until fewer than
        ``in_flight`` lines are running. A slow line (waiting on the slower source) does
        not stall the others: finished lines behind it wait in the window, up to
        ``4 × in_flight`` of them."""
        while True:
            while window and window[0][1].done():
                yield from _drain_one(window)
            running = [f for _, f in window if not f.done()]
            if len(running) < self.in_flight and len(window) < 4 * self.in_flight:
                return
            wait(running, return_when=FIRST_COMPLETED)

    def _resolve_line(self, line_no: int, item: Any) -> list[Resolution]:
        """The resolutions of one dump line. An entity whose shape breaks the resolver
        becomes one ``invalid_entity`` resolution: one odd line out of millions must not
        stop an import that would stop at it again on every resume."""
        if isinstance(item, dumps.DumpError):
            return [Resolution(f"line:{line_no}", None, 0.0, item.message, item.code)]
        kind = dumps.entity_type(item)
        try:
            if kind == "release":
                return self._resolve_release(item, None)
            if kind == "recording":
                return [self.resolve_recording_data(item)]
        except Exception as exc:
            if _must_stop(exc):
                raise
            return [_invalid_entity(f"line {line_no}", f"line:{line_no}", kind, item, exc)]
        return [Resolution(f"line:{line_no}", None, 0.0,
                           "neither a release nor a recording entity", "unknown_entity")]


SEARCH_TRUNCATED = "search_truncated"


def _truncated(kind: str, notes: list[str]) -> Iterator[Resolution]:
    """One resolution per search cut at the search window (see the module docstring)."""
    for note in notes:
        yield Resolution(f"{kind}:{note}"[:200], None, 0.0,
                         f"MusicBrainz search {note}: the results past the search window "
                         "were not reached; narrow the input", SEARCH_TRUNCATED)


def _must_stop(exc: Exception) -> bool:
    """Whether an exception met resolving one dump entity is about the run, not the entity:
    Redis, the store, the network, the settings. Those stop the run (the cursor resumes it
    once fixed); only an entity-shaped failure (a bug meeting odd data, a job field the
    contract refuses) is recorded and passed over."""
    if isinstance(exc, InvalidJob):
        return False
    return isinstance(exc, (PreviewvecError, RedisError, OSError, MemoryError))


def _invalid_entity(where: str, fallback: str, kind: str, item: dict[str, Any],
                    exc: Exception) -> Resolution:
    """The ``invalid_entity`` resolution of an entity (read at ``where``: a dump line, a
    MusicBrainz answer) whose shape made resolving it fail; named ``fallback`` when the
    entity has no usable id."""
    entity_id = item.get("id")
    if isinstance(entity_id, str) and 0 < len(entity_id) <= 100:
        name = f"{kind}:{entity_id}"
    else:
        name = fallback
    reason = f"{where}: cannot resolve this {kind} entity ({type(exc).__name__}: {exc})"
    log.warning("%s", reason, exc_info=log.isEnabledFor(logging.DEBUG))
    return Resolution(name, None, 0.0, _clip(reason, 500) or reason, INVALID_ENTITY)


def _answered(kind: str, item: dict[str, Any], fallback: str,
              work: Callable[[], list[_T]]) -> list[_T] | list[Resolution]:
    """``work()`` for an entity MusicBrainz answered; a failure of the entity's shape (a
    bare-string ``artist-credit``, null where an object belongs) is its one
    ``invalid_entity``, as for a dump line, not an exception that ends the run."""
    try:
        return work()
    except Exception as exc:
        if _must_stop(exc):
            raise
        return [_invalid_entity("MusicBrainz answer", fallback, kind, item, exc)]


def _note(recent: OrderedDict[str, None], recording_id: str) -> None:
    """Add ``recording_id`` as the newest of ``recent``, dropping the oldest over
    :data:`RECENT_RESOLVED`."""
    recent[recording_id] = None
    recent.move_to_end(recording_id)
    while len(recent) > RECENT_RESOLVED:
        recent.popitem(last=False)


def _drain_one(window: deque[tuple[int, Future[list[Resolution]]]]
               ) -> Iterator[tuple[int, Resolution]]:
    line_no, future = window.popleft()
    for res in future.result():
        yield line_no, res
