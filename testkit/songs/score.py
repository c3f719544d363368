"""Songs with known tempo and key: the score model and a seeded generator (pure, no I/O).

``generate_song`` writes a small multi-instrument General MIDI arrangement (bass, chord
comping, optional pad, melody, optional drum kit) over diatonic progressions. Styles differ
in harmony, rhythm patterns, instruments, swing and metre so that an estimator tested on
these songs is not tuned to one narrow sound.

Ground truth conventions:

* ``tempo_bpm`` is the rate of the beat, the pulse a listener taps: the quarter note in
  simple metres (4/4, 3/4), the dotted quarter in compound ones (6/8, 12/8; ``meter``).
  Note times are in those beats. Swung songs (``swing > 0.5``) keep the beat: their
  off-beat eighths are delayed. 3/4 songs (``beats_per_bar == 3``) have three quarter-note
  beats per bar; compound songs divide every beat in three eighths.
* every pitched note lies in the key's scale (``scale``); minor songs may use the
  harmonic-minor leading tone over a V chord unless their scale is ``"aeolian"``; modal
  songs (dorian, phrygian, lydian, mixolydian) have ``mode`` = the quality of their tonic
  triad ("minor" for dorian and phrygian), which is the key a major/minor scorer expects.
  :func:`modulate` moves the notes after a bar line to another key (``Score.key_change``).
"""

from __future__ import annotations

import dataclasses
import math
import random
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

NOTE_NAMES: tuple[str, ...] = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MODES: tuple[str, ...] = ("major", "minor")
# Scales beyond the major and (harmonic) minor keys: name -> (steps, the triad's quality).
MODAL_SCALES: dict[str, tuple[tuple[int, ...], str]] = {
    "aeolian": ((0, 2, 3, 5, 7, 8, 10), "minor"),  # minor without the raised leading tone
    "dorian": ((0, 2, 3, 5, 7, 9, 10), "minor"),
    "phrygian": ((0, 1, 3, 5, 7, 8, 10), "minor"),
    "lydian": ((0, 2, 4, 6, 7, 9, 11), "major"),
    "mixolydian": ((0, 2, 4, 5, 7, 9, 10), "major"),
}
METERS: tuple[str, ...] = ("4/4", "3/4", "6/8", "12/8")
FEELS: tuple[str, ...] = ("straight", "swing", "sync")
TEXTURES: tuple[str, ...] = ("band", "pad", "drone")

MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11)
NATURAL_MINOR_STEPS = (0, 2, 3, 5, 7, 8, 10)
HARMONIC_MINOR_STEPS = (0, 2, 3, 5, 7, 8, 11)

DRUM_CHANNEL = 9


def key_name(tonic: int, mode: str) -> str:
    """``"F# major"``-style name of a key (sharps only)."""
    return f"{NOTE_NAMES[tonic % 12]} {mode}"


def scale_pitch_classes(tonic: int, mode: str, *, harmonic: bool = False) -> frozenset[int]:
    """Pitch classes of the key's scale; ``harmonic`` adds the minor key's leading tone."""
    steps = MAJOR_STEPS if mode == "major" else NATURAL_MINOR_STEPS
    pcs = {(tonic + s) % 12 for s in steps}
    if harmonic and mode == "minor":
        pcs.add((tonic + 11) % 12)
    return frozenset(pcs)


@dataclass(frozen=True)
class Note:
    """One note; times in quarter-note beats from the start of the song."""

    start_beat: float
    duration_beats: float
    pitch: int
    velocity: int


@dataclass
class Track:
    """One instrument: a General MIDI program (or drum kit) on one MIDI channel."""

    name: str
    program: int
    is_drum: bool
    notes: list[Note]
    channel: int
    volume: int = 100  # MIDI CC7: the track's level in the mix
    pan: int = 64  # MIDI CC10
    reverb: int = 40  # MIDI CC91 send
    chorus: int = 0  # MIDI CC93 send
    level_db: float = 0.0  # intended loudness in the mix, relative to the other tracks


@dataclass
class Score:
    """A generated song with its ground truth."""

    tempo_bpm: float
    tonic: int
    mode: str
    tracks: list[Track]
    n_beats: float
    beats_per_bar: int
    has_drums: bool
    seed: int
    style: str
    swing: float = 0.5  # where off-beat eighths fall within the beat: 0.5 straight, 2/3 shuffle
    form: str = field(default="")  # section letters, one per phrase ("I" = intro)
    meter: str = ""  # "6/8", "12/8", ... when chosen; "" = beats_per_bar quarter notes per bar
    scale: str = ""  # a MODAL_SCALES name when chosen; "" = the mode's usual scale
    key_change: tuple[float, int] | None = None  # (beat, semitones) from modulate()

    @property
    def key_name(self) -> str:
        """The key as ``"A minor"`` / ``"F# major"``."""
        return key_name(self.tonic, self.mode)

    @property
    def duration_s(self) -> float:
        """Length of the song in seconds."""
        return self.n_beats * 60.0 / self.tempo_bpm

    @property
    def pitched_notes(self) -> list[Note]:
        """All notes of the non-drum tracks."""
        return [n for t in self.tracks if not t.is_drum for n in t.notes]


# --------------------------------------------------------------------------- styles


@dataclass(frozen=True)
class _Style:
    tempo: tuple[float, float]  # where the style is picked automatically
    weight: tuple[float, float]  # auto-pick weight (with drums, without drums)
    drums: tuple[str, ...]  # drum pattern families
    kits: tuple[int, ...]  # GM drum kit programs (bank 128)
    bass: tuple[str, ...]
    bass_programs: tuple[int, ...]
    comp: tuple[str, ...]
    comp_programs: tuple[int, ...]
    leads: tuple[int, ...]
    pads: tuple[int, ...] = ()
    pad_prob: float = 0.3
    swing: tuple[float, ...] = (0.5,)
    seventh_prob: float = 0.08
    two_chords_prob: float = 0.3
    waltz_prob: float = 0.0
    jazz_harmony: bool = False
    reverb: int = 40


