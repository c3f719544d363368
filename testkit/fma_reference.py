"""FMA's feature extraction, call for call, as the baseline we must agree with.

This mirrors ``features.py`` of the FMA dataset (github.com/mdeff/fma, which pinned
``librosa==0.5.0``) on a signal already decoded to mono at the clip's own rate, as
``librosa.load(path, sr=None, mono=True)`` gives it. The calls and their arguments are
FMA's, including the ``sr`` it omits (chroma_stft, centroid, bandwidth, contrast, rolloff:
librosa then assumes 22 050 Hz). Where today's librosa computes a call differently from
0.5.0, the reference asks it for 0.5.0's behaviour or spells 0.5.0's definition out:

* ``stft`` and the CQT's octave STFTs: 0.5.0 reflect-padded centred frames (now zeros);
* ``cqt(tuning=None)``: 0.5.0 estimated tuning from that reflect-padded |STFT|, and gave
  its filters Q = 1 / (2^(1/12) - 1) (now from the relative bandwidth, 3 % longer);
* ``chroma_cqt``/``chroma_cens``: ``bins_per_octave`` defaulted to ``n_chroma`` (12);
  0.5.0's ``chroma_cens`` smoothed with a periodic Hann window (now symmetric);
* ``rmse(S=S)``: 0.5.0 took the root mean square over the bins (``rms`` now applies
  Parseval's scaling).

What it cannot reproduce: 0.5.0 resampled the CQT's octaves with resampy's
``kaiser_fast`` (today's librosa: soxr), a difference inside the filters' stopbands.

It is deliberately not optimised: tests and benchmarks compare the production extractor
against it.
"""

from __future__ import annotations

import librosa
import numpy as np
import scipy.signal

from contract.layout import fma_names
from workers.features.stats import summarize

# librosa 0.5.0's CQT filter lengths: Q = 1 / (2^(1/12) - 1) where librosa >= 0.10 has
# Q = filter_scale / ((2^(2/12) - 1) / (2^(2/12) + 1)).
CQT_FILTER_SCALE_0_5 = ((2 ** (2 / 12) - 1) / (2 ** (2 / 12) + 1)) / (2 ** (1 / 12) - 1)
PAD_MODE_0_5 = "reflect"


def _chroma_cens_0_5(C: np.ndarray) -> np.ndarray:
    """librosa 0.5.0's ``chroma_cens(C=C, n_chroma=12, n_octaves=7)``."""
    chroma = librosa.feature.chroma_cqt(C=C, n_chroma=12, n_octaves=7, bins_per_octave=12,
                                        norm=None)
    chroma = librosa.util.normalize(chroma, norm=1, axis=0)
    quantised = np.zeros_like(chroma)
    for step, weight in zip((0.4, 0.2, 0.1, 0.05), (0.25, 0.25, 0.25, 0.25), strict=True):
        quantised += (chroma > step) * weight
    window = scipy.signal.get_window("hann", 41 + 2, fftbins=True)  # periodic, as 0.5.0
    window = np.atleast_2d(window / np.sum(window))
    smoothed = scipy.signal.convolve2d(quantised, window, mode="same")
    return librosa.util.normalize(smoothed, norm=2, axis=0)


def fma_reference(y: np.ndarray, sr: int) -> np.ndarray:
    """The 518 FMA statistics of ``y`` (mono float at its own rate ``sr``), in
    :func:`fma_names` order."""
    values: dict[str, np.ndarray] = {}

    def feature_stats(name: str, frames: np.ndarray) -> None:
        for statistic, v in summarize(frames).items():
            for i, value in enumerate(v):
                values[f"{name}.{statistic}.{i + 1:02d}"] = value

    feature_stats("zcr", librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=512))
    # librosa.cqt(tuning=None) in 0.5.0: estimate_tuning(y=y, sr=sr), i.e. piptrack on its
    # own |stft(y, n_fft=2048, hop_length=512)| with 0.5.0's reflect padding (FMA's run
    # computed that STFT, and the one below, each once).
    tuning = librosa.estimate_tuning(
        S=np.abs(librosa.stft(y, n_fft=2048, hop_length=512, pad_mode=PAD_MODE_0_5)),
        sr=sr, n_fft=2048, bins_per_octave=12)
    cqt = np.abs(
        librosa.cqt(y, sr=sr, hop_length=512, bins_per_octave=12, n_bins=7 * 12, tuning=tuning,
                    filter_scale=CQT_FILTER_SCALE_0_5, pad_mode=PAD_MODE_0_5)
    )
    feature_stats(
        "chroma_cqt",
        librosa.feature.chroma_cqt(C=cqt, n_chroma=12, n_octaves=7, bins_per_octave=12),
    )
    cens = _chroma_cens_0_5(cqt)
    feature_stats("chroma_cens", cens)
    feature_stats("tonnetz", librosa.feature.tonnetz(chroma=cens))
    del cqt
    stft = np.abs(librosa.stft(y, n_fft=2048, hop_length=512, pad_mode=PAD_MODE_0_5))
    feature_stats("chroma_stft", librosa.feature.chroma_stft(S=stft**2, n_chroma=12))
    # librosa 0.5.0's rmse(S=stft): sqrt(mean(|S|**2)) over the frequency bins.
    feature_stats("rmse", np.sqrt(np.mean(np.abs(stft) ** 2, axis=0, keepdims=True)))
    feature_stats("spectral_centroid", librosa.feature.spectral_centroid(S=stft))
    feature_stats("spectral_bandwidth", librosa.feature.spectral_bandwidth(S=stft))
    feature_stats("spectral_contrast", librosa.feature.spectral_contrast(S=stft, n_bands=6))
    feature_stats("spectral_rolloff", librosa.feature.spectral_rolloff(S=stft))
    mel = librosa.feature.melspectrogram(sr=sr, S=stft**2)
    feature_stats("mfcc", librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=20))
    return np.array([values[name] for name in fma_names()], dtype=np.float64)
