"""The fast FMA implementations equal librosa's definitions on known signals."""

import librosa
import numpy as np
import pytest
from scipy import ndimage, stats

from testkit.encode import encode_audio
from testkit.songs.render import render
from testkit.songs.score import generate_song
from workers.audio import decode_audio
from workers.features import spectral
from workers.features.spectral import (
    FMA_CQT_FILTER_SCALE,
    HOP_LENGTH,
    N_FFT,
    chroma_stft,
    compute_spectra,
    cqt_magnitude,
    estimate_tuning,
    halve_rate,
    mel_basis,
    spectral_contrast,
    spectral_shape,
    stft_magnitude,
    zero_crossing_rate,
)
from workers.features.stats import running_median, summarize

SR = 22050


@pytest.fixture(scope="module")
def signal():
    rng = np.random.default_rng(7)
    t = np.arange(4 * SR) / SR
    y = 0.4 * np.sin(2 * np.pi * 440 * t) * (t % 0.5 < 0.3) + 0.05 * rng.standard_normal(t.size)
    y[SR : SR + 3000] = 0.0  # a silent stretch: frames with no energy
    return y.astype(np.float32)


@pytest.fixture(scope="module")
def detuned_songs() -> list[np.ndarray]:
    """Real encoded songs, in tune and detuned (rendered at one rate, declared at another)."""
    songs = []
    for seed, cents in ((11, 0.0), (12, 31.0), (13, -17.0), (14, 48.0)):
        score = generate_song(seed, tonic=seed % 12, mode="major" if seed % 2 else "minor",
                              tempo_bpm=96.0 + 10 * (seed % 4), drums=seed % 2 == 0,
                              duration_s=8.0, style=None)
        # Played back at 44.1 kHz, audio rendered at a lower rate sounds `cents` higher.
        render_sr = round(44100 / 2 ** (cents / 1200))
        data = encode_audio(render(score, render_sr, "synth"), 44100, "m4a")
        songs.append(decode_audio(data, sr=SR).samples)
    return songs


def test_tuning_estimate_equals_librosas(detuned_songs):
    estimates = []
    for y in detuned_songs:
        for signal in (y, y[: 3 * SR], 1e-3 * y):
            magnitude = stft_magnitude(signal)
            expected = librosa.estimate_tuning(S=magnitude, sr=SR, n_fft=N_FFT, bins_per_octave=12)
            assert estimate_tuning(magnitude, SR) == expected
            estimates.append(expected)
    assert len(set(estimates)) >= 4  # the songs really span several tunings


def test_cqt_equals_librosas_for_any_tuning(detuned_songs):
    # The cached filter bases must be the ones librosa.cqt builds, whatever the tuning:
    # with librosa 0.5.0's filter lengths and reflect padding (FMA's CQT, the default) and
    # with today's librosa defaults.
    options = ({"filter_scale": FMA_CQT_FILTER_SCALE, "pad_mode": "reflect"},
               {"filter_scale": 1.0, "pad_mode": "constant"})
    for y, tuning in zip(detuned_songs, (0.0, 0.31, -0.18, 0.48), strict=True):
        for signal in (y, y[: 5 * SR + 123]):
            for option in options:
                for _ in range(2):  # built, then from the cache
                    expected = np.abs(librosa.cqt(signal, sr=SR, hop_length=HOP_LENGTH,
                                                  n_bins=84, bins_per_octave=12, tuning=tuning,
                                                  **option))
                    ours = cqt_magnitude(signal, SR, tuning, **option)
                    assert ours.shape == expected.shape and ours.dtype == expected.dtype
                    frames = _comparable_frames(option, expected)
                    np.testing.assert_allclose(ours[:, frames], expected[:, frames], rtol=1e-5,
                                               atol=1e-6 * expected.max())
    np.testing.assert_array_equal(cqt_magnitude(y, SR, 0.48),
                                  cqt_magnitude(y, SR, 0.48, **options[0]))
    # At 44.1 kHz librosa first halves the rate ("early downsampling"); so must we.
    y44 = librosa.resample(detuned_songs[1][: 4 * SR], orig_sr=SR, target_sr=2 * SR)
    for option in options:
        expected = np.abs(librosa.cqt(y44, sr=2 * SR, hop_length=HOP_LENGTH, n_bins=84,
                                      bins_per_octave=12, tuning=0.31, **option))
        frames = _comparable_frames(option, expected)
        np.testing.assert_allclose(cqt_magnitude(y44, 2 * SR, 0.31, **option)[:, frames],
                                   expected[:, frames], rtol=1e-5, atol=1e-6 * expected.max())


def _comparable_frames(option: dict, expected: np.ndarray) -> slice:
    """All frames, except the last one with reflect padding: librosa >= 0.10's ``stft``
    reflect-pads the tail frames from a copy of the last ``n_fft // 2`` samples, and when
    an octave's signal ends exactly on a frame centre that copy is too short for numpy's
    reflection, so one padded sample differs from reflecting the whole signal (what
    librosa 0.5.0 did, and we do); see test_reflect_padding_reflects_the_whole_signal."""
    n = expected.shape[1]
    return slice(0, n - 1 if option["pad_mode"] == "reflect" else n)


