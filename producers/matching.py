"""Matching MusicBrainz recordings to store tracks (pure: no I/O).

Normalisation (:func:`normalize`): NFKD + strip combining marks ("Zoé" → "zoe"),
case-folding, "&"/"+" → "and", apostrophes dropped ("Don't" → "dont"), other punctuation
→ space, whitespace collapsed; letters and digits of every script are kept ("Кино" →
"кино", "東京事変" stays). Artists also lose a leading "the".

Titles (:func:`parse_title`) are split into a core, *version tags* and featured artists:

* "feat." / "ft." / "featuring" / "(with X)" credits move out of the title into the
  artist list (the main artist is compared; featured artists only help).
* Bracketed or dashed suffixes are classified. **Ignorable** ones are dropped:
  remaster(ed), mono, stereo, deluxe, bonus track, album/single/original version,
  explicit/clean, edition, years ("(Remastered 2011)", "- 2011 Remaster", " - Single").
* **Version** suffixes make a *different recording*: live (and unplugged), acoustic,
  remix (and "... Mix" unless "mono/stereo/original/album mix"), instrumental, demo,
  edit ("Radio Edit"), karaoke, a cappella. MusicBrainz marks live recordings in the
  recording's disambiguation ("live, 1977-05-08: ..."), which is read the same way, and a
  store album whose name says "Live"/"Unplugged" tags all its tracks live. Different
  version tags multiply the score by :data:`VERSION_PENALTY` (never a confident match).
* Any other bracketed text ("(Reprise)", "(Part 2)") stays in the title.

Scoring (:func:`match_score`), each component in 0..1:

* title: fuzzy-token Dice (tokens match when their sequence ratio ≥ 0.85) averaged with
  the character sequence ratio (best of as-is and token-sorted);
* artist: best of full credit vs full credit, main artist vs main artist, 0.95 when each
  side's main artist is credited on the other ("A & B" vs "B feat. A"), and 0.7 × any
  credited artist vs any (a shared *featured* artist alone is weak evidence);
* duration: |Δ| ≤ 3 s → 1, decaying linearly to 0 at 15 s; beyond 15 s the whole score is
  also multiplied by 0.85 (a 9-minute extended mix is not the 4-minute single); unknown
  on either side → left out of the weighted mean (neutral);
* track number (album context only): disc/track agree → 1, disagree → 0.

Weighted mean (title 0.40, artist 0.35, duration 0.25, track 0.10), then gates: a title
below 0.7 scales the score by title/0.7, an artist below 0.9 by (artist/0.9)² (artist
names that are really the same are equal after normalisation; "Zoe Vargas Trio" is not
"Zoé Varga"), and a version mismatch applies the penalty. ``reason`` lists the evidence:
``title=1.00 artist=1.00 duration Δ1.2s track 3/3``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

W_TITLE, W_ARTIST, W_DURATION, W_TRACK = 0.40, 0.35, 0.25, 0.10
GATE = 0.7  # title below this scales the score down linearly
ARTIST_GATE = 0.9  # artist below this scales the score by (artist / 0.9)²
VERSION_PENALTY = 0.45
LONG_DURATION_PENALTY = 0.85
DURATION_FULL_S = 3.0
DURATION_ZERO_S = 15.0
TOKEN_FUZZ = 0.85

VERSION_WORDS: dict[str, str] = {
    "live": "live", "unplugged": "live", "concert": "live",
    "acoustic": "acoustic",
    "remix": "remix", "rmx": "remix", "remixed": "remix", "dub": "remix",
    "instrumental": "instrumental", "karaoke": "karaoke",
    "demo": "demo", "rehearsal": "demo", "outtake": "demo",
    "edit": "edit", "acapella": "acapella",
}
_MIX_NEUTRAL = {"mono", "stereo", "original", "album", "single"}
IGNORABLE_WORDS = frozenset({
    "remaster", "remastered", "remasters", "remastering", "mastered", "master", "digital",
    "digitally", "mono", "stereo", "deluxe", "bonus", "track", "tracks", "edition",
    "version", "album", "single", "ep", "lp", "original", "explicit", "clean", "expanded",
    "anniversary", "reissue", "special", "legacy", "collectors", "collector", "super",
    "th", "st", "nd", "rd", "the", "of", "and", "from", "for", "itunes", "hd", "bit",
    "re", "newly", "mix", "mixed", "year",
})
_FEAT_WORDS = ("feat", "ft", "featuring", "with")

_BRACKET = re.compile(r"[(\[]([^()\[\]]*)[)\]]")
_DASH_SUFFIX = re.compile(r"\s[-–—]\s")
_INLINE_FEAT = re.compile(r"\s(?:feat\.?|ft\.|featuring)\s", re.IGNORECASE)
_ARTIST_SPLIT = re.compile(
    r"\s*(?:,|&|\+|\band\b|\bfeat\b\.?|\bft\b\.?|\bfeaturing\b|\bwith\b|\bvs\b\.?)\s*",
    re.IGNORECASE)
_APOSTROPHES = re.compile(r"['’`´]")
_SPACES = re.compile(r"\s+")
# Word characters: letters and digits of every script, and spacing marks (Devanagari and
# other Indic vowel signs sit inside words). Keeping only [a-z0-9] would normalise a
# Japanese or Russian title to "", which never matches anything.
_WORD_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nd", "Nl", "No", "Mc"})


def _gated(score: float, title: float, artist: float) -> float:
    """``score`` pulled down when the title or the artist agrees too little: a weak title
    scales it linearly below ``GATE``, a weak artist quadratically below ``ARTIST_GATE``."""
    if title < GATE:
        score *= title / GATE
    if artist < ARTIST_GATE:
        score *= (artist / ARTIST_GATE) ** 2
    return score


def strip_accents(text: str) -> str:
    """NFKD, then drop non-spacing and enclosing marks (accents, the grapheme joiner)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if unicodedata.category(ch) not in ("Mn", "Me"))


