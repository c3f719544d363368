"""Matching MusicBrainz recordings to store tracks (pure: no I/O).

Normalisation (:func:`normalize`): NFKD + strip combining marks ("Zoé" → "zoe"),
case-folding, letters NFKD keeps whole spelt out ("ß" → "ss", "ø" → "o", "æ" → "ae",
"ł" → "l", "ð" → "d", "þ" → "th"), "&"/"+" → "and", apostrophes dropped ("Don't" →
"dont"), other punctuation → space, whitespace collapsed; letters and digits of every
script are kept ("Кино" → "кино", "東京事変" stays); a name of symbols only keeps them
("!!!"). Artists also lose a leading "the", read "!"/"$" inside a word as letters
("P!nk", "Ke$ha"), and names that differ only in spacing are equal ("R.E.M." / "REM",
"AC/DC" / "ACDC").

Titles (:func:`parse_title`) are split into a core, *version tags* and featured artists:

* "feat." / "ft." / "featuring" / "(with X)" credits move out of the title into the
  artist list (the main artist is compared; featured artists only help).
* Bracketed or dashed suffixes are classified. **Ignorable** ones are dropped:
  remaster(ed), mono, stereo, deluxe, bonus track, album/single/original version,
  explicit/clean, edition, years ("(Remastered 2011)", "- 2011 Remaster", " - Single").
* **Version** suffixes make a *different recording*: live (and unplugged, "En Vivo",
  "Ao Vivo", "En Directo"), acoustic, remix (and "... Mix" unless "mono/stereo/original/
  album mix"; slowed, sped-up, nightcore), instrumental, demo, edit ("Radio Edit"),
  karaoke, a cappella, re-recorded, piano/orchestral/symphonic arrangements, reprise,
  medley, tribute, and any other named version ("(Taylor's Version)", "(Spanish
  Version)": its words are the tag). MusicBrainz marks versions in the recording's
  disambiguation ("live, 1977-05-08: ...", "English version"), which is read as a
  suffix (:func:`parse_disambiguation`), and a store album whose name says it is live
  ("… (Live)", "Live at …", "Unplugged"; not "Learn to Live") tags all its tracks live
  (:func:`_album_live`), unless the recording's own release has that name.
  Different version tags multiply the score by :data:`VERSION_PENALTY` (never a
  confident match); so do the same tags whose other words disagree
  (:func:`details_disagree`: the remixer, a concert's venue or date), while one side
  naming them alone costs :data:`DETAIL_PREFERENCE`.
  Brackets are round, square, curly, 【】 or 〔〕 (full-width ones too, by NFKC), nested
  ones read inside out; suffixes also follow " / ".
* Reworkings sold under the song's title are versions too: "(8D Audio)", "(Lofi)",
  "(Techno)", "(Phonk)", "(Jersey Club)", "(Speed Up)", "(Stripped)", "(Cover)".
* A suffix saying where the song comes from ('(From "Frozen")', "(Love Theme from …)")
  or who produced it ("(Prod. by …)") is ignorable; any other bracketed text ("(Part
  2)") stays in the title, and when the other title has none of its words ("(Spotify
  Sessions)" on one side only) the score is multiplied by :data:`LONE_SUFFIX_PENALTY`.
* Titles naming different numbers ("Part I"/"Part II", "No. 40"/"No. 25": each names a
  number the other does not) or different movements ("…: I. Allegro" / "…: III.
  Allegro assai") are different pieces: the title scores 0.

Scoring (:func:`match_score`), each component in 0..1:

* title: fuzzy-token Dice (tokens match when their sequence ratio ≥ 0.85) averaged with
  the character sequence ratio (best of as-is and token-sorted);
* artist: best of the credit before any "feat." vs the other's, 0.95 when every such
  lead artist of each side is credited on the other ("A & B" vs "B feat. A", "A x B";
  "Earth" alone is not "Earth, Wind & Fire": a MusicBrainz credit names its artists
  whole, :attr:`Item.lead`), 0.9 when a credit of two or more artists is all credited
  on the other side, which names more (the composer beside the performers), and 0.7 ×
  any credited artist vs any (a shared *featured* artist alone is weak evidence). A
  MusicBrainz credit whose names have no Latin letters is compared a second time with
  each such name replaced by its sort name's Latin spelling, as its lead credit
  (宇多田ヒカル as "Hikaru Utada", Кино as "Kino"), the better counting;
* duration: |Δ| ≤ 3 s → 1, decaying linearly to 0 at 15 s; beyond 15 s the whole score is
  also multiplied by 0.85 (a 9-minute extended mix is not the 4-minute single); unknown
  on either side → left out of the weighted mean (neutral);
* track number (album context only): disc/track agree → 1, disagree → 0.

Weighted mean (title 0.40, artist 0.35, duration 0.25, track 0.10), then gates (and
:data:`EDITED_PREFERENCE` for a store's clean copy of an explicit recording): a title
below 0.7 scales the score by title/0.7, an artist below 0.9 by (artist/0.9)² (artist
names that are really the same are equal after normalisation; "Zoe Vargas Trio" is not
"Zoé Varga"), a version mismatch applies the penalty, and so, at 0.6, does a store
title featuring an artist the recording credits nowhere. ``reason`` lists the evidence:
``title=1.00 artist=1.00 duration Δ1.2s track 3/3``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, replace
from difflib import SequenceMatcher
from itertools import pairwise
from typing import Any

W_TITLE, W_ARTIST, W_DURATION, W_TRACK = 0.40, 0.35, 0.25, 0.10
GATE = 0.7  # title below this scales the score down linearly
ARTIST_GATE = 0.9  # artist below this scales the score by (artist / 0.9)²
VERSION_PENALTY = 0.45
LONG_DURATION_PENALTY = 0.85
# A store often lists an explicit recording twice, as is and edited (words muted): the
# copy whose flag does not fit the recording scores this much less, so the other wins a
# tie and an edited copy still matches where it is the only one.
EDITED_PREFERENCE = 0.97
# A store title featuring an artist whom the recording credits nowhere ("bad guy (with
# Justin Bieber)" for "bad guy"): another recording, as MusicBrainz credits a featured
# artist on the recording that has one. Below the threshold, like a version tag.
UNCREDITED_FEATURE_PENALTY = 0.6
# A bracketed or dashed suffix on one side only that is neither ignorable nor a known
# version ("(Stripped)", "(Spotify Sessions)"): a store names a version so, and the fuzzy
# title score of a long title barely notices a short suffix. Below the threshold too.
LONE_SUFFIX_PENALTY = 0.6
# A version suffix naming which one on one side only ("(Remix)" for "(Alesso Remix)"):
# possibly the same; where the store has both, the one naming the same wins.
DETAIL_PREFERENCE = 0.97
DURATION_FULL_S = 3.0
DURATION_ZERO_S = 15.0
TOKEN_FUZZ = 0.85

VERSION_WORDS: dict[str, str] = {
    "live": "live", "unplugged": "live", "concert": "live",
    # Spanish and Portuguese live takes ("En Vivo", "Ao Vivo", "En Directo").
    "vivo": "live", "directo": "live", "concierto": "live",
    "acoustic": "acoustic", "acustico": "acoustic", "acustica": "acoustic",
    "acoustique": "acoustic", "akustisch": "acoustic",
    "remix": "remix", "rmx": "remix", "remixed": "remix", "dub": "remix",
    # Sped-up and slowed edits of a recording are other audio under the same title.
    "slowed": "remix", "sped": "remix", "nightcore": "remix", "reverb": "remix",
    "instrumental": "instrumental", "karaoke": "karaoke",
    "demo": "demo", "rehearsal": "demo", "outtake": "demo",
    "edit": "edit", "acapella": "acapella",
    "rerecorded": "rerecorded", "rerecording": "rerecorded",
    "piano": "arrangement", "orchestral": "arrangement", "symphonic": "arrangement",
    # "Sgt. Pepper's … (Reprise)" is another track than "Sgt. Pepper's …"; a medley or a
    # tribute under a song's title is not the song.
    "reprise": "reprise", "medley": "medley", "tribute": "tribute",
    # Club and DJ reworkings that do not say "remix"; alternate takes of a session.
    "rework": "remix", "bootleg": "remix", "refix": "remix", "mashup": "remix", "vip": "remix",
    "alternate": "alternate", "alt": "alternate",
    # Reworkings that stores sell under the song's title: genre and effect edits ("(8D
    # Audio)", "(Lofi)", "(Techno)", "(Phonk)", "(Speed Up)"), stripped-down takes, covers.
    "8d": "remix", "lofi": "remix", "techno": "remix", "hardstyle": "remix",
    "phonk": "remix", "speed": "remix", "stripped": "stripped", "cover": "cover",
}
_MIX_NEUTRAL = {"mono", "stereo", "original", "album", "single"}
IGNORABLE_WORDS = frozenset({
    "remaster", "remastered", "remasters", "remastering", "mastered", "master", "digital",
    "digitally", "mono", "stereo", "deluxe", "bonus", "track", "tracks", "edition",
    "version", "album", "single", "ep", "lp", "original", "explicit", "clean", "expanded",
    "anniversary", "reissue", "special", "legacy", "collectors", "collector", "super",
    "th", "st", "nd", "rd", "the", "of", "and", "from", "for", "itunes", "hd", "bit",
    "re", "newly", "mix", "mixed", "year",
    # "(Dirty)", "(Dirty Version)": the explicit copy, as "(Explicit)".
    "dirty",
    # "(Main Version)", "(Full Version)", "(Vocal Version)": the song as released.
    "main", "full", "vocal",
    # "(Original Motion Picture Soundtrack)", "(Soundtrack Version)", "(OST)": where it
    # comes from, as '(From "Frozen")'.
    "soundtrack", "motion", "picture", "ost",
})
# "(Taylor's Version)", "(Spanish Version)", "(Radio Version)": a bracket naming a
# version by anything but ignorable words is another recording (a re-recording, a
# language version, an edit). Its words name the tag, so the same suffix on both sides
# agrees.
_VERSION_NOUNS = frozenset({"version", "versao", "versione", "ver"})
_FEAT_WORDS = ("feat", "ft", "featuring", "with")

# Round, square, curly, lenticular (【】) and tortoise-shell (〔〕) brackets; full-width
# ones become ASCII under NFKC first. Innermost first: parse_title repeats until stable.
_BRACKET = re.compile(r"[(\[{【〔]([^()\[\]{}【】〔〕]*)[)\]}】〕]")
_DASH_SUFFIX = re.compile(r"\s(?:[-–—]|/)\s")
_INLINE_FEAT = re.compile(r"\s(?:feat\.?|ft\.|featuring)\s", re.IGNORECASE)
_ARTIST_SPLIT = re.compile(
    r"\s*(?:,|&|\+|\band\b|\bfeat\b\.?|\bft\b\.?|\bfeaturing\b|\bwith\b|\bvs\b\.?)\s*"
    r"|\s+[x×]\s+",  # "Alpha x Beta", a collaboration credit
    re.IGNORECASE)
_FEAT_JOIN = re.compile(r"\b(?:feat|ft|featuring|with)\b", re.IGNORECASE)
_APOSTROPHES = re.compile(r"['’`´]")
# A "!" or "$" inside a word of an artist's name stands for a letter ("P!nk", "Ke$ha",
# "A$AP Rocky"); the other side may spell the letter out.
_BANG_AS_I = re.compile(r"(?<=[^\W\d_])!(?=[^\W\d_])")
_DOLLAR_AS_S = re.compile(r"\$(?=[^\W\d_])|(?<=[^\W\d_])\$")
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


def _folded(text: str) -> str:
    text = strip_accents(text).casefold()
    text = text.replace("ß", "ss").replace("ø", "o").replace("æ", "ae").replace("œ", "oe")
    # Letters NFKD leaves whole, folded as stores abroad write them ("Daði" → "Dadi").
    text = text.replace("ł", "l").replace("đ", "d").replace("ð", "d").replace("þ", "th")
    text = re.sub(r"\s*[&+]\s*", " and ", text)
    return _APOSTROPHES.sub("", text)


def _words(text: str | None) -> list[str]:
    """The words of ``text`` as :func:`normalize` compares them (none for symbols only)."""
    return _words_only(_folded(text)).split() if text else []


def normalize(text: str | None) -> str:
    """Comparable form: no accents, case-folded, "&" → "and", punctuation → spaces.

    A name made of symbols only ("!!!", "†††") keeps them (whitespace collapsed): it
    would otherwise be "", which never matches, not even itself."""
    if not text:
        return ""
    folded = _folded(text)
    return _words_only(folded) or _symbols_only(folded)


def _symbols_only(text: str) -> str:
    kept = "".join(ch if unicodedata.category(ch)[0] in "PS" else " " for ch in text)
    return _SPACES.sub(" ", kept).strip()


def normalize_artist(text: str | None) -> str:
    """:func:`normalize` for an artist: letters written as "!" or "$" read as letters,
    and no leading "the"."""
    if text:
        text = _DOLLAR_AS_S.sub("s", _BANG_AS_I.sub("i", text))
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
    words = _words(text)
    if not words:
        return frozenset()
    tags = {VERSION_WORDS[w] for w in words if w in VERSION_WORDS}
    if {"cappella", "capella"} & set(words):
        tags.add("acapella")
    if {"mix", "mixed"} & set(words) and not (_MIX_NEUTRAL & set(words)):
        tags.add("remix")
    if "extended" in words:
        tags.add("remix")
    joined = " ".join(words)
    if re.search(r"\bre record(ed|ing)\b", joined):  # "Re-Recorded"
        tags.add("rerecorded")
    # Karaoke backings under other names: "Off Vocal" (Japanese releases), "Backing
    # Track", "Minus One"; a broadcast cut: "TV Size", "TV Edit".
    if re.search(r"\b(off vocal|backing track|minus one)\b", joined):
        tags.add("instrumental")
    if re.search(r"\btv (size|edit|version|mix)\b", joined):
        tags.add("edit")
    if re.search(r"\bradio (version|cut)\b", joined):  # a "Radio Edit" by another name
        tags.add("edit")
    if re.search(r"\btake \d+\b", joined):  # "(Take 2)": another take of the session
        tags.add("alternate")
    if re.search(r"\b(lo fi|jersey club)\b", joined):
        tags.add("remix")
    return frozenset(tags)


_ORDINAL = re.compile(r"\d+(?:st|nd|rd|th)")  # "35th Anniversary Edition"


def _bonus_note(words: list[str]) -> bool:
    """A regional edition's note on where the track sits ("(Japanese Bonus Track)",
    "(UK Bonus Track)", "(Hidden Track)"): the same recording, whatever the region."""
    return words[-2:] in (["bonus", "track"], ["hidden", "track"]) or words == ["bonus"]


def _ignorable(words: list[str]) -> bool:
    return all(w in IGNORABLE_WORDS or w.isdigit() or _ORDINAL.fullmatch(w) for w in words)


@dataclass(frozen=True)
class ParsedTitle:
    core: str  # normalised title without ignorable/version suffixes and credits
    tags: frozenset[str]  # version tags ("live", "remix", ...)
    featured: tuple[str, ...]  # normalised featured artist names
    # The other words of the version suffixes: who remixed, where and when it was live
    # ("Alesso" of "(Alesso Remix)", "glastonbury 2004" of "(Live at Glastonbury, 2004)").
    details: frozenset[str] = frozenset()
    movement: int | None = None  # "…: III. Allegro assai" → 3
    # Suffixes neither ignorable nor a version, kept in ``core`` ("part 2", "stripped
    # sessions"): normalised, for :func:`lone_suffixes`.
    extras: tuple[str, ...] = ()


# Words of a version suffix that say nothing of which version it is.
_DETAIL_STOP = frozenset({
    "at", "in", "on", "a", "an", "by", "de", "la", "le", "les", "el", "en", "with", "to",
    "mix", "mixed", "extended", "cappella", "capella", "off", "backing", "minus", "one",
    "tv", "size", "take", "record", "recorded", "recording", "cut", "radio",
})


def _details(segment: str) -> set[str]:
    """The words of a version suffix that name which one it is (see ParsedTitle)."""
    return {w for w in _words(segment)
            if w.isdigit() or (w not in VERSION_WORDS and w not in _DETAIL_STOP
                               and not _ignorable([w]))}


def details_disagree(a: frozenset[str], b: frozenset[str]) -> bool:
    """Both sides name which version (a remixer, a venue, a year) and no word agrees:
    "Alesso" and "Nicky Romero" remix, live at "Woodstock 1994" and "Glastonbury 2004".
    Words with digits must be equal; others may differ in spelling ("tiesto"/"tiestos")."""
    if not a or not b:
        return False
    return not any(_same_detail(x, y) for x in a for y in b)


def _same_detail(x: str, y: str) -> bool:
    if x.isdigit() and y.isdigit():  # a year may be written short: "Woodstock '94"
        return x == y or (len(x) == 2 and y.endswith(x)) or (len(y) == 2 and x.endswith(y))
    if any(c.isdigit() for c in x + y):
        return x == y
    return x == y or SequenceMatcher(None, x, y).ratio() >= TOKEN_FUZZ


# A movement of a work, as MusicBrainz and the stores print it: "…: III. Allegro assai",
# "… - 2. Adagio". Its number is what tells the movements of one work apart.
_MOVEMENT = re.compile(r"(?::\s*|\s[-–—]\s*)([IVX]{1,5}|\d{1,2})\.\s+\w")


_SOURCE_NOTE = frozenset({"music", "theme", "love", "main", "title", "end", "song", "songs"})


def _classify(segment: str, tags: set[str], featured: list[str],
              details: set[str] | None = None) -> bool:
    """True when the segment is consumed (credit, version tag or ignorable); a version
    suffix's other words go to ``details``."""
    words = _words(segment)
    if not words:
        return True
    if words[0] in _FEAT_WORDS:
        featured.extend(split_artists(" ".join(segment.split()[1:])))
        return True
    found = version_tags(segment)
    if found:
        tags.update(found)
        if details is not None:
            details.update(_details(segment))
        return True
    # Where the song comes from ('(From "Frozen")', "(Music from the Motion Picture …)",
    # "(Love Theme from …)") or who produced it ("(Prod. by …)"): stores add it to a
    # soundtrack's or a rap single's titles; the recording is the same.
    if (words[0] in ("from", "prod", "produced") or _ignorable(words) or _bonus_note(words)
            or ("from" in words[1:3] and _SOURCE_NOTE.issuperset(words[:words.index("from")]))):
        return True
    if _VERSION_NOUNS & set(words):
        named = [w for w in words if w not in _VERSION_NOUNS and not _ignorable([w])]
        tags.add(" ".join([*named, "version"]))
        return True
    return False


