"""Key, mode and key strength from the shared CQT (see docs/features.md).

Naive key finding (Krumhansl profiles on the mean ``chroma_cqt``) confuses minor keys with
their relative major: both share one pitch-class set, and drums smear the chroma. Here:

- chroma is taken from the CQT after a median filter along time, which keeps sustained
  (harmonic) partials and drops percussive transients, with log compression so a loud
  instrument does not dominate;
- the full-range chroma is scored against three published key profiles (Krumhansl &
  Kessler 1982, Temperley 1999, Albrecht & Shanahan 2013), each z-scored so that they
  vote with equal weight;
- the bass chroma (C1–F#3) is scored against a bass profile in which the tonic
  dominates: a key's tonic is the most frequent root, which is what separates a minor key
  from its relative major;
- key strength is the winning correlation, and confidence its margin over the runner-up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import median_filter

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

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
# Bass roots: tonic most, then dominant and subdominant, then the other diatonic roots.
_BASS_PROFILES = (
    [1.0, 0.0, 0.25, 0.0, 0.2, 0.5, 0.0, 0.6, 0.0, 0.35, 0.0, 0.1],
    [1.0, 0.0, 0.1, 0.35, 0.0, 0.5, 0.0, 0.6, 0.4, 0.0, 0.35, 0.05],
)
BASS_WEIGHT = 0.5
BASS_BINS = 31  # C1 .. F#3 of an 84-bin CQT from C1
HARMONIC_FILTER_FRAMES = 9


@dataclass(frozen=True)
class Key:
    """Estimated key: tonic pitch class 0-11 (C=0), mode, and strength."""

    tonic: int
    mode: str
    strength: float
    confidence: float

    @property
    def name(self) -> str:
        return f"{PITCH_CLASSES[self.tonic]} {self.mode}"


def _zscore_rotations(profile: list[float]) -> np.ndarray:
    p = np.asarray(profile, dtype=np.float64)
    rotations = np.stack([np.roll(p, k) for k in range(12)])
    rotations -= rotations.mean(axis=1, keepdims=True)
    return rotations / np.linalg.norm(rotations, axis=1, keepdims=True)


def _correlations(vector: np.ndarray, major: list[float], minor: list[float]) -> np.ndarray:
    """Pearson correlation of ``vector`` with each of the 24 keys, shape (24,)."""
    v = vector - vector.mean()
    norm = np.linalg.norm(v)
    if norm == 0:
        return np.zeros(24)
    v = v / norm
    return np.concatenate([_zscore_rotations(major) @ v, _zscore_rotations(minor) @ v])


def fold_chroma(cqt: np.ndarray) -> np.ndarray:
    """Sum CQT bins (12 per octave from C) into a 12-d pitch-class vector."""
    n_bins = cqt.shape[0] - cqt.shape[0] % 12
    return cqt[:n_bins].reshape(-1, 12, *cqt.shape[1:]).sum(axis=0)


def key_chromas(cqt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic full-range and bass pitch-class vectors (12,) from a CQT (84, n_frames)."""
    harmonic = median_filter(cqt, size=(1, HARMONIC_FILTER_FRAMES), mode="nearest")
    compressed = np.log1p(100.0 * harmonic / max(float(harmonic.max()), 1e-12))
    full = fold_chroma(compressed).sum(axis=1)
    bass_part = np.zeros_like(compressed[:36])
    bass_part[:BASS_BINS] = compressed[:BASS_BINS]
    bass = fold_chroma(bass_part).sum(axis=1)
    return full, bass


def estimate_key(cqt: np.ndarray) -> Key:
    """Key of a clip from its CQT magnitude (84 bins from C1, 12 per octave)."""
    full, bass = key_chromas(cqt)
    scores = np.zeros(24)
    for major, minor in _PROFILES.values():
        scores += _correlations(full, major, minor)
    scores /= len(_PROFILES)
    scores += BASS_WEIGHT * _correlations(bass, *_BASS_PROFILES)
    order = np.argsort(scores)[::-1]
    best = int(order[0])
    strength = float(np.clip(scores[best] / (1 + BASS_WEIGHT), -1.0, 1.0))
    confidence = float(max(scores[best] - scores[order[1]], 0.0))
    return Key(tonic=best % 12, mode="major" if best < 12 else "minor", strength=strength,
               confidence=confidence)


def fifths_position(tonic: int, mode: str) -> tuple[float, float]:
    """(sin, cos) of the key on the circle of fifths; a minor key sits on its relative major."""
    major_tonic = tonic if mode == "major" else (tonic + 3) % 12
    angle = 2 * np.pi * ((major_tonic * 7) % 12) / 12
    return float(np.sin(angle)), float(np.cos(angle))
