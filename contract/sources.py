"""What stages share about each preview source (pure data: no I/O).

A *source* is a store whose API gives preview URLs for recordings: ``itunes`` (Apple's
iTunes Search API) and ``deezer`` (Deezer's public API). Producers resolve through them
(``producers/sources.py``, one client module per source); workers fetch from their CDNs
and, for a source whose preview URLs expire, ask the source once for a fresh URL
(``workers/refresh.py``). Both read this table, so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Which rule matched a store track to a MusicBrainz recording, strongest first.
MATCH_RULES: tuple[str, ...] = ("isrc", "upc+position", "search+fuzzy")


@dataclass(frozen=True)
class SourceSpec:
    name: str
    # Preview CDN hosts (a host matches exactly or as a subdomain: see contract/hosts.py).
    cdn_hosts: tuple[str, ...]
    # Link back to the track on the store, from its track id (attribution).
    link_template: str
    # Preview URLs carry an expiring token: a 403/410 from the CDN means "ask again".
    previews_expire: bool = False
    # API path giving one track (with a fresh preview URL) by its id, if the source has one,
    # and the JSON field holding that URL.
    track_path: str | None = None
    preview_field: str = "preview"
    # A JSON field that is false when the track does not play in the caller's region: its
    # preview URL is then no preview (Deezer's ``readable``).
    playable_field: str | None = None


SOURCES: dict[str, SourceSpec] = {
    "itunes": SourceSpec(
        "itunes",
        ("audio-ssl.itunes.apple.com", "audio.itunes.apple.com", "is1-ssl.mzstatic.com",
         "mzstatic.com"),
        "https://music.apple.com/us/song/{id}"),
    "deezer": SourceSpec(
        "deezer",
        # cdns-preview-<hex>.dzcdn.net and cdnt-preview.dzcdn.net; the suffix covers both.
        ("cdns-preview-0.dzcdn.net", "cdnt-preview.dzcdn.net", "dzcdn.net"),
        "https://www.deezer.com/track/{id}", previews_expire=True, track_path="track/{id}",
        playable_field="readable"),
}
# Hosts of previews that arrive in catalogs (``enqueue``) rather than from a source.
CATALOG_ONLY_HOSTS: tuple[str, ...] = ("p.scdn.co",)


def check_sources(names: Iterable[str]) -> tuple[str, ...]:
    """The names, validated (known, no repeats); raises ``ValueError``."""
    out: list[str] = []
    for name in names:
        if name not in SOURCES:
            raise ValueError(f"unknown source {name!r} (known: {', '.join(SOURCES)})")
        if name in out:
            raise ValueError(f"source {name!r} listed twice")
        out.append(name)
    if not out:
        raise ValueError("at least one source is needed")
    return tuple(out)


def audio_hosts(sources: Iterable[str]) -> tuple[str, ...]:
    """The default fetch allow-list: the CDNs of the enabled sources, plus catalog-only
    hosts."""
    hosts: list[str] = []
    for name in sources:
        hosts += [h for h in SOURCES[name].cdn_hosts if h not in hosts]
    return (*hosts, *CATALOG_ONLY_HOSTS)


def link_back(source: str, track_id: str) -> str | None:
    spec = SOURCES.get(source)
    return spec.link_template.format(id=track_id) if spec else None
