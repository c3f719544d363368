"""Tempo, beats, onset rate and danceability from the shared mel spectrogram.

Tempo is estimated in three steps (see docs/features.md):

1. a periodicity function: the autocorrelation of the spectral-flux onset envelope,
   averaged over the clip, with parabolic peak interpolation (lag resolution alone is
   ±4 % at 180 BPM with a 512-sample hop);
2. the metrical level: among octave-related candidates (×½, ×2, ×⅓, ×3) the level whose
   pulses are all strong is the beat; when the midpoints between candidate beats carry
   nearly as much onset energy as the beats themselves, the beat is twice as fast;
3. refinement: beats are tracked by dynamic programming at that tempo and the tempo is
   the slope of a least-squares fit of beat times against beat index.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np

HOP_LENGTH = 512
MIN_BPM = 40.0
MAX_BPM = 240.0
# Beat candidates outside this band are folded in by octaves: listeners rarely tap outside.
TACTUS_MIN_BPM = 60.0
TACTUS_MAX_BPM = 200.0


@dataclass(frozen=True)
class Rhythm:
    """Rhythm descriptors of a clip."""

    tempo_bpm: float
    beat_confidence: float
    onset_rate: float
    beat_times_s: np.ndarray


def onset_envelope(mel_power: np.ndarray, sr: int) -> np.ndarray:
    """Spectral-flux onset strength from a mel power spectrogram, shape (n_frames,)."""
    return librosa.onset.onset_strength(S=librosa.power_to_db(mel_power), sr=sr, lag=1)


def periodicity(envelope: np.ndarray, max_lag: int) -> np.ndarray:
    """Normalised autocorrelation of the mean-removed envelope for lags 0..max_lag."""
    x = envelope - envelope.mean()
    n = x.size
    spectrum = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(np.abs(spectrum) ** 2)[: max_lag + 1]
    # Unbiased: a lag sees fewer overlapping samples.
    acf = acf / np.maximum(n - np.arange(max_lag + 1), 1)
    return acf / acf[0] if acf[0] > 0 else acf


def _interpolated_peak(acf: np.ndarray, lag: int) -> float:
    if 1 <= lag < acf.size - 1:
        a, b, c = acf[lag - 1], acf[lag], acf[lag + 1]
        denom = a - 2 * b + c
        if denom < 0:
            return lag + 0.5 * (a - c) / denom
    return float(lag)


def _acf_at(acf: np.ndarray, lag: float) -> float:
    if lag >= acf.size - 1 or lag < 1:
        return 0.0
    lo = int(np.floor(lag))
    frac = lag - lo
    # max over a ±1 neighbourhood tolerates small tempo drift
    window = acf[max(lo - 1, 0) : lo + 3]
    return float(max(window.max(), (1 - frac) * acf[lo] + frac * acf[lo + 1]))


def _pulse_salience(envelope: np.ndarray, period: float) -> tuple[float, float]:
    """Mean onset strength on the best-phase pulse grid and at its midpoints."""
    n = envelope.size
    best_on, best_mid = 0.0, 0.0
    smooth = np.maximum.reduce([envelope, np.roll(envelope, 1), np.roll(envelope, -1)])
    for phase in np.arange(0.0, period, 1.0):
        on_idx = np.round(np.arange(phase, n - 1, period)).astype(int)
        mid_idx = np.round(np.arange(phase + period / 2, n - 1, period)).astype(int)
        if on_idx.size < 2 or mid_idx.size < 1:
            continue
        on = float(smooth[on_idx].mean())
        if on > best_on:
            best_on, best_mid = on, float(smooth[mid_idx].mean())
    return best_on, best_mid


def choose_tempo(envelope: np.ndarray, sr: int) -> tuple[float, float]:
    """Global tempo (BPM, not yet refined) and a 0-1 periodicity confidence."""
    fps = sr / HOP_LENGTH
    min_lag = int(np.floor(60.0 * fps / MAX_BPM))
    max_lag = int(np.ceil(60.0 * fps / MIN_BPM))
    acf = periodicity(envelope, min(max_lag * 4, envelope.size - 1))
    search = acf[min_lag : max_lag + 1]
    if search.size == 0 or not np.any(search > 0):
        return 0.0, 0.0
    lag = min_lag + int(np.argmax(search))
    period = _interpolated_peak(acf, lag)
    # Fold into the tactus band by octaves.
    while 60.0 * fps / period > TACTUS_MAX_BPM:
        period *= 2
    while 60.0 * fps / period < TACTUS_MIN_BPM:
        period /= 2
    # Faster level when the midpoints are nearly as strong as the beats.
    on, mid = _pulse_salience(envelope, period)
    if on > 0 and mid / on > 0.72 and 60.0 * fps / (period / 2) <= TACTUS_MAX_BPM:
        period /= 2
    confidence = float(np.clip(_acf_at(acf, period), 0.0, 1.0))
    return 60.0 * fps / period, confidence


def refine_tempo(envelope: np.ndarray, sr: int, bpm: float) -> tuple[float, np.ndarray]:
    """Track beats at ``bpm`` and return the tempo from a line fit of beat times."""
    _, beats = librosa.beat.beat_track(
        onset_envelope=envelope, sr=sr, hop_length=HOP_LENGTH, bpm=bpm, tightness=400, trim=True
    )
    times = librosa.frames_to_time(beats, sr=sr, hop_length=HOP_LENGTH)
    if times.size < 4:
        return bpm, times
    slope = np.polyfit(np.arange(times.size), times, 1)[0]
    refined = 60.0 / slope if slope > 0 else bpm
    # The DP tracker can lock onto a neighbouring level; keep the chosen level.
    if abs(np.log2(refined / bpm)) > 0.06:
        return bpm, times
    return float(refined), times


def onset_rate(envelope: np.ndarray, sr: int, duration_s: float) -> float:
    """Detected onsets per second."""
    onsets = librosa.onset.onset_detect(
        onset_envelope=envelope, sr=sr, hop_length=HOP_LENGTH, units="frames"
    )
    return float(len(onsets) / duration_s) if duration_s > 0 else 0.0


def analyze_rhythm(envelope: np.ndarray, sr: int, duration_s: float) -> Rhythm:
    """Tempo, beat confidence, onset rate and beat times from an onset envelope."""
    bpm, confidence = choose_tempo(envelope, sr)
    beat_times = np.empty(0)
    if bpm > 0:
        bpm, beat_times = refine_tempo(envelope, sr, bpm)
    return Rhythm(
        tempo_bpm=float(bpm),
        beat_confidence=confidence,
        onset_rate=onset_rate(envelope, sr, duration_s),
        beat_times_s=beat_times,
    )


def danceability(y: np.ndarray, sr: int, *, min_tau_s: float = 0.31, max_tau_s: float = 8.8,
                 tau_multiplier: float = 1.1) -> float:
    """Danceability in [0, 1] by detrended fluctuation analysis (Streich & Herrera 2005).

    The amplitude envelope (standard deviation of 10 ms frames) is integrated; for each
    segment length τ between 310 ms and 8.8 s the RMS residual F(τ) of a linear fit per
    segment is measured; the local DFA exponents α are the slopes of log F against log τ.
    Strongly periodic (danceable) music keeps α low over the beat and bar time-scales.
    The raw score is the mean of 1/α as in Essentia (range ~0-3); we report it / 3,
    clipped to [0, 1].
    """
    frame = max(int(round(0.01 * sr)), 1)
    n_frames = y.size // frame
    if n_frames < 8:
        return 0.0
    amplitude = y[: n_frames * frame].reshape(n_frames, frame).std(axis=1)
    profile = np.cumsum(amplitude - amplitude.mean())
    taus: list[int] = []
    tau = min_tau_s / 0.01
    while tau <= max_tau_s / 0.01 and int(tau) <= n_frames // 2:
        if not taus or int(tau) != taus[-1]:
            taus.append(int(tau))
        tau *= tau_multiplier
    if len(taus) < 2:
        return 0.0
    fluctuation = []
    for t in taus:
        n_seg = n_frames // t
        segments = profile[: n_seg * t].reshape(n_seg, t)
        x = np.arange(t) - (t - 1) / 2
        slope = segments @ x / (x @ x)
        residual = segments - segments.mean(axis=1, keepdims=True) - np.outer(slope, x)
        fluctuation.append(np.sqrt(np.mean(residual**2)))
    log_f = np.log10(np.maximum(np.array(fluctuation), 1e-12))
    alpha = np.diff(log_f) / np.diff(np.log10(np.array(taus, dtype=float)))
    alpha = alpha[alpha > 1e-3]
    if alpha.size == 0:
        return 0.0
    return float(np.clip(np.mean(1.0 / alpha) / 3.0, 0.0, 1.0))