def parse_title(title: str | None) -> ParsedTitle:
    # NFKC first, so full-width brackets and dashes ("（Live）") are the ASCII ones.
    text = unicodedata.normalize("NFKC", title or "").strip()
    tags: set[str] = set()
    featured: list[str] = []
    details: set[str] = set()
    extras: list[str] = []
    movement = _MOVEMENT.search(text)

    def _bracket(m: re.Match[str]) -> str:
        if m.start() == 0:  # "(I Can't Get No) Satisfaction": part of the title
            return m.group(0)
        if _classify(m.group(1), tags, featured, details):
            return " "
        extras.append(m.group(1))
        return f" {m.group(1)} "

    # Nested brackets ("(Live (1993))") are read from the inside out.
    while (unwrapped := _BRACKET.sub(_bracket, text)) != text:
        text = unwrapped
    # Dashed suffixes: "Song - 2011 Remaster", "Song - Live at Wembley".
    parts = _DASH_SUFFIX.split(text)
    kept = [parts[0]]
    for part in parts[1:]:
        if not _classify(part, tags, featured, details):
            kept.append(part)
            extras.append(part)
    text = " ".join(kept)
    inline = _INLINE_FEAT.split(text, maxsplit=1)
    if len(inline) == 2 and inline[0].strip():
        text = inline[0]
        featured.extend(split_artists(inline[1]))
    return ParsedTitle(normalize(text), frozenset(tags), tuple(dict.fromkeys(featured)),
                       frozenset(details), _numeral(movement.group(1)) if movement else None,
                       tuple(x for x in dict.fromkeys(map(normalize, extras)) if x))


