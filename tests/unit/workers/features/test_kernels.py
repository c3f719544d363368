"""The compiled kernels equal the numpy/scipy computations they replace, on real audio."""

import itertools

import librosa
import numpy as np
import pytest
from scipy.signal import sosfilt

from testkit.encode import encode_audio
from testkit.songs.render import render
from testkit.songs.score import generate_song
from workers.audio import decode_audio
from workers.features.kernels import (
    MAX_NETWORK_WIDTH,
    filtered_segment_energy,
    median_network,
    signal_levels,
    sliding_median,
    sparse_frames_product,
    spectral_moments_and_rolloff,
    spectral_peaks,
    zero_crossing_counts,
)
from workers.features.loudness import k_weighting_sos
from workers.features.spectral import mel_basis, stft_magnitude

SR = 22050


@pytest.fixture(scope="module")
def stereo_clip() -> np.ndarray:
    score = generate_song(5, tonic=2, mode="major", tempo_bpm=124.0, drums=True,
                          duration_s=6.0, style="rock")
    audio = decode_audio(encode_audio(render(score, 44100, "synth"), 44100, "m4a"), sr=SR)
    assert audio.channels is not None
    return audio.channels


def _reference_segment_energy(x: np.ndarray, sos: np.ndarray, edges: np.ndarray) -> np.ndarray:
    filtered = sosfilt(sos, np.asarray(x, dtype=np.float64), axis=1)
    return np.stack(
        [np.sum(filtered[:, a:b] ** 2, axis=1) for a, b in itertools.pairwise(edges)],
        axis=1,
    )


@pytest.mark.parametrize("n_channels", [1, 2, 3, 5])
def test_filtered_segment_energy_equals_sosfilt_then_sums(stereo_clip, n_channels):
    x = np.vstack([stereo_clip, stereo_clip[::-1] * 0.5, stereo_clip[:1]])[:n_channels]
    sos = k_weighting_sos(SR)
    rng = np.random.default_rng(n_channels)
    # Uneven segments, a late first edge (the filter still runs from sample 0) and an
    # end short of the signal.
    inner = np.sort(rng.choice(np.arange(1000, x.shape[1] - 500), 40, replace=False))
    edges = np.concatenate([[317], inner, [x.shape[1] - 100]])
    ours = filtered_segment_energy(x, sos, edges)
    expected = _reference_segment_energy(x, sos, edges)
    assert ours.shape == (n_channels, edges.size - 1)
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=0)


def test_filtered_segment_energy_accepts_any_layout_and_number_type(stereo_clip):
    sos = k_weighting_sos(SR)
    edges = np.array([0, 4410, 8820])
    quantised = np.round(stereo_clip * 2**15).astype(np.int16)
    for x in (stereo_clip, stereo_clip.astype(np.float64), np.asfortranarray(stereo_clip),
              stereo_clip[:, ::2], quantised):
        expected = _reference_segment_energy(x, sos, edges)
        np.testing.assert_allclose(filtered_segment_energy(x, sos, edges), expected, rtol=1e-12)


def test_filtered_segment_energy_rejects_bad_arguments(stereo_clip):
    sos = k_weighting_sos(SR)
    with pytest.raises(ValueError):
        filtered_segment_energy(stereo_clip, sos, np.array([0]))
    with pytest.raises(ValueError):
        filtered_segment_energy(stereo_clip, sos, np.array([0, stereo_clip.shape[1] + 1]))
    with pytest.raises(ValueError):
        filtered_segment_energy(stereo_clip, sos, np.array([0, 10, 10]))
    with pytest.raises(ValueError):
        filtered_segment_energy(stereo_clip, sos * 2, np.array([0, 10]))


@pytest.mark.parametrize("n_frames", [1, 2, 3, 6, 7])
def test_moments_and_rolloff_any_frame_count(stereo_clip, n_frames):
    # Frames go two at a time, then the odd one: every count gives librosa's rolloff.
    magnitude = np.ascontiguousarray(stft_magnitude(stereo_clip[0])[:, 10:10 + n_frames])
    freq = librosa.fft_frequencies(sr=SR, n_fft=2048)
    total, first, _, bins = spectral_moments_and_rolloff(magnitude, freq)
    expected = librosa.feature.spectral_rolloff(S=magnitude, sr=SR)
    np.testing.assert_array_equal(freq[bins], expected[0])
    np.testing.assert_allclose(first / total, freq @ magnitude / magnitude.sum(axis=0),
                               rtol=1e-6)


