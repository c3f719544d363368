"""Encoded media the tests build themselves, beyond what ``testkit.encode.encode_audio``
writes (e.g. containers holding video)."""

from __future__ import annotations

import io
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
