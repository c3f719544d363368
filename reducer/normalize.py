"""The vector normaliser: pure computation, fitted once and stored with its version.

Raw feature dimensions live on wildly different scales (LUFS, Hz, kurtosis). Vectors in
the index are z-scored per dimension with a mean and deviation fitted once from stored
records; later (on-demand) vectors reuse the same normaliser so that every vector in the
index stays comparable. A normaliser is identified by a hash of its parameters.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

MIN_STD = 1e-9
CLIP_Z = 8.0  # a single wild dimension must not dominate cosine similarity


@dataclass(frozen=True)
class Normalizer:
    """Per-dimension z-scoring: ``clip((v - mean) / std, ±8)``; constant dims map to 0."""

    feature_version: str
    mean: np.ndarray
    std: np.ndarray
    fitted_on: int

    @property
    def version(self) -> str:
        digest = hashlib.sha256(self.mean.astype(np.float64).tobytes())
        digest.update(self.std.astype(np.float64).tobytes())
        return digest.hexdigest()[:16]

    @classmethod
    def fit(cls, vectors: np.ndarray, feature_version: str) -> Normalizer:
        """Fit on a (n_records, dim) array of raw vectors."""
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError("need at least one vector to fit a normaliser")
        return cls(feature_version, x.mean(axis=0), x.std(axis=0), int(x.shape[0]))

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Normalise (n, dim) or (dim,) raw vectors; returns float32."""
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim not in (1, 2) or x.shape[-1] != self.mean.shape[0]:
            # Broadcasting would z-score a (n, 1) or (1,) array against every dimension.
            raise ValueError(f"vectors of shape {x.shape} do not have this normaliser's "
                             f"{self.mean.shape[0]} dimensions")
        usable = self.std > MIN_STD
        z = np.where(usable, (x - self.mean) / np.where(usable, self.std, 1.0), 0.0)
        return np.clip(z, -CLIP_Z, CLIP_Z).astype(np.float32)

    def to_json(self) -> bytes:
        return json.dumps({
            "feature_version": self.feature_version,
            "version": self.version,
            "fitted_on": self.fitted_on,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Normalizer:
        doc = json.loads(data)
        return cls(doc["feature_version"], np.asarray(doc["mean"]), np.asarray(doc["std"]),
                   int(doc["fitted_on"]))


def normalizer_key(feature_version: str) -> str:
    return f"normalizers/{feature_version}.json"
