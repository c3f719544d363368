# ruff: noqa: E501  (the labelled table reads best one pair per line)
"""Matching precision/recall on a labelled table of tricky MusicBrainz ↔ store pairs.

``python -m tests.unit.producers.test_matching`` prints the table and the figures quoted in
docs/matching.md.
"""

from __future__ import annotations

import pytest

from contract.settings import Settings
from producers.matching import (
    Item,
    album_score,
    details_disagree,
    item_from_itunes,
    item_from_mb,
    match_score,
    normalize,
    parse_disambiguation,
    parse_title,
    split_artists,
    title_numbers,
)

THRESHOLD = Settings().match_threshold


def R(title: str, artist: str, s: float | None = None, dis: str | None = None,
      **kw: object) -> Item:
    return Item(title, artist, duration_ms=None if s is None else int(s * 1000),
                disambiguation=dis, **kw)  # type: ignore[arg-type]


T = R

# (category, MusicBrainz side, store side, same recording?)
PAIRS: list[tuple[str, Item, Item, bool]] = [
    # remasters and ignorable suffixes: same recording
    ("remaster", R("Hey Jude", "The Beatles", 431), T("Hey Jude (Remastered 2015)", "The Beatles", 429), True),
    ("remaster", R("Nuit blanche", "Zoé Varga", 241), T("Nuit blanche - 2011 Remaster", "Zoé Varga", 240.3), True),
    ("remaster", R("Don't Stop Me Now", "Queen", 209), T("Don't Stop Me Now - Remastered 2011", "Queen", 210), True),
    ("remaster", R("Help!", "The Beatles", 139), T("Help! (Remastered 2009)", "The Beatles", 138.5), True),
    ("remaster", R("Paper Moons", "The Hollow Pines", 200), T("Paper Moons (Deluxe Edition Bonus Track)", "The Hollow Pines", 199.8), True),
    ("remaster", R("Help!", "The Beatles", 139), T("Help! - Mono Mix", "The Beatles", 138), True),
    ("remaster", R("Wonderwall", "Oasis", 258), T("Wonderwall (Remastered) [Explicit]", "Oasis", 259), True),
    ("remaster", R("Glass", "The Hollow Pines", 250), T("Glass (Album Version)", "Hollow Pines", 249), True),
    # live / acoustic / remix / demo / edit / instrumental: different recordings
    ("version", R("Hey Jude", "The Beatles", 431), T("Hey Jude (Live)", "The Beatles", 430), False),
    ("version", R("Undertow", "The Hollow Pines", 305, dis="live, 2002-11-03: Paradiso"), T("Undertow", "The Hollow Pines", 262), False),
    ("version", R("Undertow", "The Hollow Pines", 262), T("Undertow - Live at Paradiso, 2002", "The Hollow Pines", 263), False),
    ("version", R("Static Hearts", "The Hollow Pines", 215), T("Static Hearts (Acoustic)", "The Hollow Pines", 216), False),
    ("version", R("Glass", "The Hollow Pines", 250), T("Glass (Radio Edit)", "The Hollow Pines", 249), False),
    ("version", R("Blue Monday", "New Order", 448), T("Blue Monday '88 - 12\" Mix", "New Order", 449), False),
    ("version", R("Paper Moons", "The Hollow Pines", 200), T("Paper Moons (Demo)", "The Hollow Pines", 201), False),
    ("version", R("Paper Moons", "The Hollow Pines", 200), T("Paper Moons (Instrumental)", "The Hollow Pines", 200), False),
    ("version", R("Halo", "Beyoncé", 261), T("Halo (Olli Collins Remix)", "Beyoncé", 262), False),
    ("version", R("Nuit blanche", "Zoé Varga", 241), T("Nuit blanche", "Zoé Varga", 262, album="Électrique nuit (Live à l'Olympia)"), False),
    ("version", R("Layla", "Derek and the Dominos", 423), T("Layla (Unplugged)", "Derek & The Dominos", 424), False),
    ("version", R("Nuit blanche", "Zoé Varga", 262, dis="live, 1980"), T("Nuit blanche (Live)", "Zoé Varga", 262), True),
    # featured artists
    ("feat", R("Lumière", "Zoé Varga feat. Ana Ruiz"), T("Lumière (feat. Ana Ruiz) [2011 Remaster]", "Zoé Varga", 215), True),
    ("feat", R("Umbrella", "Rihanna feat. JAY-Z", 275), T("Umbrella (feat. JAY-Z)", "Rihanna", 275.9), True),
    ("feat", R("Umbrella", "Rihanna feat. JAY-Z", 275), T("Umbrella", "Rihanna & JAY-Z", 276), True),
    ("feat", R("Lose Yourself", "Eminem", 326), T("Lose Yourself", "Eminem ft. Dr. Dre", 327), True),
    ("feat", R("Empire State of Mind", "JAY-Z + Alicia Keys", 276), T("Empire State of Mind (feat. Alicia Keys)", "JAY-Z", 277), True),
    ("feat", R("Stay", "Rihanna feat. Mikky Ekko", 240), T("Stay", "Mikky Ekko", 241), False),
    ("feat", R("Run This Town", "JAY-Z feat. Rihanna & Kanye West", 267), T("Run This Town", "Kanye West & JAY-Z", 268), True),
    # same title, different artists
    ("artist", R("Hallelujah", "Leonard Cohen", 279), T("Hallelujah", "Jeff Buckley", 413), False),
    ("artist", R("Hallelujah", "Jeff Buckley", 413), T("Hallelujah", "Jeff Buckley", 414), True),
    ("artist", R("Nuit blanche", "Zoé Varga", 241), T("Nuit Blanche", "Zoe Vargas Trio", 241.5), False),
    ("artist", R("Intro", "The xx", 127), T("Intro", "M83", 128), False),
    ("artist", R("Yesterday", "The Beatles", 125), T("Yesterday", "Beatles", 126), True),
    ("artist", R("Electrique nuit", "Zoé Varga", 180), T("Electrique Nuit", "Les Varga Sisters", 181), False),
    ("artist", R("Crazy", "Gnarls Barkley", 178), T("Crazy", "Patsy Cline", 164), False),
    # accents and punctuation
    ("accent", R("Café noir", "Zoé Varga", 198), T("Cafe Noir - 2011 Remaster", "Zoe Varga", 199.1), True),
    ("accent", R("Hoppípolla", "Sigur Rós", 268), T("Hoppipolla", "Sigur Ros", 269), True),
    ("accent", R("Ça plane pour moi", "Plastic Bertrand", 180), T("Ca Plane Pour Moi", "Plastic Bertrand", 181), True),
    ("punct", R("(I Can't Get No) Satisfaction", "The Rolling Stones", 223), T("(I Can't Get No) Satisfaction (Mono)", "The Rolling Stones", 222), True),
    ("punct", R("Sweet Child o' Mine", "Guns N' Roses", 356), T("Sweet Child O' Mine", "Guns N’ Roses", 355), True),
    ("punct", R("September", "Earth, Wind & Fire", 215), T("September", "Earth Wind and Fire", 216), True),
    ("punct", R("Mrs. Robinson", "Simon & Garfunkel", 244), T("Mrs Robinson", "Simon and Garfunkel", 245), True),
    ("punct", R("Sgt. Pepper's Lonely Hearts Club Band (Reprise)", "The Beatles", 79), T("Sgt. Pepper's Lonely Hearts Club Band", "The Beatles", 122), False),
    # durations
    ("duration", R("Intro", "Zoé Varga", 62), T("Outro", "Zoé Varga", 63), False),
    ("duration", R("Paper Moons", "The Hollow Pines", 200), T("Paper Moons", "The Hollow Pines", 208), True),
    ("duration", R("Paper Moons", "The Hollow Pines", 200), T("Paper Moons", "The Hollow Pines", 260), False),
    ("duration", R("Paper Moons", "The Hollow Pines", None), T("Paper Moons", "The Hollow Pines", 200), True),
    ("duration", R("Paper Moon", "The Hollow Pines", 200), T("Paper Moons", "The Hollow Pines", 201), True),
    ("duration", R("Shine", "The Hollow Pines", 200), T("Shine On", "The Hollow Pines", 480), False),
    # other versions: words in other languages, arrangements, re-recordings, edits
    ("version", R("Smells Like Teen Spirit", "Nirvana", 301), T("Smells Like Teen Spirit (Ao Vivo)", "Nirvana", 301), False),
    ("version", R("Smells Like Teen Spirit", "Nirvana", 301), T("Smells Like Teen Spirit - En Directo", "Nirvana", 302), False),
    ("version", R("Smells Like Teen Spirit", "Nirvana", 301), T("Smells Like Teen Spirit (Piano Version)", "Nirvana", 301), False),
    ("version", R("Static Hearts", "The Hollow Pines", 215), T("Static Hearts (Orchestral Version)", "The Hollow Pines", 216), False),
    ("version", R("Hey Jude", "The Beatles", 431), T("Hey Jude (Re-Recorded)", "The Beatles", 431), False),
    ("version", R("Halo", "Beyoncé", 261), T("Halo (Slowed + Reverb)", "Beyoncé", 262), False),
    # other brackets: full-width, lenticular, nested, curly, after " / "
    ("brackets", R("丸の内サディスティック", "椎名林檎", 230), T("丸の内サディスティック（Live）", "椎名林檎", 231), False),
    ("brackets", R("丸の内サディスティック", "椎名林檎", 230), T("丸の内サディスティック【Live】", "椎名林檎", 231), False),
    ("brackets", R("Nothing Else Matters", "Metallica", 388), T("Nothing Else Matters (Live (1993))", "Metallica", 388), False),
    ("brackets", R("Nothing Else Matters", "Metallica", 388), T("Nothing Else Matters {Live}", "Metallica", 388), False),
    ("brackets", R("Nothing Else Matters", "Metallica", 388), T("Nothing Else Matters / Live", "Metallica", 388), False),
    ("brackets", R("丸の内サディスティック", "椎名林檎", 230), T("丸の内サディスティック（2018 Remaster）", "椎名林檎", 231), True),
    ("brackets", R("Let It Go", "Idina Menzel", 224), T('Let It Go (From "Frozen"/Soundtrack Version)', "Idina Menzel", 224), True),
    # numbered pieces: each side names a number the other does not
    ("numbers", R("Interlude 1", "Zoé Varga", 58), T("Interlude 2", "Zoé Varga", 62), False),
    ("numbers", R("Gymnopédie No. 1", "Erik Satie", 200), T("Gymnopédie No. 3", "Erik Satie", 201), False),
    ("numbers", R("Paper Moons, Part I", "The Hollow Pines", 200), T("Paper Moons, Part II", "The Hollow Pines", 200), False),
    ("numbers", R("Symphony No. 40 in G minor, K. 550: I. Molto allegro", "Wolfgang Amadeus Mozart", 480), T("Symphony No. 25 in G Minor, K. 183: I. Allegro con brio", "Wolfgang Amadeus Mozart", 480), False),
    ("numbers", R("Symphony No. 5 in C minor, Op. 67: I. Allegro con brio", "Ludwig van Beethoven", 450), T("Symphony No. 5 in C Minor: I. Allegro con brio", "Ludwig van Beethoven", 451), True),
    ("numbers", R("Song 2", "Blur", 122), T("Song 2 (2012 Remaster)", "Blur", 122), True),
    # one fragment of a band name, or of a duo, is not the credit
    ("artist", R("September", "Earth, Wind & Fire", 215), T("September", "Earth", 215), False),
    ("artist", R("Mrs. Robinson", "Simon & Garfunkel", 244), T("Mrs. Robinson", "Simon", 244), False),
    ("artist", R("Dog Days Are Over", "Florence + the Machine", 253), T("Dog Days Are Over", "Florence", 253), False),
    ("artist", R("Don't Go Breaking My Heart", "Elton John & Kiki Dee", 272), T("Don't Go Breaking My Heart", "Elton John & RuPaul", 272), False),
    # "Live" in a store album's name: a concert only when the name says so
    ("album", R("Live While We're Young", "One Direction", 200), T("Live While We're Young", "One Direction", 200, album="Live While We're Young - Single"), True),
    ("album", R("Violet", "Hole", 204), T("Violet", "Hole", 204, album="Live Through This"), True),
    ("album", R("Baba O'Riley", "The Who", 300), T("Baba O'Riley", "The Who", 301, album="Live at Leeds"), False),
    ("album", R("Come As You Are", "Nirvana", 219), T("Come As You Are", "Nirvana", 220, album="MTV Unplugged in New York"), False),
    # artists spelled with symbols or initials (added after the table above was tuned)
    ("spelling", R("So What", "P!nk", 215), T("So What", "Pink", 215), True),
    ("spelling", R("TiK ToK", "Kesha", 199), T("TiK ToK", "Ke$ha", 200), True),
    ("spelling", R("Praise the Lord (Da Shine)", "A$AP Rocky feat. Skepta", 205), T("Praise The Lord (Da Shine) [feat. Skepta]", "ASAP Rocky", 205), True),
    ("spelling", R("Back in Black", "AC/DC", 255), T("Back In Black", "ACDC", 255), True),
    ("spelling", R("Losing My Religion", "R.E.M.", 268), T("Losing My Religion", "REM", 269), True),
    ("spelling", R("Heart of Hearts", "!!!", 250), T("Heart of Hearts", "!!!", 251), True),
    ("spelling", R("This Is a Trick", "†††", 200), T("This Is a Trick", "†††", 200), True),
    ("spelling", R("Heart of Hearts", "!!!", 250), T("Heart of Hearts", "???", 250), False),
    ("spelling", R("Praise the Lord", "A$AP Rocky", 205), T("Praise the Lord", "A$AP Ferg", 205), False),
    # re-recordings, language versions, reprises, tributes named in a suffix
    ("version", R("Love Story", "Taylor Swift", 235), T("Love Story (Taylor's Version)", "Taylor Swift", 236), False),
    ("version", R("Love Story (Taylor's Version)", "Taylor Swift", 236), T("Love Story (Taylor’s Version)", "Taylor Swift", 236), True),
    ("version", R("Hello", "Adele", 295), T("Hello (Spanish Version)", "Adele", 295), False),
    ("version", R("Sgt. Pepper's Lonely Hearts Club Band", "The Beatles", 122), T("Sgt. Pepper's Lonely Hearts Club Band (Reprise) [Remastered 2009]", "The Beatles"), False),
    ("version", R("Sgt. Pepper's Lonely Hearts Club Band (Reprise)", "The Beatles", 79), T("Sgt. Pepper's Lonely Hearts Club Band (Reprise) [Remastered 2009]", "The Beatles", 79), True),
    ("version", R("Bohemian Rhapsody", "Queen", 354), T("Bohemian Rhapsody (Tribute)", "Queen", 354), False),
    ("version", R("Hips Don't Lie", "Shakira feat. Wyclef Jean", 218), T("Hips Don't Lie (feat. Wyclef Jean) [Main Version]", "Shakira", 218), True),
    # a featured artist the recording does not credit: another recording
    ("feat", R("bad guy", "Billie Eilish", 194), T("bad guy (with Justin Bieber)", "Billie Eilish", 194), False),
    ("feat", R("Levitating", "Dua Lipa", 203), T("Levitating (feat. DaBaby)", "Dua Lipa", 203), False),
    ("feat", R("Umbrella", "Rihanna", 275, lead=("Rihanna", "JAY-Z"), artists=("Rihanna", "JAY-Z")), T("Umbrella (feat. JAY-Z)", "Rihanna", 276), True),
    # one credit names more artists than the other (the composer beside the performers)
    ("artist", R("Symphony No. 5 in C minor, Op. 67: I. Allegro con brio", "Ludwig van Beethoven; Berliner Philharmoniker, Herbert von Karajan", 447, lead=("Ludwig van Beethoven", "Berliner Philharmoniker", "Herbert von Karajan")), T("Symphony No. 5 in C Minor, Op. 67: I. Allegro con brio", "Berliner Philharmoniker & Herbert von Karajan", 447), True),
    ("artist", R("Symphony No. 5 in C minor, Op. 67: I. Allegro con brio", "Berliner Philharmoniker & Herbert von Karajan", 447, lead=("Berliner Philharmoniker", "Herbert von Karajan")), T("Symphony No. 5 in C Minor, Op. 67: I. Allegro con brio", "Berliner Philharmoniker, Herbert von Karajan & Ludwig van Beethoven", 447), True),
    ("artist", R("Symphony No. 5 in C minor, Op. 67: I. Allegro con brio", "Berliner Philharmoniker & Herbert von Karajan", 447, lead=("Berliner Philharmoniker", "Herbert von Karajan")), T("Symphony No. 5 in C Minor, Op. 67: I. Allegro con brio", "Wiener Philharmoniker & Herbert von Karajan", 447), False),
    # which remix, which night: the words beside the version tag (from the review of
    # upstream shapes, 4 December 2026, written with the rule)
    ("version", R("Titanium (Alesso remix)", "David Guetta feat. Sia", 340), T("Titanium (feat. Sia) [Nicky Romero Remix]", "David Guetta", 342), False),
    ("version", R("Titanium (Alesso remix)", "David Guetta feat. Sia", 340), T("Titanium (feat. Sia) [Alesso Remix]", "David Guetta", 340), True),
    ("version", R("Undertow", "The Hollow Pines", 262, dis="live, 1994-08-13: Woodstock '94"), T("Undertow (Live at Glastonbury, 2004)", "The Hollow Pines", 263), False),
    ("version", R("Undertow", "The Hollow Pines", 262, dis="live, 1994-08-13: Woodstock '94"), T("Undertow (Live at Woodstock '94)", "The Hollow Pines", 263), True),
    # a version named in the disambiguation, as a suffix would name it
    ("version", R("Nuit blanche", "Zoé Varga", 241, dis="English version"), T("Nuit blanche", "Zoé Varga", 241), False),
    ("version", R("Nuit blanche", "Zoé Varga", 241, dis="English version"), T("Nuit blanche (English Version)", "Zoé Varga", 241), True),
    ("version", R("Glass", "The Hollow Pines", 210, dis="radio version"), T("Glass (Radio Edit)", "The Hollow Pines", 210), True),
    ("version", R("Glass", "The Hollow Pines", 250, dis="radio version"), T("Glass", "The Hollow Pines", 250), False),
    # movements of one work: the numeral after the colon
    ("numbers", R("Violin Concerto No. 1 in A Minor, BWV 1041: I. Allegro moderato", "Hilary Hahn", 226), T("Violin Concerto No. 1 in A Minor, BWV 1041: III. Allegro assai", "Hilary Hahn", 220), False),
    ("numbers", R("Violin Concerto No. 1 in A Minor, BWV 1041: I. Allegro moderato", "Hilary Hahn", 226), T("Violin Concerto No. 1 in A Minor, BWV 1041: I. Allegro Moderato", "Hilary Hahn", 225), True),
    ("numbers", R("Eine kleine Nachtmusik, K. 525: I. Allegro", "Wiener Philharmoniker", 350), T("Eine kleine Nachtmusik, K. 525 - IV. Rondo: Allegro", "Wiener Philharmoniker", 352), False),
    # "Long Live" is a studio album
    ("album", R("Long Live", "Atreyu", 233), T("Long Live", "Atreyu", 233, album="Long Live"), True),
    # from the resolution audit (written with the rules): reworkings stores sell under the
    # song's title, a suffix on one side only, neutral notes, albums named "... Live",
    # a credit without Latin letters
    ("version", R("Midnight City", "M83", 244), T("Midnight City (Stripped)", "M83", 244), False),
    ("version", R("Midnight City", "M83", 244), T("Midnight City (8D Audio)", "M83", 244), False),
    ("version", R("Midnight City", "M83", 244), T("Midnight City (Lofi)", "M83", 244), False),
    ("version", R("Midnight City", "M83", 244), T("Midnight City (Phonk)", "M83", 244), False),
    ("version", R("Midnight City", "M83", 244), T("Midnight City (Jersey Club)", "M83", 244), False),
    ("version", R("Midnight City", "M83", 244), T("Midnight City (Speed Up)", "M83", 244), False),
    ("version", R("Creep", "Radiohead", 238), T("Creep (Cover)", "Radiohead", 238), False),
    ("suffix", R("Midnight City", "M83", 244), T("Midnight City (Spotify Sessions)", "M83", 244), False),
    ("suffix", R("Midnight City", "M83", 244), T("Midnight City (Amazon Original)", "M83", 244), False),
    ("suffix", R("Love Me Like You Do", "Ellie Goulding", 252), T("Love Me Like You Do (Spotify Singles)", "Ellie Goulding", 252), False),
    ("suffix", R("My Heart Will Go On", "Céline Dion", 280), T('My Heart Will Go On (Love Theme from "Titanic")', "Céline Dion", 281), True),
    ("suffix", R("Mask Off", "Future", 204), T("Mask Off (Prod. by Metro Boomin)", "Future", 204), True),
    ("suffix", R("Paper Moons", "The Hollow Pines", 200), T("Paper Moons (Japanese Bonus Track)", "The Hollow Pines", 200), True),
    ("suffix", R("Paper Moons", "The Hollow Pines", 200), T("Paper Moons (Hidden Track)", "The Hollow Pines", 200), True),
    ("suffix", R("Paper Moons", "The Hollow Pines", 200), T("Paper Moons (Dirty)", "The Hollow Pines", 200), True),
    ("suffix", R("Paper Moons", "The Hollow Pines", 200), T("Paper Moons (Japanese Version)", "The Hollow Pines", 200), False),
    ("suffix", R("Another Brick in the Wall, Part 2", "Pink Floyd", 239), T("Another Brick in the Wall (Pt. 2)", "Pink Floyd", 239), True),
    ("album", R("Alright", "Darius Rucker", 209), T("Alright", "Darius Rucker", 209, album="Learn to Live"), True),
    ("album", R("Colour", "Someone", 200, album="Live in Colour"), T("Colour", "Someone", 200, album="Live in Colour"), True),
    ("artist", R("First Love", "宇多田ヒカル", 257, latin_artist="Hikaru Utada", latin_lead=("Hikaru Utada",)), T("First Love", "Hikaru Utada", 257), True),
    ("artist", R("Think About Things", "Daði Freyr", 217), T("Think About Things", "Dadi Freyr", 217), True),
]


