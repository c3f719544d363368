"""Key, mode and key strength from the shared CQT (see docs/features.md).

Naive key finding (Krumhansl profiles on the mean ``chroma_cqt``) reads many minor keys
as their relative major: both share one pitch-class set. What separates them is harmonic
function: which chord is the tonic. The estimate combines three kinds of evidence, each
z-scored over the 24 keys so that they vote on one scale:

1. **pitch-class profiles**: the harmonic chroma (CQT after a median filter along time,
   which keeps sustained partials and drops drum transients, minus the local spectral
   floor, the mean over ±2 semitones, which drops broadband energy; C3 and up; each frame
   max-normalised) correlated with three published key profiles (Krumhansl & Kessler
   1982, Temperley 1999, Albrecht & Shanahan 2013), averaged;
2. **chord functions**: every half second is labelled with its best-matching major or
   minor triad (treble chroma plus half the bass chroma); each key scores the chords by
   their function in that key (tonic 1.0, dominant and subdominant 0.6, other diatonic
   triads less), counted both by hard labels and by soft (softmax) weights; on real
   mixes these labels are noisier than the profile, which therefore weighs twice the
   hard labels;
3. **the opening chord**: music usually starts on its tonic, so a key whose tonic triad is
   the first chord heard gets a bonus.

Key strength is the best profile correlation (−1..1); confidence is the margin between
the best and second-best combined scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np
from scipy.ndimage import uniform_filter1d

from contract.layout import PITCH_CLASSES
from workers.features.stats import running_median

_PROFILES: dict[str, tuple[list[float], list[float]]] = {
    "krumhansl": (
        [6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88],
        [6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17],
    ),
    "temperley": (
        [0.748, 0.060, 0.488, 0.082, 0.670, 0.460, 0.096, 0.715, 0.104, 0.366, 0.057, 0.400],
        [0.712, 0.084, 0.474, 0.618, 0.049, 0.460, 0.105, 0.747, 0.404, 0.067, 0.133, 0.330],
    ),
    "albrecht": (
        [0.238, 0.006, 0.111, 0.006, 0.137, 0.094, 0.016, 0.214, 0.009, 0.080, 0.008, 0.081],
        [0.220, 0.006, 0.104, 0.123, 0.019, 0.103, 0.012, 0.214, 0.062, 0.022, 0.061, 0.052],
    ),
}

# Chord function weights: (root interval above the tonic in semitones, minor triad?) → weight.
_MAJOR_KEY_CHORDS = {
    (0, False): 1.0,
    (7, False): 0.6,
    (5, False): 0.6,
    (9, True): 0.35,
    (2, True): 0.35,
    (4, True): 0.25,
    (7, True): 0.05,
    (10, False): 0.1,
    (2, False): 0.1,
    (4, False): 0.1,
}
_MINOR_KEY_CHORDS = {
    (0, True): 1.0,
    (7, False): 0.6,
    (7, True): 0.45,
    (5, True): 0.6,
    (8, False): 0.4,
    (3, False): 0.35,
    (10, False): 0.4,
    (5, False): 0.1,
    (0, False): 0.05,
}
PROFILE_WEIGHT = 1.0
HARD_CHORD_WEIGHT = 0.5
SOFT_CHORD_WEIGHT = 0.5
OPENING_WEIGHT = 1.5
SEGMENT_S = 0.5
OPENING_SEGMENTS = 3
SOFTMAX_SHARPNESS = 8.0
TREBLE_FROM_BIN = 24  # C3 of an 84-bin CQT from C1
BASS_BINS = 36  # C1 .. B3
HARMONIC_FILTER_FRAMES = 9
FLOOR_BINS = 5  # the spectral floor: mean of the CQT over ±2 semitones
ACTIVE_LEVEL = 0.05


@dataclass(frozen=True)
class Key:
    """Estimated key: tonic pitch class 0-11 (C=0), mode, strength and confidence."""

    tonic: int
    mode: str
    strength: float
    confidence: float

    @property
    def name(self) -> str:
        return f"{PITCH_CLASSES[self.tonic]} {self.mode}"


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    centred = matrix - matrix.mean(axis=-1, keepdims=True)
    return centred / np.linalg.norm(centred, axis=-1, keepdims=True)


def _key_rotations(major: list[float], minor: list[float]) -> np.ndarray:
    """Rows 0-11: major keys C..B; rows 12-23: minor keys; zero-mean, unit-norm."""
    rows = [np.roll(np.asarray(p, dtype=np.float64), k) for p in (major, minor) for k in range(12)]
    return _unit_rows(np.stack(rows))


_TRIADS = _key_rotations([1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0], [1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0])
_PROFILE_ROTATIONS = [_key_rotations(*profile) for profile in _PROFILES.values()]


def _chord_function_matrix() -> np.ndarray:
    """(24 keys, 24 triads) weight of each triad's function in each key."""
    weights = np.zeros((24, 24))
    for tonic in range(12):
        for offset, table in ((0, _MAJOR_KEY_CHORDS), (12, _MINOR_KEY_CHORDS)):
            for (interval, minor), w in table.items():
                weights[offset + tonic, (tonic + interval) % 12 + (12 if minor else 0)] = w
    return weights