def lone_suffixes(parsed: ParsedTitle, other_core: str) -> list[str]:
    """The suffixes of ``parsed`` kept in its title (:attr:`ParsedTitle.extras`) of which
    the other title has no word: "(Stripped)", "(Spotify Sessions)" on one side only. A
    store adds such a suffix to tell a version apart, while "(Part 2)" for "Pt. 2" shares
    its number with the other side."""
    other = set(other_core.split())
    return [x for x in parsed.extras if not set(x.split()) & other]


def _numeral(text: str) -> int:
    """"III" → 3, "2" → 2."""
    if text.isdigit():
        return int(text)
    m = _ROMAN.match(text.lower())
    return 10 * len(m.group(1)) + _ROMAN_VALUES.get(m.group(2), 0) if m else 0


def parse_disambiguation(comment: str | None) -> ParsedTitle:
    """A MusicBrainz disambiguation comment read as a title suffix would be: "live,
    1977-05-08: Winterland", "English version", "radio edit" name versions; anything else
    ("the one from the film") names none."""
    tags: set[str] = set()
    details: set[str] = set()
    if comment and comment.strip():
        _classify(comment, tags, [], details)
    return ParsedTitle("", frozenset(tags), (), frozenset(details))


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
    # The lead artists as whole names, where a structured credit gives them (MusicBrainz:
    # the credited names before a "feat." join phrase). Without it the printed credit is
    # split at "&", ",", " x " and the like, which also splits band names.
    lead: tuple[str, ...] = ()
    # A store's flag for an edited ("clean") copy of an explicit recording: True, False,
    # or None where the store does not say.
    edited: bool | None = None
    # The credit and its lead artists spelt in Latin letters, where a credited name has
    # none and its MusicBrainz sort name does ("Hikaru Utada" for 宇多田ヒカル); empty
    # otherwise. Stores abroad print that spelling, so it is compared as the credit is.
    latin_artist: str = ""
    latin_lead: tuple[str, ...] = ()


