"""Decode audio in memory with PyAV — the only product module that imports ``av``.

:func:`decode_audio` turns untrusted bytes (or a path) into a mono float32 analysis
signal, resampled once, capped, and checked; every failure is a typed
:mod:`contract.errors` error. Encoding, which only tests, benchmarks and the generated
songs need, is :func:`testkit.encode.encode_audio`.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import av
import numpy as np
import soundfile
import soxr

from contract.errors import EmptyInput, NoAudioStream, Silent, TooLarge, TooShort, Undecodable
from workers.features.kernels import SignalLevels, signal_levels

SUPPORTED_FORMATS: tuple[str, ...] = ("m4a", "mp3", "ogg", "flac", "wav")

# Everything PyAV/FFmpeg may raise on hostile input. av.FFmpegError covers the
# av.error.* family; the builtins cover PyAV's own checks and Python-side file-object I/O.
_AV_ERRORS: tuple[type[BaseException], ...] = (
    av.FFmpegError,
    OSError,
    ValueError,
    EOFError,
    RuntimeError,
    MemoryError,
)

# -80 dBFS: below the quietest real recording, above float rounding noise.
SILENCE_PEAK = 10 ** (-80 / 20)
# -90 dBFS RMS is ±1 LSB of 16-bit audio: a few stray ticks in digital silence.
SILENCE_RMS = 10 ** (-90 / 20)
# Packet-level decode errors tolerated in a row before the rest of the stream is given up
# (FFmpeg itself skips isolated corrupt packets; a run of them means garbage).
_MAX_CONSECUTIVE_BAD_PACKETS = 16
# Sources with up to this many channels keep them for BS.1770 loudness (8: 7.1); more
# than that are measured on the mono mix.
_MAX_LOUDNESS_CHANNELS = 8
# BS.1770 channel weights by position (L, R, C, Ls, Rs), for up to 5 unnamed channels.
_POSITIONAL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)
# Weights by name as FFmpeg's ebur128 filter gives them: LFE is left out, surround (side
# and back) channels weigh 1.41, the others 1.0. For stereo, 3.0, 4.0 and 5.0 they are
# the positional ones; quad (FL FR BL BR) and 2.1 (FL FR LFE) differ.
_LFE_CHANNELS = frozenset({"LFE", "LFE2"})
_SURROUND_CHANNELS = frozenset({"BL", "BR", "BC", "SL", "SR", "SDL", "SDR", "TBL", "TBR",
                                "TBC"})


@dataclass(frozen=True)
class DecodedAudio:
    """Decoded analysis audio and what provenance needs to know about its source."""

    samples: np.ndarray
    """Mono float32, shape (n,), at :attr:`sr`, C-contiguous, finite."""
    sr: int
    channels: np.ndarray | None
    """Float32 (n_channels, n) at :attr:`sr` for 2..8-channel sources, else None."""
    source_sr: int
    source_channels: int
    codec: str
    container: str
    duration_s: float
    truncated: bool
    """True when more audio existed than ``max_duration_s`` and it was cut."""
    channel_weights: tuple[float, ...] | None = None
    """BS.1770 weight of each row of :attr:`channels` (None when that is None)."""

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[0])


AudioSource = bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO
"""Encoded audio: its bytes, a path, or a file object opened ``rb``."""


def decode_audio(
    source: AudioSource,
    *,
    sr: int | None = 22050,
    max_duration_s: float = 30.0,
    min_duration_s: float = 5.0,
    max_input_bytes: int = 20_000_000,
) -> DecodedAudio:
    """Decode the best audio stream of ``source`` to mono float32 at ``sr``.

    ``sr=None`` keeps the source's own rate (that of its first decoded frame), as
    ``librosa.load(path, sr=None)`` does: no resampling unless the rate changes mid-stream.

    ``source`` is encoded bytes (at most ``max_input_bytes``), a path, or a file opened
    ``rb``: a regular file is read from its start as it is decoded, whatever its size; a
    pipe or device is read into memory up to ``max_input_bytes``. Decoding stops once
    ``max_duration_s`` of output exists.

    Raises
    ------
    EmptyInput, TooLarge, Undecodable, NoAudioStream, TooShort, Silent
        For the input's faults (see :mod:`contract.errors`).
    OSError
        Only when a *path* or file cannot be opened or read (the CLI reports ``unreadable``).
    """
    if sr is not None and (not isinstance(sr, int | np.integer) or sr <= 0):
        raise ValueError(f"sr must be a positive int or None, got {sr!r}")
    if not (0 < max_duration_s < math.inf and min_duration_s >= 0 and max_input_bytes > 0):
        raise ValueError("max_duration_s, max_input_bytes must be positive; min_duration_s >= 0")
    with _open_source(source, max_input_bytes) as data:
        raw = _decode(data, None if sr is None else int(sr), max_duration_s)

    sr, target = raw.sr, raw.target
    mat, truncated = raw.mat[:, :target], raw.total > target
    mat = np.ascontiguousarray(mat, dtype=np.float32)
    samples = _mono_mix(mat)
    if samples.size == 0:
        raise TooShort(f"decoded no audio; at least {min_duration_s:.2f} s is required")
    # A NaN or infinity in any channel makes its mean non-finite too, so one check covers both.
    levels = signal_levels(samples)
    if not levels.finite:
        raise Undecodable("non-finite samples (NaN or infinity) in decoded audio")

    n = samples.shape[0]
    duration_s = n / sr
    if n < round(min_duration_s * sr):
        # A file that holds more but stopped decoding (a damaged region, a chained stream
        # FFmpeg cannot follow) says so: "decoded 2.95 s" alone reads as a short file.
        stopped = f" (decoding stopped at an error: {raw.stopped_by})" if raw.stopped_by else ""
        raise TooShort(
            f"decoded {_seconds_below(duration_s, min_duration_s)} s of audio{stopped}; at "
            f"least {min_duration_s:.2f} s is required"
        )
    _check_mix_not_cancelled(mat, levels)
    peak, mean_square = levels.peak, levels.mean_square
    rms = math.sqrt(mean_square)
    # Only the first max_duration_s are read: a track that goes on past a silent start
    # is not a silent file, and its error must not read as one.
    silent = (f"the first {max_duration_s:g} s of audio (all that is analysed; the file goes "
              "on) are" if truncated else "audio is")
    if peak < SILENCE_PEAK or rms < SILENCE_RMS:
        raise Silent(
            f"{silent} digitally silent (peak {_dbfs(peak):.1f} dBFS, RMS {_dbfs(rms):.1f} dBFS)"
        )
    # A constant (DC) level is inaudible and carries no features: judged around its mean,
    # it is silence too. The AC RMS comes from the same pass's sums.
    dc = levels.mean
    ac_peak = max(levels.maximum - dc, dc - levels.minimum)
    ac_rms = math.sqrt(max(0.0, mean_square - dc * dc))
    if ac_peak < SILENCE_PEAK or ac_rms < SILENCE_RMS:
        raise Silent(
            f"audio holds only a constant DC level ({dc:+.3f}; AC peak {_dbfs(ac_peak):.1f} "
            f"dBFS, RMS {_dbfs(ac_rms):.1f} dBFS)"
        )

    n_ch = mat.shape[0]
    return DecodedAudio(
        samples=samples,
        sr=sr,
        channels=mat if 2 <= n_ch <= _MAX_LOUDNESS_CHANNELS else None,
        channel_weights=(_loudness_weights(raw.layout, n_ch)
                         if 2 <= n_ch <= _MAX_LOUDNESS_CHANNELS else None),
        source_sr=raw.source_sr,
        source_channels=raw.source_channels,
        codec=raw.codec,
        container=raw.container,
        duration_s=duration_s,
        truncated=truncated,
    )


def _mono_mix(mat: np.ndarray) -> np.ndarray:
    """``librosa.to_mono`` of float32 ``mat`` (channels, n): the float32 mean over the
    channels, C-contiguous. Stereo as ``(L + R) * 0.5``, the same values as the mean
    (halving is exact) without numpy's reduction machinery (a fifth of decoding's CPU)."""
    if mat.shape[0] == 1:
        return np.ascontiguousarray(mat[0])
    if mat.shape[0] == 2:
        mix = np.add(mat[0], mat[1])
        mix *= np.float32(0.5)
        return mix
    return np.ascontiguousarray(mat.mean(axis=0))


# A mono mix this far (-20 dB) below its channels' mean power has cancelled itself: the
# channels are polarity-inverted copies of one another (L = -R). Ordinary stereo, whose
# inter-channel correlation stays far above -0.98, never mixes down this low.
_CANCELLED_MIX_POWER_RATIO = 10 ** (-20 / 10)


def _check_mix_not_cancelled(mat: np.ndarray, levels: SignalLevels) -> None:
    """Raise :class:`Silent` if the mono mix (``levels``) cancelled its channels out.

    A polarity-inverted stereo file mixes down to digital silence, or after a lossy codec
    to its coding noise alone, whose features would describe the codec, not the music.
    """
    if mat.shape[0] < 2:
        return
    # Each channel's power by BLAS dot products: float32 sums are precise far beyond what
    # a 20 dB threshold needs, and a float64 copy of every sample cost ~2 ms per clip.
    with np.errstate(over="ignore", invalid="ignore"):
        mean_power = sum(float(np.dot(row, row)) for row in mat) / mat.size
    if not math.isfinite(mean_power):  # samples beyond ~1e17 overflow float32 sums
        mean_power = float(np.einsum("ij,ij->", mat, mat, dtype=np.float64)) / mat.size
    if mean_power < SILENCE_RMS**2 or levels.mean_square >= _CANCELLED_MIX_POWER_RATIO * mean_power:
        return
    raise Silent(
        f"the channels cancel out in the mono mix (polarity-inverted copies): channels at "
        f"{_dbfs(math.sqrt(mean_power)):.1f} dBFS RMS, their mix at "
        f"{_dbfs(math.sqrt(levels.mean_square)):.1f} dBFS"
    )


@dataclass
class _Raw:
    mat: np.ndarray
    total: int
    sr: int
    target: int
    source_sr: int
    source_channels: int
    codec: str
    container: str
    layout: str = ""
    """The channel layout's name if the source named its channels (else "")."""
    stopped_by: str = ""
    """The error decoding ended on, if it ended on one before the stream's end or the cap."""


