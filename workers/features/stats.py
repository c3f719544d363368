"""The seven FMA summary statistics over frames, for many features at once."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

from workers.features.layout import FMA_STATISTICS

# Relative spread below which a series counts as constant (float32 frame values).
CONSTANT_RTOL = 1e-6


def summarize(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Summarise each row of ``frames`` over time.

    Parameters
    ----------
    frames : np.ndarray, shape (n_features, n_frames)

    Returns
    -------
    dict mapping each name in ``FMA_STATISTICS`` to an array of shape (n_features,),
    computed as FMA does (population std, Fisher kurtosis, biased skew). Skew and
    kurtosis of a constant series are undefined (0/0); we define them as 0 rather than
    let a NaN through (a steady test tone is legitimate audio, not an error).
    """
    x = np.asarray(frames, dtype=np.float64)
    std = x.std(axis=1)
    scale = np.abs(x).max(axis=1)
    constant = std <= CONSTANT_RTOL * np.maximum(scale, 1e-30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        skew = stats.skew(x, axis=1)
        kurtosis = stats.kurtosis(x, axis=1)
    result = {
        "mean": x.mean(axis=1),
        "std": std,
        "skew": np.where(constant, 0.0, skew),
        "kurtosis": np.where(constant, 0.0, kurtosis),
        "median": np.median(x, axis=1),
        "min": x.min(axis=1),
        "max": x.max(axis=1),
    }
    assert tuple(result) == FMA_STATISTICS
    return result