def evaluate(threshold: float = THRESHOLD) -> dict[str, object]:
    tp = fp = fn = tn = 0
    rows = []
    for category, rec, trk, same in PAIRS:
        m = match_score(rec, trk)
        predicted = m.score >= threshold
        tp += predicted and same
        fp += predicted and not same
        fn += (not predicted) and same
        tn += (not predicted) and not same
        rows.append((category, rec, trk, same, m))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": precision,
            "recall": recall, "rows": rows}


def test_table_is_large_and_mixed() -> None:
    assert len(PAIRS) >= 40
    assert sum(same for *_, same in PAIRS) >= 15
    assert sum(not same for *_, same in PAIRS) >= 15


def test_precision_and_recall() -> None:
    result = evaluate()
    wrong = [(r.title, t.title, t.artist, same, m) for _, r, t, same, m in result["rows"]
             if (m.score >= THRESHOLD) != same]
    assert result["precision"] == 1.0, wrong
    assert result["recall"] >= 0.95, wrong


@pytest.mark.parametrize(("title", "core", "tags", "featured"), [
    ("Hey Jude (Remastered 2015)", "hey jude", set(), ()),
    ("Nuit Blanche - 2011 Remaster", "nuit blanche", set(), ()),
    ("Lumière (feat. Ana Ruiz) [2011 Remaster]", "lumiere", set(), ("ana ruiz",)),
    ("Song - Live at Wembley, 1986", "song", {"live"}, ()),
    ("(I Can't Get No) Satisfaction", "i cant get no satisfaction", set(), ()),
    ("Song (Radio Edit)", "song", {"edit"}, ()),
    ("Sgt. Pepper's (Reprise)", "sgt peppers", {"reprise"}, ()),
    ("Love Story (Taylor’s Version)", "love story", {"taylors version"}, ()),
    ("Hello - Spanish Version", "hello", {"spanish version"}, ()),
    ("Hips Don't Lie [Main Version]", "hips dont lie", set(), ()),
    ("Theme (Original Motion Picture Soundtrack)", "theme", set(), ()),
    ("Song (Sessions)", "song sessions", set(), ()),
    ("Song (Off Vocal)", "song", {"instrumental"}, ()),
    ("Song (TV Size)", "song", {"edit"}, ()),
    ("Song (Take 2)", "song", {"alternate"}, ()),
    ("Song (Alternate Take)", "song", {"alternate"}, ()),
    ("Song (VIP)", "song", {"remix"}, ()),
    ("Help! - Mono Mix", "help", set(), ()),
    ("Halo (Olli Collins Remix)", "halo", {"remix"}, ()),
    ("Title feat. X & Y", "title", set(), ("x", "y")),
    ("Static Hearts (Acoustic Version)", "static hearts", {"acoustic"}, ()),
    ("Midnight Radio - EP", "midnight radio", set(), ()),
    ("Song (En Vivo)", "song", {"live"}, ()),
    ("Song（Acústico）", "song", {"acoustic"}, ()),
    ("Song (Live (1993))", "song", {"live"}, ()),
    ("Song 【Remix】 [feat. X]", "song", {"remix"}, ("x",)),
    ('Song (From "The Movie")', "song", set(), ()),
    ("Song / Demo", "song", {"demo"}, ()),
    ("Song (Part 2)", "song part 2", set(), ()),
    ("Song (Stripped)", "song", {"stripped"}, ()),
    ("Song (8D Audio)", "song", {"remix"}, ()),
    ("Song (Lo-Fi)", "song", {"remix"}, ()),
    ("Song (Jersey Club)", "song", {"remix"}, ()),
    ("Song (Speed Up)", "song", {"remix"}, ()),
    ("Song (Cover)", "song", {"cover"}, ()),
    ("Song (Music from the Motion Picture)", "song", set(), ()),
    ("Song (Love Theme from “Film”)", "song", set(), ()),
    ("Song (Prod. by X)", "song", set(), ()),
])
def test_parse_title(title: str, core: str, tags: set[str], featured: tuple[str, ...]) -> None:
    parsed = parse_title(title)
    assert (parsed.core, set(parsed.tags), parsed.featured) == (core, tags, featured)


