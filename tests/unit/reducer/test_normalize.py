"""reducer/normalize.py: the z-scoring normaliser on samples with known answers."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from reducer.normalize import CLIP_Z, MIN_STD, Normalizer, normalizer_key

# A textbook sample: mean 5, population standard deviation 2.
SAMPLE = np.array([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])


def fitted(columns: list[np.ndarray], version: str = "pv2") -> Normalizer:
    return Normalizer.fit(np.stack(columns, axis=1), version)


def test_fit_is_the_population_mean_and_deviation_per_dimension() -> None:
    norm = fitted([SAMPLE, SAMPLE * 10 + 1])
    np.testing.assert_array_equal(norm.mean, [5.0, 51.0])
    np.testing.assert_array_equal(norm.std, [2.0, 20.0])
    assert norm.fitted_on == len(SAMPLE) and norm.feature_version == "pv2"


def test_z_scores_of_a_known_sample() -> None:
    norm = fitted([SAMPLE, SAMPLE * 10 + 1])
    z = norm.apply(np.stack([SAMPLE, SAMPLE * 10 + 1], axis=1))
    expected = [-1.5, -0.5, -0.5, -0.5, 0.0, 0.0, 1.0, 2.0]
    np.testing.assert_array_equal(z[:, 0], expected)
    np.testing.assert_allclose(z[:, 1], expected, rtol=0, atol=1e-6)
    assert z.dtype == np.float32 and z.shape == (len(SAMPLE), 2)


def test_one_vector_is_normalised_like_a_row() -> None:
    norm = fitted([SAMPLE, -SAMPLE])
    np.testing.assert_array_equal(norm.apply(np.array([9.0, -9.0])), [2.0, -2.0])
    assert norm.apply(np.array([9.0, -9.0])).shape == (2,)


def test_z_scores_are_clipped_at_plus_minus_8() -> None:
    norm = fitted([SAMPLE])  # mean 5, std 2
    raw = np.array([[5 + 2 * 7.5], [5 + 2 * 8], [5 + 2 * 8.5], [1e12], [5 - 2 * 9], [-1e300]])
    np.testing.assert_array_equal(norm.apply(raw)[:, 0], [7.5, CLIP_Z, CLIP_Z, CLIP_Z,
                                                          -CLIP_Z, -CLIP_Z])
    assert CLIP_Z == 8.0


def test_a_constant_dimension_maps_to_zero_not_nan() -> None:
    norm = fitted([SAMPLE, np.full(len(SAMPLE), 3.0), SAMPLE * 1e-12])
    assert norm.std[1] == 0.0 and norm.std[2] < MIN_STD
    z = norm.apply(np.array([[9.0, 1e6, 1.0], [5.0, 3.0, -1.0]]))
    np.testing.assert_array_equal(z[:, 1:], 0.0)
    assert np.all(np.isfinite(z))


def test_version_is_a_hash_of_the_parameters() -> None:
    norm = fitted([SAMPLE, SAMPLE * 3])
    digest = hashlib.sha256(np.array([5.0, 15.0]).tobytes() + np.array([2.0, 6.0]).tobytes())
    assert norm.version == digest.hexdigest()[:16]
    # Same parameters: same version, whatever the sample size or feature version label.
    again = Normalizer("other", norm.mean.copy(), norm.std.copy(), fitted_on=1)
    assert again.version == norm.version
    # Any change of a parameter, however small, is a new version.
    nudged = norm.mean.copy()
    nudged[1] = np.nextafter(nudged[1], np.inf)
    assert Normalizer("pv2", nudged, norm.std, norm.fitted_on).version != norm.version
    assert fitted([SAMPLE + 1, SAMPLE * 3]).version != norm.version


def test_json_round_trip_keeps_the_version_and_the_values() -> None:
    rng = np.random.default_rng(3)
    norm = Normalizer.fit(rng.standard_normal((50, 7)) * 1e3 + 1 / 3, "pv2")
    doc = json.loads(norm.to_json())
    assert doc["version"] == norm.version and doc["fitted_on"] == 50
    assert doc["feature_version"] == "pv2"
    back = Normalizer.from_json(norm.to_json())
    assert back.version == norm.version
    np.testing.assert_array_equal(back.mean, norm.mean)
    np.testing.assert_array_equal(back.std, norm.std)
    probe = rng.standard_normal((4, 7))
    np.testing.assert_array_equal(back.apply(probe), norm.apply(probe))


def test_normalizer_key_names_the_feature_version() -> None:
    assert normalizer_key("pv2") == "normalizers/pv2.json"


@pytest.mark.parametrize("vectors", [np.zeros((0, 3)), np.zeros(3), np.zeros((2, 3, 1))])
def test_fit_refuses_no_vectors_or_the_wrong_shape(vectors: np.ndarray) -> None:
    with pytest.raises(ValueError):
        Normalizer.fit(vectors, "pv2")


@pytest.mark.parametrize("shape", [(4,), (2,), (3, 4), (3, 2), (3, 1), (1,)])
def test_apply_refuses_vectors_of_another_dimension(shape: tuple[int, ...]) -> None:
    norm = fitted([SAMPLE, SAMPLE, SAMPLE])  # dimension 3
    with pytest.raises(ValueError):
        norm.apply(np.ones(shape))


# ------------------------------------------------------------------ samples and refits


def test_a_reservoir_sample_is_uniform_bounded_and_counts_the_stream() -> None:
    from reducer.normalize import reservoir_sample

    sample, seen = reservoir_sample(range(10), 20)
    assert sorted(sample) == list(range(10)) and seen == 10
    hits = np.zeros(100)
    for seed in range(2000):
        sample, seen = reservoir_sample(range(100), 10, seed=seed)
        assert len(sample) == 10 == len(set(sample)) and seen == 100
        hits[sample] += 1
    # Each item is kept with probability 10/100: 200 times of 2000 expected, sd ≈ 13.4.
    assert np.all(np.abs(hits - 200) < 6 * 13.4)
    assert reservoir_sample(range(100), 10, seed=3) == reservoir_sample(range(100), 10, seed=3)


def test_a_reservoir_sample_needs_room() -> None:
    from reducer.normalize import reservoir_sample

    with pytest.raises(ValueError):
        reservoir_sample([1], 0)


def test_refits_happen_once_the_catalog_has_grown_the_factor() -> None:
    from reducer.normalize import needs_refit

    norm = Normalizer.fit(np.stack([SAMPLE]), "pv2", catalog_size=1000)
    assert norm.fitted_on == 1 and norm.catalog_size == 1000
    assert not needs_refit(norm, 1999, 2.0)
    assert needs_refit(norm, 2000, 2.0)
    assert not needs_refit(norm, 10**9, 1.0)  # growth <= 1: never automatically
    assert not needs_refit(norm, 10**9, 0.0)


def test_sample_and_catalog_sizes_survive_storage_and_old_files_read() -> None:
    norm = Normalizer.fit(np.stack([SAMPLE, SAMPLE]), "pv2", catalog_size=50,
                          fitted_at="2026-01-01T00:00:00Z")
    again = Normalizer.from_json(norm.to_json())
    assert (again.fitted_on, again.catalog_size, again.fitted_at) == (2, 50,
                                                                    "2026-01-01T00:00:00Z")
    assert again.version == norm.version
    old = json.loads(norm.to_json())
    del old["catalog_size"], old["fitted_at"]
    legacy = Normalizer.from_json(json.dumps(old).encode())
    assert legacy.catalog_size == legacy.fitted_on == 2  # it saw what it was fitted on


def test_one_record_fits_the_identity_not_a_zero_vector() -> None:
    """Fitted on a single record every dimension is constant and would map that record to
    the zero vector, which the index refuses (a reducer died on it under an S3 outage)."""
    one = np.stack([SAMPLE])
    norm = Normalizer.fit(one, "pv4", catalog_size=1)
    out = norm.apply(one)
    assert np.linalg.norm(out) > 0
    from reducer.normalize import needs_refit

    assert needs_refit(norm, 2, 2.0)
