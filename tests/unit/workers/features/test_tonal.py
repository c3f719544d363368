"""Tonal features: the key of chord progressions with a known key."""

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