def _loudness_weights(layout: str, n_channels: int) -> tuple[float, ...]:
    """BS.1770 weights of the decoded channels, by name (LFE 0, surrounds 1.41) where
    the source names them; unnamed, by position up to 5 channels (L, R, C, Ls, Rs) and
    as FFmpeg's default layout beyond (5.1, 6.1, 7.1)."""
    if not layout and n_channels <= len(_POSITIONAL_WEIGHTS):
        return _POSITIONAL_WEIGHTS[:n_channels]
    try:
        names = [channel.name for channel in av.AudioLayout(layout or f"{n_channels}c").channels]
    except _AV_ERRORS:
        names = []
    if len(names) != n_channels:
        names = ["NONE"] * n_channels  # unknown order: every channel counts as a front one
    return tuple(0.0 if name in _LFE_CHANNELS else 1.41 if name in _SURROUND_CHANNELS else 1.0
                 for name in names)


def is_regular_file(handle: object) -> bool:
    """True for a file object opened on a regular file (seekable, of a known size)."""
    try:
        return (callable(getattr(handle, "seek", None))
                and stat.S_ISREG(os.fstat(handle.fileno()).st_mode))  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


@contextlib.contextmanager
def _open_source(source: AudioSource, max_input_bytes: int) -> Iterator[bytes | BinaryIO]:
    """The encoded input: bytes, or a regular file positioned at its start.

    Bytes (a fetched preview, an upload) are held whole, so ``max_input_bytes`` caps them.
    A regular file is read as it is decoded, and decoding stops at ``max_duration_s``: a
    whole-album FLAC costs no more memory than a preview, so its size is not capped. What
    is not a regular file (a pipe, a device) is read into memory, bounded by the cap.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        size = memoryview(source).nbytes
        if size == 0:
            raise EmptyInput("input has 0 bytes")
        if size > max_input_bytes:
            raise TooLarge(f"input has {size} bytes; the limit is {max_input_bytes}")
        yield bytes(source)
        return
    if isinstance(source, str | os.PathLike):
        # The file opened is the file read, whatever the name points at later.
        with open(os.fspath(source), "rb") as fh, _open_source(fh, max_input_bytes) as data:
            yield data
        return
    if not callable(getattr(source, "read", None)):
        raise TypeError(f"source must be bytes, a path or a file opened 'rb', "
                        f"got {type(source).__name__}")
    if isinstance(source, io.TextIOBase):
        raise TypeError("source is a file opened as text: open it 'rb'")
    name = str(getattr(source, "name", "input"))
    if is_regular_file(source):
        source.seek(0)
        if not source.read(1):
            raise EmptyInput(f"{name}: file has 0 bytes")
        source.seek(0)
        yield source
        return
    # Bounded read: a growing pipe or a device must not be slurped whole.
    data = source.read(max_input_bytes + 1)
    if not isinstance(data, bytes | bytearray):
        raise TypeError("source is a file opened as text: open it 'rb'")
    if not data:
        raise EmptyInput(f"{name}: file has 0 bytes")
    if len(data) > max_input_bytes:
        raise TooLarge(f"{name}: more than {max_input_bytes} bytes (not a regular file)")
    yield bytes(data)


def _decode(data: bytes | BinaryIO, sr: int | None, max_duration_s: float) -> _Raw:
    """FFmpeg's decoding of ``data``, else libsndfile's; :class:`Undecodable` if neither."""
    try:
        container = av.open(
            io.BytesIO(data) if isinstance(data, bytes) else data,
            mode="r",
            metadata_errors="replace",
            # No protocol at all for nested opens: playlist-like demuxers (ffconcat, HLS,
            # MOV external references) must not read files or URLs named in the bytes.
            container_options={"protocol_whitelist": "none"},
        )
    except _AV_ERRORS as exc:
        if not isinstance(data, bytes):
            data.seek(0)
        raw = _decode_with_libsndfile(data, sr, max_duration_s)
        if raw is None:
            raise Undecodable(
                f"not a recognised audio/video file ({_describe(exc)})") from None
        return raw
    try:
        with container:
            return _decode_stream(container, sr, max_duration_s)
    except _AV_ERRORS as exc:
        raise Undecodable(f"cannot decode audio ({_describe(exc)})") from None


def _audio_stream(container: av.container.InputContainer) -> tuple[av.AudioStream, str]:
    """The container's best audio stream and its codec's name, or a typed error."""
    stream = container.streams.best("audio")
    if stream is None:
        if len(container.streams) > 0:
            kinds = sorted({s.type for s in container.streams})
            if "audio" in kinds:  # e.g. a WAV header declaring 0 channels
                raise Undecodable("the audio stream cannot be decoded (no channels, or no "
                                  "decoder for its codec)")
            # A container cut short can show only the data streams it had room for.
            hint = "; truncated?" if kinds == ["data"] else ""
            raise NoAudioStream(
                f"the file has no audio stream (only {', '.join(kinds)}){hint}")
        raise Undecodable("not a recognised audio/video file (no media streams)")
    ctx = stream.codec_context
    if ctx is None:
        raise Undecodable("the audio codec is not supported")
    return stream, ctx.codec.canonical_name


def _declares_samples(stream: av.AudioStream) -> bool:
    """Whether the container says the stream holds samples (a frame count or duration)."""
    return bool((stream.frames or 0) > 0 or (stream.duration or 0) > 0)


def _packet_frames(container: av.container.InputContainer, stream: av.AudioStream,
                   errors: list[BaseException]) -> Iterator[list[av.AudioFrame]]:
    """The frames of each packet in turn. A corrupt packet is skipped, up to
    ``_MAX_CONSECUTIVE_BAD_PACKETS`` in a row; a demux error mid-stream (e.g. a truncated
    file) ends the stream, keeping what decoded so far. Errors met go to ``errors``."""
    bad_in_a_row = 0
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except _AV_ERRORS as exc:
                errors.append(exc)
                bad_in_a_row += 1
                if bad_in_a_row > _MAX_CONSECUTIVE_BAD_PACKETS:
                    return
                continue
            bad_in_a_row = 0
            yield frames
    except _AV_ERRORS as exc:
        errors.append(exc)


# Source rates a clip may have. Below, a header's claim (a WAV "at 1 Hz" made a vector of
# 30 samples); above, FLAC's 655 kHz limit, 8 channels of which decoded to 2 GB within
# the input size cap. Outside the range: undecodable.
MIN_SOURCE_SR = 4_000
MAX_SOURCE_SR = 400_000
# Decoded at the clip's own rate (sr=None), a source above this is resampled to it: its
# spectra cost memory in proportion to the rate, and nothing a listener hears is above
# 96 kHz. DXD (352.8, 384 kHz) is analysed at 192 kHz.
MAX_NATIVE_SR = 192_000


# Decoded float32 values per second of audio a clip may carry: 7.1 at 192 kHz (or 32
# channels at 48 kHz). Decoding memory and time grow with channels x source rate x
# duration, and neither the byte caps nor the rate range bound the product: a 6 MB
# WavPack of 40 channels (39 of them silent) at 384 kHz decoded to 1.8 GB (3.7 GB peak,
# 25 s). The duration is the operator's cap (PREVIEWVEC_MAX_DURATION_S): at its default
# 30 s this bounds a clip's decoded samples at 46 M (184 MB). A run of frames over this
# rate is refused at its first frame.
MAX_VALUES_PER_SECOND = 8 * 192_000


def _check_source_rate(rate: int) -> None:
    if not MIN_SOURCE_SR <= rate <= MAX_SOURCE_SR:
        raise Undecodable(f"the stream's sample rate is {rate} Hz, outside "
                          f"{MIN_SOURCE_SR} Hz to {MAX_SOURCE_SR // 1000} kHz")


def _check_decoded_rate(n_channels: int, rate: int) -> None:
    """Raise :class:`TooLarge` if ``n_channels`` at ``rate`` exceed
    :data:`MAX_VALUES_PER_SECOND`."""
    if n_channels * rate > MAX_VALUES_PER_SECOND:
        raise TooLarge(
            f"{n_channels} channels at {rate} Hz decode to {n_channels * rate / 1e6:.2f} M "
            f"samples per second; the limit is {MAX_VALUES_PER_SECOND / 1e6:.3f} M (7.1 at "
            "192 kHz)")


class _Runs:
    """Decoded frames collected at the source rate, one :class:`_Segment` per run of
    same-format frames, each resampled once when it ends.

    FFmpeg's swresample called per ~1024-sample frame cost more than decoding the AAC
    itself; one soxr call on the whole run costs a few milliseconds.
    """

    def __init__(self, sr: int | None, max_duration_s: float) -> None:
        # sr None: the first frame's rate (the source's own), fixed from then on.
        self.sr = sr or 0
        self.max_duration_s = max_duration_s
        self.target = round(max_duration_s * sr) if sr else 0
        self.pieces: list[np.ndarray] = []
        self.segment: _Segment | None = None
        self.out_layout = ""
        self.named_layout = ""  # out_layout when the source named its channels
        self.source_sr = self.source_channels = 0
        self.total = 0.0  # output samples so far (at `sr`), to stop decoding past `target`
        self.full_length = 0  # samples at `sr` before any cut at `target`

    def add(self, frame: av.AudioFrame) -> None:
        rate, n = frame.sample_rate, frame.samples
        if rate <= 0 or n <= 0 or frame.layout.nb_channels <= 0:
            return
        if self.segment is None and not self.pieces:
            _check_source_rate(rate)
            self.source_sr, self.source_channels = rate, frame.layout.nb_channels
            if not self.sr:
                self.sr = min(rate, MAX_NATIVE_SR)
                self.target = round(self.max_duration_s * self.sr)
            self.out_layout = _output_layout(frame.layout)
            if all(ch.name != "NONE" for ch in frame.layout.channels):
                self.named_layout = self.out_layout
        elif self.segment is not None and not self.segment.accepts(frame):
            # Mid-stream format change (e.g. chained streams): finish the old run and map
            # the new input onto the original output layout.
            self.end_segment()
        if self.segment is None:
            # Every run, not just the first: a chained stream may switch to a higher rate
            # or more channels. Decoding costs the frame's channels, the buffer the
            # output layout's.
            n_out = av.AudioLayout(self.out_layout).nb_channels
            _check_decoded_rate(max(frame.layout.nb_channels, n_out), rate)
            still_needed = max(self.target - self.total, 0.0) * rate / self.sr
            # At the output rate nothing past the target is used, so only that is kept
            # (and handed out without a copy); a run to resample keeps all of what it
            # decodes, for the resampler's edges.
            keep = math.ceil(still_needed) if rate == self.sr else None
            self.segment = _Segment(frame, self.out_layout,
                                    math.ceil(still_needed) + 4 * 4096, keep)
        self.segment.add(frame)
        self.total += n * self.sr / rate

    @property
    def enough(self) -> bool:
        return bool(self.sr) and self.total > self.target

    def end_segment(self) -> None:
        if self.segment is not None:
            self.pieces.append(self.segment.finish(self.sr, self.target))
            self.full_length += self.segment.resampled_length
            self.segment = None


def _decode_stream(container: av.container.InputContainer, sr: int | None,
                   max_duration_s: float) -> _Raw:
    stream, codec = _audio_stream(container)
    runs = _Runs(sr, max_duration_s)
    errors: list[BaseException] = []
    errors_before_last_frames = 0  # errors after the last decoded frames ended decoding
    try:
        for frames in _packet_frames(container, stream, errors):
            for frame in frames:
                runs.add(frame)
            if frames:
                errors_before_last_frames = len(errors)
            if runs.enough:
                break
    except _AV_ERRORS as exc:
        errors.append(exc)  # a failure mid-stream: keep what decoded so far
    runs.end_segment()
    pieces = [piece for piece in runs.pieces if piece.shape[1]]
    if not pieces and not errors and not _declares_samples(stream):
        # A well-formed file that holds no samples (a WAV header alone) is short, not
        # broken, as the same header with a few samples is: decode_audio says so. One
        # that declares samples it never yields (chunk offsets or sizes past the end of
        # an MP4) is broken: undecodable below.
        pieces = [np.zeros((1, 0), dtype=np.float32)]
    if not pieces:
        why = (_describe(errors[-1]) if errors
               else "the container declares samples that its data does not hold")
        raise Undecodable(f"no audio could be decoded from the {codec} stream ({why})")
    mat = pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=1)
    return _Raw(
        mat=mat,
        total=runs.full_length,
        sr=runs.sr,
        target=runs.target,
        source_sr=runs.source_sr,
        source_channels=runs.source_channels,
        codec=codec,
        container=container.format.name,
        layout=runs.named_layout,
        stopped_by=(_describe(errors[-1])
                    if not runs.enough and len(errors) > errors_before_last_frames else ""),
    )


# Float sample formats PyAV can hand over without conversion. Planar frames with many
# channels go through swresample instead: PyAV's AudioFrame.planes counts planes until a
# null pointer past the 8 inline data pointers, so it segfaults on a planar frame with
# more than 8 channels and sees a 9th plane in one with exactly 8 (a 7.1 AAC stream was
# undecodable: "frame has 9 planes; expected 8").
_DIRECT_FORMATS = frozenset({"flt", "fltp"})
_MAX_DIRECT_CHANNELS = 7
# Float values a segment's buffer starts with at most (16 MB), before it has to grow.
_INITIAL_BUFFER_VALUES = 1 << 22


class _Segment:
    """A run of decoded frames with one format, layout and rate, copied into flat arrays.

    Each frame is copied out as it arrives (a bytes-level memoryview copy per plane), so
    FFmpeg recycles its buffers. Keeping the frames (or numpy views of them) alive,
    ``AudioFifo.write``, ``AudioFrame.to_ndarray`` and numpy slice assignment all cost
    more per ~1024-sample frame; together they once came to half as much again as
    decoding the AAC itself.
    """

    def __init__(self, first: av.AudioFrame, out_layout: str, expected_samples: int,
                 keep: int | None = None) -> None:
        self.key = (first.format.name, first.layout.name, first.sample_rate)
        self.rate = first.sample_rate
        self.n_channels = av.AudioLayout(out_layout).nb_channels
        direct = (
            first.format.name in _DIRECT_FORMATS
            and first.layout.name == out_layout
            and first.layout.nb_channels <= _MAX_DIRECT_CHANNELS
        )
        # Otherwise only the sample format and channel layout are converted (to packed
        # float, safe for any channel count); the rate is left to the one resampling.
        self.converter = (
            None if direct else av.AudioResampler(format="flt", layout=out_layout, rate=self.rate)
        )
        planar = direct and first.format.is_planar
        # Planar: one array per channel; packed: one interleaved array.
        self.values_per_sample = 1 if planar else self.n_channels
        # Sized for the expected length, but never more than the buffer cap up front: a
        # header may claim any rate; only decoded samples make the arrays grow.
        self.keep = keep  # samples to keep at most (None: all)
        wanted = expected_samples if keep is None else keep
        capacity = max(1, min(wanted, _INITIAL_BUFFER_VALUES // self.n_channels))
        self.buffer = np.empty(
            (self.n_channels if planar else 1, capacity * self.values_per_sample), np.float32
        )
        self.views = [memoryview(row).cast("B") for row in self.buffer]
        self.length = 0  # samples kept
        self.seen = 0  # samples decoded: more than kept once `keep` is reached
        self.resampled_length = 0

    def accepts(self, frame: av.AudioFrame) -> bool:
        return (
            frame.sample_rate == self.rate
            and frame.format.name == self.key[0]
            and frame.layout.name == self.key[1]
        )

    def add(self, frame: av.AudioFrame) -> None:
        if self.converter is None:
            self._copy(frame)
        else:
            for out in self.converter.resample(frame):
                self._copy(out)

    def _copy(self, frame: av.AudioFrame) -> None:
        planes = frame.planes
        if len(planes) != len(self.views):
            raise ValueError(f"frame has {len(planes)} planes; expected {len(self.views)}")
        n = frame.samples
        self.seen += n
        if self.keep is not None:
            n = min(n, self.keep - self.length)
            if n <= 0:
                return
        width = 4 * self.values_per_sample  # bytes per sample and plane
        start, end = self.length * width, (self.length + n) * width
        if end > len(self.views[0]):
            self._grow(end // 4)
        for view, plane in zip(self.views, planes, strict=True):
            # Raises ValueError if the plane holds fewer bytes than the frame claims.
            view[start:end] = memoryview(plane)[: end - start]
        self.length += n

    def _grow(self, values: int) -> None:
        used = self.length * self.values_per_sample
        rows, size = self.buffer.shape
        size = 2 * size if self.keep is None else min(2 * size, self.keep * self.values_per_sample)
        grown = np.empty((rows, max(size, values)), dtype=np.float32)
        grown[:, :used] = self.buffer[:, :used]
        self.views = []
        self.buffer = grown
        self.views = [memoryview(row).cast("B") for row in self.buffer]

    def channels(self) -> list[np.ndarray]:
        """Each channel's samples so far, as float32 arrays of the same length."""
        if self.values_per_sample == 1:
            return list(self.buffer[:, : self.length])
        packed = self.buffer[0, : self.length * self.n_channels]
        return list(packed.reshape(self.length, self.n_channels).T)

    def finish(self, sr: int, limit: int) -> np.ndarray:
        """The run's samples as float32, shape (channels, n), resampled to ``sr`` and
        cut at ``limit``; :attr:`resampled_length` is ``n`` before the cut."""
        if self.converter is not None:
            with contextlib.suppress(*_AV_ERRORS):
                for out in self.converter.resample(None):
                    self._copy(out)
        channels = self.channels()
        self.views = []  # the arrays may now be handed out
        if self.rate == sr:
            self.resampled_length = self.seen
            if self.values_per_sample == 1 and self.length == self.buffer.shape[1] <= limit:
                return self.buffer  # planar, exactly the samples kept: no copy
        else:
            # soxr "HQ" is librosa's default resampler (res_type="soxr_hq"); one call per
            # channel.
            if self.length > 0:
                channels = [soxr.resample(channel, self.rate, sr, "HQ")
                            for channel in channels]
            self.resampled_length = channels[0].shape[0]
        # Only what can be used is stacked: the result is then C-contiguous as it is.
        return np.stack([channel[:limit] for channel in channels])