@dataclass(frozen=True)
class Match:
    score: float  # 0..1
    reason: str


_LIVE_WORDS = frozenset({"live", "unplugged", "concert"})
# "Live" opening an album name marks a concert recording only when a place or an
# occasion follows ("Live at Leeds", "Live in Tokyo", "Live à l'Olympia"): "Live Through
# This" and "Live While We're Young" are studio records.
_LIVE_PREPOSITIONS = frozenset({
    "at", "in", "from", "on", "a", "au", "aus", "en", "im", "auf", "dal", "da", "del",
})
# A last word "Live" after these is the verb, not a concert: "Learn to Live", "Born to
# Live", "Long Live", "We Live", "You Must Live".
_LIVE_AS_VERB_AFTER = frozenset({
    "to", "long", "i", "we", "you", "they", "he", "she", "will", "shall", "must", "can",
    "could", "would", "should", "may", "might", "dont", "never", "let", "lets",
})


def _album_live(album: str | None, title: str | None = None) -> frozenset[str]:
    """``{"live"}`` when a store album's name says its tracks are concert recordings.

    A live/unplugged suffix always does ("Électrique nuit (Live à l'Olympia)", "Hits -
    Live"). In the name itself: "Unplugged" or "in concert" anywhere, "Live at/in/from …",
    or a last word "Live" that is no verb ("Learn to Live", "Long Live") -- unless the
    track's ``title`` has that word too: a single is named after its song ("Live While
    We're Young - Single")."""
    if not album:
        return frozenset()
    parsed = parse_title(album)
    if "live" in parsed.tags:
        return frozenset({"live"})
    words = parsed.core.split()
    if not _LIVE_WORDS & set(words) or _LIVE_WORDS & set(parse_title(title).core.split()):
        return frozenset()
    last_live = words[-1] == "live" and not _LIVE_AS_VERB_AFTER & set(words[-2:-1])
    live = ("unplugged" in words or "in concert" in parsed.core or last_live
            or any(w == "live" and after in _LIVE_PREPOSITIONS
                   for w, after in pairwise(words)))
    return frozenset({"live"}) if live else frozenset()