@pytest.mark.parametrize(("title", "numbers"), [
    ("interlude 2", {2}),
    ("symphony no 40 in g minor k 550 i molto allegro", {40, 550}),
    ("paper moons part ii", {2}),
    ("vol xiv", {14}),
    ("i will survive", set()),  # a pronoun, not a numeral
    ("part of me", set()),
])
def test_title_numbers(title: str, numbers: set[int]) -> None:
    assert title_numbers(title) == numbers


def test_version_details_movements_and_comments() -> None:
    titanium = parse_title("Titanium (feat. Sia) [Nicky Romero Remix]")
    assert titanium.tags == {"remix"} and titanium.details == {"nicky", "romero"}
    assert parse_title("Song (Live at Woodstock '94)").details == {"woodstock", "94"}
    assert parse_title("Song (Extended Mix)").details == frozenset()
    assert not details_disagree(frozenset({"94"}), frozenset({"1994", "08"}))
    assert details_disagree(frozenset({"1994"}), frozenset({"2004"}))
    assert not details_disagree(frozenset({"tiesto"}), frozenset({"tiestos", "big"}))
    assert not details_disagree(frozenset(), frozenset({"alesso"}))
    assert parse_title("Concerto No. 1, BWV 1041: III. Allegro assai").movement == 3
    assert parse_title("Serenade, K. 525 - 2. Romanze").movement == 2
    assert parse_title("Greatest Hits Vol. 2").movement is None
    comment = parse_disambiguation("live, 1977-05-08: Barton Hall, Cornell University")
    assert comment.tags == {"live"} and {"1977", "cornell"} <= comment.details
    assert parse_disambiguation("English version").tags == {"english version"}
    assert parse_disambiguation("radio version").tags == {"edit"}
    for plain in ("album version", "2011 remaster", "the one from the film", None):
        assert parse_disambiguation(plain).tags == frozenset()
    assert album_score("Rumours", "Fleetwood Mac", 11, {
        "collectionName": "Rumours (35th Anniversary Edition)",
        "artistName": "Fleetwood Mac", "trackCount": 11}).score == 1.0