_STYLES: dict[str, _Style] = {
    "pop": _Style(
        tempo=(75, 180), weight=(3.0, 1.5), drums=("pop", "rock", "motown"), kits=(0, 8, 0),
        bass=("eighths", "sync", "quarters", "half"), bass_programs=(33, 34, 38, 39, 33),
        comp=("pop_sync", "block_quarters", "arpeggio", "strum", "block_half"),
        comp_programs=(0, 1, 4, 5, 25, 27, 2),
        leads=(73, 65, 80, 81, 11, 52, 53, 22, 56, 40, 54, 71, 12),
        pads=(48, 49, 89, 88, 50), pad_prob=0.4,
    ),
    "rock": _Style(
        tempo=(95, 190), weight=(3.0, 1.0), drums=("rock", "rock_ride", "punk"), kits=(16, 0, 8),
        bass=("eighths", "eighths", "quarters", "sync"), bass_programs=(34, 33, 35, 34),
        comp=("power", "strum", "block_eighths"), comp_programs=(29, 30, 27, 25, 29),
        leads=(30, 29, 81, 56, 65, 18, 62),
        pads=(16, 18, 48), pad_prob=0.25, reverb=30,
    ),
    "dance": _Style(
        tempo=(105, 150), weight=(2.5, 0.7), drums=("four_floor",), kits=(25, 24, 0),
        bass=("octave", "offbeat", "eighths"), bass_programs=(38, 39, 87, 38),
        comp=("stabs", "block_offbeat", "arpeggio16", "pad"), comp_programs=(81, 80, 90, 4, 88, 50),
        leads=(80, 81, 84, 82, 85, 11, 87),
        pads=(88, 89, 90, 94, 50), pad_prob=0.5, reverb=45,
    ),
    "funk": _Style(
        tempo=(80, 125), weight=(2.0, 0.8), drums=("sixteenth",), kits=(0, 8),
        bass=("funk", "sync"), bass_programs=(36, 37, 33, 38),
        comp=("stabs", "funk_comp"), comp_programs=(7, 4, 27, 61, 7, 28),
        leads=(61, 66, 56, 65, 64, 81),
        pads=(61, 62, 48), pad_prob=0.2, seventh_prob=0.4, reverb=25,
    ),
    "ballad": _Style(
        tempo=(60, 100), weight=(2.0, 3.0), drums=("ballad",), kits=(0, 32, 40, 8),
        bass=("half", "whole_moving", "sync"), bass_programs=(32, 33, 33, 42),
        comp=("arpeggio", "block_half", "arpeggio", "alberti"), comp_programs=(0, 0, 4, 46, 1, 5),
        leads=(73, 40, 52, 53, 71, 68, 11, 65, 0, 74, 60),
        pads=(48, 49, 89, 52, 88, 91), pad_prob=0.6, seventh_prob=0.15, reverb=70,
    ),
    "shuffle": _Style(
        tempo=(80, 150), weight=(1.5, 0.8), drums=("shuffle",), kits=(0, 8, 32),
        bass=("walking", "root_fifth_walk", "quarters"), bass_programs=(33, 32, 34),
        comp=("block_quarters", "backbeat", "block_swing"), comp_programs=(16, 17, 3, 0, 26, 18),
        leads=(22, 66, 65, 56, 29, 26, 57),
        pads=(16, 19), pad_prob=0.2, swing=(2 / 3, 0.62), reverb=35,
    ),
    "jazz": _Style(
        tempo=(70, 190), weight=(1.5, 1.5), drums=("swing",), kits=(32, 40, 33),
        bass=("walking",), bass_programs=(32, 32, 33),
        comp=("jazz_comp", "block_quarters"), comp_programs=(4, 0, 26, 11, 5),
        leads=(65, 66, 56, 57, 11, 73, 64, 71, 26),
        pads=(48, 52), pad_prob=0.15, swing=(2 / 3, 0.64), seventh_prob=0.8,
        two_chords_prob=0.6, jazz_harmony=True, reverb=45,
    ),
    "waltz": _Style(
        tempo=(80, 150), weight=(0.8, 1.2), drums=("waltz",), kits=(0, 40, 48),
        bass=("waltz",), bass_programs=(32, 43, 33, 58),
        comp=("waltz", "arpeggio", "waltz"), comp_programs=(21, 0, 48, 46, 24, 45),
        leads=(40, 73, 71, 21, 68, 22, 74, 11),
        pads=(48, 49), pad_prob=0.3, waltz_prob=1.0, reverb=55,
    ),
    "folk": _Style(
        tempo=(75, 180), weight=(1.2, 2.0), drums=("folk", "rock"), kits=(8, 0, 40),
        bass=("root_fifth", "half", "quarters"), bass_programs=(32, 33, 32),
        comp=("strum", "strum", "arpeggio", "backbeat"), comp_programs=(25, 24, 15, 25, 46, 24),
        leads=(40, 73, 75, 22, 74, 71, 21, 110, 79),
        pads=(48, 21, 19), pad_prob=0.2, waltz_prob=0.15, reverb=40,
    ),
    "ambient": _Style(
        tempo=(60, 110), weight=(0.8, 2.0), drums=("ballad", "four_floor"), kits=(25, 24, 0),
        bass=("whole_moving", "half", "pulse"), bass_programs=(38, 39, 33, 32),
        comp=("arpeggio", "arpeggio16", "pad_pulse"), comp_programs=(46, 8, 10, 11, 108, 0, 4),
        leads=(73, 75, 79, 52, 88, 11, 98, 91, 53),
        pads=(88, 89, 91, 92, 94, 95, 52, 48), pad_prob=0.9, seventh_prob=0.2, reverb=90,
    ),
    "chamber": _Style(
        tempo=(60, 180), weight=(0.3, 2.0), drums=("ballad", "waltz"), kits=(48, 0),
        bass=("half", "quarters", "whole_moving"), bass_programs=(42, 43, 42, 70),
        comp=("alberti", "arpeggio", "block_quarters"), comp_programs=(0, 6, 46, 48, 0, 45),
        leads=(40, 73, 68, 71, 60, 56, 41, 72),
        pads=(48, 49, 44), pad_prob=0.4, waltz_prob=0.2, reverb=65,
    ),
    "bossa": _Style(
        tempo=(100, 150), weight=(1.0, 1.0), drums=("bossa",), kits=(0, 32, 40),
        bass=("bossa",), bass_programs=(32, 33, 32),
        comp=("bossa",), comp_programs=(24, 4, 0, 26),
        leads=(73, 65, 66, 11, 53, 24, 56, 71),
        pads=(48, 52, 89), pad_prob=0.25, seventh_prob=0.6, two_chords_prob=0.4, reverb=45,
    ),
    "hiphop": _Style(
        tempo=(70, 100), weight=(1.5, 0.5), drums=("boombap",), kits=(0, 25, 24, 8),
        bass=("sync", "hiphop"), bass_programs=(38, 33, 39, 34, 32),
        comp=("block_sync", "pad_pulse", "arpeggio"), comp_programs=(4, 5, 0, 48, 89, 11, 12),
        leads=(11, 80, 73, 0, 12, 54, 65, 82),
        pads=(89, 48, 52, 94), pad_prob=0.4, swing=(0.5, 0.58, 0.6), seventh_prob=0.4,
        reverb=35,
    ),
}

STYLES: tuple[str, ...] = tuple(_STYLES)

# Harmony: scale degrees 0..6 ("4h" = dominant from harmonic minor), with pick weights.
_PROGRESSIONS: dict[str, tuple[tuple[str, float], ...]] = {
    "major": (
        ("0 4 5 3", 4), ("0 3 4 0", 3), ("0 5 3 4", 3), ("0 3 5 4", 2), ("0 2 3 4", 1),
        ("0 3 0 4", 2), ("0 4 5 2 3 0 3 4", 1.5), ("0 1 3 4", 1), ("0 5 1 4", 2),
        ("5 3 0 4", 1), ("0 4 3 4", 1), ("0 3 1 4", 1), ("0 0 3 4", 1),
    ),
    "minor": (
        ("0 5 2 6", 3), ("0 3 4 0", 1), ("0 3 4h 0", 3), ("0 6 5 4h", 3), ("0 5 3 4h", 2),
        ("0 5 6 0", 2), ("0 3 6 2", 1), ("0 6 5 6", 1), ("0 3 0 4h", 2), ("0 4 5 3", 1),
        ("0 2 3 4h", 1), ("0 3 5 4h", 1.5), ("0 0 5 6", 1),
    ),
}
# Modal progressions lean on the chords that carry the mode's colour (dorian IV, mixolydian
# bVII, lydian II, phrygian bII) and resolve to the tonic, never to a major V.
_MODAL_PROGRESSIONS: dict[str, tuple[tuple[str, float], ...]] = {
    "aeolian": (("0 5 2 6", 3), ("0 3 4 0", 1), ("0 6 5 6", 1), ("0 5 6 0", 2), ("0 3 6 0", 2),
                ("0 2 3 4", 1)),
    "dorian": (("0 3 0 3", 3), ("0 6 3 0", 2), ("0 3 6 0", 2), ("0 1 3 0", 1), ("0 4 3 0", 1)),
    "phrygian": (("0 1 0 1", 3), ("0 1 6 0", 2), ("0 6 1 0", 2), ("0 3 1 0", 1)),
    "lydian": (("0 1 0 1", 3), ("0 1 4 0", 2), ("0 1 5 0", 1), ("0 6 1 0", 1)),
    "mixolydian": (("0 6 3 0", 3), ("0 6 0 3", 2), ("0 3 6 0", 2), ("0 4 6 0", 1),
                   ("0 0 6 3", 1)),
}
_MODAL_CADENCE: dict[str, tuple[int, ...]] = {
    "aeolian": (4, 6, 3), "dorian": (3, 6), "phrygian": (1, 6), "lydian": (1, 4),
    "mixolydian": (6, 3),
}

_JAZZ_PROGRESSIONS: dict[str, tuple[tuple[str, float], ...]] = {
    "major": (("1 4 0 0", 3), ("0 5 1 4", 3), ("2 5 1 4", 2), ("0 3 1 4", 1), ("0 0 1 4", 1)),
    "minor": (("1 4h 0 0", 3), ("0 3 1 4h", 2), ("0 5 1 4h", 2), ("0 0 3 4h", 1)),
}

# Melody ranges (lowest, highest MIDI pitch) per GM program; others use the default.
_LEAD_RANGE: dict[int, tuple[int, int]] = {
    0: (60, 84), 9: (72, 96), 11: (60, 84), 12: (60, 84), 21: (57, 81), 22: (60, 84),
    24: (55, 79), 26: (55, 79), 29: (55, 79), 30: (55, 81), 40: (62, 88), 41: (55, 79),
    52: (57, 79), 53: (57, 79), 54: (57, 79), 56: (58, 82), 57: (48, 72), 60: (50, 74),
    61: (55, 79), 62: (55, 79), 64: (62, 84), 65: (58, 80), 66: (51, 75), 68: (62, 84),
    71: (55, 82), 72: (72, 96), 73: (67, 91), 74: (67, 88), 75: (67, 88), 79: (67, 88),
    110: (62, 86),
}

_DRUM_VEL = {"X": 112, "x": 88, "o": 50}
# Level of each drum sound relative to the pattern's velocity.
_DRUM_GAIN = {42: 0.72, 44: 0.6, 46: 0.78, 51: 0.78, 54: 0.62, 70: 0.55, 37: 0.85, 39: 0.95}