def _artist_sets(item: Item, featured: Iterable[str]) -> tuple[str, list[str], list[str]]:
    """The credit before any "feat." (normalised), its artists (the lead) and every
    artist named anywhere (lead, featured, further names)."""
    lead_credit = _INLINE_FEAT.split(item.artist or "", maxsplit=1)[0]
    named = (normalize_artist(name) for name in item.lead)
    lead = list(dict.fromkeys(n for n in named if n)) or split_artists(lead_credit)
    parts = list(lead)
    for name in (item.artist, *item.artists):
        for p in split_artists(name):
            if p not in parts:
                parts.append(p)
    for f in featured:
        if f not in parts:
            parts.append(f)
    return normalize_artist(lead_credit), lead, parts


def _whole_names(item: Item) -> list[str]:
    """The artists a structured credit names whole (none for a store's printed one)."""
    names = (normalize_artist(name) for name in (*item.lead, *item.artists))
    return list(dict.fromkeys(name for name in names if name))


def name_similarity(a: str, b: str) -> float:
    """:func:`similarity` of two normalised artist names, 1 when they differ only in
    spacing: initials and slashes ("R.E.M." / "REM", "AC/DC" / "ACDC", "N.W.A")."""
    if a and a.replace(" ", "") == b.replace(" ", ""):
        return 1.0
    return similarity(a, b)


def _spellings(item: Item) -> tuple[Item, ...]:
    """``item``, and ``item`` with its credit in Latin letters if it has that spelling."""
    if not item.latin_artist:
        return (item,)
    return item, replace(item, artist=item.latin_artist, lead=item.latin_lead)


