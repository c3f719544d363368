"""FMA's feature extraction, call for call, as the baseline we must agree with.

This mirrors ``features.py`` of the FMA dataset (librosa calls, parameters and the
tuning estimation inside ``librosa.cqt`` and ``chroma_stft``), on a signal already
decoded to mono. It is deliberately not optimised: tests and benchmarks compare the
production extractor against it.
"""

from __future__ import annotations

import librosa
import numpy as np

from contract.layout import fma_names
from workers.features.stats import summarize


def fma_reference(y: np.ndarray, sr: int) -> np.ndarray:
    """The 518 FMA statistics of ``y`` (mono float), in :func:`fma_names` order."""
    values: dict[str, np.ndarray] = {}

    def feature_stats(name: str, frames: np.ndarray) -> None:
        for statistic, v in summarize(frames).items():
            for i, value in enumerate(v):
                values[f"{name}.{statistic}.{i + 1:02d}"] = value

    feature_stats("zcr", librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=512))
    cqt = np.abs(
        librosa.cqt(y, sr=sr, hop_length=512, bins_per_octave=12, n_bins=7 * 12, tuning=None)
    )
    feature_stats(
        "chroma_cqt",
        librosa.feature.chroma_cqt(C=cqt, n_chroma=12, n_octaves=7, bins_per_octave=12),
    )
    cens = librosa.feature.chroma_cens(C=cqt, n_chroma=12, n_octaves=7, bins_per_octave=12)
    feature_stats("chroma_cens", cens)
    feature_stats("tonnetz", librosa.feature.tonnetz(chroma=cens))
    stft = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
    feature_stats("chroma_stft", librosa.feature.chroma_stft(S=stft**2, n_chroma=12))
    feature_stats("rmse", librosa.feature.rms(S=stft))
    feature_stats("spectral_centroid", librosa.feature.spectral_centroid(S=stft))
    feature_stats("spectral_bandwidth", librosa.feature.spectral_bandwidth(S=stft))
    feature_stats("spectral_contrast", librosa.feature.spectral_contrast(S=stft, n_bands=6))
    feature_stats("spectral_rolloff", librosa.feature.spectral_rolloff(S=stft))
    mel = librosa.feature.melspectrogram(sr=sr, S=stft**2)
    feature_stats("mfcc", librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=20))
    return np.array([values[name] for name in fma_names()], dtype=np.float64)
