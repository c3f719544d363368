"""The vector layout: every dimension named, ordered and versioned.

Bump :data:`FEATURE_VERSION` whenever a name, an order or a computation changes; stored
records are keyed by it, so old and new vectors never mix.
"""

from __future__ import annotations

import hashlib
from functools import cache
from typing import Literal

# pv2: decoding resamples with soxr HQ instead of swresample (docs/features.md).
# pv3: the FMA block at the clip's own rate with FMA's librosa 0.5.0 calls; rhythm and key
# on the same spectra's frames at the analysis hop (docs/features.md).
# pv4: tempo: the octave rule decides below 66 BPM, a ternary faster level for fast 3/4
# (docs/features.md).
# pv5: danceability is Essentia's DFA value (1 / mean α) / 3, not mean(1/α) / 3, on frames
# of exactly 10 ms at every rate; integrated loudness weights 2.1, quad, 5.1 and 7.1
# channels by name as BS.1770 does (LFE out, surrounds ×1.41) (docs/features.md).
# pv6: tempo and beat confidence leave out a lead-in of digital silence with the entry's
# onset spike, and a silent tail; either halved the tempo of such a clip (docs/features.md).
# pv7: tempo and beat confidence also leave out silent gaps of 2 s or more inside the clip,
# are 0 for a steady sound (no onsets, no flux), and a clip at any rate but 44.1 kHz has
# its rhythm and key analysed on a copy resampled to 44.1 kHz (docs/features.md).
# pv8: the STFT and the CQT run in float32, the clip's precision, not float64 (a clip with a
# large DC offset: a float64 STFT): values move by float32 rounding, which shows in
# spectral contrast's valleys, the bins near the FFT's noise floor (docs/features.md).
FEATURE_VERSION = "pv8"
# Earlier computations of this same layout (same names and order, other values): their
# records stay readable (``decode_record``) under their own version, never mixed with
# FEATURE_VERSION's; a run re-extracts them into FEATURE_VERSION. pv1 had other names.
EARLIER_VERSIONS: tuple[str, ...] = ("pv2", "pv3", "pv4", "pv5", "pv6", "pv7")

# FMA's feature families and their sizes, as in FMA's features.py ``columns()``.
FMA_FEATURE_SIZES: dict[str, int] = {
    "chroma_stft": 12,
    "chroma_cqt": 12,
    "chroma_cens": 12,
    "tonnetz": 6,
    "mfcc": 20,
    "rmse": 1,
    "zcr": 1,
    "spectral_centroid": 1,
    "spectral_bandwidth": 1,
    "spectral_contrast": 7,
    "spectral_rolloff": 1,
}
FMA_STATISTICS: tuple[str, ...] = ("mean", "std", "skew", "kurtosis", "median", "min", "max")

# Rhythm / tonal / loudness block appended after the FMA block, in this order.
DESCRIPTOR_DIMENSIONS: tuple[str, ...] = (
    "rhythm.tempo_bpm",
    "rhythm.beat_confidence",
    "rhythm.onset_rate",
    "rhythm.danceability",
    "tonal.key_pc",
    "tonal.mode_major",
    "tonal.key_strength",
    "tonal.key_fifths_sin",
    "tonal.key_fifths_cos",
    "loudness.integrated_lufs",
    "loudness.energy",
    "meta.duration_s",
)

DescriptorKind = Literal["number", "string"]
# The human descriptors of every record (beside the vector), with their JSON kinds. All
# of them can be filtered on in the index (≤ 10, Vectorize's metadata-index limit); this
# order is the embedded index's column order, so tables already written keep their schema.
DESCRIPTORS: dict[str, DescriptorKind] = {
    "tempo_bpm": "number",
    "key": "string",
    "mode": "string",
    "energy": "number",
    "danceability": "number",
    "loudness_lufs": "number",
    "key_strength": "number",
    "onset_rate": "number",
    "duration_s": "number",
}
DESCRIPTOR_KEYS: tuple[str, ...] = tuple(DESCRIPTORS)
# The values of the ``key`` descriptor, by pitch class (0 = C).
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


@cache
def fma_names() -> tuple[str, ...]:
    """The 518 FMA column names in FMA's ``features.csv`` order (sorted tuples)."""
    columns = [
        (feature, statistic, f"{i + 1:02d}")
        for feature, size in FMA_FEATURE_SIZES.items()
        for statistic in FMA_STATISTICS
        for i in range(size)
    ]
    return tuple(".".join(column) for column in sorted(columns))


@cache
def feature_names() -> tuple[str, ...]:
    """Every dimension of the vector, in order."""
    return fma_names() + DESCRIPTOR_DIMENSIONS


def is_readable_version(version: str) -> bool:
    """Whether records of ``version`` decode with this layout: ours or an earlier
    computation of it, bare (``pv8``) or with a settings hash (``pv8-<hash>``)."""
    base = version.split("-", 1)[0]
    return base == FEATURE_VERSION or base in EARLIER_VERSIONS


@cache
def names_hash() -> str:
    """sha256 of the ordered names: two vectors are comparable iff their hashes agree."""
    return hashlib.sha256("\n".join(feature_names()).encode()).hexdigest()


FMA_DIM = 518
VECTOR_DIM = FMA_DIM + len(DESCRIPTOR_DIMENSIONS)
