"""MusicBrainz JSON web service v2 client (``/ws/2/...?fmt=json``), paced by the shared
:class:`~producers.ratelimit.RateLimiter`.

MusicBrainz asks every client for a meaningful User-Agent with contact information; this
client sends ``previewvec/<version> ( <PREVIEWVEC_MB_CONTACT> )`` and refuses to start
(:class:`MbContactMissing`, code ``mb_contact_missing``) without a contact.

Failures are typed, and retried by :mod:`producers.http` (shared with the iTunes client):

* 503 (MusicBrainz's "slow down") and 429 *penalise the shared limiter* so every producer
  process backs off (Retry-After honoured); other 5xx and network errors are retried
  after a full-jitter sleep. When retries run out: :class:`UpstreamUnavailable`
  (``upstream_unavailable``).
* any other non-200 status: :class:`UpstreamRejected` (``upstream_rejected``, ``.status``).
* a 200 whose body is no answer (not an object, an ``{"error": ...}`` object, a lookup
  without an ``id``): :class:`UpstreamUnavailable`, never read as an empty release.

Searches page by ``offset`` until ``count`` is reached, a page is empty or brings nothing
new (an upstream that ignores ``offset``), each item once (results move while paging);
entries that are not objects are dropped. A search reaches only its first
:data:`SEARCH_WINDOW` results: what lies beyond is noted in ``truncated``.

``new_releases`` searches releases by their ``date`` field (the release event date), not
``firstreleasedate`` (a release-group field): a reissue dated in the window *is* a new
release to resolve, and its tracks usually point at recordings already known, which the
store skips cheaply. Partial dates ("1977", "1977-05") are valid MusicBrainz dates; see
:func:`partial_date_key`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote

import requests

from contract import __version__
from contract.errors import ConfigError
from contract.retry import Backoff
from contract.settings import Settings
from producers.http import JsonGet, UpstreamRejected, UpstreamUnavailable
from producers.ratelimit import RateLimiter

MAX_SEARCH_LIMIT = 100
# The search server serves results up to this offset only; a query matching more must be
# narrowed (new_releases splits its date range, then a day by complementary terms).
SEARCH_WINDOW = 10_000
# Terms that split one day's releases in two (the term, then NOT the term) when the day
# alone has more than SEARCH_WINDOW: exhaustive whatever the index makes of each term.
DAY_SPLIT_TERMS = ("status:official", "primarytype:album", 'format:"Digital Media"',
                   "country:XW", "country:US", "country:GB", "country:DE", "country:JP")
RECORDING_INC = "isrcs+artist-credits+releases"
RELEASE_INC = "recordings+isrcs+artist-credits"
ISRC_INC = "artist-credits+releases"


class MbContactMissing(ConfigError):
    code = "mb_contact_missing"


def _check(data: Any) -> str | None:
    """A problem with a decoded MusicBrainz body, or None. The web service reports errors
    as ``{"error": "...", "help": "..."}``: behind a proxy that answers 200 such a body
    would otherwise read as a release without tracks (skipped for good)."""
    if not isinstance(data, dict):
        return "body is not an object"
    if "error" in data:
        return f"error: {str(data['error'])[:200]}"
    return None


def _count(page: dict[str, Any]) -> int:
    """A search page's ``count`` (0 when missing or not a number)."""
    try:
        return max(0, int(page.get("count") or 0))
    except (TypeError, ValueError):
        return 0


def user_agent(contact: str) -> str:
    return f"previewvec/{__version__} ( {contact} )"


def partial_date_key(value: str | None) -> tuple[int, int, int]:
    """Sort key for MusicBrainz partial dates: "1977" < "1977-05" < "1977-05-08";
    missing or malformed dates sort last."""
    if not value:
        return (9999, 99, 99)
    parts = value.split("-")
    out = []
    for part in parts[:3]:
        try:
            out.append(int(part))
        except ValueError:
            return (9999, 99, 99)
    while len(out) < 3:
        out.append(0)
    return (out[0], out[1], out[2])


def artist_credit_names(credit: list[dict[str, Any]] | None) -> list[str]:
    """Every credited artist name (credited name and canonical name), in order."""
    names: list[str] = []
    for part in credit or []:
        for name in (part.get("name"), (part.get("artist") or {}).get("name")):
            if name and name not in names:
                names.append(name)
    return names


def artist_credit_string(credit: list[dict[str, Any]] | None) -> str:
    """The credit as printed: names joined by their join phrases ("A feat. B")."""
    return "".join(f"{p.get('name') or ''}{p.get('joinphrase') or ''}"
                   for p in credit or []).strip()