def test_moments_and_rolloff_are_librosas(stereo_clip):
    y = stereo_clip.mean(axis=0)
    magnitude = stft_magnitude(y)
    magnitude[:, 3] = 0.0  # a silent frame
    magnitude[:, 4] = 0.0
    magnitude[700, 4] = 1.0  # all energy in one bin
    freq = librosa.fft_frequencies(sr=SR, n_fft=2048)
    wide = magnitude.astype(np.float64)
    for layout in (magnitude, np.ascontiguousarray(magnitude), wide):
        for fraction in (0.85, 0.5, 0.99):
            total, first, second, bins = spectral_moments_and_rolloff(layout, freq, fraction)
            expected = librosa.feature.spectral_rolloff(S=magnitude, sr=SR, roll_percent=fraction)
            np.testing.assert_array_equal(freq[bins], expected[0])
        np.testing.assert_allclose(total, wide.sum(axis=0), rtol=1e-12)
        np.testing.assert_allclose(first, freq @ wide, rtol=1e-12)
        np.testing.assert_allclose(second, freq**2 @ wide, rtol=1e-12)
        assert bins[3] == 0 and total[3] == 0.0
        assert bins[4] == 700 and first[4] == freq[700]
    with pytest.raises(ValueError):
        spectral_moments_and_rolloff(np.zeros((0, 3), dtype=np.float32), freq[:0])
    with pytest.raises(ValueError):
        spectral_moments_and_rolloff(magnitude, freq[:-1])


