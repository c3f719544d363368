"""The extractor on signals with known answers, and its guarantees."""

import numpy as np
import pyloudnorm
import pytest

from contract.errors import InvalidSignal
from contract.layout import VECTOR_DIM, feature_names
from testkit.songs.render import render
from testkit.songs.score import generate_song
from workers.audio import decode_audio, encode_audio
from workers.features import loudness, rhythm, tonal
from workers.features.extractor import DESCRIPTOR_KEYS, extract_features
from workers.features.spectral import compute_spectra

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


@pytest.mark.parametrize("bpm", [80.0, 100.0, 128.0, 150.0])
def test_tempo_of_a_backbeat_click_track(bpm):
    y = click_track(bpm)
    spectra = compute_spectra(y, SR)
    envelope = rhythm.onset_envelope(spectra.mel_db, SR)
    result = rhythm.analyze_rhythm(spectra.mel_db, envelope, SR, y.size / SR)
    assert abs(result.tempo_bpm - bpm) / bpm < 0.04


@pytest.mark.parametrize(
    ("tonic", "mode"), [(0, "major"), (9, "minor"), (6, "major"), (2, "minor")]
)
def test_key_of_a_cadential_progression(tonic, mode):
    key = tonal.estimate_key(compute_spectra(chord_song(tonic, mode), SR).cqt)
    assert (key.tonic, key.mode) == (tonic, mode)


def test_integrated_loudness_of_a_reference_sine():
    # BS.1770: a 997 Hz sine at -20 dBFS peak in one channel reads -23.0 LUFS (±0.1).
    t = np.arange(10 * SR) / SR
    y = (0.1 * np.sin(2 * np.pi * 997 * t)).astype(np.float32)
    assert loudness.integrated_loudness(y, SR) == pytest.approx(-23.0, abs=0.2)
    # Dual-mono stereo sums two channels' energy: +3 LU.
    stereo = np.stack([y, y])
    assert loudness.integrated_loudness(y, SR, stereo) == pytest.approx(-20.0, abs=0.2)


def _pyloudnorm_lufs(data: np.ndarray, sr: int) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        lufs = float(pyloudnorm.Meter(sr).integrated_loudness(np.asarray(data, dtype=np.float64)))
    return lufs if np.isfinite(lufs) else loudness.LUFS_FLOOR


def test_integrated_loudness_equals_pyloudnorm_on_real_clips():
    # Our vectorised gating and one-cascade filtering must not change the measurement.
    for seed, style, gain in ((21, "rock", 1.0), (22, "chamber", 0.05), (23, "pop", 3e-4)):
        score = generate_song(seed, tonic=seed % 12, mode="minor", tempo_bpm=112.0,
                              drums=style != "chamber", duration_s=9.0, style=style)
        audio = decode_audio(encode_audio(render(score, 44100, "synth"), 44100, "m4a"), sr=SR)
        y, channels = gain * audio.samples, gain * audio.channels
        cases = {
            "stereo": (channels, channels.T),
            "mono": (None, y),
            "five channels": (np.vstack([channels, channels[:1], channels]),
                              np.vstack([channels, channels[:1], channels]).T),
            "one block": (channels[:, : int(0.45 * SR)], channels[:, : int(0.45 * SR)].T),
        }
        for name, (ours_channels, reference_data) in cases.items():
            ours = loudness.integrated_loudness(y[: reference_data.shape[0]], SR, ours_channels)
            assert ours == pytest.approx(_pyloudnorm_lufs(reference_data, SR), abs=1e-9), name
    silence = np.zeros(2 * SR, dtype=np.float32)
    assert loudness.integrated_loudness(silence, SR) == loudness.LUFS_FLOOR
    with pytest.raises(ValueError):
        loudness.integrated_loudness(silence[: SR // 4], SR)  # shorter than one 400 ms block


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
