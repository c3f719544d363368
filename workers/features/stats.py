"""The seven FMA summary statistics over frames, for many features at once."""

from __future__ import annotations

import numpy as np
from scipy import stats

from workers.features.layout import FMA_STATISTICS


def summarize(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Summarise each row of ``frames`` over time.

    Parameters
    ----------
    frames : np.ndarray, shape (n_features, n_frames)

    Returns
    -------
    dict mapping each name in ``FMA_STATISTICS`` to an array of shape (n_features,),
    computed exactly as FMA does (population std, Fisher kurtosis, biased skew).
    """
    x = np.asarray(frames, dtype=np.float64)
    result = {
        "mean": x.mean(axis=1),
        "std": x.std(axis=1),
        "skew": stats.skew(x, axis=1),
        "kurtosis": stats.kurtosis(x, axis=1),
        "median": np.median(x, axis=1),
        "min": x.min(axis=1),
        "max": x.max(axis=1),
    }
    assert tuple(result) == FMA_STATISTICS
    return result
