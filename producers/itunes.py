"""iTunes Search API client (``/search``, ``/lookup``), paced by the shared limiter.

Apple documents roughly 20 calls per minute; the limiter (``settings.itunes_rate_per_min``)
is shared by every producer process through Redis. Over the limit Apple answers
**403 with an empty body** (or an HTML page): that is throttling, never "no results" — the client
penalises the shared limiter and retries (:mod:`producers.http`), and gives up with
``upstream_unavailable`` rather than ever returning an empty result for it. Bodies may
start with blank lines; they are stripped before JSON parsing.

Responses are cached (:class:`RedisResponseCache`: one Redis string per request URL,
with a TTL, shared by all producers) so a re-run of the same catalog makes no calls.
Only successful answers are cached — including genuine empty results, which are stable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

import requests

from contract import __version__
from contract.retry import Backoff
from contract.settings import Settings
from contract.state.cache import DEFAULT_CACHE_TTL_S, AnswerCache  # noqa: F401 - re-exported
from producers.http import JsonGet
from producers.ratelimit import RateLimiter

MAX_SEARCH_LIMIT = 200


class ResponseCache(Protocol):
    def get(self, key: str) -> dict[str, Any] | None: ...

    def set(self, key: str, value: dict[str, Any]) -> None: ...


# Decoded JSON answers keyed by request URL (SHA-1 of it), expiring after ``ttl_s``:
# the keys (pv:itunes:cache:<sha1>) are contract/state/cache.py's.
RedisResponseCache = AnswerCache


@dataclass(frozen=True)
class CollectionLookup:
    """``/lookup?id=<collectionId>&entity=song``: the collection row, then its songs."""

    collection: dict[str, Any] | None
    tracks: list[dict[str, Any]] = field(default_factory=list)


def _throttled(status: int, body: bytes) -> bool:
    """Apple's throttling answer (403 with an empty body or a non-JSON one, e.g. an edge
    server's HTML "Forbidden" page; or 429): never "no results". A 403 with a JSON body
    (``{"errorMessage": ...}``) is the API refusing the request itself."""
    return (status == 403 and not body.startswith(b"{")) or status == 429


def _check(data: Any) -> str | None:
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        return "no 'results' list in the answer"
    return None


class ITunesClient:
    def __init__(self, settings: Settings, limiter: RateLimiter,
                 session: requests.Session | None = None, cache: ResponseCache | None = None,
                 *, max_retries: int = 5, backoff: Backoff | None = None,
                 timeout: tuple[float, float] = (5.0, 30.0),
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = settings.itunes_url.rstrip("/")
        self.country = settings.itunes_country
        self.limiter = limiter
        self.session = session or requests.Session()
        self.session.headers.update({"User-Agent": f"previewvec/{__version__}",
                                     "Accept": "application/json"})
        self.cache = cache
        self.max_retries = max_retries
        self.backoff = backoff or Backoff(base_s=3.0, cap_s=120.0)
        self.timeout = timeout
        self._sleep = sleep
        self.stats = {"requests": 0, "retries": 0, "throttled": 0, "cache_hits": 0}
        self._json_get = JsonGet(
            self.session, limiter, self.backoff, max_retries + 1, timeout, sleep, self.stats,
            label="iTunes", throttled=_throttled, check=_check)

    @property
    def calls(self) -> int:
        """HTTP requests actually sent (retries included; cache hits excluded)."""
        return self.stats["requests"]

    def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.base_url}/{path}?{urlencode(params)}"
        if self.cache is not None:
            hit = self.cache.get(url)
            if hit is not None:
                self.stats["cache_hits"] += 1
                return hit
        data = self._json_get(path, url)
        if self.cache is not None:
            self.cache.set(url, data)
        return data

    def search(self, term: str, entity: str = "song", limit: int = 50,
               country: str | None = None) -> list[dict[str, Any]]:
        """Result rows of ``/search`` (``entity`` "song" or "album")."""
        if entity not in ("song", "album"):
            raise ValueError("entity must be 'song' or 'album'")
        if not 1 <= limit <= MAX_SEARCH_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_SEARCH_LIMIT}")
        data = self._get("search", {"term": term, "media": "music", "entity": entity,
                                    "limit": limit, "country": country or self.country})
        return [r for r in data["results"] if isinstance(r, dict)]

    def lookup_collection(self, collection_id: int | str) -> CollectionLookup:
        """The collection row and every song of it (``/lookup?id=..&entity=song&limit=200``)."""
        data = self._get("lookup", {"id": collection_id, "entity": "song", "limit": 200,
                                    "country": self.country})
        return _collection_and_songs(data)

    def lookup_upc(self, upc: str) -> CollectionLookup:
        """The album with this barcode and its songs, in ONE call
        (``/lookup?upc=..&entity=song``); an unknown barcode gives ``collection=None``.

        iTunes rows carry no ISRC, so its tracks are matched by disc/track position,
        checked against duration and title (producers/sources.py)."""
        data = self._get("lookup", {"upc": upc, "entity": "song", "limit": 200,
                                    "country": self.country})
        return _collection_and_songs(data)


def _collection_and_songs(data: dict[str, Any]) -> CollectionLookup:
    """The first collection of a lookup answer and its songs. A barcode lookup can answer
    other editions of the album too (collections and their songs); songs of another
    ``collectionId`` than the first collection's are not its tracks (their positions
    would pair with the wrong edition's tracklist), so they are left out."""
    rows = [row for row in data["results"] if isinstance(row, dict)]
    collection = next((row for row in rows if row.get("wrapperType") == "collection"), None)
    wanted = collection.get("collectionId") if collection else None
    tracks = [row for row in rows
              if row.get("wrapperType") == "track" and row.get("kind", "song") == "song"
              and (wanted is None or row.get("collectionId") in (None, wanted))]
    return CollectionLookup(collection, tracks)