_CHORD_FUNCTIONS = _chord_function_matrix()


def fold_chroma(cqt: np.ndarray) -> np.ndarray:
    """Sum CQT bins (12 per octave starting at C) into pitch classes, shape (12, n_frames)."""
    n_bins = cqt.shape[0] - cqt.shape[0] % 12
    return cqt[:n_bins].reshape(n_bins // 12, 12, -1).sum(axis=0)


def _zscore(v: np.ndarray) -> np.ndarray:
    return (v - v.mean()) / (v.std() + 1e-12)


def _correlate(vectors: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``vectors`` (12, n) with each rotation row."""
    return rotations @ _unit_columns(vectors)


def _unit_columns(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(axis=0, keepdims=True)
    return centred / (np.linalg.norm(centred, axis=0, keepdims=True) + 1e-12)


def estimate_key(cqt: np.ndarray, sr: int = 22050, hop_length: int = 512) -> Key:
    """Key of a clip from its CQT magnitude (84 bins from C1, 12 per octave)."""
    harmonic = running_median(cqt, HARMONIC_FILTER_FRAMES, mode="nearest")
    # Broadband energy (noise, distortion, reverb, dense mixes) lifts every pitch class
    # alike and flattens the chroma; keep only what stands above the local spectral floor.
    floor = uniform_filter1d(harmonic, FLOOR_BINS, axis=0, mode="nearest")
    harmonic = np.maximum(harmonic - floor, 0.0)
    treble = harmonic.copy()
    treble[:TREBLE_FROM_BIN] = 0.0
    chroma = librosa.util.normalize(fold_chroma(treble), norm=np.inf, axis=0)
    bass = librosa.util.normalize(fold_chroma(harmonic[:BASS_BINS]), norm=np.inf, axis=0)

    profile = np.mean(
        [_correlate(chroma.mean(axis=1, keepdims=True), r)[:, 0] for r in _PROFILE_ROTATIONS],
        axis=0,
    )

    seg = max(round(SEGMENT_S * sr / hop_length), 1)
    n_seg = chroma.shape[1] // seg
    if n_seg == 0:
        hard = soft = opening = np.zeros(24)
    else:

        def segments(x: np.ndarray) -> np.ndarray:
            return x[:, : n_seg * seg].reshape(12, n_seg, seg).mean(axis=2)

        likelihood = _correlate(segments(chroma) + 0.5 * segments(bass), _TRIADS)  # (24, n_seg)
        energy = cqt.sum(axis=0)[: n_seg * seg].reshape(n_seg, seg).mean(axis=1)
        active = np.flatnonzero(energy > ACTIVE_LEVEL * max(float(energy.max()), 1e-12))
        best = np.argmax(likelihood, axis=0)
        hard_counts = np.zeros(24)
        np.add.at(hard_counts, best[active], np.maximum(likelihood[best[active], active], 0.0))
        soft_weights = np.exp(SOFTMAX_SHARPNESS * (likelihood - likelihood.max(axis=0)))
        soft_weights /= soft_weights.sum(axis=0, keepdims=True)
        soft_counts = soft_weights[:, active].sum(axis=1)
        first = np.zeros(24)
        np.add.at(first, best[active[:OPENING_SEGMENTS]], 1.0)
        hard = _CHORD_FUNCTIONS @ hard_counts / max(hard_counts.sum(), 1e-12)
        soft = _CHORD_FUNCTIONS @ soft_counts / max(soft_counts.sum(), 1e-12)
        # A key's tonic triad has the same index as the key itself.
        opening = first / max(first.sum(), 1.0)

    scores = (
        PROFILE_WEIGHT * _zscore(profile)
        + HARD_CHORD_WEIGHT * _zscore(hard)
        + SOFT_CHORD_WEIGHT * _zscore(soft)
        + OPENING_WEIGHT * opening
    )
    order = np.argsort(scores)[::-1]
    best_key = int(order[0])
    return Key(
        tonic=best_key % 12,
        mode="major" if best_key < 12 else "minor",
        strength=float(np.clip(profile[best_key], -1.0, 1.0)),
        confidence=float(scores[best_key] - scores[order[1]]),
    )


def fifths_position(tonic: int, mode: str) -> tuple[float, float]:
    """(sin, cos) of the key on the circle of fifths; a minor key sits on its relative major."""
    major_tonic = tonic if mode == "major" else (tonic + 3) % 12
    angle = 2 * np.pi * ((major_tonic * 7) % 12) / 12
    return float(np.sin(angle)), float(np.cos(angle))