def test_normalisation() -> None:
    assert normalize("Zoé  Varga") == "zoe varga"
    assert normalize("Simon & Garfunkel") == normalize("Simon and Garfunkel")
    assert normalize("Don’t") == "dont"
    assert normalize("!!!") == "!!!"  # symbols only: kept, or it would match nothing
    assert split_artists("P!nk & Ke$ha") == ["pink", "kesha"]
    assert split_artists("Wham!") == ["wham"]
    assert split_artists("Rihanna feat. JAY-Z & Kanye West") == ["rihanna", "jay z", "kanye west"]


def test_reason_lists_evidence_and_track_numbers() -> None:
    rec = Item("Café noir", "Zoé Varga", duration_ms=198000, track=4, disc=1)
    trk = Item("Cafe Noir - 2011 Remaster", "Zoé Varga", duration_ms=199100, track=4, disc=1)
    m = match_score(rec, trk, album=True)
    assert m.score == 1.0
    assert m.reason == "title=1.00 artist=1.00 duration Δ1.1s track 4/4"
    # Within an album, a track-number disagreement costs confidence.
    other = Item("Cafe Noir", "Zoé Varga", duration_ms=199100, track=7)
    assert match_score(rec, other, album=True).score < m.score


def test_conversions_handle_nulls_and_missing_fields() -> None:
    rec = {"id": "x", "title": "Lumière", "length": None,
           "artist-credit": [{"name": "Zoé Varga", "joinphrase": " feat. ",
                              "artist": {"id": "a", "name": "Zoé Varga"}},
                             {"name": "Ana Ruiz", "artist": {"id": "b", "name": "Ana Ruiz"}}]}
    item = item_from_mb(rec, track={"title": "Lumière", "length": None, "position": 3}, disc=1)
    assert item.duration_ms is None and item.track == 3
    assert item.artist == "Zoé Varga feat. Ana Ruiz"
    assert item_from_mb({}).title == ""
    assert item_from_itunes({"trackName": "X"}).duration_ms is None


