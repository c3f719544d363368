"""Synthetic feature records for tests and benchmarks of everything after extraction
(store, export, normaliser, index): valid records with reproducible random vectors."""

from __future__ import annotations

import numpy as np

from contract.layout import FEATURE_VERSION, PITCH_CLASSES, VECTOR_DIM
from contract.records import FeatureRecord, encode_record, make_provenance


def synthetic_record(i: int, *, version: str = FEATURE_VERSION, run_id: str = "run-synthetic",
                     scale: float = 1.0, computation: dict | None = None) -> FeatureRecord:
    """Record number ``i``: a float32 vector drawn from a seeded normal distribution
    (``scale`` widens it: a catalog that drifts), descriptors and provenance filled in."""
    rng = np.random.default_rng(i)
    vector = (rng.normal(size=VECTOR_DIM) * scale + 1.0).astype(np.float32)
    descriptors = {
        "tempo_bpm": float(60 + i % 120), "key": PITCH_CLASSES[i % 12],
        "mode": "major" if i % 2 else "minor", "energy": float(rng.random()),
        "danceability": float(rng.random()), "loudness_lufs": float(-30 + 20 * rng.random()),
        "key_strength": float(rng.random()), "onset_rate": float(5 * rng.random()),
        "duration_s": 30.0,
    }
    provenance = make_provenance(
        preview_url=f"https://audio-ssl.itunes.apple.com/p/{i}.m4a",
        audio_sha256=f"{i:064x}", source="synthetic", run_id=run_id, isrc=f"XX{i:010d}",
        artist=f"Artist {i % 97}", title=f"Title {i}", decoder="synthetic",
        created_at="2026-01-01T00:00:00Z")
    return FeatureRecord(recording_id=f"rec-{i:07d}", vector=vector, descriptors=descriptors,
                         provenance=provenance, timings_s={"decode": 0.01},
                         feature_version=version, computation=computation)


def synthetic_bytes(i: int, **options: object) -> tuple[str, bytes]:
    """``(store key, encoded record)`` of :func:`synthetic_record`."""
    record = synthetic_record(i, **options)  # type: ignore[arg-type]
    return record.key, encode_record(record)