def _words_only(text: str) -> str:
    kept = "".join(ch if unicodedata.category(ch) in _WORD_CATEGORIES else " " for ch in text)
    return _SPACES.sub(" ", kept).strip()


def normalize(text: str | None) -> str:
    """Comparable form: no accents, case-folded, "&" → "and", punctuation → spaces."""
    if not text:
        return ""
    text = strip_accents(text).casefold()
    text = text.replace("ß", "ss").replace("ø", "o").replace("æ", "ae").replace("œ", "oe")
    text = text.replace("ł", "l").replace("đ", "d")
    text = re.sub(r"\s*[&+]\s*", " and ", text)
    text = _APOSTROPHES.sub("", text)
    return _words_only(text)


def normalize_artist(text: str | None) -> str:
    norm = normalize(text)
    return norm[4:] if norm.startswith("the ") else norm


def split_artists(text: str | None) -> list[str]:
    """"A feat. B & C" → ["a", "b", "c"] (normalised, main artist first)."""
    if not text:
        return []
    parts = _ARTIST_SPLIT.split(strip_accents(text).casefold())
    out: list[str] = []
    for part in parts:
        norm = normalize_artist(part)
        if norm and norm not in out:
            out.append(norm)
    return out


def version_tags(text: str | None) -> frozenset[str]:
    """Version tags named anywhere in ``text`` (a suffix, a disambiguation comment)."""
    words = normalize(text).split()
    if not words:
        return frozenset()
    tags = {VERSION_WORDS[w] for w in words if w in VERSION_WORDS}
    if {"cappella", "capella"} & set(words):
        tags.add("acapella")
    if {"mix", "mixed"} & set(words) and not (_MIX_NEUTRAL & set(words)):
        tags.add("remix")
    if "extended" in words:
        tags.add("remix")
    return frozenset(tags)


def _ignorable(words: list[str]) -> bool:
    return all(w in IGNORABLE_WORDS or w.isdigit() for w in words)


