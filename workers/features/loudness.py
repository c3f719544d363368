"""Integrated loudness (ITU-R BS.1770 via pyloudnorm) and a documented energy score."""

from __future__ import annotations

import numpy as np
import pyloudnorm

# Below BS.1770's absolute gate everything reads as -70 LUFS; we report that floor.
LUFS_FLOOR = -70.0


def integrated_loudness(y: np.ndarray, sr: int, channels: np.ndarray | None = None) -> float:
    """Integrated loudness in LUFS.

    Parameters
    ----------
    y : np.ndarray, shape (n,), the mono analysis signal
    channels : np.ndarray, shape (n_channels, n), optional
        The per-channel signal at the same rate. BS.1770 sums channel energies, so a
        stereo original is measured as stereo (a dual-mono mixdown would read 3 LU low).
    """
    meter = pyloudnorm.Meter(sr)
    data = y if channels is None or channels.shape[0] > 5 else channels.T
    with np.errstate(divide="ignore", invalid="ignore"):
        lufs = float(meter.integrated_loudness(np.asarray(data, dtype=np.float64)))
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