def artist_similarity(rec: Item, rec_feat: Iterable[str], trk: Item,
                      trk_feat: Iterable[str]) -> float:
    """0..1 agreement of the credits (module docstring); a credit with a Latin spelling
    (:attr:`Item.latin_artist`) is compared in both, the better counting."""
    return max(_artist_similarity(r, rec_feat, t, trk_feat)
               for r in _spellings(rec) for t in _spellings(trk))


def _artist_similarity(rec: Item, rec_feat: Iterable[str], trk: Item,
                       trk_feat: Iterable[str]) -> float:
    r_full, r_lead, r_parts = _artist_sets(rec, rec_feat)
    t_full, t_lead, t_parts = _artist_sets(trk, trk_feat)
    best = name_similarity(r_full, t_full)
    if best >= 1.0:
        return best
    if len(r_lead) >= 2 and len(t_lead) >= 2:
        # Two credits of several artists: a close spelling of the whole credit is no
        # evidence when one artist differs ("Berliner" / "Wiener Philharmoniker &
        # Karajan"); the artists are compared one by one below.
        best = 0.0

    def _found(name: str, parts: list[str]) -> float:
        return max((name_similarity(name, p) for p in parts), default=0.0)

    # Every lead artist of each side credited on the other ("A & B" vs "B feat. A"):
    # nearly sure. All of them, because a credit is split at "&" and "," inside band
    # names too: "Earth" alone is one fragment of "Earth, Wind & Fire", not that band,
    # and "Simon" is not "Simon & Garfunkel".
    if r_lead and t_lead:
        both = min(min(_found(a, t_parts) for a in r_lead),
                   min(_found(a, r_parts) for a in t_lead))
        best = max(best, 0.95 * both)
    # One credit naming two or more artists, each of them credited on the other side,
    # which names more (a composer beside the performers: "Beethoven; Berliner
    # Philharmoniker, Karajan" for "Berliner Philharmoniker & Karajan"). A name split
    # out of a printed credit must be a whole name of the other side ("Earth & Fire" is
    # not two of "Earth, Wind & Fire"); a structured credit's names are whole already.
    for item, lead, other, other_parts in ((rec, r_lead, trk, t_parts),
                                           (trk, t_lead, rec, r_parts)):
        if len(lead) >= 2:
            names = other_parts if item.lead else _whole_names(other)
            best = max(best, 0.9 * min(_found(a, names) for a in lead))
    # Only some artist in common (a featured one, one of a duo): weak evidence.
    for a in r_parts:
        best = max(best, 0.7 * _found(a, t_parts))
    return best


def uncredited_features(rec: Item, rec_feat: Iterable[str],
                        trk_feat: Iterable[str]) -> list[str]:
    """The artists a store title features ("(feat. X)", "(with X)") whom the recording's
    credit and title name nowhere."""
    _, _, credited = _artist_sets(rec, rec_feat)
    return [name for name in trk_feat
            if max((name_similarity(name, c) for c in credited), default=0.0) < TOKEN_FUZZ]


# Words after which a Roman numeral is a number ("Part II", "Vol. IV", "Act III").
_NUMBERED_WORDS = frozenset({
    "part", "pt", "no", "nr", "num", "number", "op", "opus", "vol", "volume", "act",
    "chapter", "ch", "book", "movement", "mvt", "episode", "ep", "scene", "track",
})
_ROMAN = re.compile(r"^(x{0,3})(ix|iv|v?i{0,3})$")
_ROMAN_VALUES = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7, "viii": 8,
                 "ix": 9}


def title_numbers(core: str) -> frozenset[int]:
    """The numbers a normalised title names: digits ("Interlude 2", "No 40 K 550") and
    Roman numerals after a word such as part/no/vol ("Part II")."""
    words = core.split()
    found = {int(n) for n in re.findall(r"\d+", core)}
    for before, word in pairwise(words):
        m = _ROMAN.match(word)
        if before in _NUMBERED_WORDS and word and m:
            found.add(10 * len(m.group(1)) + _ROMAN_VALUES.get(m.group(2), 0))
    return frozenset(found)


def _numbers_disagree(a: str, b: str) -> str:
    """Evidence that two title cores name different numbered pieces ("Part I" and "Part
    II", "No. 40" and "No. 25"): each names a number the other does not. One side naming
    fewer numbers ("Symphony No. 5" for "Symphony No. 5, Op. 67") is no disagreement."""
    na, nb = title_numbers(a), title_numbers(b)
    if na and nb and not (na <= nb or nb <= na):
        return f"numbers {'/'.join(map(str, sorted(na)))}≠{'/'.join(map(str, sorted(nb)))}"
    return ""


# A MusicBrainz recording that is itself the edited copy says so in a suffix or in its
# disambiguation ("Song (Clean)", "clean version", "edited").
_CLEAN_SUFFIX = re.compile(r"[(\[][^)\]]*\bclean\b[^)\]]*[)\]]|\s[-–—]\s*clean\b", re.IGNORECASE)


def wants_edited(recording: Item) -> bool:
    """Whether ``recording`` is an edited ("clean") copy."""
    words = set(_words(recording.disambiguation))
    return bool(words & {"clean", "censored", "edited"}
                or _CLEAN_SUFFIX.search(recording.title or ""))