def _mb(title: str, credit: list[tuple[str, str]], seconds: int) -> Item:
    parts = [{"name": n, "joinphrase": j, "artist": {"name": n}} for n, j in credit]
    return item_from_mb({"id": "x", "title": title, "length": seconds * 1000,
                         "artist-credit": parts})


@pytest.mark.parametrize(("credit", "store", "same"), [
    ([("Alpha", " x "), ("Beta", "")], "Alpha & Beta", True),  # a collaboration credit
    ([("Alpha", " × "), ("Beta", "")], "Alpha & Beta", True),
    ([("Alpha", " & "), ("Beta", "")], "Alpha x Beta", True),
    ([("Earth, Wind & Fire", "")], "Earth Wind & Fire", True),
    ([("Earth, Wind & Fire", "")], "Earth", False),  # one artist, whole, in the credit
    ([("Simon & Garfunkel", "")], "Simon", False),
    ([("Elton John", " & "), ("Kiki Dee", "")], "Elton John", False),
    ([("Rihanna", " feat. "), ("JAY-Z", "")], "Rihanna", True),  # featured may be left out
    ([("JAY-Z", " feat. "), ("Rihanna", " & "), ("Kanye West", "")], "Kanye West & JAY-Z", True),
])
def test_a_structured_credit_names_its_lead_artists_whole(
        credit: list[tuple[str, str]], store: str, same: bool) -> None:
    rec = _mb("Song", credit, 200)
    assert rec.lead == tuple(n for n, _ in credit[:next(
        (k + 1 for k, (_, j) in enumerate(credit) if "feat" in j), len(credit))])
    assert (match_score(rec, Item("Song", store, duration_ms=200_000)).score
            >= THRESHOLD) == same


