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


def energy_score(loudness_lufs: float, onset_rate: float, rms_frames: np.ndarray) -> float:
    """Perceived intensity in [0, 1].

    The mean of three bounded parts, each 0 at "calm" and 1 at "intense":

    - loudness: ``(LUFS + 35) / 30`` clipped (−35 LUFS → 0, −5 LUFS → 1);
    - activity: ``1 − exp(−onset_rate / 4)`` (onsets per second);
    - density: 1 minus the crest of the frame RMS in dB over 20 dB (sustained level
      rather than sparse peaks reads as energetic), clipped.
    """
    loud = np.clip((loudness_lufs + 35.0) / 30.0, 0.0, 1.0)
    activity = 1.0 - np.exp(-max(onset_rate, 0.0) / 4.0)
    rms = np.asarray(rms_frames, dtype=np.float64).ravel()
    peak = float(rms.max()) if rms.size else 0.0
    if peak > 0:
        median_db = 20 * np.log10(max(float(np.median(rms)), 1e-12) / peak)
        density = float(np.clip(1.0 + median_db / 20.0, 0.0, 1.0))
    else:
        density = 0.0
    return float((loud + activity + density) / 3.0)