def _fmt_tags(tags: frozenset[str]) -> str:
    return "+".join(sorted(tags)) or "studio"


def match_score(recording: Item, track: Item, *, album: bool = False) -> Match:
    """How confidently ``track`` (store) is ``recording`` (MusicBrainz), 0..1 + evidence.

    ``album=True`` when comparing within one release/collection: disc/track numbers then
    count, and a "Live" album name tags its tracks on both sides.
    """
    rp, tp = parse_title(recording.title), parse_title(track.title)
    comment = parse_disambiguation(recording.disambiguation)
    r_tags, t_tags = _album_tags(recording, rp.tags | comment.tags, track, tp.tags, album)
    title = similarity(rp.core, tp.core)
    numbers = _numbers_disagree(rp.core, tp.core)
    if rp.movement and tp.movement and rp.movement != tp.movement:
        numbers = f"movement {rp.movement}≠{tp.movement}"
    if numbers:
        title = 0.0
    artist = artist_similarity(recording, rp.featured, track, tp.featured)
    uncredited = uncredited_features(recording, rp.featured, tp.featured)
    lone = lone_suffixes(rp, tp.core) + lone_suffixes(tp, rp.core)
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
    if numbers:
        reason.append(numbers)
    score = _gated(total / weight, title, artist)
    if dur == 0.0:
        score *= LONG_DURATION_PENALTY
    if uncredited:
        score *= UNCREDITED_FEATURE_PENALTY
        reason.append(f"feat. {', '.join(uncredited)} not credited")
    if lone:
        score *= LONE_SUFFIX_PENALTY
        reason.append(f"suffix ({'), ('.join(lone)}) on one side only")
    if track.edited is not None and track.edited != wants_edited(recording):
        score *= EDITED_PREFERENCE
        reason.append("edited copy" if track.edited else "not the edited copy")
    factor, said = _versions_agree(r_tags, rp.details | comment.details, t_tags, tp.details)
    if said:
        reason.append(said)
    return Match(round(max(0.0, min(1.0, score * factor)), 4), " ".join(reason))


def _album_tags(recording: Item, r_tags: frozenset[str], track: Item,
                t_tags: frozenset[str], album: bool) -> tuple[frozenset[str], frozenset[str]]:
    """Both sides' version tags with what their album names say (:func:`_album_live`):
    the store's always, the recording's in an album comparison. When the recording's own
    release has the store album's name, the name tells nothing ("Live in Colour" is a
    studio album, whose recordings MusicBrainz does not call live)."""
    if same_album(recording.album, track.album):
        return r_tags, t_tags
    if album:
        r_tags |= _album_live(recording.album, recording.title)
    return r_tags, t_tags | _album_live(track.album, track.title)


def same_album(a: str | None, b: str | None) -> bool:
    """Two album names that are the same once their ignorable suffixes are dropped
    ("Learn to Live" and "Learn to Live (Deluxe Edition)")."""
    if not a or not b:
        return False
    pa, pb = parse_title(a), parse_title(b)
    return bool(pa.core) and pa.core == pb.core and pa.tags == pb.tags


def written_apart(recording: Item, track: Item) -> str:
    """Why an ISRC hit whose text scores low is no contradiction, or "": the title or the
    artist is written in another script on each side (nothing to compare), the versions
    agree, no number or movement differs, and the durations are within 15 s."""
    rp, tp = parse_title(recording.title), parse_title(track.title)
    apart = [what for what, a, b in (("title", recording.title, track.title),
                                     ("artist", recording.artist, track.artist))
             if other_scripts(a, b)]
    tags = rp.tags | parse_disambiguation(recording.disambiguation).tags
    if (not apart or tags != tp.tags | _album_live(track.album, track.title)
            or _numbers_disagree(rp.core, tp.core)
            or (rp.movement and tp.movement and rp.movement != tp.movement)
            or not duration_score(recording.duration_ms, track.duration_ms)):
        return ""
    return f"{' and '.join(apart)} in another script"


def _versions_agree(r_tags: frozenset[str], r_details: frozenset[str],
                    t_tags: frozenset[str], t_details: frozenset[str]) -> tuple[float, str]:
    """The score's factor for the two sides' versions, and what to say of them."""
    if r_tags != t_tags:
        return VERSION_PENALTY, f"version {_fmt_tags(r_tags)}≠{_fmt_tags(t_tags)}"
    if not r_tags:
        return 1.0, ""
    if details_disagree(r_details, t_details):
        # The same kind of version by another hand or on another night.
        return VERSION_PENALTY, (f"version {_fmt_tags(r_tags)} {' '.join(sorted(r_details))}"
                                 f"≠{' '.join(sorted(t_details))}")
    # Only one side says which: the track that says the same wins a tie.
    factor = DETAIL_PREFERENCE if bool(r_details) != bool(t_details) else 1.0
    return factor, f"version {_fmt_tags(r_tags)}"


