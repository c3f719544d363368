"""Shared spectral intermediates and the FMA block (518 statistics), computed once each.

The FMA block is FMA's ``features.py`` as it ran: librosa 0.5.0 calls on the clip at its
own sample rate (``librosa.load(sr=None)``; store previews are 44.1 kHz). Here one STFT,
one CQT and one mel spectrogram at that rate feed every feature (the rhythm and key
features read every ``step``-th frame of the same spectra, see :class:`Spectra`), and all
74 frame-level series are summarised in one vectorised pass. Parameters are FMA's:
``n_fft=2048``, ``hop_length=512``, an 84-bin CQT from C1 at 12 bins per octave, 128 mel
bands, 20 MFCCs, 6 contrast bands; and librosa 0.5.0's behaviour where it differs from
today's librosa (docs/features.md lists each difference):

* FMA's calls omit ``sr`` for chroma_stft, centroid, bandwidth, contrast and rolloff, so
  librosa assumed 22 050 Hz for them (:data:`FMA_ASSUMED_SR`) whatever the clip's rate;
* centred frames were reflect-padded (``librosa.stft`` and the CQT's octave STFTs);
* the CQT's filters had Q = 1 / (2^(1/12) - 1) (:data:`FMA_CQT_FILTER_SCALE`);
* ``rmse(S=S)`` was the root mean square over the frequency bins;
* ``chroma_cens`` smoothed with a periodic Hann window.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import librosa
import numpy as np
import scipy.fft
import scipy.signal
import scipy.sparse
import soxr

from contract.layout import FMA_FEATURE_SIZES, FMA_STATISTICS, fma_names
from workers.features.kernels import (
    sparse_frames_product,
    spectral_moments_and_rolloff,
    spectral_peaks,
    zero_crossing_counts,
)
from workers.features.stats import summarize

N_FFT = 2048
HOP_LENGTH = 512
CQT_BINS = 84
CQT_BINS_PER_OCTAVE = 12
CQT_RES_TYPE = "soxr_hq"  # librosa.cqt's default resampler between octaves
# Every frame: subsampling shifted the estimate by up to 0.1 semitone on short clips.
TUNING_FRAME_STRIDE = 1
# librosa.piptrack's defaults, which librosa.estimate_tuning (and so librosa.cqt) uses.
PIPTRACK_FMIN_HZ = 150.0
PIPTRACK_FMAX_HZ = 4000.0
PIPTRACK_THRESHOLD = 0.1
ROLLOFF_FRACTION = 0.85  # librosa.feature.spectral_rolloff's roll_percent
# librosa.feature.spectral_contrast's defaults, as FMA called it (n_bands=6).
CONTRAST_BANDS = 6
CONTRAST_FMIN = 200.0
CONTRAST_QUANTILE = 0.02
TUNING_RESOLUTION = 0.01  # librosa.estimate_tuning's histogram bin, in bins
# CQT bases built at worker start-up: tunings within ±0.1 bin (10 cents) of A440.
PREPARED_TUNING_RANGE = 0.1
# The rate librosa's functions default to, which FMA's calls that omit ``sr`` analysed
# with: frequencies are read off a 22 050 Hz axis whatever the clip's rate.
FMA_ASSUMED_SR = 22_050
# librosa 0.5 gave every CQT filter Q = 1 / (2^(1/12) - 1); librosa >= 0.10 uses
# Q = filter_scale / alpha with alpha = (2^(2/12) - 1) / (2^(2/12) + 1) (relative
# bandwidth), so this filter_scale gives 0.5's filter lengths (3 % shorter than today's).
FMA_CQT_FILTER_SCALE = ((2 ** (2 / 12) - 1) / (2 ** (2 / 12) + 1)) / (2 ** (1 / 12) - 1)
# librosa 0.5 centred frames with reflect padding (today's librosa: zeros).
PAD_MODE = "reflect"
# librosa 0.5's chroma_cens smoothing window: periodic Hann of win_len_smooth + 2 = 43.
CENS_WINDOW = 41 + 2


class _computed_once:
    """``functools.cached_property`` without its lock: Python 3.11's holds one lock per
    property for every instance, so two threads analysing two clips would compute their
    CQTs one after the other. Two threads reading one instance's value at once may both
    compute it (the same array, deterministically); the first stored is kept."""

    def __init__(self, compute: Callable[[Any], Any]) -> None:
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        cache = instance.__dict__
        if self.name not in cache:
            cache.setdefault(self.name, self.compute(instance))
        return cache[self.name]


@dataclass(frozen=True)
class Spectra:
    """Intermediates shared by every feature family, all at the clip's own rate ``sr``.

    The rhythm and key features analyse at ``analysis_sr`` (``sr / step``, 22 050 Hz for a
    44.1 kHz clip): they read every ``step``-th frame of these spectra, whose centres are
    512 samples apart at ``analysis_sr``, as frames of a ``analysis_sr`` signal would be.
    The CQT and the mel spectrograms are computed on first use: a clip not at 44.1 kHz
    takes its FMA block from one ``Spectra`` and its rhythm from another (see the
    extractor), and each needs only its own; and the FMA statistics that read the STFT
    run before the CQT evicts its 20 MB from the cache (:func:`fma_frames`).

    Attributes
    ----------
    magnitude : np.ndarray, shape (1 + N_FFT // 2, n_frames)
    power : np.ndarray, shape (1 + N_FFT // 2, n_frames)
    tuning : float, estimated deviation from A440 in fractions of a bin (the CQT's)
    sr : int
    step : int, frames per analysis frame
    signal : np.ndarray, the clip itself (the CQT's input)
    dc_offset : bool, whether a DC offset dominates the clip (:func:`dc_dominates`)
    """

    magnitude: np.ndarray
    power: np.ndarray
    tuning: float
    sr: int
    step: int
    signal: np.ndarray
    dc_offset: bool = False

    @_computed_once
    def cqt(self) -> np.ndarray:
        """Shape (84, n_frames): the CQT magnitude from C1, its frames the STFT's."""
        cqt = cqt_magnitude(self.signal, self.sr, self.tuning, remove_dc=self.dc_offset)
        if cqt.shape[1] < self.n_frames:  # cqt_frame_count is the CQT's own arithmetic
            raise AssertionError(f"CQT has {cqt.shape[1]} frames, expected {self.n_frames}")
        return cqt[:, : self.n_frames]

    @_computed_once
    def mel_power(self) -> np.ndarray:
        """Shape (128, n_frames), up to ``sr / 2`` (FMA's MFCCs)."""
        # power.T: the STFT's frame-major layout (no transposed copy, see the kernel).
        return sparse_frames_product(mel_basis(self.sr), self.power.T)

    @_computed_once
    def mel_db(self) -> np.ndarray:
        """``librosa.power_to_db(mel_power)``."""
        return librosa.power_to_db(self.mel_power)

    @_computed_once
    def analysis_mel_db(self) -> np.ndarray:
        """Shape (128, ceil(n_frames / step)): mel power in dB up to ``analysis_sr / 2`` of
        every ``step``-th frame (the rhythm features' bands)."""
        if self.step == 1:
            return self.mel_db
        # The rhythm's bands (128 up to analysis_sr / 2, as its onset features were tuned
        # on) from the same STFT, on the frames at the analysis hop.
        return librosa.power_to_db(sparse_frames_product(
            mel_basis(self.sr, self.analysis_sr / 2), self.power.T, self.step))

    @property
    def analysis_sr(self) -> float:
        return self.sr / self.step

    @property
    def analysis_cqt(self) -> np.ndarray:
        """The CQT's every ``step``-th frame (the key features)."""
        return self.cqt[:, :: self.step]

    @property
    def n_frames(self) -> int:
        return int(self.magnitude.shape[1])


def estimate_tuning(magnitude: np.ndarray, sr: int) -> float:
    """Tuning offset (fraction of a bin) from a magnitude STFT, as ``librosa.cqt`` estimates it.

    The same value as ``librosa.estimate_tuning(S=magnitude, sr=sr, n_fft=N_FFT,
    bins_per_octave=12)`` (``tests/unit/workers/features/test_spectral.py`` checks
    equality on real clips),
    computed in a fraction of the time. ``librosa.piptrack`` evaluates a gradient and a
    parabolic interpolation on all 1025 bins of every frame (a numba kernel per element)
    and then keeps only the local maxima between 150 and 4000 Hz, about 2 % of the
    elements. Here one compiled pass finds the local maxima on the 150-4000 Hz rows only
    and evaluates the same interpolation formulas at those peaks alone, with piptrack's
    float types (:func:`~workers.features.kernels.spectral_peaks`). The histogram step is
    librosa's own :func:`librosa.pitch_tuning`.

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
    rows = slice(int(band[0]) - 1, int(band[-1]) + 2)
    mags, pitches = spectral_peaks(sample.astype(np.float32, copy=False), rows,
                                   PIPTRACK_THRESHOLD, sr, N_FFT)
    if mags.size == 0:
        return 0.0
    threshold = np.median(mags)
    tuning = float(
        librosa.pitch_tuning(pitches[mags >= threshold].astype(np.float32),
                             resolution=TUNING_RESOLUTION, bins_per_octave=12)
    )
    return tuning if np.isfinite(tuning) else 0.0


def stft_magnitude(y: np.ndarray, pad_mode: str = PAD_MODE) -> np.ndarray:
    """|STFT| with FMA's parameters, shape (1025, n_frames): ``np.abs(librosa.stft(y,
    n_fft=2048, hop_length=512, pad_mode=pad_mode))`` to within the rounding of an FFT in
    ``y``'s precision (see :func:`stft_magnitude_and_power`)."""
    return stft_magnitude_and_power(y, pad_mode)[0]


def stft_magnitude_and_power(y: np.ndarray,
                             pad_mode: str = PAD_MODE) -> tuple[np.ndarray, np.ndarray]:
    """|STFT| and |STFT|**2 with FMA's parameters, each shape (1025, n_frames), frames
    contiguous (librosa's memory layout).

    librosa's frames (centred, ``pad_mode``-padded, the periodic Hann window), but the
    FFT runs in ``y``'s own precision: for the float32 clips the extractor passes, a
    float32 FFT, twice as fast as librosa's float64 one (pv8). The magnitudes then differ
    from librosa's by float32 rounding, ~1e-7 of each frame's peak
    (``tests/unit/workers/features/test_spectral.py``); only bins ~140 dB below their
    frame's peak are changed in relative terms, which moves nothing in the FMA block but
    the contrast valley of its top band (docs/features.md). Frames go through in blocks
    of 64 (in cache), the power squared from each block as it is made.
    """
    x = np.asarray(y)
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"expected a floating-point mono signal, got {x.dtype} {x.shape}")
    padded = np.pad(x, N_FFT // 2, mode=pad_mode)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH]
    window = _hann_window(x.dtype)
    magnitude = np.empty((frames.shape[0], N_FFT // 2 + 1), dtype=x.dtype)
    power = np.empty_like(magnitude)
    for start in range(0, frames.shape[0], _STFT_BLOCK_FRAMES):
        block = slice(start, start + _STFT_BLOCK_FRAMES)
        spectrum = scipy.fft.rfft(window * frames[block], axis=1, overwrite_x=True)
        np.abs(spectrum, out=magnitude[block])
        np.multiply(magnitude[block], magnitude[block], out=power[block])
    return magnitude.T, power.T


_STFT_BLOCK_FRAMES = 64  # 64 x 2048 frames: 0.5 MB in float32, stays in cache


@lru_cache(maxsize=4)
def _hann_window(dtype: np.dtype) -> np.ndarray:
    """librosa's periodic Hann window (float64), rounded to ``dtype``."""
    window = librosa.filters.get_window("hann", N_FFT, fftbins=True).astype(dtype)
    window.flags.writeable = False
    return window


def cqt_magnitude(y: np.ndarray, sr: int, tuning: float, *,
                  filter_scale: float = FMA_CQT_FILTER_SCALE,
                  pad_mode: str = PAD_MODE, remove_dc: bool = False) -> np.ndarray:
    """|CQT|, 84 bins from C1, shape (84, n_frames): ``np.abs(librosa.cqt(y, sr=sr,
    hop_length=512, n_bins=84, bins_per_octave=12, tuning=tuning,
    filter_scale=filter_scale, pad_mode=pad_mode))``; the defaults give librosa 0.5's CQT
    filters and padding.

    librosa's own algorithm (per octave from the top: an STFT of the signal, a product with
    that octave's sparse frequency-domain filter basis, then halving the rate with soxr),
    except that the filter bases are built once per (rate, tuning) and kept: ``librosa.cqt``
    rebuilds all seven on every call (windowed sinusoids, FFT, sparsification), which was
    about 40 % of its time. Tuning estimates are multiples of 0.01 bin, so a worker soon
    holds every basis it needs. And since a filter basis applied to a DFT is itself a
    linear map of the frame, each octave's basis is folded into one real (n_fft, 24)
    matrix (the 12 filters' real and imaginary parts in time) when the plan is built: an
    octave is then one matrix product of its frames, half the cost of the FFT and the
    sparse product, the same values to float32 rounding (pv8).
    ``tests/unit/workers/features/test_spectral.py`` checks equality with ``librosa.cqt``.
    """
    my_y, my_hop = y, HOP_LENGTH
    if my_y.dtype not in (np.float32, np.float64):
        my_y = my_y.astype(np.float64)
    plan = _cqt_plan(sr, float(tuning), float(filter_scale), my_y.dtype.name)
    if plan.downsample == 2:  # librosa's early downsampling (44.1 and 48 kHz)
        my_y, my_hop = halve_rate(my_y), my_hop // 2
    elif plan.downsample > 1:
        my_y = librosa.resample(my_y, orig_sr=plan.downsample, target_sr=1,
                                res_type=CQT_RES_TYPE, scale=True)
        my_hop //= plan.downsample
    responses = []
    for octave, (kernel, n_fft) in enumerate(plan.kernels):
        # The filters pass no DC (no basis touches FFT bin 0), so with reflected edges the
        # octave's mean adds nothing to a response, except rounding: in a sum over the
        # frame's samples a constant far above the music (a biased converter) would swamp
        # the music's bins, which FFT bins kept it out of. ``remove_dc`` takes it out
        # first. (Zero-padded edges would turn the mean into a step there: left alone.)
        if remove_dc and pad_mode == "reflect":
            my_y_centred = my_y - np.asarray(np.mean(my_y, dtype=np.float64), my_y.dtype)
        else:
            my_y_centred = my_y
        frames = _centred_frames(my_y_centred, n_fft, my_hop, pad_mode)
        # Below the top octave the frames overlap (hop < n_fft), which BLAS cannot take
        # as a strided matrix: numpy's own copy for matmul costs twice this one (the
        # same product, bit for bit).
        responses.append(np.ascontiguousarray(frames) @ kernel)
        if octave + 1 < len(plan.kernels):
            if my_hop % 2:
                raise ValueError(f"hop length {HOP_LENGTH} cannot be halved {octave + 1} times")
            my_hop //= 2
            my_y = halve_rate(my_y)
    n_frames = min(response.shape[0] for response in responses)
    # Octave responses come top octave first, each (frames, [re x 12, im x 12]); bins
    # run from C1 upwards.
    stacked = np.concatenate([response[:n_frames].T for response in responses[::-1]])
    half = CQT_BINS_PER_OCTAVE
    stacked = stacked.reshape(len(responses), 2, half, n_frames)
    out = np.hypot(stacked[:, 0], stacked[:, 1]).reshape(CQT_BINS, n_frames)
    out /= plan.sqrt_lengths[:, np.newaxis].astype(out.dtype)
    return out


def halve_rate(y: np.ndarray) -> np.ndarray:
    """``librosa.resample(y, orig_sr=2, target_sr=1, res_type="soxr_hq", scale=True)``,
    bit for bit, without its per-call validation and ``apply_along_axis`` (a sixth of its
    time on the CQT's short signals): soxr HQ, length ``ceil(n / 2)``, scaled by sqrt(2)
    in float64 and returned in ``y``'s dtype."""
    n = int(np.ceil(y.shape[-1] * 0.5))
    out = soxr.resample(y, 2, 1, CQT_RES_TYPE)
    if out.shape[-1] != n:
        out = librosa.util.fix_length(out, size=n)
    out /= np.sqrt(0.5)
    return np.asarray(out, dtype=y.dtype)


def prepare_filter_banks(sr: int, max_abs_tuning: float = PREPARED_TUNING_RANGE) -> int:
    """Build the CQT filter bases and chroma filter banks for the common tunings ahead of
    the first clip.

    ``librosa.pitch_tuning`` returns a left edge of its 0.01-bin histogram (100 values from
    -0.5 to 0.49). Banks for tunings within ``max_abs_tuning`` (most recordings are within
    10 cents of A440) are built here, ~20 ms of CPU per CQT basis and ~1 ms per chroma
    bank (``chroma_stft`` reads its bins on FMA's 22 050 Hz axis whatever ``sr``); any
    other tuning is built by the first clip that needs it and cached from then on.
    Returns how many tunings were prepared.
    """
    edges = np.linspace(-0.5, 0.5, int(np.ceil(1.0 / TUNING_RESOLUTION)) + 1)[:-1]
    chosen = edges[np.abs(edges) <= max_abs_tuning + 1e-9]
    for tuning in chosen:
        _cqt_plan(sr, float(tuning), FMA_CQT_FILTER_SCALE, "float32")
        _chroma_filters(FMA_ASSUMED_SR, float(tuning))
    return int(chosen.size)


def _centred_frames(y: np.ndarray, n_fft: int, hop_length: int, pad_mode: str) -> np.ndarray:
    """The frames ``librosa.stft(y, n_fft, hop_length, pad_mode=pad_mode)`` transforms:
    ``y`` padded by ``n_fft // 2`` on each side, shape (n_frames, n_fft), a strided view."""
    padded = np.pad(y, n_fft // 2, mode=pad_mode)
    n_frames = 1 + (padded.size - n_fft) // hop_length
    return np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length][:n_frames]


def _time_domain_kernel(basis: scipy.sparse.csr_matrix, n_fft: int,
                        dtype: str) -> np.ndarray:
    """``basis`` (filters over the rfft bins of an ``n_fft`` frame) as a map of the frame
    itself: ``frame @ kernel`` is ``basis @ rfft(frame)``, real and imaginary parts side
    by side, shape (n_fft, 2 * filters), in the signal's precision ``dtype`` (float32:
    172 kB for the seven octaves of a 44.1 kHz plan)."""
    impulses = np.fft.rfft(np.eye(n_fft), axis=1)  # row n: the DFT of a unit sample at n
    kernel = impulses @ basis.toarray().astype(np.complex128).T
    return np.ascontiguousarray(np.concatenate([kernel.real, kernel.imag], axis=1),
                                dtype=dtype)


@dataclass(frozen=True)
class _CqtPlan:
    kernels: tuple[tuple[np.ndarray, int], ...]
    """Per octave, top first: librosa's sparse (12, n_fft // 2 + 1) filter basis folded
    into a time-domain kernel (:func:`_time_domain_kernel`), and its n_fft."""
    sqrt_lengths: np.ndarray
    """sqrt of each filter's length in samples, shape (84,), for librosa's ``scale=True``."""
    downsample: int


@lru_cache(maxsize=256)
def _cqt_plan(sr: int, tuning: float, filter_scale: float, dtype: str) -> _CqtPlan:
    """The filter bases ``librosa.vqt`` builds for ``librosa.cqt``'s parameters, built once,
    as time-domain kernels in ``dtype`` (the signal's)."""
    bpo, n_octaves = CQT_BINS_PER_OCTAVE, CQT_BINS // CQT_BINS_PER_OCTAVE
    fmin = librosa.note_to_hz("C1") * 2.0 ** (tuning / bpo)
    freqs = librosa.interval_frequencies(n_bins=CQT_BINS, fmin=fmin, intervals="equal",
                                         bins_per_octave=bpo, sort=True)
    # librosa.filters._relative_bandwidth: local octave resolution by centred differences.
    log_f = np.log2(freqs)
    bins_per_octave = np.empty_like(freqs)
    bins_per_octave[0] = 1 / (log_f[1] - log_f[0])
    bins_per_octave[-1] = 1 / (log_f[-1] - log_f[-2])
    bins_per_octave[1:-1] = 2 / (log_f[2:] - log_f[:-2])
    alpha = (2.0 ** (2 / bins_per_octave) - 1) / (2.0 ** (2 / bins_per_octave) + 1)
    _, cutoff = librosa.filters.wavelet_lengths(freqs=freqs, sr=sr, window="hann",
                                                filter_scale=filter_scale, gamma=0,
                                                alpha=alpha)
    if cutoff > sr / 2:
        raise ValueError(f"a {CQT_BINS}-bin CQT from C1 exceeds the Nyquist rate at {sr} Hz")
    # librosa's __early_downsample_count: halve the rate while the filters allow it and
    # the hop stays divisible.
    twos = (HOP_LENGTH & -HOP_LENGTH).bit_length() - 1
    count = min(max(0, int(np.ceil(np.log2(sr / 2 / cutoff)) - 1) - 1),
                max(0, twos - n_octaves + 1))
    downsample = 2**count
    base_sr = sr / downsample
    kernels = []
    for octave in range(n_octaves):
        octave_bins = slice(CQT_BINS - bpo * (octave + 1), CQT_BINS - bpo * octave)
        my_sr = base_sr / 2**octave
        # librosa's __vqt_filter_fft
        basis, lengths = librosa.filters.wavelet(freqs=freqs[octave_bins], sr=my_sr,
                                                 filter_scale=filter_scale, norm=1,
                                                 pad_fft=True,
                                                 window="hann", gamma=0,
                                                 alpha=alpha[octave_bins])
        n_fft = basis.shape[1]
        basis *= lengths[:, np.newaxis] / float(n_fft)
        fft_basis = scipy.fft.fft(basis, n=n_fft, axis=1)[:, : n_fft // 2 + 1]
        sparse = librosa.util.sparsify_rows(fft_basis, quantile=0.01, dtype=np.complex64)
        sparse.data *= np.sqrt(base_sr / my_sr)
        if sparse.indices.size and sparse.indices.min() == 0:
            raise ValueError("a CQT filter reaches FFT bin 0 (DC)")  # see cqt_magnitude
        kernels.append((_time_domain_kernel(sparse, n_fft, dtype), n_fft))
    lengths, _ = librosa.filters.wavelet_lengths(freqs=freqs, sr=base_sr, window="hann",
                                                 filter_scale=filter_scale, gamma=0,
                                                 alpha=alpha)
    return _CqtPlan(tuple(kernels), np.sqrt(lengths), downsample)


@lru_cache(maxsize=8)
def mel_basis(sr: int, fmax: float | None = None) -> scipy.sparse.csr_matrix:
    """``librosa.filters.mel(sr=sr, n_fft=N_FFT, fmax=fmax)`` (128 bands, Slaney), sparse.

    ``librosa.feature.melspectrogram(S=power)`` multiplies by the dense (128, 1025) basis;
    each FFT bin feeds at most two triangular filters (~2 000 non-zeros of 131 200), so the
    sparse product is the same mel spectrogram (float32 rounding) in about half the time.
    """
    return scipy.sparse.csr_matrix(librosa.filters.mel(sr=sr, n_fft=N_FFT, fmax=fmax))


def analysis_step(sr: int, analysis_sr: int) -> int:
    """Frames of the clip's own rate per analysis frame: 2 for 44.1 kHz at 22.05 kHz."""
    return max(1, round(sr / analysis_sr))


def compute_spectra(y: np.ndarray, sr: int, analysis_sr: int = 22_050) -> Spectra:
    """One STFT, one tuning estimate and one CQT of ``y`` at its own rate ``sr``; the mel
    spectrogram and the rhythm's mel bands (every ``analysis_step``-th frame) follow."""
    dc_offset = dc_dominates(y)
    magnitude, power = stft_magnitude_and_power(y.astype(np.float64) if dc_offset else y)
    if magnitude.dtype != y.dtype:  # the features downstream read the clip's precision
        magnitude, power = magnitude.astype(y.dtype), power.astype(y.dtype)
    tuning = estimate_tuning(magnitude, sr)
    n = min(magnitude.shape[1], cqt_frame_count(y.shape[-1], sr, tuning))
    return Spectra(magnitude[:, :n], power[:, :n], tuning, sr, analysis_step(sr, analysis_sr),
                   y, dc_offset)


# A float32 FFT's rounding sits ~1e-7 below each frame's whole energy, DC included. When a
# constant offset carries more than a tenth of the clip's power (a broken converter, a
# float file with a bias), that floor rises towards the music's quiet bins, and spectral
# contrast and bandwidth move by several per cent from FMA's float64 values: such clips
# get a float64 STFT (twice its FFT cost, for them only), and their CQT takes the offset
# out (``cqt_magnitude(remove_dc=True)``).
DC_POWER_SHARE_FOR_FLOAT64 = 0.1


def dc_dominates(y: np.ndarray) -> bool:
    """Whether ``y``'s mean carries more than :data:`DC_POWER_SHARE_FOR_FLOAT64` of its
    power, relative to the rest (mean² > share × AC mean square)."""
    if y.dtype == np.float64 or y.size == 0:
        return False
    # numpy's pairwise float32 sum and BLAS's dot: ample precision for a threshold.
    with np.errstate(over="ignore", invalid="ignore"):
        mean = float(np.sum(y)) / y.size
        mean_square = float(np.dot(y, y)) / y.size
    if not (math.isfinite(mean) and math.isfinite(mean_square)):
        return True  # samples too large for float32 sums: float64 everywhere
    return mean * mean > DC_POWER_SHARE_FOR_FLOAT64 * max(mean_square - mean * mean, 0.0)


def cqt_frame_count(n_samples: int, sr: int, tuning: float = 0.0) -> int:
    """How many frames :func:`cqt_magnitude` gives for ``n_samples`` at ``sr``: the
    fewest of any octave (1 + its length // its hop, after the halvings)."""
    plan = _cqt_plan(sr, float(tuning), FMA_CQT_FILTER_SCALE, "float32")
    length, hop = n_samples, HOP_LENGTH
    if plan.downsample > 1:
        length, hop = math.ceil(length / plan.downsample), hop // plan.downsample
    frames = []
    for octave in range(len(plan.kernels)):
        frames.append(1 + length // hop)
        if octave + 1 < len(plan.kernels):
            length, hop = math.ceil(length / 2), hop // 2
    return min(frames)


def chroma_stft(power: np.ndarray, sr: int, tuning: float) -> np.ndarray:
    """``librosa.feature.chroma_stft(S=power, sr=sr, n_chroma=12, tuning=tuning)``, the same
    arithmetic, with the chroma filter bank built once per (rate, tuning) and kept."""
    raw = np.einsum("cf,...ft->...ct", _chroma_filters(sr, float(tuning)), power, optimize=True)
    return librosa.util.normalize(raw, norm=np.inf, axis=-2)


@lru_cache(maxsize=256)
def _chroma_filters(sr: int, tuning: float) -> np.ndarray:
    filters = librosa.filters.chroma(sr=sr, n_fft=N_FFT, tuning=tuning, n_chroma=12)
    filters.flags.writeable = False
    return filters


def zero_crossing_rate(y: np.ndarray, n_frames: int) -> np.ndarray:
    """``librosa.feature.zero_crossing_rate(y, 2048, 512)``, shape (1, n_frames), in O(n).

    Same definition: edge-padded centred frames, |y| <= 1e-10 counts as zero (positive),
    crossings between adjacent samples inside a frame, divided by the frame length.
    """
    counts = zero_crossing_counts(y, n_frames, N_FFT, HOP_LENGTH)
    return (counts / N_FFT)[np.newaxis, :]


def spectral_shape(magnitude: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid, bandwidth (p=2) and 85 % rolloff per frame, as librosa defines them.

    Uses moments instead of librosa's broadcast deviation matrix, and one compiled pass
    for moments and rolloff (:func:`~workers.features.kernels.spectral_moments_and_rolloff`).
    """
    freq = librosa.fft_frequencies(sr=sr, n_fft=N_FFT)
    # Zeroth, first and second moments as float64 sums (the bandwidth is a difference of
    # two moments, which float32 would cancel away); rolloff as librosa computes it.
    total, first, second, rolloff_bin = spectral_moments_and_rolloff(
        magnitude, freq, ROLLOFF_FRACTION
    )
    safe_total = np.where(total > 0, total, 1.0)
    centroid = first / safe_total
    bandwidth = np.sqrt(np.maximum(second / safe_total - centroid**2, 0.0))
    rolloff = freq[rolloff_bin]
    centroid[total <= 0] = 0.0
    bandwidth[total <= 0] = 0.0
    return centroid[np.newaxis], bandwidth[np.newaxis], rolloff[np.newaxis]


def spectral_contrast(magnitude: np.ndarray, sr: int) -> np.ndarray:
    """``librosa.feature.spectral_contrast(S=magnitude, sr=sr, n_fft=2048, n_bands=6)``
    (fmin 200 Hz, quantile 0.02), shape (7, n_frames), equal to librosa's up to the
    rounding of its means.

    librosa copies each band out of the (bins, frames) array with a boolean mask and
    sorts it across the bins, a strided axis here; the bands are contiguous runs of bins,
    so this slices them from the frame-major layout and sorts rows: half the time.
    """
    frames = np.ascontiguousarray(magnitude.T)  # no copy for the shared spectra
    freq = librosa.fft_frequencies(sr=sr, n_fft=N_FFT)
    edges = np.zeros(CONTRAST_BANDS + 2)
    edges[1:] = CONTRAST_FMIN * 2.0 ** np.arange(CONTRAST_BANDS + 1)
    valley = np.empty((CONTRAST_BANDS + 1, frames.shape[0]), dtype=np.float64)
    peak = np.empty_like(valley)
    for k, (f_low, f_high) in enumerate(itertools.pairwise(edges)):
        inside = np.flatnonzero((freq >= f_low) & (freq <= f_high))
        # librosa's band k: its bins, plus the bin below (k > 0), plus every bin above
        # (the last band); a count of them sets the quantile, then all but the top bin
        # are ranked (except in the last band).
        start = int(inside[0]) - (1 if k > 0 else 0)
        stop = len(freq) if k == CONTRAST_BANDS else int(inside[-1]) + 1
        count = stop - start
        if k < CONTRAST_BANDS:
            stop -= 1
        n_side = int(max(np.rint(CONTRAST_QUANTILE * count), 1))
        ranked = np.sort(frames[:, start:stop], axis=1)
        valley[k] = ranked[:, :n_side].mean(axis=1)
        peak[k] = ranked[:, -n_side:].mean(axis=1)
    return librosa.power_to_db(peak) - librosa.power_to_db(valley)


def chroma_cens(raw_chroma: np.ndarray) -> np.ndarray:
    """librosa 0.5.0's ``chroma_cens`` from the unnormalised CQT chroma: L1-normalise,
    quantise, smooth along time with a *periodic* Hann window of 43 frames (today's
    librosa: symmetric), L2-normalise."""
    chroma = librosa.util.normalize(raw_chroma, norm=1, axis=0)
    quantised = np.zeros_like(chroma)
    for step in (0.4, 0.2, 0.1, 0.05):
        quantised += (chroma > step) * 0.25
    smoothed = scipy.signal.convolve2d(quantised, _cens_window(), mode="same")
    return librosa.util.normalize(smoothed, norm=2, axis=0)


@lru_cache(maxsize=1)
def _cens_window() -> np.ndarray:
    window = scipy.signal.get_window("hann", CENS_WINDOW, fftbins=True)
    window = (window / window.sum())[np.newaxis, :]
    window.flags.writeable = False
    return window


def rms(power: np.ndarray) -> np.ndarray:
    """librosa 0.5.0's ``rmse(S=magnitude)`` from ``power = magnitude**2``: the root mean
    square over the frequency bins (librosa >= 0.7's ``rms(S=...)`` rescales by Parseval
    instead, ~1/45 of it)."""
    return np.sqrt(np.mean(power, axis=0, keepdims=True))


def fma_frames(y: np.ndarray, spectra: Spectra) -> dict[str, np.ndarray]:
    """Frame-level series of every FMA feature family, each shape (size, n_frames), as
    FMA's calls compute them on ``y`` at its own rate (``spectra.sr``)."""
    n = spectra.n_frames
    # The STFT's readers first, while it is in cache; the CQT (computed on first use) last.
    # chroma_stft(S=|STFT|**2) without sr: its own tuning estimate (piptrack on the power
    # spectrum) and its filters both on a 22 050 Hz frequency axis.
    chroma_tuning = estimate_tuning(spectra.power, FMA_ASSUMED_SR)
    centroid, bandwidth, rolloff = spectral_shape(spectra.magnitude, FMA_ASSUMED_SR)
    frames = {
        "chroma_stft": chroma_stft(spectra.power, FMA_ASSUMED_SR, chroma_tuning),
        "mfcc": librosa.feature.mfcc(S=spectra.mel_db, n_mfcc=20),
        "rmse": rms(spectra.power),
        "zcr": zero_crossing_rate(y, n),
        "spectral_centroid": centroid,
        "spectral_bandwidth": bandwidth,
        "spectral_contrast": spectral_contrast(spectra.magnitude, FMA_ASSUMED_SR),
        "spectral_rolloff": rolloff,
    }
    raw_chroma = librosa.feature.chroma_cqt(
        C=spectra.cqt, n_chroma=12, n_octaves=7, bins_per_octave=12, norm=None
    )
    cens = chroma_cens(raw_chroma)
    frames["chroma_cqt"] = librosa.util.normalize(raw_chroma, norm=np.inf, axis=0)
    frames["chroma_cens"] = cens
    frames["tonnetz"] = librosa.feature.tonnetz(chroma=cens)
    return {name: series[:, :n] for name, series in frames.items()}


def true_centroid(fma_centroid: np.ndarray, sr: int) -> np.ndarray:
    """The spectral centroid in Hz from FMA's, which read the bins on a 22 050 Hz axis."""
    return fma_centroid * (sr / FMA_ASSUMED_SR)


def fma_block(frames: dict[str, np.ndarray]) -> np.ndarray:
    """The 518 FMA statistics in :func:`fma_names` order, shape (518,)."""
    stacked = np.concatenate([frames[name] for name in FMA_FEATURE_SIZES], axis=0)
    summary = summarize(stacked)
    # (statistic, row) in summary order, flattened, then put in fma_names order.
    values = np.stack([summary[statistic] for statistic in FMA_STATISTICS])
    return values.ravel()[_fma_order()].astype(np.float64)


@lru_cache(maxsize=1)
def _fma_order() -> np.ndarray:
    """Where each of :func:`fma_names` sits in the flattened (statistic, stacked row)
    summary of :func:`fma_block`."""
    position = {}
    row = 0
    for name, size in FMA_FEATURE_SIZES.items():
        for s, statistic in enumerate(FMA_STATISTICS):
            for i in range(size):
                position[f"{name}.{statistic}.{i + 1:02d}"] = s * _STACKED_ROWS + row + i
        row += size
    order = np.array([position[name] for name in fma_names()], dtype=np.intp)
    order.flags.writeable = False
    return order


_STACKED_ROWS = sum(FMA_FEATURE_SIZES.values())  # 74 frame-level series
