"""Rhythm features: the tempo of click tracks with a known tempo."""

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
