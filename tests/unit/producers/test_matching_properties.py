"""Property-based tests (hypothesis) of the matching normaliser.

Each property says what must hold for *every* input, not just the examples in
tests/unit/producers/test_matching.py: :func:`normalize` never raises, is idempotent,
emits case-folded words joined by single spaces, keeps the letters and digits of every
script, and ignores case, accents, Unicode normal form, punctuation and spacing;
featured-artist credits never change a title's core; :func:`match_score` is a probability
for any input and 1 for a track compared with itself.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from producers.matching import (
    IGNORABLE_WORDS,
    VERSION_WORDS,
    Item,
    match_score,
    normalize,
    normalize_artist,
    parse_title,
    split_artists,
)

_any_text = st.text(st.characters(), max_size=24)  # any code point, surrogates included


def _has_surrogate(value: Any) -> bool:
    return isinstance(value, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in value)


# --------------------------------------------------------------------------- matching

# Letters and digits of every script, and the spacing marks inside Indic words.
_WORD_CATEGORIES = {"Lu", "Ll", "Lt", "Lm", "Lo", "Nd", "Nl", "No", "Mc"}
_words = st.text("abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=8).filter(
    lambda w: w not in VERSION_WORDS and w not in IGNORABLE_WORDS
    and w not in {"feat", "ft", "featuring", "with", "vs", "and", "the", "cappella",
                  "capella", "extended"})
_phrase = st.lists(_words, min_size=1, max_size=4).map(" ".join)
_latin1_letters = [chr(c) for c in range(0xC0, 0x100) if chr(c).isalpha()]
_cased_text = st.text(st.sampled_from([*"abcdefghijklmnopqrstuvwxyzABCXYZ019 '&-.,",
                                       *_latin1_letters]), max_size=30)
_scripts = st.sampled_from([
    "Кино", "Группа крови", "日本の歌", "東京事変", "사랑", "Αγάπη", "שלום", "حب", "नमस्ते",
    "ลูกทุ่ง", "Ólafur Arnalds", "Sigur Rós", "Kırmızı", "Łódź", "Þursaflokkurinn",
])


@given(st.none() | _any_text)
def test_normalize_never_raises_and_emits_words(text: str | None) -> None:
    out = normalize(text)
    words = out.split(" ")
    assert out == "" or all(words), out  # single spaces, none leading or trailing
    # Words only; or, for text without a letter or digit ("!!!"), its symbols only.
    kinds = {unicodedata.category(c) in _WORD_CATEGORIES for c in out.replace(" ", "")}
    assert len(kinds) <= 1, out
    if kinds == {False}:
        assert all(unicodedata.category(c)[0] in "PS" for c in out.replace(" ", "")), out
    assert out == out.casefold()
    assert normalize(out) == out  # idempotent


@given(_any_text)
def test_normalize_ignores_unicode_normal_form(text: str) -> None:
    assume(not _has_surrogate(text))
    assert normalize(unicodedata.normalize("NFC", text)) == normalize(text)
    assert normalize(unicodedata.normalize("NFD", text)) == normalize(text)


@given(_cased_text)
def test_normalize_ignores_case_of_latin_text(text: str) -> None:
    assert normalize(text.upper()) == normalize(text.lower()) == normalize(text)


@given(st.text("abcdefghijklmnopqrstuvwxyz0123456789 ", max_size=30),
       st.lists(st.sampled_from([chr(c) for c in range(0x300, 0x370)]), max_size=10),
       st.randoms(use_true_random=False))
def test_normalize_ignores_accents(text: str, marks: list[str], rnd: Any) -> None:
    chars = list(text)
    for mark in marks:
        letters = [i for i, c in enumerate(chars) if c.isalpha()]
        if letters:
            i = rnd.choice(letters)
            chars.insert(i + 1, mark)
    assert normalize("".join(chars)) == normalize(text)


@given(st.lists(st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6),
                min_size=1, max_size=5),
       st.lists(st.sampled_from([" ", "  ", "\t", " - ", ", ", ". ", "/", " _ ", "!?", "\n",
                                 "(", ") ", "\u00a0", "\u3000", "…"]), min_size=5, max_size=5))
def test_normalize_ignores_punctuation_and_spacing(words: list[str], seps: list[str]) -> None:
    joined = "".join(w + seps[i % len(seps)] for i, w in enumerate(words))
    assert normalize(joined) == " ".join(words)


@given(_scripts, st.sampled_from(["", " (Live)", " - Remastered 2011", "!"]))
def test_normalize_keeps_letters_of_every_script(title: str, suffix: str) -> None:
    """A Japanese or Russian title must not normalise to nothing: it would never match."""
    out = normalize(title + suffix)
    assert out, title
    # Every letter survives, as itself or transliterated ("ł" → "l", "ß" → "ss").
    letters = [c for c in unicodedata.normalize("NFKD", title)
               if unicodedata.category(c)[0] in "LN"]
    assert len(out.replace(" ", "")) >= len(letters), (title, out)


@given(_phrase, _phrase, st.sampled_from(["({} {})", "[{} {}]", "- {} {}"]),
       st.sampled_from(["feat.", "ft.", "featuring", "Feat.", "FEAT", "with"]))
def test_featured_credits_never_change_the_title_core(title: str, artist: str, form: str,
                                                      word: str) -> None:
    credited = f"{title} " + form.format(word, artist)
    parsed = parse_title(credited)
    assert parsed.core == parse_title(title).core == normalize(title)
    assert normalize_artist(artist) in parsed.featured


@given(_phrase, _phrase, st.sampled_from(["feat.", "ft.", "featuring"]))
def test_inline_featured_credit_never_changes_the_title_core(title: str, artist: str,
                                                             word: str) -> None:
    parsed = parse_title(f"{title} {word} {artist}")
    assert parsed.core == normalize(title)
    assert parsed.featured == tuple(split_artists(artist))


@given(_any_text)
def test_split_artists_returns_distinct_normalised_names(credit: str) -> None:
    names = split_artists(credit)
    assert len(names) == len(set(names))
    assert all(name and normalize_artist(name) == name for name in names)


_items = st.builds(
    Item,
    title=_any_text | _phrase, artist=_any_text | _phrase,
    artists=st.lists(_any_text, max_size=2).map(tuple),
    duration_ms=st.none() | st.integers(-10, 10**8),
    disc=st.none() | st.integers(-2, 5), track=st.none() | st.integers(-2, 30),
    album=st.none() | _any_text, disambiguation=st.none() | _any_text,
)


@given(_items, _items, st.booleans())
def test_match_score_is_a_probability_for_any_input(a: Item, b: Item, album: bool) -> None:
    match = match_score(a, b, album=album)
    assert 0.0 <= match.score <= 1.0
    assert match.reason.startswith("title=")


@given(_phrase | _scripts, _phrase | _scripts, st.none() | st.integers(1, 10**6))
def test_a_track_matches_itself(title: str, artist: str, duration_ms: int | None) -> None:
    item = Item(title, artist, duration_ms=duration_ms)
    assert match_score(item, item).score == 1.0
