"""The feature extractor: decoded mono signal in, named and versioned vector out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from contract.errors import InvalidSignal, TooShort
from contract.layout import DESCRIPTOR_DIMENSIONS, FEATURE_VERSION, PITCH_CLASSES, VECTOR_DIM
from workers.features import kernels, loudness, rhythm, spectral, tonal


@dataclass(frozen=True)
class Features:
    """One clip's features: human descriptors, the full vector and per-stage timings."""

    descriptors: dict[str, float | str]
    vector: np.ndarray
    timings_s: dict[str, float] = field(default_factory=dict)
    feature_version: str = FEATURE_VERSION


class _Stopwatch:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self._last
        self._last = now


# Below this rate FMA's 84-bin CQT from C1 does not fit under the Nyquist frequency (FMA's
# own extraction fails on such a clip, e.g. 8 kHz telephony audio): those clips are
# resampled to UPSAMPLED_SR first, so they get a vector instead of an internal error.
# Samples beyond this magnitude (60 dB above full scale) are no audio level: a float file
# written at integer scale (±32767) or garbage. Their spectra overflow float32 further
# on (1e18 raised an untyped error from librosa); refused up front, as invalid_signal.
MAX_SAMPLE_MAGNITUDE = 1_000.0
# The shortest signal every feature is defined on: BS.1770 needs one 400 ms block, the
# DFA two segment lengths of 310 ms and more, the rhythm a few beats. The decoder's own
# floor (PREVIEWVEC_MIN_DURATION_S, 5 s) is above it unless an operator lowers it.
MIN_ANALYSIS_S = 1.0
MIN_NATIVE_SR = 11_025
UPSAMPLED_SR = 22_050


# The rhythm and key were tuned on what a 44.1 kHz preview gives them: every 2nd frame
# (TUNED_STEP) of its 2048-sample STFT, i.e. frames 512 samples apart at the analysis
# rate (22.05 kHz) with a 46 ms window. A clip at any other rate analyses a copy resampled
# to TUNED_STEP × the analysis rate (pv7). Its own frames read tempi far off: 21-31
# frames/s instead of 43 at 11.025-16 kHz (a 131 BPM excerpt read 100 at 12 kHz), and
# at 48 or 96 kHz the same frame rate through a shorter window agreed with the 44.1 kHz
# reading on 0.72-0.78 of 32 real excerpts (1.000 resampled; benchmarks/rates.py).
TUNED_STEP = 2