def test_reflect_padding_reflects_the_whole_signal():
    rng = np.random.default_rng(3)
    y = rng.standard_normal(44160)  # ends on a frame centre of a 256-point, hop-128 STFT
    padded = np.pad(y, 128, mode="reflect")  # librosa 0.5.0's centring
    frames = np.lib.stride_tricks.sliding_window_view(padded, 256)[::128]
    expected = np.abs(np.fft.rfft(frames, axis=1)).T
    ours = np.abs(np.fft.rfft(spectral._centred_frames(y, 256, 128, "reflect"), axis=1)).T
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-9)
    today = np.abs(librosa.stft(y, n_fft=256, hop_length=128, window="ones", pad_mode="reflect"))
    np.testing.assert_allclose(today[:, :-1], expected[:, :-1], rtol=1e-9, atol=1e-9)
    assert not np.allclose(today[:, -1], expected[:, -1])  # the librosa quirk above


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_stft_magnitude_is_librosas_within_float32_rounding(signal, detuned_songs, pad_mode):
    # reflect: librosa 0.5.0's centring (FMA's; the default); constant: today's librosa.
    # A float32 clip gets a float32 FFT (pv8): each magnitude within float32 rounding of
    # librosa's float64 FFT, i.e. a few 1e-7 of its frame's peak.
    for y in (signal, detuned_songs[2], signal[: 3 * SR + 77], signal[:1500]):
        assert y.dtype == np.float32
        expected = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH, pad_mode=pad_mode))
        ours = stft_magnitude(y, pad_mode)
        assert ours.dtype == expected.dtype and ours.flags.f_contiguous
        assert ours.shape == expected.shape
        frame_peak = expected.max(axis=0, keepdims=True)
        assert np.all(np.abs(ours - expected) <= 1e-6 * frame_peak)
        assert np.abs(ours - expected).max() > 0  # float32 arithmetic really is used
    np.testing.assert_array_equal(stft_magnitude(signal), stft_magnitude(signal, "reflect"))


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_stft_of_a_float64_signal_is_librosas_bit_for_bit(signal, pad_mode):
    for y in (signal.astype(np.float64), signal[: 3 * SR + 77].astype(np.float64)):
        expected = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH, pad_mode=pad_mode))
        magnitude, power = spectral.stft_magnitude_and_power(y, pad_mode)
        np.testing.assert_array_equal(magnitude, expected)
        np.testing.assert_array_equal(power, expected**2)


def test_chroma_stft_is_librosas_bit_for_bit(signal, detuned_songs):
    for y in (signal, detuned_songs[1]):
        power = stft_magnitude(y) ** 2
        for tuning in (0.0, -0.13, 0.31, 0.0):  # the last one from the cache
            expected = librosa.feature.chroma_stft(S=power, sr=SR, n_chroma=12, tuning=tuning)
            np.testing.assert_array_equal(chroma_stft(power, SR, tuning), expected)


def test_halve_rate_is_librosas_resample_bit_for_bit(signal, detuned_songs):
    for y in (signal, signal[:12345], signal[:3], detuned_songs[0].astype(np.float64)):
        expected = librosa.resample(y, orig_sr=2, target_sr=1, res_type="soxr_hq", scale=True)
        ours = halve_rate(y)
        assert ours.dtype == expected.dtype
        np.testing.assert_array_equal(ours, expected)


def test_mel_spectrogram_equals_librosas(signal, detuned_songs):
    for y in (signal, detuned_songs[0]):
        power = stft_magnitude(y) ** 2
        expected = librosa.feature.melspectrogram(sr=SR, S=power)
        ours = mel_basis(SR) @ power
        assert ours.shape == expected.shape and ours.dtype == expected.dtype
        np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6 * expected.max())


