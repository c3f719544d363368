"""Encoded media the tests build themselves, beyond what ``testkit.encode.encode_audio``
writes (e.g. containers holding video)."""

from __future__ import annotations

import io
import struct
from fractions import Fraction

import av
import numpy as np


def mp4_video(audio: np.ndarray | None, sr: int) -> bytes:
    """A small MPEG-4 video (8 frames at 4 fps, 64×64), with an AAC track of ``audio``
    (shape (2, n), float32 at ``sr``) when it is given."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        video = out.add_stream("mpeg4", rate=4)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        sound = out.add_stream("aac", rate=sr, layout="stereo") if audio is not None else None
        for i in range(8):
            image = np.full((64, 64, 3), 30 * i, dtype=np.uint8)
            out.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(video.encode(None))
        if sound is not None:
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio.T).reshape(1, -1), format="flt", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = sr, 0, Fraction(1, sr)
            out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return buf.getvalue()


def many_channel_wavpack(n_channels: int, sr: int, seconds: float, *,
                         amplitude: float = 0.002) -> bytes:
    """A WavPack file of ``n_channels`` at ``sr``: a quiet 440 Hz tone in the first
    channel, digital silence in the others, so it compresses to a few bytes per sample
    frame (40 channels at 384 kHz: 6 MB for 30 s). Unnamed layout beyond 2 channels."""
    layout = {1: "mono", 2: "stereo"}.get(n_channels, f"{n_channels} channels")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="wv") as out:
        stream = out.add_stream("wavpack", rate=sr, layout=layout)
        total, block = round(seconds * sr), 4096
        for start in range(0, total, block):
            n = min(block, total - start)
            packed = np.zeros((n, n_channels), dtype=np.int16)
            t = np.arange(start, start + n) / sr
            packed[:, 0] = amplitude * 32767 * np.sin(2 * np.pi * 440 * t)
            frame = av.AudioFrame.from_ndarray(packed.reshape(1, -1), format="s16",
                                               layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = sr, start, Fraction(1, sr)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def ogg_opus(x: np.ndarray, sr: int = 48000) -> bytes:
    """An Ogg Opus file of float samples ``x`` (shape (channels, n), at most 2 channels).
    Two such files one after the other are a chained Ogg stream, as stream rips are."""
    layout = {1: "mono", 2: "stereo"}[x.shape[0]]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=sr, layout=layout)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(x.T, dtype=np.float32).reshape(1, -1), format="flt",
            layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = sr, 0, Fraction(1, sr)
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


# --- Ogg pages (RFC 3533): CRC-32 with polynomial 0x04C11DB7, unreflected, initial 0 ----
def _ogg_crc_table() -> list[int]:
    table = []
    for byte in range(256):
        r = byte << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else r << 1
        table.append(r & 0xFFFFFFFF)
    return table


_OGG_CRC = _ogg_crc_table()


def _ogg_pages(data: bytes) -> list[bytearray]:
    pages, pos = [], 0
    while pos < len(data):
        n_segments = data[pos + 26]
        end = pos + 27 + n_segments + sum(data[pos + 27:pos + 27 + n_segments])
        pages.append(bytearray(data[pos:end]))
        pos = end
    return pages


def _ogg_packets(page: bytearray) -> list[bytes]:
    n_segments = page[26]
    offset, packets, current = 27 + n_segments, [], b""
    for size in page[27:27 + n_segments]:
        current += bytes(page[offset:offset + size])
        offset += size
        if size < 255:
            packets.append(current)
            current = b""
    return packets


def _ogg_sealed(page: bytearray, sequence: int) -> bytes:
    page[18:22] = struct.pack("<I", sequence)
    page[22:26] = b"\0\0\0\0"
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[((crc >> 24) & 0xFF) ^ byte]
    page[22:26] = struct.pack("<I", crc)
    return bytes(page)


def ogg_with_repeated_headers(ogg_vorbis: bytes) -> bytes:
    """The Ogg Vorbis stream with its three header packets repeated on a page of their own
    before the audio, as in three files of Debian's hyperrogue-music: valid for libvorbis
    (and players), refused by FFmpeg's Ogg demuxer ("Header processing failed")."""
    pages = _ogg_pages(ogg_vorbis)
    headers = _ogg_packets(pages[0]) + _ogg_packets(pages[1])
    assert [p[:7] for p in headers] == [b"\x01vorbis", b"\x03vorbis", b"\x05vorbis"]
    lacing = [s for p in headers for s in [255] * (len(p) // 255) + [len(p) % 255]]
    repeat = bytearray(pages[0][:26]) + bytes([len(lacing), *lacing]) + b"".join(headers)
    repeat[5] = 0  # not the stream's first page
    out = [bytes(pages[0]), bytes(pages[1]), _ogg_sealed(repeat, 2)]
    out += [_ogg_sealed(page, 3 + i) for i, page in enumerate(pages[2:])]
    return b"".join(out)