def _resampled(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    """``x`` resampled from ``sr`` to ``target`` (soxr, librosa's default), float32."""
    import librosa

    return librosa.resample(x, orig_sr=sr, target_sr=target).astype(np.float32)


def _upsampled(y: np.ndarray, channels: np.ndarray | None,
               sr: int) -> tuple[np.ndarray, np.ndarray | None, int]:
    """``y`` (and ``channels``) resampled from ``sr`` to :data:`UPSAMPLED_SR` (soxr)."""
    up = _resampled(y, sr, UPSAMPLED_SR)
    return up, None if channels is None else _resampled(channels, sr, UPSAMPLED_SR), UPSAMPLED_SR


def extract_features(y: np.ndarray, sr: int, *, channels: np.ndarray | None = None,
                     analysis_sr: int = 22_050,
                     channel_weights: Sequence[float] | None = None) -> Features:
    """Compute every feature of a mono float32 signal at its own rate.

    The FMA block is computed at ``sr`` (as FMA did, ``librosa.load(sr=None)``); rhythm
    and key analyse the same spectra's frames at ``analysis_sr`` (every
    ``sr / analysis_sr``-th frame), loudness and danceability the signal itself.

    Parameters
    ----------
    y : np.ndarray, shape (n,), finite mono signal at ``sr`` (the clip's own rate)
    channels : np.ndarray, shape (n_channels, n), optional, for BS.1770 loudness
    channel_weights : the BS.1770 weight of each row of ``channels`` (default: by
        position, L, R, C, Ls, Rs; see :func:`loudness.integrated_loudness`)
    analysis_sr : int, the rate the rhythm and key features analyse at

    Raises
    ------
    InvalidSignal
        If any value would be NaN or infinite; a degenerate clip is an error, never a
        NaN vector.
    """
    if y.ndim != 1 or y.size == 0 or not np.all(np.isfinite(y)):
        raise InvalidSignal("signal must be a non-empty finite mono array")
    if y.size < MIN_ANALYSIS_S * sr:
        raise TooShort(f"{y.size / sr:.3f} s of audio; the features need at least "
                       f"{MIN_ANALYSIS_S:.2f} s")
    peak = float(np.max(np.abs(y)))
    if peak > MAX_SAMPLE_MAGNITUDE:
        raise InvalidSignal(
            f"samples reach {peak:.3g}, {20 * np.log10(peak):.0f} dB above full scale "
            "(1.0): not an audio level (a float file written at integer scale?)")
    watch = _Stopwatch()
    if sr < MIN_NATIVE_SR:
        y, channels, sr = _upsampled(y, channels, sr)
    duration_s = y.size / sr
    # Loudness and danceability first, while the decoder's output is still in cache.
    lufs = loudness.integrated_loudness(y, sr, channels, channel_weights)
    watch.lap("loudness")
    dance = rhythm.danceability(y, sr)
    watch.lap("rhythm")
    spectra = spectral.compute_spectra(y, sr, analysis_sr)
    watch.lap("spectra")
    frames = spectral.fma_frames(y, spectra)
    fma = spectral.fma_block(frames)
    watch.lap("fma")
    timing = spectra
    tuned_sr = TUNED_STEP * analysis_sr
    if sr != tuned_sr:
        timing = spectral.compute_spectra(_resampled(y, sr, tuned_sr), tuned_sr, analysis_sr)
        watch.lap("spectra")
    rate = timing.analysis_sr
    envelope = rhythm.onset_envelope(timing.analysis_mel_db, rate)
    beat = rhythm.analyze_rhythm(timing.analysis_mel_db, envelope, rate, duration_s)
    watch.lap("rhythm")
    key = tonal.estimate_key(timing.analysis_cqt, rate)
    key_sin, key_cos = tonal.fifths_position(key.tonic, key.mode)
    watch.lap("tonal")
    centroid = spectral.true_centroid(frames["spectral_centroid"], sr)
    energy = loudness.energy_score(lufs, beat.onset_rate, centroid)
    watch.lap("loudness")

    tail = {
        "rhythm.tempo_bpm": beat.tempo_bpm,
        "rhythm.beat_confidence": beat.beat_confidence,
        "rhythm.onset_rate": beat.onset_rate,
        "rhythm.danceability": dance,
        "tonal.key_pc": float(key.tonic),
        "tonal.mode_major": 1.0 if key.mode == "major" else 0.0,
        "tonal.key_strength": key.strength,
        "tonal.key_fifths_sin": key_sin,
        "tonal.key_fifths_cos": key_cos,
        "loudness.integrated_lufs": lufs,
        "loudness.energy": energy,
        "meta.duration_s": duration_s,
    }
    vector = np.concatenate([fma, [tail[name] for name in DESCRIPTOR_DIMENSIONS]])
    bad = np.flatnonzero(~np.isfinite(vector))
    if bad.size:
        raise InvalidSignal(f"{bad.size} feature values are not finite (degenerate signal)")
    assert vector.size == VECTOR_DIM
    descriptors: dict[str, float | str] = {
        "tempo_bpm": round(beat.tempo_bpm, 2),
        "key": PITCH_CLASSES[key.tonic],
        "mode": key.mode,
        "key_strength": round(key.strength, 4),
        "loudness_lufs": round(lufs, 2),
        "energy": round(energy, 4),
        "danceability": round(dance, 4),
        "onset_rate": round(beat.onset_rate, 3),
        "duration_s": round(duration_s, 3),
    }
    return Features(
        descriptors=descriptors, vector=vector.astype(np.float32), timings_s=dict(watch.laps)
    )


PREVIEW_SR = 44_100  # the rate store previews come at: the CQT bases to build ahead


def warm_up(analysis_sr: int = 22_050, sr: int = PREVIEW_SR) -> float:
    """Run the extractor on a synthetic clip at ``sr``, mono and as stereo, so JIT
    compilation and filter caches are paid before the first real clip. Returns the
    seconds it took."""
    started = time.perf_counter()
    spectral.prepare_filter_banks(sr)
    t = np.arange(int(6 * sr)) / sr
    rng = np.random.default_rng(0)
    tones = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    clicks = (np.sin(2 * np.pi * 2 * t) > 0.95).astype(float) * rng.standard_normal(t.size)
    y = (0.1 * tones + 0.3 * clicks).astype(np.float32)
    kernels.signal_levels(y)  # the decoder's level check
    extract_features(y, sr, analysis_sr=analysis_sr)
    extract_features(y, sr, channels=np.stack([y, -y]), analysis_sr=analysis_sr)
    return time.perf_counter() - started
