"""BS.1770 integrated loudness: a reference sine, and equality with pyloudnorm."""

import numpy as np
import pyloudnorm
import pytest

from contract.settings import Settings
from testkit.encode import encode_audio
from testkit.songs.render import render
from testkit.songs.score import generate_song
from tests.unit.workers.features.signals import SR
from workers.analysis import analyze
from workers.audio import decode_audio
from workers.features import loudness


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


def test_stereo_carried_in_2_1_5_1_and_7_1_measures_as_the_stereo():
    # BS.1770 sums weighted channel energies: music in the front pair of a 5.1 or 7.1
    # file is as loud as the stereo file, and the LFE channel does not count. (Measured
    # on the mean of all 6 or 8 channels, such files read 12 LU quieter; 2.1's LFE was
    # weighed as a centre channel.)
    score = generate_song(31, tonic=2, mode="major", tempo_bpm=100.0, drums=True,
                          duration_s=6.0, style="pop")
    stereo = render(score, 44100, "synth")
    settings = Settings()

    def lufs(x: np.ndarray) -> float:
        descriptors = analyze(encode_audio(x, 44100, "flac"), settings).features.descriptors
        return float(descriptors["loudness_lufs"])

    expected = lufs(stereo)
    # encode_audio writes FFmpeg's default layouts: 2.1, 5.1 and 7.1.
    for n_channels, lfe in ((3, 2), (6, 3), (8, 3)):
        x = np.zeros((n_channels, stereo.shape[1]), dtype=np.float32)
        x[:2] = stereo
        assert lufs(x) == pytest.approx(expected, abs=0.02), n_channels
        x[lfe] = stereo[0]
        assert lufs(x) == pytest.approx(expected, abs=0.02), n_channels