@pytest.mark.parametrize("width", range(1, MAX_NETWORK_WIDTH + 1, 2))
def test_every_median_network_selects_the_median_of_every_binary_input(width):
    # The 0-1 principle: a compare-exchange network that selects the median of every
    # 0/1 input selects it of every input. Each wire holds its bit of all 2**width
    # inputs at once, packed: an exchange is then an AND (min) and an OR (max).
    inputs = np.arange(2**width, dtype=np.int64)
    wires = [np.packbits((inputs >> k) & 1 == 1) for k in range(width)]
    lows, highs, middle = median_network(width)
    for low, high in zip(lows, highs, strict=True):
        wires[low], wires[high] = wires[low] & wires[high], wires[low] | wires[high]
    ones = np.zeros(inputs.size, dtype=np.int64)
    for k in range(width):
        ones += (inputs >> k) & 1
    np.testing.assert_array_equal(wires[middle], np.packbits(ones > width // 2))


@pytest.mark.parametrize("width", [3, 5, 7, 11, 13, 15, 17])
def test_median_kernel_is_a_median_on_every_binary_input(width):
    # The compiled kernel runs the network: all 2**width 0/1 windows, one per row.
    bits = (np.arange(2**width)[:, np.newaxis] >> np.arange(width)) & 1
    ours = sliding_median(bits.astype(np.float32), width)
    np.testing.assert_array_equal(ours[:, 0], bits.sum(axis=1) > width // 2)


@pytest.mark.parametrize("width", [1, 3, 5, 9, 15, 17, 23, 25, 33])
def test_sliding_median_equals_numpys_median(stereo_clip, width):
    rng = np.random.default_rng(width)
    smooth = stft_magnitude(stereo_clip[0])[:40]
    cases = [
        smooth,
        rng.integers(0, 4, size=(6, 200)).astype(np.float32),  # mostly ties
        np.zeros((2, width), dtype=np.float32),
        -rng.standard_normal((3, 64)).astype(np.float32),
    ]
    for x in cases:
        expected = np.median(np.lib.stride_tricks.sliding_window_view(x, width, axis=1), axis=-1)
        ours = sliding_median(x, width)
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours, expected)
    with pytest.raises(ValueError):
        sliding_median(smooth, 4)
    with pytest.raises(ValueError):
        sliding_median(smooth[:, :2], 3)


@pytest.mark.parametrize(
    ("frame_length", "hop_length"), [(2048, 512), (1000, 300), (64, 64), (9, 1)]
)
def test_zero_crossing_counts_equal_librosas_framing(stereo_clip, frame_length, hop_length):
    y = stereo_clip[0, :20_000]
    expected = librosa.feature.zero_crossing_rate(y, frame_length=frame_length,
                                                  hop_length=hop_length)[0] * frame_length
    counts = zero_crossing_counts(y, expected.size, frame_length, hop_length)
    np.testing.assert_array_equal(counts, np.round(expected))
    with pytest.raises(ValueError):
        zero_crossing_counts(y, 3, 100, 101)
    with pytest.raises(ValueError):
        zero_crossing_counts(y[:0], 3, 100, 10)


def test_signal_levels_equal_numpys(stereo_clip):
    for y in (stereo_clip[0], stereo_clip[1] + 0.25, np.full(7, -0.5, dtype=np.float32)):
        wide = y.astype(np.float64)
        levels = signal_levels(y)
        assert levels.finite
        assert levels.peak == np.max(np.abs(wide))
        assert levels.minimum == wide.min() and levels.maximum == wide.max()
        assert levels.mean == pytest.approx(wide.mean(), rel=1e-12, abs=1e-15)
        assert levels.mean_square == pytest.approx(np.mean(wide**2), rel=1e-12)
    for bad in (np.nan, np.inf, -np.inf):
        y = stereo_clip[0].copy()
        y[1234] = bad
        assert not signal_levels(y).finite
    with pytest.raises(ValueError):
        signal_levels(np.zeros(0, dtype=np.float32))


def test_spectral_peaks_are_piptracks(stereo_clip):
    magnitude = stft_magnitude(stereo_clip[0])
    freqs = librosa.fft_frequencies(sr=SR, n_fft=2048)
    pitches, mags = librosa.piptrack(S=magnitude, sr=SR, n_fft=2048, fmin=150.0, fmax=4000.0,
                                     threshold=0.1)
    band = np.flatnonzero((freqs >= 150.0) & (freqs < 4000.0))
    ours_mags, ours_pitches = spectral_peaks(magnitude, slice(band[0] - 1, band[-1] + 2), 0.1,
                                             SR, 2048)
    found = mags > 0
    assert ours_mags.size == found.sum() > 100
    # Same peaks, same interpolated values (piptrack's float32 pitches are our float64 ones
    # rounded); compare as sorted multisets, since the scan orders differ.
    np.testing.assert_array_equal(np.sort(ours_mags), np.sort(mags[found]))
    np.testing.assert_array_equal(np.sort(ours_pitches.astype(np.float32)), np.sort(pitches[found]))
    with pytest.raises(ValueError):
        spectral_peaks(magnitude.astype(np.float64), slice(10, 20), 0.1, SR, 2048)


@pytest.mark.parametrize(("sr", "fmax", "step"), [(44100, None, 1), (44100, 11025.0, 2),
                                                   (22050, None, 1), (48000, 12000.0, 3)])
def test_sparse_frames_product_equals_scipys_product(stereo_clip, sr, fmax, step):
    # The mel spectrogram from the frame-major STFT: scipy's csr product, bit for bit.
    power = stft_magnitude(stereo_clip[0]) ** 2  # (bins, frames), frame-major underneath
    basis = mel_basis(sr, fmax)
    expected = basis @ np.ascontiguousarray(power[:, ::step])
    ours = sparse_frames_product(basis, power.T, step)
    assert ours.shape == expected.shape == (128, -(-power.shape[1] // step))
    np.testing.assert_array_equal(ours, expected)
    with pytest.raises(ValueError, match="float32"):
        sparse_frames_product(basis, power.T.astype(np.float64))


@pytest.mark.parametrize("n_frames", [1, 3, 4, 5, 7, 8, 9])
def test_sparse_frames_product_any_frame_count(n_frames):
    # Frames go four at a time, then one by one: every count, bit for bit scipy's product.
    power = np.random.default_rng(n_frames).random((n_frames, 1025), dtype=np.float32)
    basis = mel_basis(22050, None)
    expected = basis @ np.ascontiguousarray(power.T)
    np.testing.assert_array_equal(sparse_frames_product(basis, power), expected)
