"""Decode + extract: encoded audio in, features out. Pure computation, no network or store."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from dataclasses import dataclass

from contract.settings import Settings
from workers.audio import DecodedAudio, decode_audio
from workers.features.extractor import Features, extract_features


@dataclass(frozen=True)
class Analysis:
    """Features of one clip plus what provenance needs to know about its audio."""

    features: Features
    audio: DecodedAudio
    audio_sha256: str
    timings_s: dict[str, float]


def analyze(source: bytes | str | os.PathLike[str], settings: Settings) -> Analysis:
    """Decode ``source`` (bytes or a path) and extract its features.

    Raises the typed errors of :mod:`contract.errors`; never returns NaN.
    """
    started = time.perf_counter()
    if not isinstance(source, bytes | bytearray | memoryview) and not _is_regular(source):
        # A pipe or device can be read once: hold its bytes (bounded), to decode and hash.
        with open(source, "rb") as handle:
            source = handle.read(settings.max_input_bytes + 1)
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        digest = hashlib.sha256(data).hexdigest()
    else:
        data = source  # type: ignore[assignment]
        digest = ""
    audio = decode_audio(
        data,
        sr=None,  # the clip's own rate: the FMA block is computed at it, as FMA did
        max_duration_s=settings.max_duration_s,
        min_duration_s=settings.min_duration_s,
        max_input_bytes=settings.max_input_bytes,
    )
    decoded = time.perf_counter()
    if not digest:
        digest = _file_sha256(os.fspath(source))  # type: ignore[arg-type]
    features = extract_features(audio.samples, audio.sr, channels=audio.channels,
                                analysis_sr=settings.analysis_sr,
                                channel_weights=audio.channel_weights)
    timings = {
        "decode": decoded - started,
        **{f"extract.{k}": v for k, v in features.timings_s.items()},
    }
    return Analysis(features=features, audio=audio, audio_sha256=digest, timings_s=timings)


def _is_regular(path: str | os.PathLike[str]) -> bool:
    return stat.S_ISREG(os.stat(path).st_mode)


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