def album_score(release_title: str, release_artist: str, track_count: int | None,
                collection: dict[str, Any], *, latin_artist: str = "") -> Match:
    """How confidently an iTunes collection row is the MusicBrainz release;
    ``latin_artist``: the release's credit in Latin letters (:func:`latin_credit`)."""
    rp = parse_title(release_title)
    cp = parse_title(collection.get("collectionName") or "")
    title = similarity(rp.core, cp.core)
    store_artist = collection.get("artistName") or ""
    artist = max(max(similarity(normalize_artist(name), normalize_artist(store_artist)),
                     artist_similarity(Item("", name), (), Item("", store_artist), ()))
                 for name in (release_artist, latin_artist) if name)
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
def _text(value: Any) -> str:
    """A JSON field as text: a string as is, anything else (a dump's odd shapes) as ""."""
    return value if isinstance(value, str) else ""


def _credit_parts(credit: Any) -> list[dict[str, Any]]:
    """The objects of an ``artist-credit`` list; any other shape (a bare string, null, a
    number: seen in hand-edited dumps) gives none, so one odd entity never stops an
    import."""
    return [p for p in credit if isinstance(p, dict)] if isinstance(credit, list) else []


def _credit_string(credit: Any) -> str:
    return "".join(f"{_text(p.get('name'))}{_text(p.get('joinphrase'))}"
                   for p in _credit_parts(credit)).strip()


def latin_credit(credit: Any) -> str:
    """The credit as printed with each name written without Latin letters replaced by
    its sort name's Latin spelling ("宇多田ヒカル" → "Hikaru Utada"); "" when no name
    is replaced."""
    latin = "".join(f"{_latin_name(p)}{_text(p.get('joinphrase'))}"
                    for p in _credit_parts(credit)).strip()
    return latin if latin != _credit_string(credit) else ""


def _latin_name(part: dict[str, Any]) -> str:
    """A credited name, in Latin letters where it has none and its sort name has."""
    return _latin_sort_name(part, _obj(part.get("artist"))) or _text(part.get("name"))


def _credit_names(credit: Any) -> tuple[str, ...]:
    names: list[str] = []
    for part in _credit_parts(credit):
        artist = _obj(part.get("artist"))
        for name in (part.get("name"), artist.get("name"), _latin_sort_name(part, artist)):
            if isinstance(name, str) and name and name not in names:
                names.append(name)
    return tuple(names)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _latin_sort_name(part: dict[str, Any], artist: dict[str, Any]) -> str:
    """The artist's sort name in reading order ("Utada, Hikaru" → "Hikaru Utada") when it
    is written in Latin letters and the credited name is not: stores outside the
    artist's country print that spelling (宇多田ヒカル as "Hikaru Utada", Кино as "Kino")."""
    sort_name = _text(artist.get("sort-name"))
    credited = _text(part.get("name")) or _text(artist.get("name"))
    if not sort_name or "LATIN" in scripts(credited) or scripts(sort_name) != {"LATIN"}:
        return ""
    last, _, first = sort_name.partition(", ")
    return f"{first} {last}" if first and "," not in first else sort_name


def scripts(text: str | None) -> frozenset[str]:
    """The scripts of the letters of ``text`` ("LATIN", "CYRILLIC", "CJK", "HIRAGANA"...)."""
    found = set()
    for ch in text or "":
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            found.add(name.split(" ")[0] if name else "?")
    return frozenset(found)


def other_scripts(a: str | None, b: str | None) -> bool:
    """Both have letters and share no script: "Группа крови" and "Gruppa krovi" cannot be
    compared as text."""
    sa, sb = scripts(a), scripts(b)
    return bool(sa and sb and not sa & sb)


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
    ``length: null`` and missing fields become ``None``, fields of another type than the
    web service's are read as missing."""
    track = track if isinstance(track, dict) else {}
    credit = next((c for c in (track.get("artist-credit"), recording.get("artist-credit"),
                               release_credit) if _credit_parts(c)), [])
    names = _credit_names(credit) + _credit_names(recording.get("artist-credit"))
    lead: list[str] = []
    latin_lead: list[str] = []
    for part in _credit_parts(credit):
        if _text(part.get("name")):
            lead.append(part["name"])
            latin_lead.append(_latin_name(part))
        if _FEAT_JOIN.search(_text(part.get("joinphrase"))):
            break  # the rest of the credit is featured
    latin_artist = latin_credit(credit)
    return Item(
        title=_text(track.get("title")) or _text(recording.get("title")),
        artist=_credit_string(credit),
        artists=tuple(dict.fromkeys(names)),
        duration_ms=_int(track.get("length")) or _int(recording.get("length")),
        disc=disc,
        track=_int(track.get("position")) or _int(track.get("number")),
        album=_text(album) or None,
        disambiguation=_text(recording.get("disambiguation")) or None,
        lead=tuple(lead),
        latin_artist=latin_artist,
        latin_lead=tuple(latin_lead) if latin_artist else (),
    )


def item_from_itunes(row: dict[str, Any]) -> Item:
    # trackExplicitness: "explicit", "cleaned" (an edited copy) or "notExplicit".
    explicitness = row.get("trackExplicitness")
    return Item(
        title=_text(row.get("trackName")),
        artist=_text(row.get("artistName")),
        duration_ms=_int(row.get("trackTimeMillis")),
        disc=_int(row.get("discNumber")),
        track=_int(row.get("trackNumber")),
        album=_text(row.get("collectionName")) or None,
        edited=(explicitness == "cleaned"
                if explicitness in ("explicit", "cleaned", "notExplicit") else None),
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