def test_tuning_of_silence_and_of_a_single_tone():
    assert estimate_tuning(np.zeros((1 + N_FFT // 2, 20), dtype=np.float32), SR) == 0.0
    t = np.arange(2 * SR) / SR
    tone = np.sin(2 * np.pi * 440 * 2 ** (0.25 / 12) * t).astype(np.float32)
    magnitude = stft_magnitude(tone)
    assert estimate_tuning(magnitude, SR) == librosa.estimate_tuning(
        S=magnitude, sr=SR, n_fft=N_FFT, bins_per_octave=12
    )
    assert abs(estimate_tuning(magnitude, SR) - 0.25) <= 0.02


def test_zero_crossing_rate_matches_librosa(signal):
    rng = np.random.default_rng(2)
    near_zero = (rng.choice([-2e-10, -1e-10, 0.0, 1e-10, 3e-10], 9000)).astype(np.float32)
    for y in (signal, signal[:700], signal[: 3 * SR + 5], near_zero, -np.abs(signal[:5000]),
              np.zeros(3000, dtype=np.float32)):
        expected = librosa.feature.zero_crossing_rate(y, frame_length=N_FFT, hop_length=HOP_LENGTH)
        ours = zero_crossing_rate(y, expected.shape[1])
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_spectral_contrast_equals_librosas(signal, detuned_songs, dtype):
    """Up to the order of summation in the band means (float32 means: ~1e-6 dB)."""
    for y in (signal, *detuned_songs):
        magnitude = stft_magnitude(y.astype(dtype))  # the shared spectra's layout
        for sr in (SR, 44100):  # FMA's assumed rate, and a clip's own
            expected = librosa.feature.spectral_contrast(S=magnitude, sr=sr, n_fft=N_FFT,
                                                         n_bands=6)
            ours = spectral_contrast(magnitude, sr)
            assert ours.shape == expected.shape == (7, magnitude.shape[1])
            np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4)
    # (bins, frames) in either memory layout gives the same values
    magnitude = np.abs(librosa.stft(signal, n_fft=N_FFT, hop_length=HOP_LENGTH))
    np.testing.assert_array_equal(spectral_contrast(magnitude, SR),
                                  spectral_contrast(np.ascontiguousarray(magnitude), SR))


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


@pytest.mark.parametrize("mode", ["reflect", "nearest", "mirror"])
@pytest.mark.parametrize("width", [1, 9, 17])
def test_running_median_equals_scipys_median_filter(signal, mode, width):
    spectrogram = np.abs(librosa.stft(signal, n_fft=N_FFT, hop_length=HOP_LENGTH))[:60]
    ties = np.round(spectrogram * 4) / 4  # many equal values: the sorted window's hard case
    for frames in (spectrogram, spectrogram[:, :width + 1], spectrogram[:5, :3], ties,
                   spectrogram.astype(np.float64)):
        if mode != "nearest" and frames.shape[1] <= width // 2:
            continue  # numpy and scipy extend differently once the pad exceeds the signal
        expected = ndimage.median_filter(frames, size=(1, width), mode=mode)
        np.testing.assert_array_equal(running_median(frames, width, mode=mode), expected)


@pytest.mark.parametrize("sr", [11025, 22050, 44100, 48000, 96000])
def test_cqt_frame_count_is_the_cqts_own(sr):
    # The STFT is cut to this count before the CQT exists (it is computed on first use).
    rng = np.random.default_rng(sr)
    for n in (sr * 5, sr * 5 + 1, sr * 5 + 255, sr * 5 + 256, sr * 5 + 511, 77_777):
        y = (0.1 * rng.standard_normal(n)).astype(np.float32)
        assert spectral.cqt_frame_count(n, sr) == cqt_magnitude(y, sr, 0.0).shape[1], n


def test_spectra_frames_agree_and_the_cqt_waits_until_read(signal):
    spectra = compute_spectra(signal, SR)
    assert "cqt" not in spectra.__dict__
    assert spectra.cqt.shape == (84, spectra.n_frames) == (84, spectra.power.shape[1])
    np.testing.assert_array_equal(spectra.cqt,
                                  cqt_magnitude(signal, SR, spectra.tuning)[:, :spectra.n_frames])


def test_spectra_values_are_computed_once_per_instance_without_a_shared_lock(signal):
    # functools.cached_property (Python 3.11) holds one lock for all instances: two threads
    # analysing two clips would compute their CQTs in turn. Ours keeps no lock.
    assert not hasattr(spectral._computed_once, "lock")
    spectra = compute_spectra(signal, SR)
    first = spectra.mel_power
    assert spectra.mel_power is first and spectra.__dict__["mel_power"] is first
    assert isinstance(type(spectra).__dict__["cqt"], spectral._computed_once)


def test_cqt_of_a_dc_dominated_clip_takes_the_offset_out(detuned_songs):
    # A constant far above the music: summed through the time-domain kernels it would
    # leave float32 rounding far above the music's low bins; no filter passes DC, so
    # taking each octave's mean out first changes nothing but that rounding.
    y = (0.01 * detuned_songs[0] + 0.5).astype(np.float32)
    expected = np.abs(librosa.cqt(y, sr=SR, hop_length=HOP_LENGTH, n_bins=84,
                                  bins_per_octave=12, tuning=0.0, pad_mode="reflect",
                                  filter_scale=FMA_CQT_FILTER_SCALE))[:, 1:-1]
    centred = cqt_magnitude(y, SR, 0.0, remove_dc=True)[:, 1:-1]
    np.testing.assert_allclose(centred, expected, rtol=1e-3, atol=1e-6 * expected.max())
    raw = cqt_magnitude(y, SR, 0.0)[:, 1:-1]
    assert np.max(np.abs(raw - expected) / expected) > 10 * np.max(
        np.abs(centred - expected) / expected)
    assert spectral.dc_dominates(y) and compute_spectra(y, SR).dc_offset
