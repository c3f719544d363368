"""The fast FMA implementations equal librosa's definitions on known signals."""

import librosa
import numpy as np
import pytest
from scipy import stats

from workers.features.spectral import HOP_LENGTH, N_FFT, spectral_shape, zero_crossing_rate
from workers.features.stats import summarize

SR = 22050


@pytest.fixture(scope="module")
def signal():
    rng = np.random.default_rng(7)
    t = np.arange(4 * SR) / SR
    y = 0.4 * np.sin(2 * np.pi * 440 * t) * (t % 0.5 < 0.3) + 0.05 * rng.standard_normal(t.size)
    y[SR : SR + 3000] = 0.0  # a silent stretch: frames with no energy
    return y.astype(np.float32)


def test_zero_crossing_rate_matches_librosa(signal):
    expected = librosa.feature.zero_crossing_rate(signal, frame_length=N_FFT, hop_length=HOP_LENGTH)
    ours = zero_crossing_rate(signal, expected.shape[1])
    np.testing.assert_array_equal(ours, expected)


def test_spectral_shape_matches_librosa(signal):
    magnitude = np.abs(librosa.stft(signal, n_fft=N_FFT, hop_length=HOP_LENGTH))
    centroid, bandwidth, rolloff = spectral_shape(magnitude, SR)
    np.testing.assert_allclose(
        centroid, librosa.feature.spectral_centroid(S=magnitude, sr=SR), rtol=1e-4, atol=1e-3
    )
    np.testing.assert_allclose(
        bandwidth, librosa.feature.spectral_bandwidth(S=magnitude, sr=SR), rtol=1e-3, atol=1e-2
    )
    np.testing.assert_allclose(rolloff, librosa.feature.spectral_rolloff(S=magnitude, sr=SR))


def test_single_bin_spectrum_has_that_bins_centroid_and_zero_bandwidth():
    magnitude = np.zeros((1 + N_FFT // 2, 3))
    magnitude[100] = 1.0
    centroid, bandwidth, rolloff = spectral_shape(magnitude, SR)
    freq = librosa.fft_frequencies(sr=SR, n_fft=N_FFT)[100]
    np.testing.assert_allclose(centroid, freq)
    np.testing.assert_allclose(bandwidth, 0.0, atol=1e-6)
    np.testing.assert_allclose(rolloff, freq)


def test_summary_statistics_are_fmas():
    frames = np.random.default_rng(0).gamma(2.0, size=(5, 300))
    summary = summarize(frames)
    np.testing.assert_allclose(summary["skew"], stats.skew(frames, axis=1))
    np.testing.assert_allclose(summary["kurtosis"], stats.kurtosis(frames, axis=1))
    np.testing.assert_allclose(summary["std"], np.std(frames, axis=1))
    np.testing.assert_allclose(summary["median"], np.median(frames, axis=1))


def test_constant_series_has_zero_skew_and_kurtosis_not_nan():
    frames = np.vstack([np.full(50, 0.25), np.linspace(0, 1, 50)])
    summary = summarize(frames)
    assert summary["skew"][0] == 0.0 and summary["kurtosis"][0] == 0.0
    assert all(np.all(np.isfinite(v)) for v in summary.values())