# Drum patterns: per family, variants of {GM note: grid}; 16 steps per 4/4 bar, 12 per 3/4.
_DRUM_GRIDS: dict[str, tuple[dict[int, str], ...]] = {
    "rock": (
        {36: "X-------X-------", 38: "----X-------X---", 42: "X-x-X-x-X-x-X-x-"},
        {36: "X-------X-x-----", 38: "----X-------X---", 42: "X-x-X-x-X-x-X-x-"},
        {36: "X------xX-------", 38: "----X-------X---", 42: "X-x-X-x-X-x-X-x-"},
        {36: "X-----x-X-x-----", 38: "----X-------X---", 42: "X-x-X-x-X-x-X-x-"},
    ),
    "rock_ride": (
        {36: "X-------X-x-----", 38: "----X-------X---", 51: "X-x-X-x-X-x-X-x-"},
        {36: "X-x-----X-------", 38: "----X-------X---", 51: "X-x-X-x-X-x-X-x-",
         44: "----x-------x---"},
    ),
    "punk": (
        {36: "X-------X-------", 38: "----X-------X---", 42: "X-x-X-x-X-x-X-x-"},
        {36: "X---x---X---x---", 38: "----X-------X---", 51: "X---X---X---X---"},
        {36: "X-------X-x-----", 38: "----X-------X---", 42: "X---X---X---X---"},
    ),
    "pop": (
        {36: "X-----x-X-------", 38: "----X-------X---", 42: "x-x-x-x-x-x-x-x-"},
        {36: "X-------X-x-----", 38: "----X-------X---", 42: "x-x-x-x-x-x-x-x-",
         54: "----x-------x---"},
        {36: "X--x----X-------", 38: "----X-------X---", 42: "x-x-x-x-x-x-xox-"},
    ),
    "motown": (
        {36: "X-----x-X-------", 38: "x---X---x---X---", 54: "x-x-x-x-x-x-x-x-"},
        {36: "X-------X-------", 38: "o---X---o---X---", 42: "x-x-x-x-x-x-x-x-",
         54: "----x-------x---"},
    ),
    "four_floor": (
        {36: "X---X---X---X---", 39: "----X-------X---", 42: "x---x---x---x---",
         46: "--x---x---x---x-"},
        {36: "X---X---X---X---", 38: "----X-------X---", 46: "--x---x---x---x-"},
        {36: "X---X---X---X---", 39: "----X-------X---", 42: "xx-xxx-xxx-xxx-x",
         46: "--x---x---x---x-"},
    ),
    "sixteenth": (
        {36: "X-----x---X-----", 38: "----X--o-o--X---", 42: "XxxxXxxxXxxxXxxx"},
        {36: "X--x------X--x--", 38: "----X-------X--o", 42: "XxxxXxxxXxxxXxxx"},
        {36: "X-x-----X-x-----", 38: "----X--o----X---", 42: "XxxxXxxxXxxxXxx-",
         46: "---------------x"},
    ),
    "ballad": (
        {36: "X-------X-------", 37: "----x-------x---", 42: "x-x-x-x-x-x-x-x-"},
        {36: "X-------x-x-----", 38: "----x-------x---", 51: "x-x-x-x-x-x-x-x-"},
        {36: "X-------X-------", 37: "----x-------x---", 51: "x---x---x---x---",
         44: "--x---x---x---x-"},
    ),
    "shuffle": (
        {36: "X-------X-------", 38: "----X-------X---", 42: "X-x-X-x-X-x-X-x-"},
        {36: "X-----x-X-------", 38: "----X-------X---", 51: "X-x-X-x-X-x-X-x-"},
        {36: "X-------X-----x-", 38: "----X-------X---", 42: "X-x-X-x-X-x-X-x-"},
    ),
    "swing": (
        {51: "X---x-x-X---x-x-", 44: "----x-------x---", 36: "o---o---o---o---"},
        {51: "X---x-x-X---x-x-", 44: "----x-------x---", 36: "o-------o-------"},
    ),
    "bossa": (
        {36: "X--xX--xX--xX--x", 37: "x--x--x---x--x--", 42: "x-x-x-x-x-x-x-x-"},
        {36: "X--xX--xX--xX--x", 37: "--x--x---x--x---", 70: "xxxxxxxxxxxxxxxx"},
    ),
    "boombap": (
        {36: "X-------x-X-----", 38: "----X-------X---", 42: "x-x-x-x-x-x-x-x-"},
        {36: "X-x-------X-----", 38: "----X-------X---", 42: "x-x-x-x-x-x-x-x-"},
        {36: "X------xX-x-----", 38: "----X-------X---", 42: "x-x-x-x-x-xox-x-"},
    ),
    "folk": (
        {36: "X-------X-------", 38: "----x-------x---", 54: "x-x-x-x-x-x-x-x-"},
        {36: "X-------X-------", 37: "----x-------x---", 42: "x-x-x-x-x-x-x-x-"},
    ),
    # Compound metres: 16 steps per four beats, but the timing warp (_compound_time) puts
    # steps 0, 1, 2 of each beat on its three eighths; step 3 stays empty.
    "twelve_eight": (
        {36: "X-------X-------", 38: "----X-------X---", 42: "xxx-xxx-xxx-xxx-"},
        {36: "X-------X-x-----", 38: "----X-------X---", 51: "xxx-xxx-xxx-xxx-"},
        {36: "X-x-----X-x-----", 38: "----X-------X---", 42: "x-x-x-x-x-x-x-x-"},
    ),
    "six_eight": (
        {36: "X-------X-------", 38: "----X-------X---", 42: "xxx-xxx-xxx-xxx-"},
        {36: "X---x---X---x---", 38: "--x---x---x---x-", 42: "x-x-x-x-x-x-x-x-"},
        {36: "X-------X-------", 37: "----x-------x---", 51: "xxx-xxx-xxx-xxx-"},
    ),
    "waltz": (
        {36: "X-----------", 38: "----x---x---", 42: "x-x-x-x-x-x-"},
        {36: "X-----------", 37: "----x---x---", 51: "x---x---x---"},
        {36: "X-------x---", 38: "----x-------", 42: "x---x---x---"},
    ),
}

_FILL_TOMS = (50, 48, 47, 45, 43, 41)


# --------------------------------------------------------------------------- harmony


@dataclass(frozen=True)
class _Chord:
    degree: int  # root as scale degree 0..6
    degrees: tuple[int, ...]  # chord-tone scale degrees (mod 7), root first
    pcs: tuple[int, ...]  # chord-tone pitch classes, root first
    bass_pc: int  # pitch class the bass plays as "root" (differs for inversions)
    steps: tuple[int, ...]  # the scale (semitones above tonic) to use over this chord


@dataclass(frozen=True)
class _ChordSpan:
    start: float
    end: float
    chord: _Chord


def _make_chord(
    tonic: int, mode: str, degree: int, *, harmonic: bool = False, seventh: bool = False,
    sus: int = 0, inversion: int = 0,
) -> _Chord:
    if mode in MODAL_SCALES:
        steps = MODAL_SCALES[mode][0]
    elif mode == "major":
        steps = MAJOR_STEPS
    else:
        steps = HARMONIC_MINOR_STEPS if harmonic else NATURAL_MINOR_STEPS
    degs = [degree, degree + 2, degree + 4]
    if sus == 4:
        degs[1] = degree + 3
    elif sus == 2:
        degs[1] = degree + 1
    if seventh:
        degs.append(degree + 6)
    degrees = tuple(d % 7 for d in degs)
    pcs = tuple((tonic + steps[d]) % 12 for d in degrees)
    bass_pc = pcs[1] if inversion == 1 and not sus else pcs[0]
    return _Chord(degree % 7, degrees, pcs, bass_pc, steps)


def _parse_progression(text: str) -> list[tuple[int, bool]]:
    return [(int(tok[0]), tok.endswith("h")) for tok in text.split()]


def _weighted(rng: random.Random, items: Sequence[tuple[str, float]]) -> str:
    return rng.choices([i for i, _ in items], weights=[w for _, w in items])[0]


def _place(pc: int, lo: int) -> int:
    """The lowest MIDI pitch >= lo with pitch class pc."""
    return lo + (pc - lo) % 12


def _clamp(x: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, x))


# --------------------------------------------------------------------------- generator


