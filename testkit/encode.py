"""Encoding float samples to audio file bytes (m4a, mp3, ogg, flac, wav).

Test and benchmark tooling, not product code: the workers only decode
(:func:`workers.audio.decode_audio`); tests, benchmarks and the generated songs encode.
"""

from __future__ import annotations

import io
import struct
from fractions import Fraction

import av
import numpy as np

from workers.audio import SUPPORTED_FORMATS, _describe

# fmt -> (muxer, encoder, default bit rate for lossy encoders)
_ENCODERS: dict[str, tuple[str, str, int | None]] = {
    "m4a": ("ipod", "aac", 128_000),  # "ipod" writes an iTunes-style M4A (brand 'M4A ')
    "mp3": ("mp3", "libmp3lame", 128_000),
    "ogg": ("ogg", "vorbis", None),
    "flac": ("flac", "flac", None),
    "wav": ("wav", "pcm_s16le", None),
}
_MAX_CHANNELS = {"mp3": 2, "ogg": 2}
_ENCODE_BLOCK = 1 << 16


def encode_audio(samples: np.ndarray, sr: int, fmt: str, *, bitrate: int | None = None) -> bytes:
    """Encode float samples in [-1, 1] (shape (n,) or (channels, n)) to file bytes.

    ``fmt`` is one of :data:`SUPPORTED_FORMATS`: m4a (AAC in iTunes-style MP4), mp3
    (LAME), ogg (Vorbis), flac, wav (16-bit PCM). Values are clipped to [-1, 1].
    ``bitrate`` (bit/s) applies to m4a and mp3; Vorbis here is quality-based and the
    lossless formats have none. FFmpeg's native Vorbis encoder only does stereo, so mono
    is written as two identical channels; mp3 and ogg take at most two channels, the
    others at most eight.
    """
    if fmt not in _ENCODERS:
        raise ValueError(f"unsupported format {fmt!r}; expected one of {SUPPORTED_FORMATS}")
    muxer, codec_name, default_bitrate = _ENCODERS[fmt]
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 1:
        x = x[np.newaxis, :]
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"samples must have shape (n,) or (channels, n), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("samples must be finite")
    if not isinstance(sr, int) or sr <= 0:
        raise ValueError(f"sr must be a positive int, got {sr!r}")
    if fmt == "ogg" and x.shape[0] == 1:
        x = np.repeat(x, 2, axis=0)
    if x.shape[0] > _MAX_CHANNELS.get(fmt, 8):
        raise ValueError(f"{fmt} cannot hold {x.shape[0]} channels")
    codec = av.Codec(codec_name, "w")
    if codec.audio_rates and sr not in codec.audio_rates:
        raise ValueError(f"{codec_name} cannot encode at {sr} Hz; use one of {codec.audio_rates}")
    x = np.clip(x, -1.0, 1.0)
    layout = av.AudioLayout(f"{x.shape[0]}c").name

    buf = io.BytesIO()
    try:
        with av.open(buf, mode="w", format=muxer) as out:
            stream = out.add_stream(codec_name, rate=sr, layout=layout)
            if fmt == "ogg":
                # The native encoder is flagged experimental (libvorbis is not in PyAV's
                # FFmpeg build); without this avcodec_open2 refuses it.
                stream.codec_context.options = {"strict": "experimental"}
            if default_bitrate is not None:
                stream.bit_rate = bitrate or default_bitrate
            time_base = Fraction(1, sr)
            for start in range(0, x.shape[1], _ENCODE_BLOCK):
                # Interleaved, for the same 8-channel planar bug as in decoding.
                block = np.ascontiguousarray(x[:, start : start + _ENCODE_BLOCK].T)
                frame = av.AudioFrame.from_ndarray(
                    block.reshape(1, -1), format="flt", layout=layout
                )
                frame.sample_rate = sr
                # Timestamps let the MP4 muxer write the edit list that hides AAC priming.
                frame.pts = start
                frame.time_base = time_base
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
    except av.FFmpegError as exc:
        raise ValueError(f"cannot encode {fmt}: {_describe(exc)}") from exc
    return _mp4_faststart(buf.getvalue()) if fmt == "m4a" else buf.getvalue()


def _mp4_faststart(data: bytes) -> bytes:
    """Move the ``moov`` atom in front of ``mdat``, as store previews are laid out.

    FFmpeg's own ``+faststart`` re-reads its output through a file and so cannot work on
    an in-memory buffer. With ``moov`` first, a cut-off download is still decodable.
    """
    top = {kind: (pos, size) for kind, pos, _, size in _mp4_atoms(data, 0, len(data))}
    if b"moov" not in top or b"mdat" not in top or top[b"moov"][0] < top[b"mdat"][0]:
        return data
    moov_pos, moov_size = top[b"moov"]
    moov = bytearray(data[moov_pos : moov_pos + moov_size])
    try:
        _shift_chunk_offsets(moov, 0, moov_size, moov_size)
    except OverflowError:
        return data  # 32-bit chunk offsets would wrap (a >4 GB file): leave it as muxed
    cut = top[b"ftyp"][0] + top[b"ftyp"][1] if b"ftyp" in top else 0
    return b"".join((data[:cut], moov, data[cut:moov_pos], data[moov_pos + moov_size :]))


def _mp4_atoms(buf: bytes | bytearray, start: int, end: int) -> list[tuple[bytes, int, int, int]]:
    """(type, position, header size, total size) of the atoms in ``buf[start:end]``."""
    atoms = []
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", buf, pos)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", buf, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError(f"malformed MP4 atom {kind!r} at {pos}")
        atoms.append((kind, pos, header, size))
        pos += size
    return atoms


def _shift_chunk_offsets(moov: bytearray, start: int, end: int, delta: int) -> None:
    for kind, pos, header, size in _mp4_atoms(moov, start, end):
        if kind in (b"moov", b"trak", b"mdia", b"minf", b"stbl"):
            _shift_chunk_offsets(moov, pos + header, pos + size, delta)
        elif kind in (b"stco", b"co64"):
            (count,) = struct.unpack_from(">I", moov, pos + header + 4)
            dtype = ">u4" if kind == b"stco" else ">u8"
            first = pos + header + 8
            last = first + count * np.dtype(dtype).itemsize
            offsets = np.frombuffer(moov[first:last], dtype=dtype) + np.uint64(delta)
            if kind == b"stco" and offsets.size and int(offsets.max()) > 0xFFFFFFFF:
                raise OverflowError("stco offset beyond 32 bits")
            moov[first:last] = offsets.astype(dtype).tobytes()
