"""Decode + extract: encoded audio in, features out. Pure computation, no network or store."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from typing import BinaryIO

from contract.settings import Settings
from workers.audio import AudioSource, DecodedAudio, decode_audio, is_regular_file
from workers.features.extractor import Features, extract_features


@dataclass(frozen=True)
class Analysis:
    """Features of one clip plus what provenance needs to know about its audio."""

    features: Features
    audio: DecodedAudio
    audio_sha256: str
    timings_s: dict[str, float]


def analyze(source: AudioSource, settings: Settings) -> Analysis:
    """Decode ``source`` (bytes, a path, or a file opened ``rb``) and extract its features.

    Raises the typed errors of :mod:`contract.errors`; never returns NaN.
    """
    started = time.perf_counter()
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as handle:  # one open: what is decoded is what is hashed
            return _analyze(handle, settings, started)
    return _analyze(source, settings, started)


def _analyze(source: bytes | bytearray | memoryview | BinaryIO, settings: Settings,
             started: float) -> Analysis:
    if not isinstance(source, bytes | bytearray | memoryview) and not is_regular_file(source):
        # A pipe or device can be read once: hold its bytes (bounded), to decode and hash.
        source = source.read(settings.max_input_bytes + 1)
    audio = decode_audio(
        source,
        sr=None,  # the clip's own rate: the FMA block is computed at it, as FMA did
        max_duration_s=settings.max_duration_s,
        min_duration_s=settings.min_duration_s,
        max_input_bytes=settings.max_input_bytes,
    )
    decoded = time.perf_counter()
    if isinstance(source, bytes | bytearray | memoryview):
        digest = hashlib.sha256(source).hexdigest()
    else:
        source.seek(0)
        digest = hashlib.file_digest(source, "sha256").hexdigest()
    features = extract_features(audio.samples, audio.sr, channels=audio.channels,
                                analysis_sr=settings.analysis_sr,
                                channel_weights=audio.channel_weights)
    timings = {
        "decode": decoded - started,
        **{f"extract.{k}": v for k, v in features.timings_s.items()},
    }
    return Analysis(features=features, audio=audio, audio_sha256=digest, timings_s=timings)
