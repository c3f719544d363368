"""The extractor on signals with known answers, and its guarantees."""

import numpy as np
import pytest

from contract.errors import InvalidSignal, TooShort
from contract.layout import DESCRIPTOR_KEYS, VECTOR_DIM, feature_names
from tests.unit.workers.features.signals import SR, chord_song, click_track
from workers.features.extractor import extract_features


def test_vector_is_complete_named_and_finite():
    features = extract_features(chord_song(0, "major"), SR)
    assert features.vector.shape == (VECTOR_DIM,) == (len(feature_names()),)
    assert features.vector.dtype == np.float32
    assert np.all(np.isfinite(features.vector))
    assert set(features.descriptors) == set(DESCRIPTOR_KEYS)


def test_same_input_gives_identical_vector():
    y = chord_song(7, "minor")
    np.testing.assert_array_equal(extract_features(y, SR).vector, extract_features(y, SR).vector)


def test_degenerate_signal_is_a_typed_error_not_nan():
    y = chord_song(0, "major")
    y[100] = np.nan
    with pytest.raises(InvalidSignal):
        extract_features(y, SR)


def test_energy_and_danceability_are_bounded_and_ordered():
    beat = click_track(120)
    t = np.arange(beat.size) / SR
    pad = (0.05 * np.sin(2 * np.pi * 220 * t) * (1 + 0.1 * np.sin(0.3 * t))).astype(np.float32)
    busy, calm = extract_features(beat, SR), extract_features(pad, SR)
    for f in (busy, calm):
        assert 0.0 <= f.descriptors["energy"] <= 1.0
        assert 0.0 <= f.descriptors["danceability"] <= 1.0
    assert busy.descriptors["energy"] > calm.descriptors["energy"]
    assert busy.descriptors["danceability"] > calm.descriptors["danceability"]


def test_a_clip_below_the_cqts_minimum_rate_is_upsampled_not_an_error():
    """At 8 kHz FMA's 84-bin CQT from C1 does not fit under Nyquist (FMA's own extraction
    fails): such a clip is analysed at 22.05 kHz and gets a finite vector."""
    import librosa

    from workers.features.extractor import MIN_NATIVE_SR

    song = chord_song(2, "major")
    low = librosa.resample(song, orig_sr=SR, target_sr=8000).astype(np.float32)
    assert MIN_NATIVE_SR > 8000
    features = extract_features(low, 8000, channels=np.stack([low, low]))
    assert features.vector.shape == (VECTOR_DIM,) and np.isfinite(features.vector).all()
    assert features.descriptors["duration_s"] == pytest.approx(song.size / SR, abs=0.01)


@pytest.mark.parametrize("rate", [11_025, 16_000, 32_000, 44_100, 48_000, 96_000])
def test_rhythm_and_key_read_the_same_at_any_rate(rate):
    """Given one song at 22.05 kHz and resampled to another rate, expect the same tempo
    (within 2 %) and key: a clip at any rate but 44.1 kHz has its rhythm and key analysed
    on a copy at 44.1 kHz, as a preview is (its own frames read tempi 17-51 % off at
    11-16 kHz)."""
    import soxr

    y = click_track(128.0, seconds=20.0) + 0.5 * chord_song(9, "minor", seconds=20.0)
    y = (y / np.max(np.abs(y))).astype(np.float32)
    base = extract_features(y, SR).descriptors
    other = extract_features(soxr.resample(y, SR, rate, "HQ").astype(np.float32),
                             rate).descriptors
    assert abs(other["tempo_bpm"] - base["tempo_bpm"]) / base["tempo_bpm"] < 0.02
    assert (other["key"], other["mode"]) == (base["key"], base["mode"])


def test_samples_far_beyond_full_scale_are_invalid_not_a_crash():
    y = chord_song(0, "major")
    for scale in (32_767.0, 1e18):
        with pytest.raises(InvalidSignal, match="above full scale"):
            extract_features(y * np.float32(scale), SR)


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 96000])
def test_a_signal_under_a_second_is_too_short_not_an_internal_error(sr):
    # The decoder's floor is 5 s, but PREVIEWVEC_MIN_DURATION_S may lower it: below one
    # second BS.1770 has no block and the DFA no two time-scales (a ValueError before).
    t = np.arange(int(0.5 * sr)) / sr
    y = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    with pytest.raises(TooShort) as info:
        extract_features(y, sr)
    assert info.value.code == "too_short" and "1.00 s" in info.value.message
    one_second = np.resize(y, sr)
    assert np.isfinite(extract_features(one_second, sr).vector).all()

