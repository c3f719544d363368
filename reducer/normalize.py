"""The vector normaliser: pure computation, fitted on a sample and stored with its version.

Raw feature dimensions live on wildly different scales (LUFS, Hz, kurtosis). Vectors in
the index are z-scored per dimension with a mean and deviation fitted on a uniform
reservoir sample of stored records (:func:`reservoir_sample`); every vector in the index
is normalised by the same one, so all stay comparable. A normaliser is identified by a
hash of its parameters; the reducer refits it when the catalog has grown
(:func:`needs_refit`) and then re-normalises the whole index.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from contract.records import CorruptRecord

T = TypeVar("T")

MIN_STD = 1e-9
MIN_FIT_SAMPLE = 2  # fewer records than this fit the identity (see Normalizer.fit)
CLIP_Z = 8.0  # a single wild dimension must not dominate cosine similarity


@dataclass(frozen=True)
class Normalizer:
    """Per-dimension z-scoring: ``clip((v - mean) / std, ±8)``; constant dims map to 0."""

    feature_version: str
    mean: np.ndarray
    std: np.ndarray
    fitted_on: int  # records in the sample
    # Records of the feature version in the store when the sample was drawn; the refit
    # rule compares the index's size with it. Older normalisers saw all they were fitted on.
    catalog_size: int = 0
    fitted_at: str = ""

    def __post_init__(self) -> None:
        if self.catalog_size < self.fitted_on:
            object.__setattr__(self, "catalog_size", self.fitted_on)

    @property
    def version(self) -> str:
        digest = hashlib.sha256(self.mean.astype(np.float64).tobytes())
        digest.update(self.std.astype(np.float64).tobytes())
        return digest.hexdigest()[:16]

    @classmethod
    def fit(cls, vectors: np.ndarray, feature_version: str, *, catalog_size: int = 0,
            fitted_at: str = "") -> Normalizer:
        """Fit on a (n_records, dim) array of raw vectors, a sample of a catalog of
        ``catalog_size`` records (default: the sample is the catalog)."""
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError("need at least one vector to fit a normaliser")
        if x.shape[0] < MIN_FIT_SAMPLE:
            # One record has no spread: every dimension would be constant and map it to
            # the zero vector, which has no cosine similarity (the index refuses it). Keep
            # the raw values until the catalog grows, which triggers a refit.
            return cls(feature_version, np.zeros(x.shape[1]), np.ones(x.shape[1]),
                       int(x.shape[0]), catalog_size, fitted_at)
        return cls(feature_version, x.mean(axis=0), x.std(axis=0), int(x.shape[0]),
                   catalog_size, fitted_at)

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
            "catalog_size": self.catalog_size,
            "fitted_at": self.fitted_at,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Normalizer:
        """The normaliser stored as :meth:`to_json` wrote it; :class:`CorruptRecord` for
        bytes that are not one (truncated, hand-edited, another file's)."""
        try:
            doc = json.loads(data)
            mean = np.asarray(doc["mean"], dtype=np.float64)
            std = np.asarray(doc["std"], dtype=np.float64)
            normalizer = cls(str(doc["feature_version"]), mean, std, int(doc["fitted_on"]),
                             int(doc.get("catalog_size") or 0), str(doc.get("fitted_at") or ""))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptRecord(f"the stored normaliser is not valid JSON of one "
                                f"({type(exc).__name__}: {exc})") from None
        if mean.ndim != 1 or mean.shape != std.shape or not (
                np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
            raise CorruptRecord(f"the stored normaliser's mean and std are not two finite "
                                f"vectors of one length ({mean.shape}, {std.shape})")
        return normalizer


def needs_refit(normalizer: Normalizer, catalog_size: int, growth: float) -> bool:
    """Whether a catalog of ``catalog_size`` records has outgrown the normaliser: it holds
    at least ``growth`` times the records the normaliser's sample was drawn from (refits
    then happen at geometric sizes: their total cost stays proportional to the catalog).
    ``growth`` <= 1 turns automatic refits off."""
    return growth > 1 and catalog_size >= growth * max(normalizer.catalog_size, 1)


def reservoir_sample(items: Iterable[T], size: int, *, seed: int = 0) -> tuple[list[T], int]:
    """A uniform sample of at most ``size`` items in one pass (Vitter's algorithm R) and
    how many items there were. Memory: ``size`` items, whatever the stream holds.
    Seeded: the same stream gives the same sample (a refit is reproducible)."""
    if size < 1:
        raise ValueError("the sample size must be at least 1")
    rng = random.Random(seed)
    sample: list[T] = []
    seen = 0
    for item in items:
        seen += 1
        if len(sample) < size:
            sample.append(item)
        else:
            slot = rng.randrange(seen)
            if slot < size:
                sample[slot] = item
    return sample, seen


def normalizer_key(feature_version: str) -> str:
    """The current normaliser of a feature version."""
    return f"normalizers/{feature_version}.json"


def normalizer_history_key(feature_version: str, version: str) -> str:
    """Every normaliser ever fitted, by its own version (what an index was built with)."""
    return f"normalizers/{feature_version}/{version}.json"


def indexed_marker_key(feature_version: str, index_url: str) -> str:
    """Names the normaliser an index was last wholly normalised with (one per index:
    several indexes may share a store)."""
    digest = hashlib.sha1(index_url.encode()).hexdigest()[:12]
    return f"normalizers/{feature_version}/indexed-{digest}.json"
