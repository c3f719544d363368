"""Synthetic signals with known answers (tempo, key), shared by the feature tests."""

import numpy as np

SR = 22050


def click_track(bpm: float, seconds: float = 20.0) -> np.ndarray:
    """Kick-like clicks on every beat, a snare-like noise burst on beats 2 and 4."""
    rng = np.random.default_rng(3)
    y = np.zeros(int(seconds * SR))
    period = 60.0 / bpm
    kick = np.sin(2 * np.pi * 60 * np.arange(2000) / SR) * np.exp(-np.arange(2000) / 400)
    snare = rng.standard_normal(1500) * np.exp(-np.arange(1500) / 300)
    for i, start in enumerate(np.arange(0, seconds - 0.2, period)):
        s = int(start * SR)
        burst = snare if i % 2 else kick
        y[s : s + burst.size] += burst[: y.size - s]
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def chord_song(tonic: int, mode: str, seconds: float = 16.0) -> np.ndarray:
    """I-IV-V-I (or i-iv-V-i) as additive tones with a bass line, one chord a second."""
    third = 4 if mode == "major" else 3
    degrees = [(0, third, 7), (5, 5 + third, 12), (7, 11, 14), (0, third, 7)]
    t = np.arange(int(SR)) / SR
    env = np.exp(-t * 2.5)
    bars = []
    for i in range(int(seconds)):
        chord = degrees[i % 4]
        x = np.zeros_like(t)
        for interval in chord:
            f = 261.63 * 2 ** ((tonic + interval) / 12)
            x += sum(np.sin(2 * np.pi * f * h * t) / h for h in (1, 2, 3))
        bass = 65.41 * 2 ** ((tonic + chord[0]) / 12)
        x += 1.5 * np.sin(2 * np.pi * bass * t)
        bars.append(x * env)
    y = np.concatenate(bars)
    return (0.3 * y / np.abs(y).max()).astype(np.float32)
