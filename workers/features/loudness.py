"""Integrated loudness (ITU-R BS.1770-4, pyloudnorm's filters) and a documented energy score."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pyloudnorm

from workers.features.kernels import filtered_segment_energy

# Below BS.1770's absolute gate everything reads as -70 LUFS; we report that floor.
LUFS_FLOOR = -70.0
# pyloudnorm.Meter's "K-weighting" stages (type, gain dB, Q, centre/cut-off Hz), in order.
K_WEIGHTING = (("high_shelf", 4.0, 1 / np.sqrt(2), 1500.0), ("high_pass", 0.0, 0.5, 38.0))
BLOCK_S = 0.400  # gating block
BLOCK_OVERLAP = 0.75
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
CHANNEL_GAINS = (1.0, 1.0, 1.0, 1.41, 1.41)  # L, R, C, Ls, Rs


@lru_cache(maxsize=8)
def k_weighting_sos(sr: int) -> np.ndarray:
    """pyloudnorm's K-weighting biquads at ``sr`` as second-order sections, shape (2, 6)."""
    sections = []
    for kind, gain_db, q, fc in K_WEIGHTING:
        stage = pyloudnorm.IIRfilter(gain_db, q, fc, sr, kind)
        b, a = stage.generate_coefficients()
        sections.append(np.concatenate([stage.passband_gain * np.asarray(b), a]))
    return np.array(sections)


def integrated_loudness(y: np.ndarray, sr: int, channels: np.ndarray | None = None,
                        weights: Sequence[float] | None = None) -> float:
    """Integrated loudness in LUFS, equal to ``pyloudnorm.Meter(sr).integrated_loudness``.

    Parameters
    ----------
    y : np.ndarray, shape (n,), the mono analysis signal
    channels : np.ndarray, shape (n_channels, n), optional
        The per-channel signal at the same rate. BS.1770 sums channel energies, so a
        stereo original is measured as stereo (a dual-mono mixdown would read 3 LU low).
    weights : sequence of float, optional
        BS.1770 weight of each row of ``channels`` (0 leaves a channel out, e.g. LFE).
        Without them the rows are L, R, C, Ls, Rs, and more than 5 rows are ignored for
        the mono ``y``.

    pyloudnorm runs its two biquads as separate ``lfilter`` passes per channel and
    measures the ~300 overlapping 400 ms blocks of a 30 s clip in a Python loop (together
    about 30 ms per clip). Here the same biquads (pyloudnorm's own coefficients) run in one
    compiled pass that also sums the squared output between pyloudnorm's block boundaries
    (:func:`~workers.features.kernels.filtered_segment_energy`), block energies come from a
    cumulative sum of those segments, and the two gates are array operations: about a
    tenth of the time, and the same LUFS to ~1e-9 LU
    (``tests/unit/workers/features/test_loudness.py`` compares with pyloudnorm on real
    clips).
    """
    if channels is not None and weights is not None:
        if len(weights) != channels.shape[0]:
            raise ValueError(f"{len(weights)} weights for {channels.shape[0]} channels")
        gains = np.asarray(weights, dtype=np.float64)
        # Unweighted channels (LFE) add nothing: not filtered at all.
        data, gains = channels[gains > 0], gains[gains > 0]
        if not gains.size:
            data, gains = y[np.newaxis], np.ones(1)
    else:
        data = y[np.newaxis] if channels is None or channels.shape[0] > 5 else channels
        gains = np.asarray(CHANNEL_GAINS[: data.shape[0]])
    x = np.asarray(data)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    # Same input checks (and ValueError) as the meter: float data, at least one block;
    # but not its limit of 5 channels, which weights by name (7.1) go beyond.
    pyloudnorm.util.valid_audio(x[:5].T, sr, BLOCK_S)
    n = x.shape[1]

    step = 1.0 - BLOCK_OVERLAP
    n_blocks = int(np.round((n / sr - BLOCK_S) / (BLOCK_S * step))) + 1
    j = np.arange(n_blocks)
    # pyloudnorm's block bounds, float expression for float expression.
    lower = (BLOCK_S * (j * step) * sr).astype(np.int64)
    upper = np.minimum((BLOCK_S * (j * step + 1) * sr).astype(np.int64), n)
    # Overlapping blocks share segments between consecutive bounds: sum each segment once,
    # filtering and squaring on the fly.
    edges = np.unique(np.concatenate([lower, upper]))
    segments = filtered_segment_energy(x, k_weighting_sos(sr), edges)
    cumulative = np.zeros((x.shape[0], edges.size))
    np.cumsum(segments, axis=1, out=cumulative[:, 1:])
    block_energy = (cumulative[:, np.searchsorted(edges, upper)]
                    - cumulative[:, np.searchsorted(edges, lower)])
    z = (1.0 / (BLOCK_S * sr)) * block_energy  # mean square, shape (channels, blocks)

    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10.0 * np.log10(gains @ z)
    above_absolute = block_lufs >= ABSOLUTE_GATE_LUFS
    if not above_absolute.any():
        return LUFS_FLOOR  # pyloudnorm: NaN gate, no block passes, -inf
    relative_gate = (-0.691 + 10.0 * np.log10(gains @ z[:, above_absolute].mean(axis=1))
                     + RELATIVE_GATE_LU)
    gated = (block_lufs > relative_gate) & (block_lufs > ABSOLUTE_GATE_LUFS)
    if not gated.any():
        return LUFS_FLOOR
    lufs = float(-0.691 + 10.0 * np.log10(gains @ z[:, gated].mean(axis=1)))
    return lufs if np.isfinite(lufs) else LUFS_FLOOR


def energy_score(loudness_lufs: float, onset_rate: float, centroid_frames: np.ndarray) -> float:
    """Perceived intensity in [0, 1]: loud, busy and bright reads as energetic.

    The mean of three bounded parts, each 0 at "calm" and 1 at "intense":

    - loudness: ``(LUFS + 35) / 30`` clipped (−35 LUFS → 0, −5 LUFS → 1);
    - activity: ``1 − exp(−onset_rate / 4)`` (onsets per second);
    - brightness: ``log2(median spectral centroid / 500 Hz) / 3`` clipped
      (500 Hz → 0, 4 kHz → 1); distorted guitars, cymbals and noise are bright.
    """
    loud = float(np.clip((loudness_lufs + 35.0) / 30.0, 0.0, 1.0))
    activity = float(1.0 - np.exp(-max(onset_rate, 0.0) / 4.0))
    centroid = float(np.median(np.asarray(centroid_frames, dtype=np.float64)))
    brightness = float(np.clip(np.log2(max(centroid, 1.0) / 500.0) / 3.0, 0.0, 1.0))
    return (loud + activity + brightness) / 3.0
