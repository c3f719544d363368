"""In-memory decoding with PyAV: round trips, odd sources, caps and every typed error."""

import contextlib
import io
import os
import struct
import threading
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile

from contract.errors import PreviewvecError, Silent, TooLarge, TooShort, Undecodable
from testkit.encode import encode_audio
from tests.media import many_channel_wavpack, mp4_video, ogg_opus, ogg_with_repeated_headers
from workers.audio import SUPPORTED_FORMATS, DecodedAudio, decode_audio

SR = 44100
ANALYSIS_SR = 22050
DURATION_S = 8.0

EXPECTED = {  # fmt -> (codec, container, lossless)
    "m4a": ("aac", "mov,mp4,m4a,3gp,3g2,mj2", False),
    "mp3": ("mp3", "mp3", False),
    "ogg": ("vorbis", "ogg", False),
    "flac": ("flac", "flac", True),
    "wav": ("pcm_s16le", "wav", True),
}


def _music(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Stereo: a few harmonic tones changing every half second, plus noise-burst 'drums'."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    notes = np.array([220.0, 277.18, 329.63, 440.0, 369.99, 246.94])
    f0 = notes[(t // 0.5).astype(int) % notes.size]
    phase = 2 * np.pi * np.cumsum(f0) / sr
    tone = sum(0.25 / k * np.sin(k * phase) for k in (1, 2, 3, 4))
    bursts = rng.standard_normal(t.size) * np.exp(-40 * (t % 0.25)) * 0.2
    left = tone + bursts
    right = 0.8 * tone + 0.1 * np.sin(2 * np.pi * 110 * t) + bursts
    return (0.7 * np.stack([left, right]) / 1.2).astype(np.float32)


def _float_wav(x: np.ndarray, sr: int) -> bytes:
    """32-bit float WAV without a channel mask (so FFmpeg sees an unordered layout)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    n_ch = x.shape[0]
    data = x.T.astype("<f4").tobytes()
    fmt = struct.pack("<IHHIIHH", 16, 3, n_ch, sr, sr * 4 * n_ch, 4 * n_ch, 32)
    riff = struct.pack("<I", 36 + len(data))
    return b"".join((b"RIFF", riff, b"WAVEfmt ", fmt, b"data", struct.pack("<I", len(data)), data))


def _code(source: object, **kwargs: object) -> str:
    with pytest.raises(PreviewvecError) as info:
        decode_audio(source, **kwargs)  # type: ignore[arg-type]
    assert info.value.message
    return info.value.code


@pytest.fixture(scope="module")
def music() -> np.ndarray:
    return _music(DURATION_S)


@pytest.fixture(scope="module")
def encoded(music: np.ndarray) -> dict[str, bytes]:
    return {fmt: encode_audio(music, SR, fmt) for fmt in SUPPORTED_FORMATS}


@pytest.fixture(scope="module")
def reference(music: np.ndarray) -> np.ndarray:
    return librosa.resample(librosa.to_mono(music), orig_sr=SR, target_sr=ANALYSIS_SR)


# --- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
def test_round_trip(fmt: str, encoded: dict[str, bytes], reference: np.ndarray) -> None:
    codec, container, lossless = EXPECTED[fmt]
    audio = decode_audio(encoded[fmt])
    assert isinstance(audio, DecodedAudio)
    assert (audio.codec, audio.container) == (codec, container)
    assert (audio.sr, audio.source_sr, audio.source_channels) == (ANALYSIS_SR, SR, 2)
    y = audio.samples
    assert y.dtype == np.float32 and y.ndim == 1 and y.flags.c_contiguous
    assert np.isfinite(y).all()
    assert audio.n_samples == y.size and audio.duration_s == y.size / ANALYSIS_SR
    assert abs(audio.duration_s - DURATION_S) < 0.1  # encoder padding allowed
    assert not audio.truncated
    assert audio.channels is not None and audio.channels.shape == (2, y.size)
    assert audio.channels.dtype == np.float32
    np.testing.assert_array_equal(y, librosa.to_mono(audio.channels))
    # Aligned sample for sample: AAC priming is removed via the MP4 edit list, LAME's
    # delay via its info tag.
    n = min(y.size, reference.size)
    corr = np.corrcoef(y[:n], reference[:n])[0, 1]
    assert corr > (0.999 if lossless else 0.9), corr


def test_path_and_bytes_inputs_agree_and_decoding_is_deterministic(
    encoded: dict[str, bytes], tmp_path: Path
) -> None:
    for fmt in ("m4a", "flac"):
        data = encoded[fmt]
        path = tmp_path / f"clip.{fmt}"
        path.write_bytes(data)
        first = decode_audio(data).samples
        for source in (str(path), path, bytearray(data), memoryview(data), data):
            np.testing.assert_array_equal(decode_audio(source).samples, first)


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
def test_buffers_that_must_grow_give_the_same_samples(
    fmt: str, encoded: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A header may claim any rate, so decoding starts with a bounded buffer and grows it;
    # growing many times over (planar and packed frames) must not change a sample.
    expected = decode_audio(encoded[fmt])
    monkeypatch.setattr("workers.audio._INITIAL_BUFFER_VALUES", 2000)
    grown = decode_audio(encoded[fmt])
    np.testing.assert_array_equal(grown.samples, expected.samples)
    np.testing.assert_array_equal(grown.channels, expected.channels)


def test_float_wav_at_the_analysis_rate_is_bit_exact() -> None:
    x = _music(6.0, sr=ANALYSIS_SR)
    audio = decode_audio(_float_wav(x, ANALYSIS_SR))
    assert audio.channels is not None
    np.testing.assert_array_equal(audio.channels, x)
    np.testing.assert_array_equal(audio.samples, librosa.to_mono(x))


def test_ogg_that_ffmpeg_refuses_is_decoded_by_libsndfile(
        music: np.ndarray, encoded: dict[str, bytes]) -> None:
    """An Ogg Vorbis stream repeating its headers (as Debian's hyperrogue-music ships
    three files) makes FFmpeg's demuxer fail; libsndfile decodes it to the same audio."""
    odd = ogg_with_repeated_headers(encoded["ogg"])
    import av  # only to show the premise: FFmpeg itself refuses these bytes
    with pytest.raises(av.FFmpegError):
        av.open(io.BytesIO(odd))
    plain, audio = decode_audio(encoded["ogg"]), decode_audio(odd)
    assert (audio.codec, audio.container, audio.sr) == ("vorbis", "ogg", ANALYSIS_SR)
    assert (audio.source_sr, audio.source_channels, audio.truncated) == (SR, 2, False)
    n = min(plain.n_samples, audio.n_samples)
    assert abs(plain.n_samples - audio.n_samples) < 0.01 * ANALYSIS_SR
    # Two Vorbis decoders (FFmpeg's, libvorbis) on the same packets: the same audio.
    assert np.corrcoef(plain.samples[:n], audio.samples[:n])[0, 1] > 0.999


def test_formats_only_libsndfile_reads_decode_like_their_wav(music: np.ndarray) -> None:
    """MAT5 (no FFmpeg demuxer) goes through libsndfile: the same samples as the float
    WAV, resampled the same way; cut at the cap and flagged as truncated."""
    out = io.BytesIO()
    soundfile.write(out, music.T, SR, format="MAT5", subtype="FLOAT")
    wav = decode_audio(_float_wav(music, SR))
    mat = decode_audio(out.getvalue())
    assert mat.container == "mat5" and mat.source_channels == 2 and not mat.truncated
    np.testing.assert_allclose(mat.samples, wav.samples, atol=1e-6)
    capped = decode_audio(out.getvalue(), max_duration_s=5.0, sr=None)
    assert capped.truncated and capped.sr == SR and capped.n_samples == 5 * SR
    np.testing.assert_array_equal(capped.samples, librosa.to_mono(music)[: 5 * SR])


def test_mono_source_has_no_channel_matrix(music: np.ndarray) -> None:
    audio = decode_audio(encode_audio(music[0], SR, "flac"))
    assert audio.source_channels == 1 and audio.channels is None
    assert audio.samples.shape == (round(DURATION_S * ANALYSIS_SR),)


def test_ogg_vorbis_mono_is_written_as_identical_stereo(music: np.ndarray) -> None:
    # FFmpeg's native Vorbis encoder refuses anything but two channels.
    audio = decode_audio(encode_audio(music[0], SR, "ogg"))
    assert audio.codec == "vorbis" and audio.source_channels == 2
    assert audio.channels is not None
    np.testing.assert_allclose(audio.channels[0], audio.channels[1], atol=0.05)


def test_96k_six_channel_wav_decodes_to_the_channel_mean() -> None:
    sr = 96_000
    t = np.arange(6 * sr) / sr
    x = np.stack([0.1 * np.sin(2 * np.pi * (200 + 90 * c) * t) for c in range(6)])
    expected = librosa.resample(x.mean(axis=0), orig_sr=sr, target_sr=ANALYSIS_SR)
    for data in (encode_audio(x, sr, "wav"), _float_wav(x, sr)):  # 5.1 mask / unordered
        audio = decode_audio(data)
        assert (audio.source_sr, audio.source_channels) == (sr, 6)
        # Kept for BS.1770 loudness, weighted by name as 5.1: LFE out, surrounds 1.41.
        assert audio.channels is not None and audio.channels.shape == (6, audio.n_samples)
        assert audio.channel_weights == (1.0, 1.0, 1.0, 0.0, 1.41, 1.41)
        assert audio.n_samples == 6 * ANALYSIS_SR
        assert np.corrcoef(audio.samples, expected[: audio.n_samples])[0, 1] > 0.999


def test_unordered_three_channel_wav_keeps_channels_in_order() -> None:
    sr = 48_000
    t = np.arange(6 * sr) / sr
    x = np.stack([0.1 * np.sin(2 * np.pi * f * t) for f in (300, 500, 700)])
    audio = decode_audio(_float_wav(x, sr))
    assert audio.channels is not None and audio.channels.shape == (3, 6 * ANALYSIS_SR)
    for c in range(3):
        expected = librosa.resample(x[c], orig_sr=sr, target_sr=ANALYSIS_SR)
        assert np.corrcoef(audio.channels[c], expected[: audio.n_samples])[0, 1] > 0.999


def test_eight_channel_source_decodes() -> None:
    # Regression: PyAV's AudioFrame.planes overruns on 8-channel planar frames (segfault).
    x = _music(6.0, sr=48_000)
    audio = decode_audio(_float_wav(np.concatenate([x] * 4), 48_000))
    assert audio.source_channels == 8
    assert audio.channels is not None and audio.channels.shape == (8, audio.n_samples)
    assert audio.channel_weights == (1.0, 1.0, 1.0, 0.0, 1.41, 1.41, 1.41, 1.41)  # as 7.1
    assert audio.n_samples == 6 * ANALYSIS_SR


def test_eight_channel_planar_aac_decodes() -> None:
    # Regression: PyAV saw 9 planes in an 8-channel planar (fltp) AAC frame, and the 7.1
    # stream was undecodable; 8 planar channels now go through swresample, as more do.
    x = _music(6.0, sr=48_000)
    channels = np.concatenate([x * (1.0 - 0.1 * c) for c in range(4)])
    audio = decode_audio(encode_audio(channels, 48_000, "m4a"), sr=None)
    assert (audio.codec, audio.source_channels) == ("aac", 8)
    assert audio.channels is not None and audio.channels.shape == (8, audio.n_samples)
    assert audio.channel_weights == (1.0, 1.0, 1.0, 0.0, 1.41, 1.41, 1.41, 1.41)  # 7.1
    np.testing.assert_allclose(audio.samples, audio.channels.mean(axis=0), atol=1e-6)
    assert np.corrcoef(audio.channels[0], audio.channels[6])[0, 1] > 0.95  # both left


def test_8k_mono_wav_is_upsampled() -> None:
    sr = 8_000
    x = 0.3 * np.sin(2 * np.pi * 300 * np.arange(6 * sr) / sr)
    audio = decode_audio(encode_audio(x, sr, "wav"))
    assert (audio.source_sr, audio.source_channels, audio.n_samples) == (sr, 1, 6 * ANALYSIS_SR)
    assert abs(float(np.sqrt(np.mean(audio.samples**2))) - 0.3 / np.sqrt(2)) < 0.01


def test_a_384k_source_is_analysed_at_192k_and_absurd_rates_are_undecodable() -> None:
    """DXD (384 kHz) decodes at the clip's own rate capped at 192 kHz (its spectra cost
    memory in proportion to the rate); a header claiming 1 Hz (30 samples for "30 s"),
    or FLAC's 655 kHz, is no audio a store serves: undecodable, through FFmpeg and
    libsndfile alike."""
    from workers.audio import MAX_NATIVE_SR

    sr = 384_000
    x = 0.3 * np.sin(2 * np.pi * 440 * np.arange(6 * sr) / sr)
    audio = decode_audio(_float_wav(x[np.newaxis], sr), sr=None)
    assert (audio.source_sr, audio.sr, audio.n_samples) == (sr, MAX_NATIVE_SR, 6 * MAX_NATIVE_SR)
    for rate in (1, 100, 655_350):
        n = max(rate * 6, 8)
        y = 0.3 * np.sin(2 * np.pi * np.arange(n) / 7)
        flac = io.BytesIO()
        if rate >= 1_000:
            soundfile.write(flac, y, rate, format="FLAC")
        for data in (_float_wav(y[np.newaxis], rate), flac.getvalue() or None):
            if data is None:
                continue
            with pytest.raises(Undecodable, match=f"sample rate is {rate} Hz"):
                decode_audio(data, sr=None)


def test_channels_times_rate_beyond_7_1_at_192k_is_too_large_at_the_first_frame() -> None:
    """Given 40 channels at 384 kHz (a few hundred KB of WavPack per second, 39 channels
    silent), expect too_large before decoding: 30 s of it decoded to 1.8 GB of float32.
    The limit is on channels x rate (samples per second), so the file's own length does
    not matter, and an operator's longer max_duration_s (whole tracks) keeps stereo."""
    with pytest.raises(TooLarge, match="40 channels at 384000 Hz"):
        decode_audio(many_channel_wavpack(40, 384_000, 1.0), sr=None)
    with pytest.raises(TooLarge, match="8 channels at 384000 Hz"):
        decode_audio(_float_wav(np.zeros((8, 384)), 384_000), sr=None)
    tone = 0.1 * np.sin(2 * np.pi * 440 * np.arange(44_100) / 44_100)
    stereo = decode_audio(_float_wav(np.stack([tone, tone]), 44_100), sr=None,
                          max_duration_s=600.0, min_duration_s=0.0)
    assert stereo.source_channels == 2


def test_7_1_at_192k_and_many_channels_at_48k_still_decode() -> None:
    """At the limit, not over it: 8 channels at 192 kHz keep their channels for loudness;
    32 channels at 48 kHz (as many values per second) are analysed as their mono mix."""
    seven_one = decode_audio(many_channel_wavpack(8, 192_000, 6.0, amplitude=0.3), sr=None)
    assert (seven_one.source_channels, seven_one.sr) == (8, 192_000)
    assert seven_one.channels is not None and seven_one.channels.shape == (8, 6 * 192_000)
    many = decode_audio(many_channel_wavpack(32, 48_000, 6.0, amplitude=0.3))
    assert (many.source_channels, many.channels, many.n_samples) == (32, None, 6 * ANALYSIS_SR)
    # The tone is in one channel of 32: the mix is it at 1/32 of its amplitude.
    rms = float(np.sqrt(np.mean(many.samples.astype(np.float64) ** 2)))
    assert rms == pytest.approx(0.3 / 32 / np.sqrt(2), rel=0.02)


def test_a_run_switching_to_more_channels_or_a_higher_rate_is_checked_too() -> None:
    """A chained stream's later run is checked as its first was: by the larger of its
    own channels and the output layout's (the buffer holds the latter) at its rate."""
    import av

    from workers.audio import _Runs

    def frame(n_channels: int, rate: int) -> av.AudioFrame:
        layout = {1: "mono", 2: "stereo"}.get(n_channels, f"{n_channels} channels")
        out = av.AudioFrame.from_ndarray(np.zeros((1, 1024 * n_channels), np.float32),
                                         format="flt", layout=layout)
        out.sample_rate = rate
        return out

    for first, then in (((2, 48_000), (40, 384_000)), ((8, 48_000), (1, 384_000))):
        runs = _Runs(None, 30.0)
        runs.add(frame(*first))
        with pytest.raises(TooLarge):
            runs.add(frame(*then))
    runs = _Runs(None, 30.0)
    runs.add(frame(2, 48_000))
    runs.add(frame(1, 192_000))  # mapped onto stereo: 2 x 192 kHz, well inside


def test_a_wav_declaring_no_channels_is_undecodable_not_without_audio() -> None:
    x = _float_wav(_music(6.0)[:1], SR)
    zero_channels = x[:22] + struct.pack("<H", 0) + x[24:]  # fmt chunk: channel count
    assert _code(zero_channels) == "undecodable"


def test_rate_and_layout_change_mid_stream() -> None:
    # Concatenated MP3s (44.1 kHz stereo, then 22.05 kHz mono): each run of frames is
    # resampled on its own and mapped onto the first run's stereo layout.
    first, second = _music(6.0, seed=2), _music(6.0, sr=22_050, seed=3)[0]
    audio = decode_audio(encode_audio(first, SR, "mp3") + encode_audio(second, 22_050, "mp3"))
    assert (audio.source_sr, audio.source_channels) == (SR, 2)
    assert audio.channels is not None and audio.channels.shape == (2, audio.n_samples)
    assert abs(audio.duration_s - 12.0) < 0.1  # encoder padding only
    tail = audio.channels[:, -5 * ANALYSIS_SR :]
    np.testing.assert_array_equal(tail[0], tail[1])  # the mono run fills both channels
    level = float(np.sqrt(np.mean(tail[0] ** 2)) / np.sqrt(np.mean(second[-5 * 22_050 :] ** 2)))
    assert 0.6 < level < 0.8  # FFmpeg's upmix puts a mono centre at -3 dB (0.71) per side


def test_cap_stops_at_exactly_max_duration() -> None:
    long = encode_audio(_music(40.0, seed=1), SR, "flac")
    audio = decode_audio(long, max_duration_s=30.0)
    assert audio.n_samples == 30 * ANALYSIS_SR and audio.duration_s == 30.0
    assert audio.truncated
    exact = decode_audio(encode_audio(_music(30.0, seed=1), SR, "wav"), max_duration_s=30.0)
    assert exact.n_samples == 30 * ANALYSIS_SR and not exact.truncated


def test_sr_none_keeps_the_source_rate_and_caps_at_it() -> None:
    # What the FMA block needs (librosa.load(sr=None)): the source's samples, not resampled.
    for sr in (SR, 48_000, 22_050):
        x = _music(8.0, sr=sr, seed=4)
        data = encode_audio(x, sr, "flac")
        audio = decode_audio(data, sr=None)
        assert (audio.sr, audio.source_sr, audio.n_samples) == (sr, sr, 8 * sr)
        np.testing.assert_array_equal(audio.samples, decode_audio(data, sr=sr).samples)
        assert audio.channels is not None
        np.testing.assert_allclose(audio.channels, x, atol=1 / 2**15)  # 16-bit FLAC
    long = decode_audio(encode_audio(_music(40.0, seed=1), SR, "flac"), sr=None,
                        max_duration_s=30.0)
    assert long.n_samples == 30 * SR and long.duration_s == 30.0 and long.truncated
    # A mid-stream rate change is resampled to the first run's rate.
    first, second = _music(6.0, seed=2), _music(6.0, sr=22_050, seed=3)[0]
    mixed = decode_audio(encode_audio(first, SR, "mp3") + encode_audio(second, 22_050, "mp3"),
                         sr=None)
    assert mixed.sr == SR and abs(mixed.duration_s - 12.0) < 0.1


def test_video_with_an_audio_track_decodes_its_audio(music: np.ndarray) -> None:
    audio = decode_audio(mp4_video(music, SR))
    assert audio.codec == "aac" and audio.source_channels == 2
    assert abs(audio.duration_s - DURATION_S) < 0.1


def test_m4a_is_laid_out_for_streaming(encoded: dict[str, bytes]) -> None:
    data = encoded["m4a"]
    assert data[4:12] == b"ftypM4A " and data.find(b"moov") < data.find(b"mdat")


# --- typed errors --------------------------------------------------------------------


def test_empty_input(tmp_path: Path) -> None:
    empty = tmp_path / "empty.m4a"
    empty.write_bytes(b"")
    assert _code(b"") == _code(bytearray()) == _code(empty) == "empty_input"


def test_too_large_is_refused_before_decoding(encoded: dict[str, bytes], tmp_path: Path) -> None:
    """Bytes are held whole, so the cap is theirs; so is what a pipe delivers."""
    data = encoded["mp3"]
    limit = len(data) - 1
    assert _code(data, max_input_bytes=limit) == "too_large"
    assert decode_audio(data, max_input_bytes=len(data)).n_samples > 0
    fifo = tmp_path / "clip.fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with contextlib.suppress(BrokenPipeError):  # the reader may stop at its cap
            fifo.write_bytes(data)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert _code(fifo, max_input_bytes=limit) == "too_large"
    finally:
        writer.join(timeout=10)


def test_a_regular_file_is_decoded_whatever_its_size(tmp_path: Path) -> None:
    """Given a 3-minute 16-bit stereo WAV (32 MB) and a cap far below it, expect its first
    30 s, as from a preview: a file is read as it is decoded, and decoding stops at
    max_duration_s (a whole-track FLAC or WAV library was `too_large` before)."""
    sr = 44100
    t = np.arange(180 * sr) / sr
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = tmp_path / "track.wav"
    soundfile.write(path, np.stack([tone, tone], axis=1), sr, subtype="PCM_16")
    assert path.stat().st_size > 30_000_000
    audio = decode_audio(path, sr=None, max_input_bytes=1_000_000)
    assert audio.duration_s == 30.0 and audio.truncated and audio.source_sr == sr
    first = io.BytesIO()  # the same file cut at 31 s, decoded from bytes
    soundfile.write(first, soundfile.read(path, frames=31 * sr, dtype="int16")[0], sr,
                    format="WAV", subtype="PCM_16")
    head = decode_audio(first.getvalue(), sr=None)
    np.testing.assert_array_equal(audio.samples, head.samples)


@pytest.mark.parametrize(
    "data",
    [
        b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body></body></html>",
        np.random.default_rng(3).integers(0, 256, 100_000, dtype=np.uint8).tobytes(),
        bytes(4096),
        # An ID3v2.4 tag (one TIT2 frame) and nothing after it.
        b"ID3\x04\x00\x00\x00\x00\x00\x12TIT2\x00\x00\x00\x08\x00\x00\x03preview",
    ],
    ids=["html", "random", "zeros", "id3-only"],
)
def test_not_media_is_undecodable(data: bytes) -> None:
    assert _code(data) == "undecodable"


def test_video_without_audio_has_no_audio_stream() -> None:
    assert _code(mp4_video(None, SR)) == "no_audio_stream"


def test_too_short_reports_both_durations() -> None:
    with pytest.raises(TooShort) as info:
        decode_audio(encode_audio(_music(2.0), SR, "mp3"))
    assert "2.00 s" in info.value.message and "5.00 s" in info.value.message


def test_too_short_by_a_few_samples_does_not_read_as_the_limit() -> None:
    x = 0.3 * np.sin(2 * np.pi * 440 * np.arange(5 * SR - 5) / SR)
    with pytest.raises(TooShort, match=r"decoded 4\.999\d s of audio; at least 5\.00 s"):
        decode_audio(encode_audio(x, SR, "wav"), sr=SR)


def test_a_file_with_no_samples_is_too_short_like_one_with_few() -> None:
    # A header alone is well formed, not broken: the same code as a few samples.
    nothing, little = np.zeros((2, 0), dtype=np.float32), _music(0.5)
    for empty, short in ((_float_wav(nothing, SR), _float_wav(little, SR)),
                         (encode_audio(nothing, SR, "flac"), encode_audio(little, SR, "flac"))):
        assert _code(short) == "too_short"
        assert _code(empty) == "too_short"
        assert _code(empty, sr=None) == "too_short"


def test_silence(music: np.ndarray) -> None:
    assert _code(encode_audio(np.zeros((2, 6 * SR)), SR, "m4a")) == "silent"
    # 16-bit PCM cannot even represent -100 dBFS: it decodes to digital zero.
    assert _code(encode_audio(1e-5 * music[:, : 6 * SR], SR, "wav")) == "silent"
    # Peak above -80 dBFS but a lone click in 6 s of zeros: RMS far below -90 dBFS.
    click = np.zeros(6 * SR, dtype=np.float32)
    click[SR] = 2e-4
    assert _code(_float_wav(click, SR)) == "silent"
    # A phase-inverted pair cancels in the mono analysis signal.
    assert _code(_float_wav(np.stack([music[0], -music[0]]), SR)) == "silent"


def test_a_silent_first_30_s_of_a_longer_file_is_not_called_a_silent_file(
        music: np.ndarray) -> None:
    # Only the first 30 s are read: a track that starts with 31 s of digital silence is
    # `silent`, and the message says it is those 30 s, not the file.
    late = np.concatenate([np.zeros((2, 31 * SR), np.float32), music], axis=1)
    with pytest.raises(Silent) as info:
        decode_audio(encode_audio(late, SR, "flac"), sr=None)
    assert info.value.message.startswith("the first 30 s of audio (all that is analysed; "
                                         "the file goes on) are digitally silent")
    with pytest.raises(Silent, match=r"^audio is digitally silent \(peak"):
        decode_audio(encode_audio(np.zeros((2, 6 * SR)), SR, "flac"), sr=None)


def test_too_short_says_when_decoding_stopped_at_an_error(music: np.ndarray) -> None:
    # A chained Ogg Opus stream whose second link changes the channel count: FFmpeg's
    # demuxer stops there ("not yet implemented"). 3 s decode of a file of 11 s; the
    # message must not read as if the file were that short.
    mono = librosa.resample(music[0, : 3 * SR], orig_sr=SR, target_sr=48000)
    stereo = librosa.resample(music, orig_sr=SR, target_sr=48000)
    chained = ogg_opus(mono[np.newaxis]) + ogg_opus(stereo)
    with pytest.raises(TooShort) as info:
        decode_audio(chained, sr=None)
    assert "decoded 3.00 s of audio (decoding stopped at an error: " in info.value.message
    assert info.value.message.endswith("; at least 5.00 s is required")
    # A file that is short ends at its end: no error is named.
    with pytest.raises(TooShort, match=r"^decoded 3\.00 s of audio; at least"):
        decode_audio(ogg_opus(mono[np.newaxis]), sr=None)


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
def test_polarity_inverted_stereo_is_silent_in_every_format(fmt: str, music: np.ndarray) -> None:
    # L = -R mixes down to digital silence, or after a lossy codec to its coding noise
    # alone (which was analysed as if it were the music): every format says why.
    with pytest.raises(Silent, match="cancel out in the mono mix") as info:
        decode_audio(encode_audio(np.stack([music[0], -music[0]]), SR, fmt))
    assert "dBFS" in info.value.message


def test_anti_correlated_stereo_that_does_not_cancel_still_decodes(music: np.ndarray) -> None:
    # Correlation -0.94: the mix is thin (12 dB below its channels) but it is still music.
    wide = np.stack([music[0], -0.6 * music[0] + 0.25 * music[1][::-1]])
    audio = decode_audio(encode_audio(wide, SR, "m4a"))
    assert audio.channels is not None
    np.testing.assert_array_equal(audio.samples, librosa.to_mono(audio.channels))


def test_non_finite_float_wav_is_undecodable(music: np.ndarray) -> None:
    for bad in (np.nan, np.inf):
        x = music.copy()
        x[1, SR] = bad
        with pytest.raises(Undecodable, match="non-finite"):
            decode_audio(_float_wav(x, SR))


@pytest.mark.parametrize("fmt", ["m4a", "mp3", "ogg", "flac"])
def test_truncated_file_decodes_what_it_can(fmt: str) -> None:
    data = encode_audio(_music(20.0, seed=2), SR, fmt)
    head = data[: int(len(data) * 0.3)]
    try:
        audio = decode_audio(head)
    except (Undecodable, TooShort):
        return
    assert 5.0 <= audio.duration_s < 20.0 and np.isfinite(audio.samples).all()


def test_corrupt_container_bytes_only_raise_typed_errors(encoded: dict[str, bytes]) -> None:
    rng = np.random.default_rng(11)
    for fmt in ("m4a", "ogg"):
        data = encoded[fmt]
        header = data[:2000] if fmt == "m4a" else data[:4000]  # MP4 moov / Vorbis headers
        for _ in range(25):
            corrupt = bytearray(data)
            for pos in rng.integers(8, len(header), size=int(rng.integers(1, 6))):
                corrupt[pos] = int(rng.choice([0x00, 0xFF, int(rng.integers(256))]))
            try:
                audio = decode_audio(bytes(corrupt))
            except PreviewvecError:
                continue
            assert np.isfinite(audio.samples).all() and audio.duration_s >= 5.0


def test_playlists_cannot_make_the_decoder_read_other_files(
    encoded: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # FFmpeg's concat demuxer is probed from content and happily opens the files it
    # names (relative ones are allowed even in its "safe" mode).
    (tmp_path / "other.wav").write_bytes(encoded["wav"])
    monkeypatch.chdir(tmp_path)
    for name in ("other.wav", str(tmp_path / "other.wav"), "file:other.wav"):
        playlist = f"ffconcat version 1.0\nfile '{name}'\n".encode()
        assert _code(playlist) == "undecodable"


# --- encoder contract ----------------------------------------------------------------


def test_encode_audio_rejects_what_it_cannot_write(music: np.ndarray) -> None:
    with pytest.raises(ValueError, match="unsupported format"):
        encode_audio(music, SR, "opus")
    with pytest.raises(ValueError, match="channels"):
        encode_audio(np.concatenate([music, music[:1]]), SR, "mp3")
    with pytest.raises(ValueError, match="Hz"):
        encode_audio(music, 96_000, "mp3")
    with pytest.raises(ValueError, match="finite"):
        encode_audio(np.full(SR, np.nan), SR, "wav")