@pytest.mark.parametrize(("credit", "store", "same"), [
    # From the resolution audit: a credit without Latin letters scored artist=0.70
    # against the store's Latin spelling; its sort name's spelling is its lead credit.
    ([("宇多田ヒカル", "Utada, Hikaru", "")], "Hikaru Utada", True),
    ([("Кино", "Kino", "")], "Kino", True),
    ([("아이브", "IVE", "")], "IVE", True),
    ([("竹内まりや", "Takeuchi, Mariya", "")], "Mariya Takeuchi", True),
    ([("宇多田ヒカル", "Utada, Hikaru", " & "), ("Skrillex", "Skrillex", "")],
     "Hikaru Utada & Skrillex", True),
    ([("宇多田ヒカル", "Utada, Hikaru", " feat. "), ("Skrillex", "Skrillex", "")],
     "Hikaru Utada", True),
    # unchanged: the same script on both sides, Latin credits, and other artists
    ([("宇多田ヒカル", "Utada, Hikaru", "")], "宇多田ヒカル", True),
    ([("宇多田ヒカル", "Utada, Hikaru", "")], "Hikaru Nakamura", False),
    ([("Кино", "Kino", "")], "Kino Kid", False),
    ([("宇多田ヒカル", "Utada, Hikaru", " & "), ("Skrillex", "Skrillex", "")],
     "Hikaru Utada", False),  # one of two lead artists
])
def test_a_credit_without_latin_letters_goes_by_its_sort_names_latin_spelling(
        credit: list[tuple[str, str, str]], store: str, same: bool) -> None:
    parts = [{"name": n, "joinphrase": j, "artist": {"name": n, "sort-name": sort}}
             for n, sort, j in credit]
    rec = item_from_mb({"id": "x", "title": "First Love", "length": 257_000,
                        "artist-credit": parts})
    assert (match_score(rec, Item("First Love", store, duration_ms=257_000)).score
            >= THRESHOLD) == same
    latin = item_from_mb({"artist-credit": [
        {"name": "Zoé Varga", "artist": {"name": "Zoé Varga", "sort-name": "Varga, Zoé"}}]})
    assert (latin.latin_artist, latin.latin_lead) == ("", ())  # a Latin name is kept


