"""Deezer public API client (``/track/isrc:``, ``/album/upc:``, ``/album/<id>/tracks``,
``/track/<id>``), paced by its own shared limiter.

No key is needed. Deezer documents a limit of 50 requests per 5 s per client; the limiter
(``settings.deezer_rate_per_s``, ``pv:ratelimit:deezer``) is shared by every producer
process through Redis. Deezer's own error semantics, unlike iTunes's:

* over quota is **HTTP 200** with ``{"error": {"code": 4, "message": "Quota limit
  exceeded", ...}}`` (and code 700, "service busy", is the same kind of "later"): that is
  throttling — the shared limiter is penalised and the request retried
  (:mod:`producers.http`), never read as an answer;
* "no data" is **HTTP 200** with ``{"error": {"code": 800, ...}}``: an unknown ISRC or
  barcode, returned as ``None`` (and cached, like any stable answer);
* an error the request itself causes (code 500 "parameter", 501 "parameter missing",
  600 "invalid query") is :class:`~producers.http.UpstreamRejected`: asking again gives
  the same answer;
* any other error object is :class:`~producers.http.UpstreamUnavailable`.

Track objects carry ``isrc``, ``track_position``, ``disk_number``, ``duration`` (s),
``preview`` (a 30 s MP3 on ``cdn*-preview*.dzcdn.net`` whose URL carries an expiring
token) and ``link``. ``/album/upc:`` gives the album (``nb_tracks``, ``title``,
``artist``) but its embedded track list lacks ISRCs and positions, so the track list is
read from ``/album/<id>/tracks``: a release costs two calls and is then matched by ISRC.
Without identifiers, ``/search/album`` and ``/search/track`` take Deezer's advanced query
syntax (``artist:"…" album:"…"``, ``artist:"…" track:"…"``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import requests

from contract import __version__
from contract.retry import Backoff
from contract.settings import Settings
from producers.http import JsonGet, UpstreamRejected
from producers.itunes import ResponseCache
from producers.ratelimit import RateLimiter

QUOTA_CODES = frozenset({4, 700})  # "quota limit exceeded", "service busy": retry later
NO_DATA_CODE = 800
REQUEST_ERROR_CODES = frozenset({500, 501, 600})  # the request is at fault: final
MAX_TRACKS_PAGE = 500
MAX_TRACK_PAGES = 40  # an album's pages followed at most (20 000 tracks at 500)


def error_code(data: Any) -> int | None:
    """The ``error.code`` of a Deezer answer, or None when it is not an error."""
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        code = data["error"].get("code")
        return code if isinstance(code, int) else -1
    return None


def _throttled(status: int, body: bytes) -> bool:
    if status == 429:
        return True
    # Any spacing or key order ('{ "error"', pretty-printed): parse, do not match bytes.
    if status != 200 or not body.startswith(b"{") or b'"error"' not in body:
        return False
    try:
        return error_code(json.loads(body)) in QUOTA_CODES
    except (UnicodeDecodeError, ValueError):
        return False


def _check(data: Any) -> str | None:
    code = error_code(data)
    if code is not None and code != NO_DATA_CODE:
        problem = f"error {code}: {str(data['error'].get('message'))[:100]}"
        if code in REQUEST_ERROR_CODES:
            raise UpstreamRejected(f"Deezer: {problem}", 200)
        return problem
    if not isinstance(data, dict):
        return "the answer is not a JSON object"
    return None


@dataclass(frozen=True)
class DeezerAlbum:
    """``/album/upc:<UPC>`` then ``/album/<id>/tracks``."""

    album: dict[str, Any]
    tracks: list[dict[str, Any]] = field(default_factory=list)


class DeezerClient:
    def __init__(self, settings: Settings, limiter: RateLimiter,
                 session: requests.Session | None = None, cache: ResponseCache | None = None,
                 *, max_retries: int = 5, backoff: Backoff | None = None,
                 timeout: tuple[float, float] = (5.0, 30.0),
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = settings.deezer_url.rstrip("/")
        self.limiter = limiter
        self.session = session or requests.Session()
        self.session.headers.update({"User-Agent": f"previewvec/{__version__}",
                                     "Accept": "application/json"})
        self.cache = cache
        # Over quota, Deezer asks for a few seconds (its window is 5 s).
        self.backoff = backoff or Backoff(base_s=1.0, cap_s=30.0)
        self.stats = {"requests": 0, "retries": 0, "throttled": 0, "cache_hits": 0}
        self._json_get = JsonGet(
            self.session, limiter, self.backoff, max_retries + 1, timeout, sleep, self.stats,
            label="Deezer", throttled=_throttled, check=_check)

    @property
    def calls(self) -> int:
        """HTTP requests actually sent (retries included; cache hits excluded)."""
        return self.stats["requests"]

    def _get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The answer, or None for Deezer's "no data" (code 800)."""
        url = f"{self.base_url}/{path}" + (f"?{urlencode(params)}" if params else "")
        data = self.cache.get(url) if self.cache is not None else None
        if data is not None:
            self.stats["cache_hits"] += 1
        else:
            data = self._json_get(path, url)
            if self.cache is not None:
                self.cache.set(url, data)
        return None if error_code(data) == NO_DATA_CODE else data

    def track_by_isrc(self, isrc: str) -> dict[str, Any] | None:
        """``/track/isrc:<ISRC>``: one track object, or None when Deezer has none."""
        return self._get(f"track/isrc:{isrc}")

    def track(self, track_id: int | str) -> dict[str, Any] | None:
        """``/track/<id>``: the track with a freshly signed preview URL."""
        return self._get(f"track/{track_id}")

    def search(self, kind: str, query: str, limit: int = 10) -> list[dict[str, Any]]:
        """``/search/album`` or ``/search/track`` with Deezer's advanced syntax
        (``artist:"…" album:"…"``): the result objects (``data``)."""
        if kind not in ("album", "track"):
            raise ValueError("kind must be 'album' or 'track'")
        data = self._get(f"search/{kind}", {"q": query, "limit": limit}) or {}
        return [row for row in data.get("data") or [] if isinstance(row, dict)]

    def album_tracks(self, album_id: int | str) -> list[dict[str, Any]]:
        """``/album/<id>/tracks``: the album's tracks with ISRCs and positions.

        Deezer pages lists (``data``, ``total``, ``next``): a page shorter than the album
        (the server may cap ``limit``) is followed by the next, from ``index`` = rows
        read so far, while ``next`` is given and a page brings tracks not seen before."""
        path = f"album/{album_id}/tracks"
        tracks: list[dict[str, Any]] = []
        seen: set[Any] = set()
        params: dict[str, Any] = {"limit": MAX_TRACKS_PAGE}
        index = 0
        for _ in range(MAX_TRACK_PAGES):
            listing = self._get(path, params) or {}
            rows = listing.get("data")
            fresh = [t for t in rows if isinstance(t, dict) and (
                t.get("id") is None or t.get("id") not in seen)] if isinstance(
                rows, list) else []
            seen.update(t.get("id") for t in fresh)
            tracks += fresh
            if not fresh or not listing.get("next"):
                break
            index += len(rows)  # type: ignore[arg-type]  # a list: fresh is not empty
            params = {"limit": MAX_TRACKS_PAGE, "index": index}
        return tracks

    def album_by_upc(self, upc: str) -> DeezerAlbum | None:
        """The album with this barcode and its tracks (two calls), or None.

        A barcode with leading zeros ("0602498612345", a 13-digit EAN of a 12-digit UPC)
        is asked once more without them when Deezer knows no album under it: Deezer has
        been reported to find such albums only under the shortened number (the Harmony
        project's Deezer provider shortens every barcode). One more call, on misses only."""
        album = self._get(f"album/upc:{upc}")
        shortened = upc.lstrip("0")
        if (album is None or not album.get("id")) and shortened and shortened != upc:
            album = self._get(f"album/upc:{shortened}")
        if album is None or not album.get("id"):
            return None
        return DeezerAlbum(album, self.album_tracks(album["id"]))