@dataclass(frozen=True)
class ParsedTitle:
    core: str  # normalised title without ignorable/version suffixes and credits
    tags: frozenset[str]  # version tags ("live", "remix", ...)
    featured: tuple[str, ...]  # normalised featured artist names


def _classify(segment: str, tags: set[str], featured: list[str]) -> bool:
    """True when the segment is consumed (credit, version tag or ignorable)."""
    words = normalize(segment).split()
    if not words:
        return True
    if words[0] in _FEAT_WORDS:
        featured.extend(split_artists(" ".join(segment.split()[1:])))
        return True
    found = version_tags(segment)
    if found:
        tags.update(found)
        return True
    return _ignorable(words)


def parse_title(title: str | None) -> ParsedTitle:
    text = (title or "").strip()
    tags: set[str] = set()
    featured: list[str] = []

    def _bracket(m: re.Match[str]) -> str:
        if m.start() == 0:  # "(I Can't Get No) Satisfaction": part of the title
            return m.group(0)
        return " " if _classify(m.group(1), tags, featured) else f" {m.group(1)} "

    text = _BRACKET.sub(_bracket, text)
    # Dashed suffixes: "Song - 2011 Remaster", "Song - Live at Wembley".
    parts = _DASH_SUFFIX.split(text)
    kept = [parts[0]]
    for part in parts[1:]:
        if not _classify(part, tags, featured):
            kept.append(part)
    text = " ".join(kept)
    inline = _INLINE_FEAT.split(text, maxsplit=1)
    if len(inline) == 2 and inline[0].strip():
        text = inline[0]
        featured.extend(split_artists(inline[1]))
    return ParsedTitle(normalize(text), frozenset(tags), tuple(dict.fromkeys(featured)))


def _fuzzy_dice(ta: list[str], tb: list[str]) -> float:
    if not ta or not tb:
        return 0.0
    remaining = list(tb)
    hits = 0
    for tok in ta:
        if tok in remaining:
            remaining.remove(tok)
            hits += 1
            continue
        best, best_i = 0.0, -1
        for i, other in enumerate(remaining):
            r = SequenceMatcher(None, tok, other).ratio()
            if r > best:
                best, best_i = r, i
        if best >= TOKEN_FUZZ:
            remaining.pop(best_i)
            hits += 1
    return 2 * hits / (len(ta) + len(tb))


def similarity(a: str, b: str) -> float:
    """0..1 similarity of two *normalised* strings (token-based + sequence ratio)."""
    if not a or not b:
        return 0.0
    if a == b:
        return 1.0
    ta, tb = a.split(), b.split()
    seq = SequenceMatcher(None, a, b).ratio()
    seq_sorted = SequenceMatcher(None, " ".join(sorted(ta)), " ".join(sorted(tb))).ratio()
    return 0.5 * _fuzzy_dice(ta, tb) + 0.5 * max(seq, seq_sorted)


def duration_score(a_ms: int | None, b_ms: int | None) -> float | None:
    if not a_ms or not b_ms:
        return None
    delta = abs(a_ms - b_ms) / 1000
    if delta <= DURATION_FULL_S:
        return 1.0
    if delta >= DURATION_ZERO_S:
        return 0.0
    return 1.0 - (delta - DURATION_FULL_S) / (DURATION_ZERO_S - DURATION_FULL_S)


@dataclass(frozen=True)
class Item:
    """One side of a comparison: a MusicBrainz recording/track or a store track."""

    title: str
    artist: str = ""  # the credit as printed ("A feat. B")
    artists: tuple[str, ...] = ()  # further names (canonical names, other credits)
    duration_ms: int | None = None
    disc: int | None = None
    track: int | None = None
    album: str | None = None
    disambiguation: str | None = None  # MusicBrainz comment, e.g. "live, 1977-05-08"


@dataclass(frozen=True)
class Match:
    score: float  # 0..1
    reason: str