def _output_layout(layout: av.AudioLayout) -> str:
    """The input layout, or the default one for its channel count if its order is unknown."""
    if all(ch.name != "NONE" for ch in layout.channels):
        return layout.name
    try:
        return av.AudioLayout(f"{layout.nb_channels}c").name
    except _AV_ERRORS:
        return layout.name  # no default layout for this many channels: keep them unordered


def _describe(exc: BaseException) -> str:
    # FFmpeg errors stringify as "[Errno -n] text: '<none>'"; the text is the useful part.
    text = getattr(exc, "strerror", None) or str(exc)
    return text or type(exc).__name__


# libsndfile's read is sized up front from the header: at most this many float32 values
# (128 MB), far above 30 s of 8 channels at 96 kHz; a header claiming more is refused.
_MAX_LIBSNDFILE_VALUES = 1 << 25
_LIBSNDFILE_ERRORS: tuple[type[BaseException], ...] = (
    soundfile.LibsndfileError, RuntimeError, ValueError, TypeError, EOFError, OSError,
    MemoryError)


def _decode_with_libsndfile(data: bytes | BinaryIO, sr: int | None,
                            max_duration_s: float) -> _Raw | None:
    """libsndfile's decoding of what FFmpeg would not open, or None if it cannot either.

    FFmpeg's Ogg demuxer refuses some valid Vorbis files at header parsing (three of the
    17 in Debian's hyperrogue-music repeat their identification header mid-stream, with
    a negative granule position) that libsndfile plays; it also reads a few formats
    FFmpeg lacks (MAT5, HTK, SDS). Tried only after FFmpeg, on the same input.
    """
    try:
        with soundfile.SoundFile(io.BytesIO(data) if isinstance(data, bytes) else data) as sound:
            rate, n_channels = int(sound.samplerate), int(sound.channels)
            if rate <= 0 or n_channels <= 0:
                return None
            _check_source_rate(rate)
            needed = math.ceil(max_duration_s * rate) + 1  # one more: was there more?
            if needed * n_channels > _MAX_LIBSNDFILE_VALUES:
                return None
            block = sound.read(needed, dtype="float32", always_2d=True)
            codec, container = sound.subtype.lower(), sound.format.lower()
    except _LIBSNDFILE_ERRORS:
        return None
    if block.shape[0] == 0:
        return None  # NaN or infinity is decode_audio's check, as for FFmpeg's output
    out_sr = sr or min(rate, MAX_NATIVE_SR)
    channels = [np.ascontiguousarray(block[:, c]) for c in range(n_channels)]
    if rate != out_sr:  # as _Segment.finish: soxr HQ, librosa's default
        channels = [soxr.resample(channel, rate, out_sr, "HQ") for channel in channels]
    target = round(max_duration_s * out_sr)
    return _Raw(
        mat=np.stack([channel[:target] for channel in channels]),
        total=channels[0].shape[0],
        sr=out_sr,
        target=target,
        source_sr=rate,
        source_channels=n_channels,
        codec=codec,
        container=container,
    )


def _seconds_below(duration_s: float, limit_s: float) -> str:
    """``duration_s`` to 2 decimals, or to as many as it takes not to read as ``limit_s``
    ("decoded 5.00 s; at least 5.00 s is required" for 4.9998 s)."""
    for decimals in (2, 3, 4, 5, 6):
        shown = f"{duration_s:.{decimals}f}"
        if shown != f"{limit_s:.{decimals}f}":
            return shown
    return repr(duration_s)


def _dbfs(x: float) -> float:
    return 20 * math.log10(x) if x > 0 else -math.inf