def test_names_fold_letters_that_nfkd_keeps_whole() -> None:
    assert normalize("Daði Freyr") == normalize("Dadi Freyr") == "dadi freyr"
    assert normalize("Þórunn Antonía") == "thorunn antonia"
    assert normalize("Straße Ærø Łódź") == "strasse aero lodz"


def test_album_score_reads_the_release_credit_in_latin_letters() -> None:
    coll = {"collectionName": "Fantôme", "artistName": "Hikaru Utada", "trackCount": 11}
    assert album_score("Fantôme", "宇多田ヒカル", 11, coll).score < THRESHOLD
    assert album_score("Fantôme", "宇多田ヒカル", 11, coll,
                       latin_artist="Hikaru Utada").score == 1.0


@pytest.mark.parametrize(("store_album", "mb_album", "same"), [
    # From the resolution audit: studio albums named "... Live" tagged every track live.
    ("Learn to Live", "Album", True),  # "Live" the verb
    ("Born to Live", None, True),
    ("We Live", None, True),
    ("Live in Colour", "Live in Colour", True),  # the recording's own release
    ("Live on Mars (Deluxe Edition)", "Live on Mars", True),
    ("Learn to Live", "Learn to Live", True),
    # still concert albums when the recording's release is another
    ("Live in Colour", "Album", False),
    ("Live at the Fonda", "Hurry Up, We're Dreaming", False),
    ("Queen Live", None, False),
    ("Hurry Up, We're Dreaming - Live", "Hurry Up, We're Dreaming", False),
])
def test_an_album_named_live_is_a_concert_unless_the_recordings_release_has_that_name(
        store_album: str, mb_album: str | None, same: bool) -> None:
    rec = R("Alright", "Darius Rucker", 209, album=mb_album)
    trk = T("Alright", "Darius Rucker", 209, album=store_album)
    assert (match_score(rec, trk).score >= THRESHOLD) == same
    # in an album comparison too: both sides' album names are read
    positioned = match_score(R("Alright", "Darius Rucker", 209, album=mb_album, track=2),
                             T("Alright", "Darius Rucker", 209, album=store_album, track=2),
                             album=True)
    assert (positioned.score >= THRESHOLD) == same