def _album_live(album: str | None) -> frozenset[str]:
    words = set(normalize(album).split())
    return frozenset({"live"}) if words & {"live", "unplugged"} else frozenset()


def _artist_sets(item: Item, featured: Iterable[str]) -> tuple[str, str, list[str]]:
    parts = split_artists(item.artist)
    for name in item.artists:
        for p in split_artists(name):
            if p not in parts:
                parts.append(p)
    for f in featured:
        if f not in parts:
            parts.append(f)
    full = normalize_artist(_INLINE_FEAT.split(item.artist or "", maxsplit=1)[0])
    main = parts[0] if parts else ""
    return full, main, parts


def artist_similarity(rec: Item, rec_feat: Iterable[str], trk: Item,
                      trk_feat: Iterable[str]) -> float:
    r_full, r_main, r_parts = _artist_sets(rec, rec_feat)
    t_full, t_main, t_parts = _artist_sets(trk, trk_feat)
    best = max(similarity(r_full, t_full), similarity(r_main, t_main))
    if best >= 1.0:
        return best

    def _found(name: str, parts: list[str]) -> float:
        return max((similarity(name, p) for p in parts), default=0.0)

    # Both main artists credited on the other side ("A & B" vs "B feat. A"): nearly sure.
    both = min(_found(r_main, t_parts), _found(t_main, r_parts))
    best = max(best, 0.95 * both)
    # Only a secondary (e.g. featured) artist in common: weak evidence.
    for a in r_parts:
        best = max(best, 0.7 * _found(a, t_parts))
    return best


def _fmt_tags(tags: frozenset[str]) -> str:
    return "+".join(sorted(tags)) or "studio"


def match_score(recording: Item, track: Item, *, album: bool = False) -> Match:
    """How confidently ``track`` (store) is ``recording`` (MusicBrainz), 0..1 + evidence.

    ``album=True`` when comparing within one release/collection: disc/track numbers then
    count, and a "Live" album name tags its tracks on both sides.
    """
    rp, tp = parse_title(recording.title), parse_title(track.title)
    r_tags = rp.tags | version_tags(recording.disambiguation)
    t_tags = tp.tags
    t_tags |= _album_live(track.album)
    if album:
        r_tags |= _album_live(recording.album)
    title = similarity(rp.core, tp.core)
    artist = artist_similarity(recording, rp.featured, track, tp.featured)
    dur = duration_score(recording.duration_ms, track.duration_ms)

    total, weight = W_TITLE * title + W_ARTIST * artist, W_TITLE + W_ARTIST
    reason = [f"title={title:.2f}", f"artist={artist:.2f}"]
    if dur is None:
        reason.append("duration ?")
    else:
        total += W_DURATION * dur
        weight += W_DURATION
        delta = abs(recording.duration_ms - track.duration_ms) / 1000  # type: ignore[operator]
        reason.append(f"duration Δ{delta:.1f}s")
    if album and recording.track and track.track:
        same_disc = (recording.disc or 1) == (track.disc or 1)
        agree = same_disc and recording.track == track.track
        total += W_TRACK * (1.0 if agree else 0.0)
        weight += W_TRACK
        if (recording.disc or 1) != 1 or (track.disc or 1) != 1:
            reason.append(f"track {recording.disc or 1}-{recording.track}/"
                          f"{track.disc or 1}-{track.track}")
        else:
            reason.append(f"track {recording.track}/{track.track}")
    score = _gated(total / weight, title, artist)
    if dur == 0.0:
        score *= LONG_DURATION_PENALTY
    if r_tags != t_tags:
        score *= VERSION_PENALTY
        reason.append(f"version {_fmt_tags(r_tags)}≠{_fmt_tags(t_tags)}")
    elif r_tags:
        reason.append(f"version {_fmt_tags(r_tags)}")
    return Match(round(max(0.0, min(1.0, score)), 4), " ".join(reason))


