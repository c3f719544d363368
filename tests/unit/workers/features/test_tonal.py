"""Tonal features: the key of chord progressions with a known key."""

import numpy as np
import pytest

from tests.unit.workers.features.signals import SR, chord_song
from workers.features import tonal
from workers.features.spectral import compute_spectra


@pytest.mark.parametrize(
    ("tonic", "mode"), [(0, "major"), (9, "minor"), (6, "major"), (2, "minor")]
)
def test_key_of_a_cadential_progression(tonic, mode):
    key = tonal.estimate_key(compute_spectra(chord_song(tonic, mode), SR).cqt)
    assert (key.tonic, key.mode) == (tonic, mode)


@pytest.mark.parametrize(("tonic", "mode"), [(9, "minor"), (6, "major")])
def test_key_under_a_broadband_noise_floor(tonic, mode):
    """White noise as loud as the music lifts every pitch class alike: the key holds."""
    y = chord_song(tonic, mode)
    noise = np.random.default_rng(0).standard_normal(y.size)
    noise *= np.sqrt(np.mean(y.astype(np.float64) ** 2) / np.mean(noise**2))
    key = tonal.estimate_key(compute_spectra((y + noise).astype(np.float32), SR).cqt)
    assert (key.tonic, key.mode) == (tonic, mode)
