"""Rhythm features: the tempo of click tracks with a known tempo."""

import numpy as np
import pytest

from tests.unit.workers.features.signals import SR, click_track
from workers.features import rhythm
from workers.features.spectral import compute_spectra


@pytest.mark.parametrize("bpm", [80.0, 100.0, 128.0, 150.0])
def test_tempo_of_a_backbeat_click_track(bpm):
    y = click_track(bpm)
    spectra = compute_spectra(y, SR)
    envelope = rhythm.onset_envelope(spectra.mel_db, SR)
    result = rhythm.analyze_rhythm(spectra.mel_db, envelope, SR, y.size / SR)
    assert abs(result.tempo_bpm - bpm) / bpm < 0.04


def _pulse_envelope(period: int, parts: int, n_frames: int = 2_000):
    """Onset envelope: a strong pulse every ``period`` frames, weaker ones dividing it in
    ``parts``."""
    envelope = np.zeros(n_frames)
    envelope[:: period // parts] = 0.5
    envelope[::period] = 1.0
    return envelope


@pytest.mark.parametrize(
    ("parts", "base_bpm", "expected"),
    [
        (3, 62.0, 3),  # a fast 3/4 bar: three beats per base period
        (3, 70.0, 1),  # 210 BPM is faster than anyone taps, and P/2 is no beat of 3/4
        (2, 62.0, 2),
        (2, 100.0, 1),  # 200 BPM: keep the base
    ],
)
def test_faster_level_follows_the_subdivision(parts, base_bpm, expected):
    envelope = _pulse_envelope(60, parts)
    assert rhythm.faster_level_divisor(envelope, 60.0, base_bpm) == expected