def album_score(release_title: str, release_artist: str, track_count: int | None,
                collection: dict[str, Any]) -> Match:
    """How confidently an iTunes collection row is the MusicBrainz release."""
    rp = parse_title(release_title)
    cp = parse_title(collection.get("collectionName") or "")
    title = similarity(rp.core, cp.core)
    artist = max(similarity(normalize_artist(release_artist),
                            normalize_artist(collection.get("artistName"))),
                 artist_similarity(Item("", release_artist), (),
                                   Item("", collection.get("artistName") or ""), ()))
    total = 0.5 * title + 0.35 * artist
    weight = 0.85
    reason = [f"title={title:.2f}", f"artist={artist:.2f}"]
    store_count = collection.get("trackCount")
    if track_count and isinstance(store_count, int) and store_count > 0:
        diff = abs(store_count - track_count)
        count = 1.0 if diff == 0 else max(0.0, 1 - diff / max(4, track_count)) * 0.8
        total += 0.15 * count
        weight += 0.15
        reason.append(f"tracks {track_count}/{store_count}")
    score = _gated(total / weight, title, artist)
    r_tags = rp.tags | _album_live(release_title)
    c_tags = cp.tags | _album_live(collection.get("collectionName"))
    if r_tags != c_tags:
        score *= VERSION_PENALTY
        reason.append(f"version {_fmt_tags(r_tags)}≠{_fmt_tags(c_tags)}")
    return Match(round(max(0.0, min(1.0, score)), 4), " ".join(reason))


# -- conversions from upstream JSON (pure) ----------------------------------------------
def _credit_string(credit: list[dict[str, Any]] | None) -> str:
    return "".join(f"{p.get('name') or ''}{p.get('joinphrase') or ''}"
                   for p in credit or []).strip()


def _credit_names(credit: list[dict[str, Any]] | None) -> tuple[str, ...]:
    names: list[str] = []
    for part in credit or []:
        for name in (part.get("name"), (part.get("artist") or {}).get("name")):
            if name and name not in names:
                names.append(name)
    return tuple(names)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.isdigit():
        return int(value) or None
    return None


def item_from_mb(recording: dict[str, Any], *, track: dict[str, Any] | None = None,
                 disc: int | None = None, album: str | None = None,
                 release_credit: list[dict[str, Any]] | None = None) -> Item:
    """A MusicBrainz recording (optionally as a track of a medium) as an :class:`Item`.

    Track title/length/credit win over the recording's (they are what the release prints);
    ``length: null`` and missing fields become ``None``."""
    track = track or {}
    credit = (track.get("artist-credit") or recording.get("artist-credit")
              or release_credit or [])
    names = _credit_names(credit) + _credit_names(recording.get("artist-credit"))
    return Item(
        title=track.get("title") or recording.get("title") or "",
        artist=_credit_string(credit),
        artists=tuple(dict.fromkeys(names)),
        duration_ms=_int(track.get("length")) or _int(recording.get("length")),
        disc=disc,
        track=_int(track.get("position")) or _int(track.get("number")),
        album=album,
        disambiguation=recording.get("disambiguation") or None,
    )


def item_from_itunes(row: dict[str, Any]) -> Item:
    return Item(
        title=row.get("trackName") or "",
        artist=row.get("artistName") or "",
        duration_ms=_int(row.get("trackTimeMillis")),
        disc=_int(row.get("discNumber")),
        track=_int(row.get("trackNumber")),
        album=row.get("collectionName"),
    )


def assign(scores: list[tuple[int, int, Match]], threshold: float) -> dict[int, tuple[int, Match]]:
    """Greedy one-to-one assignment of (left, right, match) pairs, best score first;
    pairs below ``threshold`` are never assigned."""
    out: dict[int, tuple[int, Match]] = {}
    used: set[int] = set()
    for left, right, m in sorted(scores, key=lambda s: -s[2].score):
        if m.score < threshold:
            break
        if left in out or right in used:
            continue
        out[left] = (right, m)
        used.add(right)
    return out