def medium_tracks(medium: Any) -> list[dict[str, Any]]:
    """Every track of a release's medium, in playing order: the hidden pregap track
    (``pregap``, position 0), the ``tracks`` (``track`` in older answers), then the
    ``data-tracks``. The web service serialises the first and the last apart from
    ``tracks``, so a reader of ``tracks`` alone misses their recordings."""
    if not isinstance(medium, dict):
        return []
    pregap = medium.get("pregap")
    out = [pregap] if isinstance(pregap, dict) else []
    for part in (medium.get("tracks") or medium.get("track"), medium.get("data-tracks")):
        if isinstance(part, list):
            out += [t for t in part if isinstance(t, dict)]
    return out


class MusicBrainzClient:
    """``MusicBrainzClient(settings, limiter)``; ``session`` is injectable (tests)."""

    def __init__(self, settings: Settings, limiter: RateLimiter,
                 session: requests.Session | None = None, *, max_retries: int = 5,
                 backoff: Backoff | None = None, timeout: tuple[float, float] = (5.0, 30.0),
                 sleep: Callable[[float], None] = time.sleep) -> None:
        contact = (settings.mb_contact or "").strip()
        if not contact:
            raise MbContactMissing(
                "PREVIEWVEC_MB_CONTACT is empty: MusicBrainz requires a meaningful "
                "User-Agent with contact information. Set PREVIEWVEC_MB_CONTACT to an "
                "email address or URL where you can be reached (e.g. you@example.org).")
        self.base_url = settings.musicbrainz_url.rstrip("/") + "/ws/2"
        self.limiter = limiter
        self.session = session or requests.Session()
        self.user_agent = user_agent(contact)
        self.session.headers.update({"User-Agent": self.user_agent,
                                     "Accept": "application/json"})
        self.max_retries = max_retries
        self.backoff = backoff or Backoff()
        self.timeout = timeout
        self._sleep = sleep
        self.stats = {"requests": 0, "retries": 0, "throttled": 0}
        self._json_get = JsonGet(
            self.session, limiter, self.backoff, max_retries + 1, timeout, sleep, self.stats,
            label="MusicBrainz", throttled=lambda status, body: status in (429, 503),
            check=_check)
        # Searches that matched more than SEARCH_WINDOW results: the rest was not reached.
        self.truncated: list[str] = []

    @property
    def calls(self) -> int:
        """HTTP requests actually sent (retries included)."""
        return self.stats["requests"]

    # -- transport ---------------------------------------------------------------------
    def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        return self._json_get(path, f"{self.base_url}/{path.lstrip('/')}",
                              {**params, "fmt": "json"})

    # -- lookups -----------------------------------------------------------------------
    def _lookup(self, entity: str, mbid: str, inc: str) -> dict[str, Any]:
        """One entity by MBID. A merged MBID answers the entity it was merged into: the
        body's ``id`` is then the new one, which callers keep (it is the recording's
        identity everywhere else: ISRC lookups, searches, other releases)."""
        # Quoted: an id from an answer or an input is a path segment, never a path.
        data = self._get(f"{entity}/{quote(str(mbid), safe='')}", {"inc": inc})
        if not isinstance(data.get("id"), str) or not data["id"]:
            raise UpstreamUnavailable(f"MusicBrainz {entity}/{mbid}: answer without an id")
        return data

    def recording(self, mbid: str) -> dict[str, Any]:
        return self._lookup("recording", mbid, RECORDING_INC)

    def release(self, mbid: str) -> dict[str, Any]:
        return self._lookup("release", mbid, RELEASE_INC)

    def isrc(self, isrc: str) -> dict[str, Any]:
        """``{"isrc": ..., "recordings": [...]}``; an unknown ISRC is HTTP 404 upstream,
        returned here as an empty recordings list."""
        try:
            return self._get(f"isrc/{quote(str(isrc), safe='')}", {"inc": ISRC_INC})
        except UpstreamRejected as exc:
            if exc.status == 404:
                return {"isrc": isrc, "recordings": []}
            raise

    # -- searches ----------------------------------------------------------------------
    def _search(self, entity: str, lucene: str, limit: int, offset: int) -> dict[str, Any]:
        if not 1 <= limit <= MAX_SEARCH_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_SEARCH_LIMIT}")
        return self._get(entity, {"query": lucene, "limit": limit, "offset": offset})

    def _iter_search(self, entity: str, key: str, lucene: str, max_results: int | None,
                     page_size: int, seen: set[str] | None = None,
                     first: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every result once (by ``id``; ``seen`` may be shared by several queries),
        ``first`` being the page at offset 0 when already fetched."""
        seen = set() if seen is None else seen
        offset = yielded = 0
        while True:
            page = first if first is not None and offset == 0 else self._search(
                entity, lucene, page_size, offset)
            items = page.get(key)
            items = items if isinstance(items, list) else []
            fresh = 0
            for item in items:
                if not isinstance(item, dict):
                    continue  # a null or garbage entry: nothing to resolve
                item_id = item.get("id")
                if isinstance(item_id, str) and item_id:
                    if item_id in seen:
                        continue  # results moved between pages: already yielded
                    seen.add(item_id)
                fresh += 1
                yield item
                yielded += 1
                if max_results is not None and yielded >= max_results:
                    return
            offset += len(items)
            count = _count(page)
            # Nothing new: the upstream ignores ``offset`` (or keeps repeating a page);
            # paging on would only ask the same again until ``count``.
            if not items or not fresh or offset >= count:
                return
            if offset >= SEARCH_WINDOW:
                self.truncated.append(f"{lucene} ({count} results, {offset} reachable)")
                return

    def search_recordings(self, lucene: str, limit: int = 25,
                          offset: int = 0) -> dict[str, Any]:
        """One page: ``{"count", "offset", "recordings": [...]}``."""
        return self._search("recording", lucene, limit, offset)

    def iter_search_recordings(self, lucene: str, max_results: int | None = None, *,
                               page_size: int = MAX_SEARCH_LIMIT) -> Iterator[dict[str, Any]]:
        return self._iter_search("recording", "recordings", lucene, max_results, page_size)

    def search_releases(self, lucene: str, limit: int = 25, offset: int = 0) -> dict[str, Any]:
        return self._search("release", lucene, limit, offset)

    def iter_search_releases(self, lucene: str, max_results: int | None = None, *,
                             page_size: int = MAX_SEARCH_LIMIT) -> Iterator[dict[str, Any]]:
        return self._iter_search("release", "releases", lucene, max_results, page_size)

    def new_releases(self, since: date, until: date | None = None, *,
                     max_results: int | None = None,
                     page_size: int = MAX_SEARCH_LIMIT) -> Iterator[dict[str, Any]]:
        """Releases whose release date lies in [since, until] (open-ended if ``until`` is
        None), as release search results (no tracks: look each one up)."""
        seen: set[str] = set()
        found = self._iter_dated(since, until, page_size, seen, split_open=True)
        return found if max_results is None else itertools.islice(found, max_results)

    def _iter_dated(self, since: date, until: date | None, page_size: int, seen: set[str],
                    *, split_open: bool, terms: tuple[str, ...] = (), tried: int = 0,
                    first: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """The releases of one date window (``first``: its page at offset 0, if fetched).

        The search serves no result past :data:`SEARCH_WINDOW`, so a window matching more
        is split in two: halves of its days, a single day by the next of
        :data:`DAY_SPLIT_TERMS` (``tried`` of them so far) and its NOT. A split is taken
        only when its two counts add up to no more than the whole (with some slack for
        releases added meanwhile): an upstream that does not partition (ignores the
        range or the term) would otherwise be asked the same thing over and over. A
        window that cannot be split is paged to the window and noted in ``truncated``."""
        lucene = new_releases_query(since, until, terms)
        if first is None:
            first = self._search("release", lucene, page_size, 0)
        total = _count(first)
        while total > SEARCH_WINDOW:
            halves = _split_window(since, until, split_open)
            if halves is not None:
                parts = [((a, b), terms) for a, b in halves]
            elif tried < len(DAY_SPLIT_TERMS):
                term = DAY_SPLIT_TERMS[tried]
                parts = [((since, until), (*terms, t)) for t in (term, f"NOT {term}")]
            else:
                break
            pages = [self._search("release", new_releases_query(a, b, t), page_size, 0)
                     for (a, b), t in parts]
            if sum(_count(p) for p in pages) > total + total // 100 + 10:
                if halves is not None:
                    break  # the range is not honoured: no split will narrow it
                tried += 1  # this term is not honoured: the next one
                continue
            for ((a, b), t), page in zip(parts, pages, strict=True):
                yield from self._iter_dated(a, b, page_size, seen, split_open=False,
                                            terms=t, tried=tried + (halves is None),
                                            first=page)
            return
        yield from self._iter_search("release", "releases", lucene, None, page_size, seen,
                                     first)


def _split_window(since: date, until: date | None,
                  split_open: bool) -> tuple[tuple[date, date | None], ...] | None:
    """Two date windows covering [since, until], or None for a single day (or an open
    window already split once: its future-dated tail is not split further)."""
    if until is None:
        if not split_open:
            return None
        mid = max(since, date.today())
        return (since, mid), (mid + timedelta(days=1), None)
    if until <= since:
        return None
    mid = since + (until - since) // 2
    return (since, mid), (mid + timedelta(days=1), until)


def new_releases_query(since: date, until: date | None = None,
                       terms: tuple[str, ...] = ()) -> str:
    end = until.isoformat() if until else "*"
    return " AND ".join((f"date:[{since.isoformat()} TO {end}]", *terms))