class _Generator:
    def __init__(
        self, seed: int, tonic: int, mode: str, tempo: float, drums: bool, duration_s: float,
        style: str, *, meter: str | None = None, feel: str | None = None,
        scale: str | None = None, texture: str | None = None,
    ) -> None:
        self.rng = random.Random(f"previewvec-song:{seed}")
        self.seed = seed
        self.tonic = tonic
        self.mode = mode
        # The scale harmony and melody use: the mode's own unless a modal scale was chosen.
        self.scale = scale or mode
        self.meter = meter or ""
        self.compound = meter in ("6/8", "12/8")
        self.feel = feel or "straight"
        self.texture = texture or "band"
        self.tempo = tempo
        self.drums = drums
        self.style_name = style
        self.st = _STYLES[style]
        rng = self.rng
        self.bpb = 3 if rng.random() < self.st.waltz_prob and 75 <= tempo <= 150 else 4
        if meter is not None:
            # Compound metres are written four beats (dotted quarters) to a bar: 12/8 as is,
            # 6/8 as pairs of bars (its chords change every 6/8 bar, see plan_harmony).
            self.bpb = 3 if meter == "3/4" else 4
        self.n_beats = tempo * duration_s / 60.0
        self.n_bars = math.ceil(self.n_beats / self.bpb - 1e-9)
        self.swing = rng.choice(self.st.swing)
        if feel == "swing":
            self.swing = rng.choice((0.6, 0.64, 2 / 3))
        elif feel is not None or self.compound:
            self.swing = 0.5
        self.fast = tempo >= 150
        self.slow = tempo < 85
        # Shortest note value that stays musical at this tempo (beats).
        self.min_sub = 0.25 if tempo <= 112 else 0.5

    # ---- harmony and form

    def plan_harmony(self) -> None:
        rng, st = self.rng, self.st
        two = rng.random() < st.two_chords_prob * (1.6 if self.slow else 0.5 if self.fast else 1)
        self.chords_per_bar = 2 if two and self.bpb == 4 else 1
        if self.meter == "6/8":
            self.chords_per_bar = 2  # one chord per 6/8 bar
        self.phrase_bars = 8 if self.tempo >= 92 or self.chords_per_bar == 2 else 4
        if self.chords_per_bar == 2:
            self.phrase_bars = 4 if self.tempo < 100 else 8
        pool = _JAZZ_PROGRESSIONS if st.jazz_harmony and rng.random() < 0.8 else _PROGRESSIONS
        if self.scale in MODAL_SCALES:
            pool = _MODAL_PROGRESSIONS
        prog_a = _parse_progression(_weighted(rng, pool[self.scale]))
        prog_b = prog_a
        second = _MODAL_PROGRESSIONS if self.scale in MODAL_SCALES else _PROGRESSIONS
        for _ in range(10):
            prog_b = _parse_progression(_weighted(rng, second[self.scale]))
            if prog_b != prog_a:
                break
        n_phrases = math.ceil(self.n_bars / self.phrase_bars)
        forms = ("AABA", "AABB", "ABAB", "AAAB", "ABAA")
        form = list(rng.choice(forms))
        while len(form) < n_phrases:
            form += form
        form = form[:n_phrases]
        self.intro_bars = 0
        if rng.random() < 0.3 and self.n_bars >= 10:
            self.intro_bars = 2 if self.phrase_bars == 4 or rng.random() < 0.6 else 4
        self.form = form
        cadence_prob = 0.35 if st.jazz_harmony else 0.7
        self.sections: list[tuple[float, float, str]] = []  # (start, end, label)
        # Decorations are drawn once per section so that repeated sections are identical.
        decorations: dict[str, list[tuple[bool, int, int]]] = {}
        cadences: dict[str, bool] = {}
        spans: list[_ChordSpan] = []
        slot_beats = self.bpb / self.chords_per_bar
        slots_per_phrase = self.phrase_bars * self.chords_per_bar
        bar = 0
        for label in form:
            prog = prog_a if label == "A" else prog_b
            if label not in decorations:
                decorations[label] = [self._decoration() for _ in range(slots_per_phrase)]
                cadences[label] = rng.random() < cadence_prob
            seq = [prog[i % len(prog)] for i in range(slots_per_phrase)]
            if cadences[label]:
                seq = self._cadence(seq)
            start = bar * self.bpb
            self.sections.append((start, start + self.phrase_bars * self.bpb, label))
            for i, (deg, harm) in enumerate(seq):
                seventh, sus, inv = decorations[label][i]
                t0 = start + i * slot_beats
                if i == 0 or (deg == 0 and i == len(seq) - 1):
                    sus, inv = 0, 0  # start phrases and land on the tonic in root position
                if sus and slot_beats in (2, 4):
                    ch_sus = _make_chord(self.tonic, self.scale, deg, harmonic=harm, sus=sus)
                    ch = _make_chord(self.tonic, self.scale, deg, harmonic=harm, seventh=seventh)
                    half = slot_beats / 2
                    spans.append(_ChordSpan(t0, t0 + half, ch_sus))
                    spans.append(_ChordSpan(t0 + half, t0 + slot_beats, ch))
                else:
                    ch = _make_chord(self.tonic, self.scale, deg, harmonic=harm, seventh=seventh,
                                     inversion=inv)
                    spans.append(_ChordSpan(t0, t0 + slot_beats, ch))
            bar += self.phrase_bars
        self.spans = spans
        self.span_starts = [s.start for s in spans]

    def _decoration(self) -> tuple[bool, int, int]:
        rng = self.rng
        seventh = rng.random() < self.st.seventh_prob
        sus = rng.choice((2, 4)) if rng.random() < 0.07 else 0
        inversion = 1 if rng.random() < 0.08 else 0
        return seventh, sus, inversion

    def _cadence(self, seq: list[tuple[int, bool]]) -> list[tuple[int, bool]]:
        seq = list(seq)
        seq[-1] = (0, False)
        if len(seq) >= 4 and seq[-2][0] not in (3, 4, 6, 1):
            if self.scale in MODAL_SCALES:
                seq[-2] = (self.rng.choice(_MODAL_CADENCE[self.scale]), False)
            elif self.mode == "major":
                seq[-2] = (4, False)
            else:
                seq[-2] = self.rng.choice(((4, True), (4, True), (6, False), (3, False)))
        return seq

    def chord_at(self, t: float) -> _ChordSpan:
        i = bisect_right(self.span_starts, t + 1e-6) - 1
        return self.spans[max(0, min(i, len(self.spans) - 1))]

    def section_at(self, t: float) -> str:
        for start, end, label in self.sections:
            if start <= t < end:
                return label
        return self.sections[-1][2]

    # ---- helpers

    def _fit_to_chords(
        self, events: list[tuple[float, float, str]], bar_start: float, bar_end: float,
        fill_tone: str = "R",
    ) -> list[tuple[float, float, str]]:
        """Cut events at chord changes; make sure each chord in the bar is sounded."""
        out: list[tuple[float, float, str]] = []
        for t, d, tone in events:
            span = self.chord_at(t)
            out.append((t, min(d, span.end - t), tone))
        onsets = {round(t, 4) for t, _, _ in out}
        for span in self.spans:
            if bar_start < span.start < bar_end and round(span.start, 4) not in onsets:
                nxt = min([t for t, _, _ in out if t > span.start] + [span.end])
                out.append((span.start, nxt - span.start, fill_tone))
        out.sort()
        return out

    def _bar_starts(self) -> list[float]:
        return [b * self.bpb for b in range(self.n_bars)]

    def _vel(self, base: float, spread: float = 6.0) -> int:
        return _clamp(round(base + self.rng.gauss(0, spread / 2)), 1, 127)

    # ---- bass

    def bass_track(self) -> tuple[list[Note], str]:
        rng, st = self.rng, self.st
        kinds = list(st.bass)
        if self.bpb == 3:
            kinds = ["waltz", "half", "quarters"] if "waltz" not in kinds else ["waltz"]
        if self.fast:
            kinds = [k for k in kinds if k not in ("funk", "octave")] or ["quarters"]
        if self.tempo > 125:
            kinds = [k for k in kinds if k != "funk"] or ["sync"]
        if not self.drums and rng.random() < 0.5:
            # Without drums the bass often carries the pulse.
            pulse = [k for k in kinds if k in ("quarters", "eighths", "walking", "octave",
                                              "root_fifth_walk", "waltz", "funk", "pulse")]
            kinds = pulse or kinds
        if self.feel == "sync" and self.bpb == 4:
            kinds = ["sync", "hiphop"] if self.tempo <= 125 else ["sync"]
        if self.texture == "pad":
            kinds = ["whole", "whole_moving", "half"]
        elif self.texture == "drone":
            kinds = ["drone"]
        kind = rng.choice(kinds)
        lo = rng.choice((28, 29, 31, 33)) if kind != "octave" else 28
        notes: list[Note] = []
        if kind == "walking":
            return self._walking_bass(lo), kind
        base_vel = rng.uniform(88, 102)
        for b, t0 in enumerate(self._bar_starts()):
            events = [(t0 + o, d, tone) for o, d, tone in self._bass_bar(kind, b)]
            fill = "T" if kind == "drone" else "R"
            for t, d, tone in self._fit_to_chords(events, t0, t0 + self.bpb, fill_tone=fill):
                chord = self.chord_at(t).chord
                pitch = self._bass_pitch(chord, tone, lo)
                art = 0.5 if kind in ("octave", "offbeat") else 0.92
                accent = 8 if abs(t - round(t)) < 1e-6 and round(t) % self.bpb == 0 else 0
                notes.append(Note(t, max(0.1, d * art), pitch, self._vel(base_vel + accent)))
        return notes, kind

    def _bass_bar(self, kind: str, bar: int) -> list[tuple[float, float, str]]:
        rng, bpb = self.rng, self.bpb
        if kind == "waltz":
            first = "R" if bar % 2 == 0 else "5"
            if rng.random() < 0.25:
                return [(0, 1, first), (2, 1, "5")]
            return [(0, 1, first)]
        if kind == "whole":
            return [(0, bpb, "R")]
        if kind == "drone":  # a tonic pedal under every chord
            return [(0, bpb, "T")]
        if kind == "whole_moving":
            if rng.random() < 0.5:
                return [(0, bpb, "R")]
            return [(0, 2, "R"), (2, bpb - 2, rng.choice("53"))]
        if kind == "half":
            if bpb == 3:
                return [(0, 2, "R"), (2, 1, "5")]
            return [(0, 2, "R"), (2, 2, rng.choice("R55"))]
        if kind == "quarters":
            return [(i, 1, "R" if i % 2 == 0 or rng.random() < 0.6 else rng.choice("58"))
                    for i in range(bpb)]
        if kind == "pulse":
            return [(i, 1, "R") for i in range(bpb)]
        if kind == "eighths":
            tones = ["R"] * (2 * bpb)
            if rng.random() < 0.3:
                tones[-2:] = ["5", "8"]
            return [(i * 0.5, 0.5, tones[i]) for i in range(2 * bpb)]
        if kind == "octave":
            return [(i * 0.5, 0.5, "R" if i % 2 == 0 else "8") for i in range(2 * bpb)]
        if kind == "offbeat":
            return [(i + 0.5, 0.5, "R") for i in range(bpb)] + [(0, 0.5, "R")]
        if kind in ("root_fifth", "root_fifth_walk"):
            if bpb == 3:
                return [(0, 1, "R"), (1, 1, "5"), (2, 1, "5")]
            if kind == "root_fifth_walk":
                return [(0, 1, "R"), (1, 1, "3"), (2, 1, "5"), (3, 1, "6")]
            if rng.random() < 0.3:
                return [(0, 1.5, "R"), (1.5, 0.5, "R"), (2, 1.5, "5"), (3.5, 0.5, "5")]
            return [(0, 1.5, "R"), (2, 1.5, "5")]
        if kind == "sync":
            options = [
                [(0, 1.5, "R"), (1.5, 0.5, "R"), (2, 2, "5")],
                [(0, 1.5, "R"), (1.5, 1, "5"), (2.5, 1.5, "R")],
                [(0, 1, "R"), (1.5, 0.5, "R"), (2, 1, "5"), (3, 0.5, "8"), (3.5, 0.5, "5")],
                [(0, 1.5, "R"), (1.5, 1.5, "R"), (3, 1, "5")],
            ]
            return rng.choice(options)
        if kind == "hiphop":
            return rng.choice([
                [(0, 1.5, "R"), (1.75, 0.25, "R"), (2.5, 1, "5")],
                [(0, 0.75, "R"), (1.5, 0.5, "8"), (2, 1.5, "R"), (3.5, 0.5, "5")],
            ])
        if kind == "funk":
            return rng.choice([
                [(0, 0.5, "R"), (0.75, 0.25, "R"), (1.5, 0.25, "8"), (2, 0.5, "R"),
                 (2.75, 0.25, "5"), (3, 0.5, "R"), (3.5, 0.25, "8")],
                [(0, 0.75, "R"), (1, 0.25, "8"), (1.5, 0.5, "R"), (2.5, 0.5, "5"),
                 (3, 0.25, "R"), (3.25, 0.25, "R"), (3.75, 0.25, "8")],
            ])
        if kind == "bossa":
            return [(0, 1.5, "R"), (1.5, 0.5, "5"), (2, 1.5, "5"), (3.5, 0.5, "R")]
        return [(0, bpb, "R")]

    def _bass_pitch(self, chord: _Chord, tone: str, lo: int) -> int:
        root = _place(chord.bass_pc, lo)
        if tone == "R":
            return root
        if tone == "T":
            return _place(self.tonic, lo)
        if tone == "8":
            return root + 12
        if tone == "5":
            return _place(chord.pcs[2], root)
        if tone == "3":
            return _place(chord.pcs[1], root)
        if tone == "6":  # the scale step above the fifth
            deg = (chord.degree + 5) % 7
            return _place((self.tonic + chord.steps[deg]) % 12, root)
        return root

    def _walking_bass(self, lo: int) -> list[Note]:
        """Quarter notes stepping through the key toward the next chord's root."""
        rng = self.rng
        notes: list[Note] = []
        total = self.n_bars * self.bpb
        t = 0
        prev: int | None = None
        while t < total:
            span = self.chord_at(t)
            chord = span.chord
            beats = round(span.end - span.start)
            nxt = self.chord_at(span.end).chord if span.end < total else chord
            root = _place(chord.bass_pc, lo)
            if prev is not None and root - prev > 7:
                root -= 12
            if root < lo - 2:
                root += 12
            pcs_line = [root]
            target = _place(nxt.bass_pc, root - 6)
            for k in range(1, beats):
                if k == beats - 1:
                    # Approach the next root by a scale step.
                    step = 1 if rng.random() < 0.5 else -1
                    pitch = self._scale_neighbor(target, step, chord)
                else:
                    pitch = _place(chord.pcs[min(k, len(chord.pcs) - 1)], pcs_line[-1] - 5)
                    if abs(pitch - pcs_line[-1]) > 7:
                        pitch += 12 if pitch < pcs_line[-1] else -12
                pcs_line.append(pitch)
            for k, pitch in enumerate(pcs_line):
                while pitch < 28:
                    pitch += 12
                while pitch > 55:
                    pitch -= 12
                vel = self._vel(96 if k == 0 else 86)
                notes.append(Note(t + k, 0.9, pitch, vel))
            prev = pcs_line[-1]
            t = span.end
        return notes

    def _scale_neighbor(self, pitch: int, step: int, chord: _Chord) -> int:
        scale = sorted({(self.tonic + s) % 12 for s in chord.steps})
        p = pitch + step
        while p % 12 not in scale:
            p += step
        return p

    # ---- comping

    def comp_track(self, program: int, kind: str) -> list[Note]:
        rng = self.rng
        notes: list[Note] = []
        center = rng.choice((55, 57, 59, 60, 62))
        base_vel = rng.uniform(64, 80)
        prev: tuple[int, ...] | None = None
        strum_pat = rng.choice(("D-DU-UDU", "D-D-D-D-", "D-DUD-DU", "D--UD-D-", "D-DU-UD-"))
        if self.fast:
            strum_pat = rng.choice(("D-D-D-D-", "D---D-D-", "D-D-D-DU"))
        arp_order = rng.choice(((0, 1, 2, 3), (0, 1, 2, 3, 2, 1), (0, 2, 1, 2), (0, 2, 1, 3),
                                (0, 1, 2, 1)))
        bossa_bar = rng.choice(([(0, 1), (1.5, 1), (3, 0.5)], [(0, 1), (1.5, 1.5), (3.5, 0.5)]))
        for b, t0 in enumerate(self._bar_starts()):
            events = self._comp_bar(kind, b, strum_pat, bossa_bar)
            events = self._fit_to_chords([(t0 + o, d, m) for o, d, m in events], t0,
                                         t0 + self.bpb, fill_tone="C")
            arp_i = 0
            last_span: _ChordSpan | None = None
            for t, d, mode in events:
                span = self.chord_at(t)
                chord = span.chord
                if span is not last_span:
                    arp_i = 0
                    last_span = span
                accent = 8 if abs(t - t0) < 1e-6 else 0
                if mode in ("C", "S", "P", "U", "D"):
                    if kind == "power":
                        voicing = self._power_voicing(chord)
                    elif mode in ("U", "D"):
                        voicing = self._guitar_voicing(chord)
                    else:
                        voicing = self._close_voicing(chord, center, prev)
                        prev = voicing
                    art = {"C": 0.9, "S": 0.35, "P": 1.0, "U": 0.95, "D": 0.95}[mode]
                    vel = base_vel + accent - (10 if mode == "U" else 0) - (8 if mode == "P" else 0)
                    if mode in ("U", "D"):
                        order = voicing if mode == "D" else voicing[::-1][:4]
                        for k, pitch in enumerate(order):
                            off = k * 0.009 * self.tempo / 60.0
                            notes.append(Note(t + off, max(0.1, d * art - off), pitch,
                                              self._vel(vel - k)))
                    else:
                        v = self._vel(vel)
                        for pitch in voicing:
                            notes.append(Note(t, max(0.1, d * art), pitch,
                                              _clamp(v + rng.randint(-3, 3), 1, 127)))
                else:  # "A": next arpeggio note
                    line = self._arp_line(chord, center - 7)
                    idx = arp_order[arp_i % len(arp_order)]
                    arp_i += 1
                    pitch = line[min(idx, len(line) - 1)]
                    notes.append(Note(t, d * rng.uniform(1.2, 2.0), pitch, self._vel(
                        base_vel - 4 + accent)))
        return notes

    def _comp_bar(
        self, kind: str, bar: int, strum: str, bossa_bar: list[tuple[float, float]],
    ) -> list[tuple[float, float, str]]:
        rng, bpb = self.rng, self.bpb
        if kind in ("pad",):
            return [(0, bpb, "P")]
        if kind == "pad_pulse":
            return [(i, 1, "C") for i in range(bpb)] if self.tempo < 110 else [(0, bpb, "P")]
        if kind == "block_half":
            return [(0, 2, "C"), (2, bpb - 2, "C")]
        if kind in ("block_quarters", "block_swing"):
            return [(i, 1, "C" if kind == "block_quarters" else "S") for i in range(bpb)]
        if kind == "block_eighths":
            return [(i * 0.5, 0.5, "C") for i in range(2 * bpb)]
        if kind == "power":
            if self.tempo > 165:
                return [(i, 1, "C") for i in range(bpb)]
            return [(i * 0.5, 0.5, "S" if i % 2 else "C") for i in range(2 * bpb)]
        if kind == "block_offbeat":
            return [(i + 0.5, 0.5, "S") for i in range(bpb)]
        if kind == "block_sync" or kind == "pop_sync":
            if bpb == 3:
                return [(0, 1.5, "C"), (1.5, 1.5, "C")]
            return rng.choice(([(0, 1.5, "C"), (1.5, 1, "C"), (2.5, 1.5, "C")],
                               [(0, 1, "C"), (1.5, 1, "C"), (3, 1, "C")],
                               [(0, 1.5, "C"), (1.5, 2.5, "C")]))
        if kind == "stabs":
            return [(i + 0.5, 0.5, "S") for i in range(bpb)]
        if kind == "funk_comp":
            return rng.choice(([(0, 0.25, "S"), (0.75, 0.25, "S"), (1.5, 0.5, "S"),
                                (2.5, 0.25, "S"), (3.25, 0.25, "S")],
                               [(0.5, 0.25, "S"), (1, 0.5, "S"), (2.5, 0.5, "S"),
                                (3, 0.25, "S"), (3.5, 0.25, "S")]))
        if kind == "backbeat":
            return [(i, 0.5, "S") for i in range(1, bpb, 2)] if bpb == 4 else [(1, .5, "S"),
                                                                             (2, .5, "S")]
        if kind == "waltz":
            return [(1, 0.8, "S"), (2, 0.8, "S")] if bpb == 3 else [(1, .5, "S"), (3, .5, "S")]
        if kind == "jazz_comp":
            options = ([(0, 1.5, "C"), (2.5, 1, "S")], [(1.5, 1, "C"), (3, 1, "S")],
                       [(0, 0.5, "S"), (1.5, 2, "C")], [(0, 2, "C"), (3.5, 0.5, "S")])
            return list(rng.choice(options)) if bpb == 4 else [(0, 1, "C"), (2, 1, "S")]
        if kind == "strum":
            slots = strum if bpb == 4 else strum[:6]
            out = []
            for i, c in enumerate(slots):
                if c == "-":
                    continue
                nxt = next((j for j in range(i + 1, len(slots)) if slots[j] != "-"), len(slots))
                out.append((i * 0.5, (nxt - i) * 0.5, c))
            return out
        if kind == "bossa":
            return [(t, d, "C") for t, d in bossa_bar] if bpb == 4 else [(0, 1, "C"), (1.5, 1, "C")]
        if kind == "alberti":
            return [(i * 0.5, 0.5, "A") for i in range(2 * bpb)]
        if kind == "arpeggio16":
            if self.tempo <= 112:
                return [(i * 0.25, 0.25, "A") for i in range(4 * bpb)]
            return [(i * 0.5, 0.5, "A") for i in range(2 * bpb)]
        if kind == "arpeggio":
            if self.fast:
                return [(i, 1, "A") for i in range(bpb)]
            return [(i * 0.5, 0.5, "A") for i in range(2 * bpb)]
        return [(0, bpb, "C")]

    def _close_voicing(
        self, chord: _Chord, center: int, prev: tuple[int, ...] | None,
    ) -> tuple[int, ...]:
        pcs = chord.pcs
        best: tuple[int, ...] = ()
        best_cost = 1e9
        target = center if prev is None else 0.6 * (sum(prev) / len(prev)) + 0.4 * center
        for rot in range(len(pcs)):
            order = pcs[rot:] + pcs[:rot]
            low = _place(order[0], center - 9)
            for base in (low, low + 12):
                v = [base]
                for pc in order[1:]:
                    v.append(_place(pc, v[-1] + 1))
                cost = abs(sum(v) / len(v) - target) + (3 if v[-1] > 79 else 0)
                if cost < best_cost - 1e-9:
                    best, best_cost = tuple(v), cost
        return best

    def _guitar_voicing(self, chord: _Chord) -> tuple[int, ...]:
        r, third, fifth = chord.pcs[0], chord.pcs[1], chord.pcs[2]
        top = chord.pcs[3] if len(chord.pcs) > 3 else r
        shape = (chord.bass_pc, fifth, r, third, fifth, top)
        v = [_place(shape[0], 40)]
        for pc in shape[1:]:
            v.append(_place(pc, v[-1] + 1))
        return tuple(v)

    def _power_voicing(self, chord: _Chord) -> tuple[int, ...]:
        root = _place(chord.pcs[0], 40)
        if self.rng.random() < 0.5 or chord.pcs[2] != (chord.pcs[0] + 7) % 12:
            # A full triad keeps the chord quality audible (and diminished fifths diatonic).
            return (root, _place(chord.pcs[2], root), root + 12, _place(chord.pcs[1], root + 12))
        return (root, root + 7, root + 12)

    def _arp_line(self, chord: _Chord, lo: int) -> list[int]:
        root = _place(chord.bass_pc, lo)
        line = [root]
        order = [*chord.pcs[1:], chord.pcs[0], *chord.pcs[1:]]
        for pc in order:
            line.append(_place(pc, line[-1] + 1))
        return line

    # ---- melody

    def melody_track(self, program: int, labels: set[str] | None = None) -> list[Note]:
        """A lead line; each section letter gets one melody, repeated when the section is."""
        rng = self.rng
        lo, hi = _LEAD_RANGE.get(program, (60, 84))
        center = (lo + hi) // 2
        self.mel_base = _place(self.tonic, center - 8)
        legato = rng.uniform(0.8, 0.98)
        base_vel = rng.uniform(92, 106)
        by_label: dict[str, list[tuple[float, float, int, int]]] = {}
        notes: list[Note] = []
        for start, end, label in self.sections:
            if labels is not None and label not in labels:
                continue
            if label not in by_label:
                by_label[label] = self._melody_phrase(start, end, lo, hi)
            for off, dur, s, accent in by_label[label]:
                t = start + off
                if t < self.intro_bars * self.bpb:
                    continue
                chord = self.chord_at(t).chord
                pitch = self._deg_pitch(s, chord)
                while pitch > hi:
                    pitch -= 12
                while pitch < lo:
                    pitch += 12
                notes.append(Note(t, max(0.1, dur * legato), pitch,
                                  self._vel(base_vel + accent)))
        return notes

    def _deg_pitch(self, s: int, chord: _Chord) -> int:
        octave, deg = divmod(s, 7)
        return self.mel_base + 12 * octave + chord.steps[deg]

    def _melody_phrase(
        self, start: float, end: float, lo: int, hi: int,
    ) -> list[tuple[float, float, int, int]]:
        rng, bpb = self.rng, self.bpb
        n_bars = round((end - start) / bpb)
        motif = [self._rhythm_bar() for _ in range(3)]
        plan: list[list[float]] = []
        for b in range(n_bars):
            pos = b % 4
            if pos == 3 or b == n_bars - 1:
                plan.append(self._cadence_rhythm())
            elif pos == 2:
                plan.append(motif[0] if rng.random() < 0.6 else motif[2])
            else:
                plan.append(motif[pos])
        s_hi = int((hi - self.mel_base) / 12 * 7)
        s_lo = max(-4, int((lo - self.mel_base) / 12 * 7))
        s = rng.choice((2, 4, 7))
        out: list[tuple[float, float, int, int]] = []
        for b, rhythm in enumerate(plan):
            t = b * bpb
            last_bar = b % 4 == 3 or b == n_bars - 1
            for k, dur in enumerate(rhythm):
                if dur < 0:
                    t += -dur
                    continue
                chord = self.chord_at(start + t).chord
                strong = abs(t - round(t)) < 1e-6 and round(t) % 2 == 0
                final = last_bar and k == max(i for i, x in enumerate(rhythm) if x > 0)
                if final and chord.degree == 0:
                    s = self._nearest_of(s, (0,))
                elif strong or final or dur >= 2:
                    s = self._nearest_of(s, chord.degrees, jitter=True)
                else:
                    r = rng.random()
                    step = (rng.choice((-1, 1)) if r < 0.62 else 0 if r < 0.72
                            else rng.choice((-3, -2, 2, 3, 4, -4)))
                    s += step
                if s > s_hi:
                    s -= rng.choice((2, 3, 7)) if s - s_hi > 1 else 2
                if s < s_lo:
                    s += 2
                accent = 6 if strong else 0
                out.append((t, dur, s, accent))
                t += dur
        return out

    def _nearest_of(self, s: int, degrees: Sequence[int], *, jitter: bool = False) -> int:
        cands = sorted((abs(d), s + d) for d in range(-4, 5) if (s + d) % 7 in degrees)
        if jitter and len(cands) > 1 and self.rng.random() < 0.35:
            return cands[1][1]
        return cands[0][1]

    def _rhythm_bar(self) -> list[float]:
        rng = self.rng
        if self.bpb == 3:
            pool = [[1, 1, 1], [2, 1], [1, 2], [1.5, 0.5, 1], [0.5, 0.5, 1, 1], [1, 0.5, 0.5, 1],
                    [-1, 1, 1], [0.5, 0.5, 0.5, 0.5, 1], [3], [2, 0.5, 0.5]]
        else:
            pool = [[1, 1, 1, 1], [2, 1, 1], [1, 1, 2], [2, 2], [1.5, 0.5, 2], [1.5, 0.5, 1, 1],
                    [0.5, 0.5, 1, 2], [1, 0.5, 0.5, 2], [0.5, 0.5, 0.5, 0.5, 2], [-1, 1, 1, 1],
                    [-0.5, 0.5, 1, 2], [0.5, 1, 0.5, 2], [1, 0.5, 1, 0.5, 1], [1, 1, 0.5, 0.5, 1],
                    [3, 1], [1.5, 1.5, 1], [0.5] * 8, [0.75, 0.25, 1, 2], [-2, 1, 1],
                    [0.25, 0.25, 0.5, 1, 2], [1, 1, 1, -1]]
        ok = []
        for r in pool:
            shortest = min(abs(x) for x in r)
            n = sum(1 for x in r if x > 0)
            if shortest < self.min_sub:
                continue
            if self.fast and n > 5:
                continue
            weight = 1.0
            if self.slow and n <= 2:
                weight = 0.4
            if self.fast and n >= 4:
                weight = 0.5
            ok.append((r, weight))
        return list(rng.choices([r for r, _ in ok], weights=[w for _, w in ok])[0])

    def _cadence_rhythm(self) -> list[float]:
        if self.bpb == 3:
            return list(self.rng.choice([[2, -1], [3], [1, 2], [0.5, 0.5, 2]]))
        return list(self.rng.choice([[2, -2], [3, -1], [1, 1, 2], [1, 3], [0.5, 0.5, 3],
                                     [1, 2, -1]]))

    # ---- drums

    def drum_track(self) -> tuple[list[Note], str]:
        rng, st = self.rng, self.st
        families = list(st.drums)
        if self.bpb == 3:
            families = ["waltz"]
        else:
            families = [f for f in families if f != "waltz"] or ["rock"]
            if self.tempo < 150:
                families = [f for f in families if f != "punk"] or ["rock"]
            elif "punk" in st.drums or "rock" in st.drums:
                families = ["punk", "rock"]
            if self.tempo > 125:
                families = [f if f != "sixteenth" else "rock" for f in families]
        if self.compound:
            families = ["six_eight" if self.meter == "6/8" else "twelve_eight"]
        family = rng.choice(families)
        grid = dict(rng.choice(_DRUM_GRIDS[family]))
        if self.tempo > 125:
            for note, g in grid.items():
                if len(g) - g.count("-") > 8:
                    grid[note] = "".join(c if i % 2 == 0 else "-" for i, c in enumerate(g))
        steps = len(next(iter(grid.values())))
        step_beats = self.bpb / steps
        fill_every = rng.choice((4, 8)) if self.n_bars > 6 else 4
        fill_prob = rng.uniform(0.5, 1.0)
        b_swap = rng.choice((None, 51, 46)) if 42 in grid and family not in ("swing",) else None
        intensity = rng.uniform(0.85, 1.0)
        notes: list[Note] = []
        for b, t0 in enumerate(self._bar_starts()):
            label = self.section_at(t0)
            phrase_start = any(abs(t0 - s) < 1e-6 for s, _, _ in self.sections)
            fill = (b + 1) % fill_every == 0 and rng.random() < fill_prob and b < self.n_bars - 1
            fill_from = self.bpb - (rng.choice((1, 2)) if fill else 0)
            if t0 < self.intro_bars * self.bpb and rng.random() < 0.5:
                fill = False
            for note, g in grid.items():
                play = note
                if label == "B" and b_swap and note == 42:
                    play = b_swap
                for i, c in enumerate(g):
                    if c == "-":
                        continue
                    t = i * step_beats
                    if fill and t >= fill_from and note != 36:
                        continue
                    vel = _DRUM_VEL[c] * _DRUM_GAIN.get(play, 1.0) * intensity
                    if play == 46 and b_swap == 46 and note == 42 and i % 4 != 2:
                        vel *= 0.75
                    notes.append(Note(t0 + t, 0.25, play, self._vel(vel, 8)))
            if family == "swing" and rng.random() < 0.6:
                # Snare "comping": a couple of soft off-beat hits.
                for _ in range(rng.randint(1, 2)):
                    t = rng.choice((1.5, 2.5, 3.5, 2.0)) if self.bpb == 4 else 1.5
                    notes.append(Note(t0 + t, 0.25, 38, self._vel(48, 8)))
            if (phrase_start and b > 0) or (b == 0 and rng.random() < 0.5):
                notes.append(Note(t0, 1.0, rng.choice((49, 49, 57)), self._vel(100 * intensity)))
                if not any(n.pitch == 36 and abs(n.start_beat - t0) < 1e-6 for n in notes):
                    notes.append(Note(t0, 0.25, 36, self._vel(105)))
            if fill:
                notes.extend(self._fill(t0 + fill_from, self.bpb - fill_from))
        return notes, family

    def _fill(self, t0: float, beats: float) -> list[Note]:
        rng = self.rng
        sub = 0.25 if self.tempo <= 130 and rng.random() < 0.6 else 0.5
        n = round(beats / sub)
        toms = list(_FILL_TOMS)
        kind = rng.choice(("toms", "snare", "mixed"))
        out = []
        for i in range(n):
            if kind == "snare":
                pitch = 38
            elif kind == "toms":
                pitch = toms[min(len(toms) - 1, i * len(toms) // n)]
            else:
                pitch = 38 if i < n // 2 else toms[min(len(toms) - 1, (i - n // 2) * 2)]
            vel = 70 + 40 * (i + 1) / n
            out.append(Note(t0 + i * sub, 0.25, pitch, self._vel(vel, 6)))
        return out


def _swing_time(t: float, swing: float) -> float:
    """Delay off-beat eighths to ``swing`` of the beat (piecewise-linear warp of each beat)."""
    if abs(swing - 0.5) < 1e-9:
        return t
    beat = math.floor(t + 1e-9)
    frac = t - beat
    if frac <= 0.5:
        return beat + frac / 0.5 * swing
    return beat + swing + (frac - 0.5) / 0.5 * (1 - swing)


def _compound_time(t: float) -> float:
    """Put each beat's sixteenth grid on its three eighths: 0 → 0, ¼ → ⅓, ½ → ⅔ (then
    linear to the next beat), so that every part written in straight time divides the beat
    in three."""
    beat = math.floor(t + 1e-9)
    frac = t - beat
    if frac <= 0.5:
        return beat + frac * 4 / 3
    return beat + 2 / 3 + (frac - 0.5) * 2 / 3


def _finish(notes: list[Note], gen: _Generator, *, timing_ms: float) -> list[Note]:
    """Swing, humanise timing (beats), clip to the song and sort deterministically."""
    rng = gen.rng
    beat_s = 60.0 / gen.tempo

    def warp(t: float) -> float:
        return _compound_time(t) if gen.compound else _swing_time(t, gen.swing)

    out: list[Note] = []
    for n in notes:
        start = warp(n.start_beat)
        end = warp(n.start_beat + n.duration_beats)
        jitter_s = max(-0.010, min(0.010, rng.gauss(0, timing_ms / 1000.0)))
        start = max(0.0, start + jitter_s / beat_s)
        if start >= gen.n_beats - 1e-6:
            continue
        end = min(max(end, start + 0.05), gen.n_beats)
        if end <= start:
            continue
        out.append(Note(round(start, 6), round(end - start, 6), n.pitch, n.velocity))
    out.sort(key=lambda n: (n.start_beat, n.pitch))
    return out


# Level (dB) of each General MIDI program playing typical parts of each role at CC7 = 100,
# measured with FluidR3_GM (rendered parts from this generator; reference: piano comping).
_PROGRAM_LEVEL_DB: dict[str, dict[int, float]] = {
    "bass": {32: 6.8, 33: 5.9, 34: 5.1, 35: 7.1, 36: 3.7, 37: 3.1, 38: 5.0, 39: 11.9, 42: -0.4,
             43: 2.5, 58: 5.8, 70: 3.6, 87: 3.5},
    "comp": {0: 0.0, 1: -0.5, 2: 6.4, 3: -0.3, 4: 5.8, 5: 3.1, 6: 3.8, 7: 3.9, 8: 4.7, 10: 2.8,
             11: 1.1, 12: 4.8, 15: -1.5, 16: 3.1, 17: 7.1, 18: 6.2, 21: 2.7, 24: 6.2, 25: 5.0,
             26: 4.2, 27: 3.8, 28: -0.3, 29: 5.8, 30: 8.4, 45: 6.3, 46: 5.5, 48: 1.3, 50: 6.5,
             61: 3.6, 80: 6.0, 81: 3.6, 88: 3.5, 89: 4.1, 90: 3.9, 92: 8.6, 105: 2.4, 108: -2.7},
    "pad": {16: 2.7, 18: 6.9, 19: 6.3, 21: 1.9, 44: 2.9, 48: 2.3, 49: 5.1, 50: 6.6, 52: 2.2,
            61: 4.7, 62: 4.6, 88: -0.1, 89: 6.2, 90: 2.1, 91: 6.0, 92: 6.7, 94: 4.2, 95: 8.5},
    "lead": {0: -2.7, 11: 0.3, 12: 4.1, 18: 5.8, 21: 2.2, 22: 3.2, 24: 2.1, 26: 7.6, 29: 7.3,
             30: 10.9, 40: 4.1, 41: 1.3, 52: 2.8, 53: 7.1, 54: 5.7, 56: 4.1, 57: 9.4, 60: 6.6,
             61: 6.3, 62: 4.1, 64: 6.8, 65: 7.8, 66: 6.5, 68: 5.7, 71: 8.5, 72: 7.1, 73: 6.3,
             74: 7.4, 75: 7.2, 79: 8.9, 80: 5.8, 81: 4.1, 82: 3.2, 84: 5.5, 85: 8.7, 87: 4.0,
             88: 3.5, 91: 6.8, 98: 1.9, 110: 4.0},
    "drums": {0: 0.5, 8: 2.1, 16: 6.0, 24: 4.4, 25: 10.7, 32: 3.4, 33: 3.5, 40: 2.9, 48: 3.8},
}
# Loudness of each role in the mix (dB, RMS while playing), as in a plain studio mix: melody,
# drums and bass up front, comping below, pads behind.
_ROLE_LEVEL_DB = {"lead": 0.0, "drums": 0.0, "bass": -1.0, "comp": -4.0, "pad": -8.0}
_STYLE_LEVEL_DB: dict[str, dict[str, float]] = {
    "rock": {"comp": 2.0, "drums": 1.0},
    "dance": {"drums": 1.5, "bass": 0.5},
    "funk": {"bass": 1.0, "comp": 1.0},
    "ballad": {"drums": -5.0, "comp": 1.0},
    "jazz": {"drums": -4.0, "comp": 0.5},
    "ambient": {"drums": -4.0, "pad": 3.0},
    "chamber": {"drums": -6.0, "comp": 1.0},
    "bossa": {"drums": -3.0, "comp": 1.0},
    "folk": {"drums": -3.0, "comp": 1.0},
    "waltz": {"drums": -3.0},
    "hiphop": {"drums": 1.5, "bass": 0.5},
}


def _mix_level(program: int, role: str, level_db: float) -> int:
    """CC7 approximating ``level_db`` for this program with a GM SoundFont (FluidR3-measured).

    The renderers balance tracks exactly from ``Track.level_db``; CC7 is for other players.
    """
    table = _PROGRAM_LEVEL_DB[role]
    level = table.get(program, sum(table.values()) / len(table))
    offset = {"lead": 0.0, "drums": 7.0, "bass": 1.0, "comp": -1.5, "pad": -0.5}[role]
    db = level_db + offset - level
    # CC7 scales amplitude by (value / 127) ** 2 in SoundFont synths: 40 log10 per dB.
    return _clamp(round(100 * 10 ** (db / 40)), 20, 127)


def _slow_attack(program: int) -> bool:
    """Bowed strings, ensembles, choirs and pads: soft onsets that cannot carry a pulse."""
    return 40 <= program <= 44 or 48 <= program <= 54 or 88 <= program <= 95


def generate_song(
    seed: int, *, tonic: int, mode: str, tempo_bpm: float, drums: bool,
    duration_s: float = 30.0, style: str | None = None, meter: str | None = None,
    feel: str | None = None, scale: str | None = None, texture: str | None = None,
) -> Score:
    """Generate a song with the given key, tempo and drum choice; deterministic from ``seed``.

    ``style`` is one of :data:`STYLES`; ``None`` picks one suited to the tempo (seeded).
    The rest widen the material (``None`` leaves the style's own choice, and the song the
    same as without them): ``meter`` one of :data:`METERS` (``tempo_bpm`` is then the
    dotted-quarter pulse in 6/8 and 12/8), ``feel`` one of :data:`FEELS` (swung eighths or
    a syncopated bass and comping), ``scale`` one of :data:`MODAL_SCALES` (its triad's
    quality must be ``mode``), ``texture`` one of :data:`TEXTURES` (``"pad"``: sustained
    chords and a slow bass; ``"drone"``: a pad over a tonic pedal; both without drums).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if not 0 <= tonic <= 11:
        raise ValueError(f"tonic must be 0..11, not {tonic!r}")
    if not 30 <= tempo_bpm <= 260:
        raise ValueError(f"tempo_bpm out of range: {tempo_bpm!r}")
    if duration_s <= 0:
        raise ValueError("duration_s must be positive")
    if meter is not None and meter not in METERS:
        raise ValueError(f"meter must be one of {METERS}, not {meter!r}")
    if feel is not None and feel not in FEELS:
        raise ValueError(f"feel must be one of {FEELS}, not {feel!r}")
    if scale is not None and (scale not in MODAL_SCALES or MODAL_SCALES[scale][1] != mode):
        raise ValueError(f"scale {scale!r} is not a {mode} scale of {tuple(MODAL_SCALES)}")
    if texture is not None and (texture not in TEXTURES or (drums and texture != "band")):
        raise ValueError(f"texture must be one of {TEXTURES} (pad and drone without drums)")
    if style is None:
        style = pick_style(seed, tempo_bpm, drums)
    elif style not in _STYLES:
        raise ValueError(f"unknown style {style!r}; choose from {STYLES}")
    gen = _Generator(seed, tonic, mode, float(tempo_bpm), drums, duration_s, style,
                     meter=meter, feel=feel, scale=scale, texture=texture)
    gen.plan_harmony()
    rng, st = gen.rng, gen.st
    tracks: list[Track] = []
    pans = [rng.choice((34, 40, 46)), rng.choice((82, 88, 94))]
    rng.shuffle(pans)

    def add(name: str, program: int, notes: list[Note], role: str, pan: int) -> None:
        channel = DRUM_CHANNEL if role == "drums" else len(tracks)
        level = (_ROLE_LEVEL_DB[role] + _STYLE_LEVEL_DB.get(gen.style_name, {}).get(role, 0.0)
                 + rng.uniform(-1.5, 1.5) - (1.0 if name == "melody2" else 0.0))
        tracks.append(Track(name, program, role == "drums", notes, channel,
                            _mix_level(program, role, level), pan, level_db=round(level, 2)))

    bass_notes, _bass_kind = gen.bass_track()
    add("bass", rng.choice(st.bass_programs), bass_notes, "bass", 64)

    comp_kinds = list(st.comp)
    if not drums and len(comp_kinds) > 1:
        # Without a kit, the comping must keep time: avoid pure pads most of the time.
        rhythmic = [k for k in comp_kinds if k not in ("pad", "block_half", "pad_pulse")]
        if rng.random() < 0.85:
            comp_kinds = rhythmic or comp_kinds
    if feel == "sync" and gen.bpb == 4:
        comp_kinds = ["pop_sync", "block_sync", "funk_comp"]
    if gen.texture != "band":
        comp_kinds = ["pad"]
    comp_kind = rng.choice(comp_kinds)
    comp_program = rng.choice(st.comp_programs)
    if gen.texture != "band":
        comp_program = rng.choice(_PAD_PROGRAMS)
    if comp_kind == "strum" and not 24 <= comp_program <= 28 and comp_program not in (105, 15):
        comp_program = rng.choice((25, 24, 27))
    if comp_kind == "power":
        comp_program = rng.choice((29, 30, 29))
    if not drums and _slow_attack(comp_program) and comp_kind not in ("pad", "pad_pulse"):
        # Without a kit the comping carries the pulse: it needs clear attacks.
        comp_program = rng.choice([p for p in st.comp_programs if not _slow_attack(p)]
                                  or [0, 46, 24])
    add("comp", comp_program, gen.comp_track(comp_program, comp_kind), "comp", pans[0])

    if gen.texture == "band" and st.pads and (rng.random() < st.pad_prob
                    or (comp_kind in ("arpeggio16", "alberti") and rng.random() < 0.5)):
        pad_program = rng.choice(st.pads)
        pad_notes = gen.comp_track(pad_program, "pad")
        if rng.random() < 0.4:
            # Enter the pad for the B sections only: arrangement dynamics.
            bs = [(s, e) for s, e, lab in gen.sections if lab == "B"]
            if bs:
                pad_notes = [n for n in pad_notes if any(s <= n.start_beat < e for s, e in bs)]
        if pad_notes:
            add("pad", pad_program, pad_notes, "pad", pans[1])

    lead_program = rng.choice(st.leads if gen.texture == "band" else _SOFT_LEADS)
    if rng.random() < 0.25 and "B" in gen.form:
        # A second lead instrument takes over the melody in the B sections.
        lead2 = rng.choice([p for p in st.leads if p != lead_program] or [lead_program])
        add("melody", lead_program, gen.melody_track(lead_program, {"A"}), "lead",
            rng.choice((56, 64, 72)))
        add("melody2", lead2, gen.melody_track(lead2, {"B"}), "lead", rng.choice((56, 64, 72)))
    else:
        add("melody", lead_program, gen.melody_track(lead_program), "lead",
            rng.choice((56, 64, 72)))

    if drums:
        drum_notes, _family = gen.drum_track()
        add("drums", rng.choice(st.kits), drum_notes, "drums", 64)

    for track in tracks:
        if track.is_drum:
            track.reverb = min(st.reverb, 40)
        else:
            track.reverb = _clamp(st.reverb + rng.randint(-10, 10), 0, 127)
            if track.name in ("pad", "comp") and rng.random() < 0.25:
                track.chorus = rng.randint(20, 60)
        track.notes = _finish(track.notes, gen, timing_ms=3.0 if track.is_drum else 4.0)
    return Score(
        tempo_bpm=float(tempo_bpm), tonic=tonic, mode=mode, tracks=tracks, n_beats=gen.n_beats,
        beats_per_bar=gen.bpb, has_drums=drums, seed=seed, style=style, swing=gen.swing,
        form=("I" if gen.intro_bars else "") + "".join(gen.form), meter=meter or "",
        scale=scale or "",
    )


# Sustained sounds for the pad and drone textures: the chords, and a melody to go with them.
_PAD_PROGRAMS = (88, 89, 91, 92, 94, 95, 48, 49, 50, 52, 19)
_SOFT_LEADS = (73, 52, 40, 68, 71, 74, 75, 79, 48, 89, 11)


def modulate(score: Score, at_beat: float, semitones: int) -> Score:
    """The song with every pitched note from ``at_beat`` on moved by ``semitones``.

    Notes sounding across ``at_beat`` end there; ``at_beat`` should be a bar line.
    ``tonic`` and ``mode`` stay those of the start; ``key_change`` records the move.
    """
    tracks = []
    for track in score.tracks:
        if track.is_drum:
            tracks.append(track)
            continue
        notes = []
        for n in track.notes:
            if n.start_beat >= at_beat - 1e-6:
                pitch = n.pitch + semitones
                notes.append(Note(n.start_beat, n.duration_beats, _clamp(pitch, 0, 127),
                                  n.velocity))
            elif n.start_beat + n.duration_beats > at_beat:
                notes.append(Note(n.start_beat, round(at_beat - n.start_beat, 6), n.pitch,
                                  n.velocity))
            else:
                notes.append(n)
        tracks.append(dataclasses.replace(track, notes=notes))
    return dataclasses.replace(score, tracks=tracks, key_change=(float(at_beat), semitones))


def pick_style(seed: int, tempo_bpm: float, drums: bool) -> str:
    """The style ``generate_song`` uses when none is given (seeded, suited to the tempo)."""
    rng = random.Random(f"previewvec-style:{seed}")
    names = [n for n, s in _STYLES.items() if s.tempo[0] <= tempo_bpm <= s.tempo[1]]
    if not names:
        names = ["pop", "rock", "jazz", "folk", "chamber"]
    weights = [_STYLES[n].weight[0 if drums else 1] for n in names]
    return rng.choices(names, weights=weights)[0]


def style_weight(style: str, drums: bool) -> float:
    """How typical ``style`` is with (or without) a drum kit: its auto-pick weight."""
    return _STYLES[style].weight[0 if drums else 1]


def styles_for(tempo_bpm: float) -> tuple[str, ...]:
    """Styles whose natural tempo range contains ``tempo_bpm``."""
    return tuple(n for n, s in _STYLES.items() if s.tempo[0] <= tempo_bpm <= s.tempo[1])