@pytest.mark.parametrize("recording", [
    {"id": "x", "title": "Song", "artist-credit": "Various"},
    {"id": "x", "title": "Song", "artist-credit": ["Various", None, 3]},
    {"id": "x", "title": "Song", "artist-credit": [{"name": "A", "joinphrase": 7},
                                                     {"name": ["B"], "artist": "B"}]},
    {"id": "x", "title": 42, "length": "long", "disambiguation": {"live": True},
     "artist-credit": None},
])
def test_odd_shapes_of_a_hand_edited_dump_read_as_missing_fields(recording: dict) -> None:
    """Given fields of another type than the web service's, expect an Item with those
    fields empty (matched like any other), never an exception that would stop an import."""
    item = item_from_mb(recording, track={"title": None, "artist-credit": "x"}, album=5)  # type: ignore[arg-type]
    assert isinstance(item.title, str) and isinstance(item.artist, str)
    assert item.album is None and item.disambiguation is None
    assert 0.0 <= match_score(item, Item("Song", "A", duration_ms=1000)).score <= 1.0
    assert item_from_itunes({"trackName": 5, "artistName": None, "collectionName": []}).title == ""


def test_album_score_prefers_the_studio_album_by_the_artist() -> None:
    def coll(name: str, artist: str, count: int) -> dict[str, object]:
        return {"collectionName": name, "artistName": artist, "trackCount": count}

    good = album_score("Électrique nuit", "Zoé Varga", 5,
                       coll("Électrique nuit (Remastered)", "Zoé Varga", 5))
    live = album_score("Électrique nuit", "Zoé Varga", 5,
                       coll("Électrique nuit (Live à l'Olympia)", "Zoé Varga", 9))
    other = album_score("Électrique nuit", "Zoé Varga", 5,
                        coll("Electrique Nuit", "Les Varga Sisters", 5))
    assert good.score >= THRESHOLD > max(live.score, other.score)


def _markdown() -> str:
    result = evaluate()
    lines = [f"threshold {THRESHOLD}: {len(PAIRS)} pairs, TP {result['tp']}, FP {result['fp']}, "
             f"FN {result['fn']}, TN {result['tn']}; precision {result['precision']:.3f}, "
             f"recall {result['recall']:.3f}", "",
             "| category | MusicBrainz | store | same? | score | reason |",
             "|---|---|---|---|---|---|"]
    for category, rec, trk, same, m in result["rows"]:
        left = f"{rec.title} — {rec.artist}" + (f" [{rec.disambiguation}]" if rec.disambiguation
                                                else "")
        right = f"{trk.title} — {trk.artist}" + (f" [album: {trk.album}]" if trk.album else "")
        lines.append(f"| {category} | {left} | {right} | {'yes' if same else 'no'} | "
                     f"{m.score:.2f} | {m.reason} |")
    by_cat: dict[str, list[bool]] = {}
    for category, _, _, same, m in result["rows"]:
        by_cat.setdefault(category, []).append((m.score >= THRESHOLD) == same)
    lines += ["", "| category | pairs | correct |", "|---|---|---|"]
    lines += [f"| {c} | {len(v)} | {sum(v)} |" for c, v in by_cat.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(_markdown())
