"""Shared spectral intermediates and the FMA block (518 statistics), computed once each.

FMA's ``features.py`` runs two tuning estimations, recomputes spectra inside several
librosa calls and summarises each feature separately. Here one STFT, one CQT and one
tuning estimate feed every feature, and all 74 frame-level series are summarised in one
vectorised pass. Parameters are FMA's: ``n_fft=2048``, ``hop_length=512``, an 84-bin CQT
from C1 at 12 bins per octave, 128 mel bands, 20 MFCCs, 6 contrast bands.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np

from workers.features.layout import FMA_FEATURE_SIZES, FMA_STATISTICS, fma_names
from workers.features.stats import summarize

N_FFT = 2048
HOP_LENGTH = 512
CQT_BINS = 84
CQT_BINS_PER_OCTAVE = 12
# Every frame: subsampling shifted the estimate by up to 0.1 semitone on short clips.
TUNING_FRAME_STRIDE = 1
# librosa.piptrack's defaults, which librosa.estimate_tuning (and so librosa.cqt) uses.
PIPTRACK_FMIN_HZ = 150.0
PIPTRACK_FMAX_HZ = 4000.0
PIPTRACK_THRESHOLD = 0.1


@dataclass(frozen=True)
class Spectra:
    """Intermediates shared by every feature family.

    Attributes
    ----------
    magnitude : np.ndarray, shape (1 + N_FFT // 2, n_frames)
    power : np.ndarray, shape (1 + N_FFT // 2, n_frames)
    cqt : np.ndarray, shape (84, n_frames), CQT magnitude from C1
    mel_power : np.ndarray, shape (128, n_frames)
    tuning : float, estimated deviation from A440 in fractions of a bin
    sr : int
    """

    magnitude: np.ndarray
    power: np.ndarray
    cqt: np.ndarray
    mel_power: np.ndarray
    tuning: float
    sr: int

    @property
    def n_frames(self) -> int:
        return int(self.magnitude.shape[1])


def estimate_tuning(magnitude: np.ndarray, sr: int) -> float:
    """Tuning offset (fraction of a bin) from a magnitude STFT, as ``librosa.cqt`` estimates it.

    The same value as ``librosa.estimate_tuning(S=magnitude, sr=sr, n_fft=N_FFT,
    bins_per_octave=12)`` (``tests/unit/test_spectral.py`` checks equality on real clips),
    computed in a fraction of the time. ``librosa.piptrack`` evaluates a gradient and a
    parabolic interpolation on all 1025 bins of every frame (a numba kernel per element)
    and then keeps only the local maxima between 150 and 4000 Hz, about 2 % of the
    elements. Here the local maxima are found first, on the 150-4000 Hz rows only, and the
    same interpolation formulas are evaluated at those peaks alone, with piptrack's float
    types. The histogram step is librosa's own :func:`librosa.pitch_tuning`.

    Parameters
    ----------
    magnitude : np.ndarray, shape (1 + N_FFT // 2, n_frames), |STFT|
    """
    sample = magnitude[:, ::TUNING_FRAME_STRIDE]
    freqs = librosa.fft_frequencies(sr=sr, n_fft=N_FFT)
    band = np.flatnonzero((freqs >= PIPTRACK_FMIN_HZ) & (freqs < min(PIPTRACK_FMAX_HZ, sr / 2)))
    if band.size == 0 or sample.shape[1] == 0:
        return 0.0
    # The band's rows plus one neighbour on each side (bin 0 is below and bin N_FFT/2, the
    # Nyquist bin, above any band) for the local-maximum test and the stencils.
    lo, hi = int(band[0]) - 1, int(band[-1]) + 2
    s = sample[lo:hi]
    # piptrack's threshold: PIPTRACK_THRESHOLD * np.max(S, axis=-2), in S's dtype.
    x = s * (s > PIPTRACK_THRESHOLD * sample.max(axis=0))
    # util.localmax: strictly above the lower neighbour, at least the upper one.
    peak = (x[1:-1] > x[:-2]) & (x[1:-1] >= x[2:])
    k, t = np.nonzero(peak)
    if k.size == 0:
        return 0.0
    below, centre, above = s[k, t], s[k + 1, t], s[k + 2, t]
    # librosa's numba stencil promotes the integer constants to float64; match it.
    a = (above + below).astype(np.float64) - 2 * centre.astype(np.float64)
    b = (above - below).astype(np.float64) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(np.abs(b) >= np.abs(a), 0.0, -b / a).astype(sample.dtype)
    gradient = (above - below) / sample.dtype.type(2.0)  # np.gradient, interior rows
    mags = centre + 0.5 * gradient * shift
    pitches = ((k + lo + 1) + shift) * float(sr) / N_FFT
    threshold = np.median(mags)
    tuning = float(
        librosa.pitch_tuning(pitches[mags >= threshold].astype(sample.dtype), bins_per_octave=12)
    )
    return tuning if np.isfinite(tuning) else 0.0


def stft_magnitude(y: np.ndarray) -> np.ndarray:
    """|STFT| with FMA's parameters, shape (1025, n_frames)."""
    return np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH))


def cqt_magnitude(y: np.ndarray, sr: int, tuning: float) -> np.ndarray:
    """|CQT|, 84 bins from C1, shape (84, n_frames)."""
    return np.abs(
        librosa.cqt(
            y,
            sr=sr,
            hop_length=HOP_LENGTH,
            n_bins=CQT_BINS,
            bins_per_octave=CQT_BINS_PER_OCTAVE,
            tuning=tuning,
        )
    )


def compute_spectra(y: np.ndarray, sr: int) -> Spectra:
    """One STFT, one tuning estimate, one CQT and the mel spectrogram of ``y``."""
    magnitude = stft_magnitude(y)
    power = magnitude**2
    tuning = estimate_tuning(magnitude, sr)
    cqt = cqt_magnitude(y, sr, tuning)
    mel_power = librosa.feature.melspectrogram(sr=sr, S=power)
    n = min(magnitude.shape[1], cqt.shape[1])
    return Spectra(magnitude[:, :n], power[:, :n], cqt[:, :n], mel_power[:, :n], tuning, sr)


def zero_crossing_rate(y: np.ndarray, n_frames: int) -> np.ndarray:
    """``librosa.feature.zero_crossing_rate(y, 2048, 512)`` in O(n) with a running sum.

    Same definition: edge-padded centred frames, |y| <= 1e-10 counts as zero (positive),
    crossings between adjacent samples inside a frame, divided by the frame length.
    """
    half = N_FFT // 2
    padded = np.pad(y, (half, half), mode="edge")
    negative = padded < -1e-10
    crossing = np.empty(padded.size, dtype=np.int64)
    crossing[0] = 0
    crossing[1:] = negative[1:] != negative[:-1]
    running = np.concatenate(([0], np.cumsum(crossing)))
    starts = np.arange(n_frames) * HOP_LENGTH
    # Pairs (i-1, i) for i in start+1 .. start+N_FFT-1 lie inside frame [start, start+N_FFT).
    counts = running[np.minimum(starts + N_FFT, padded.size)] - running[starts + 1]
    return (counts / N_FFT)[np.newaxis, :]


def spectral_shape(magnitude: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid, bandwidth (p=2) and 85 % rolloff per frame, as librosa defines them.

    Uses moments (matrix-vector products) instead of librosa's broadcast deviation matrix.
    """
    freq = librosa.fft_frequencies(sr=sr, n_fft=N_FFT)
    s = magnitude.astype(np.float64)
    total = s.sum(axis=0)
    safe_total = np.where(total > 0, total, 1.0)
    centroid = (freq @ s) / safe_total
    second = ((freq**2) @ s) / safe_total
    bandwidth = np.sqrt(np.maximum(second - centroid**2, 0.0))
    cumulative = np.cumsum(s, axis=0)
    reached = cumulative >= 0.85 * cumulative[-1]
    rolloff = freq[np.argmax(reached, axis=0)]
    centroid[total <= 0] = 0.0
    bandwidth[total <= 0] = 0.0
    return centroid[np.newaxis], bandwidth[np.newaxis], rolloff[np.newaxis]


def fma_frames(y: np.ndarray, spectra: Spectra) -> dict[str, np.ndarray]:
    """Frame-level series of every FMA feature family, each shape (size, n_frames)."""
    sr, n = spectra.sr, spectra.n_frames
    chroma_cqt = librosa.feature.chroma_cqt(
        C=spectra.cqt, n_chroma=12, n_octaves=7, bins_per_octave=12
    )
    chroma_cens = librosa.feature.chroma_cens(
        C=spectra.cqt, n_chroma=12, n_octaves=7, bins_per_octave=12
    )
    centroid, bandwidth, rolloff = spectral_shape(spectra.magnitude, sr)
    frames = {
        "chroma_stft": librosa.feature.chroma_stft(
            S=spectra.power, sr=sr, n_chroma=12, tuning=spectra.tuning
        ),
        "chroma_cqt": chroma_cqt,
        "chroma_cens": chroma_cens,
        "tonnetz": librosa.feature.tonnetz(chroma=chroma_cens),
        "mfcc": librosa.feature.mfcc(S=librosa.power_to_db(spectra.mel_power), n_mfcc=20),
        "rmse": librosa.feature.rms(S=spectra.magnitude, frame_length=N_FFT),
        "zcr": zero_crossing_rate(y, n),
        "spectral_centroid": centroid,
        "spectral_bandwidth": bandwidth,
        "spectral_contrast": librosa.feature.spectral_contrast(
            S=spectra.magnitude, sr=sr, n_fft=N_FFT, n_bands=6
        ),
        "spectral_rolloff": rolloff,
    }
    return {name: series[:, :n] for name, series in frames.items()}


def fma_block(frames: dict[str, np.ndarray]) -> np.ndarray:
    """The 518 FMA statistics in :func:`fma_names` order, shape (518,)."""
    order = list(FMA_FEATURE_SIZES)
    stacked = np.concatenate([frames[name] for name in order], axis=0)
    summary = summarize(stacked)
    by_name: dict[str, float] = {}
    row = 0
    for name in order:
        size = FMA_FEATURE_SIZES[name]
        for statistic in FMA_STATISTICS:
            values = summary[statistic][row : row + size]
            for i, value in enumerate(values):
                by_name[f"{name}.{statistic}.{i + 1:02d}"] = float(value)
        row += size
    return np.array([by_name[name] for name in fma_names()], dtype=np.float64)
