"""The vector layout is a contract: names, order and version are stable."""

import re

from contract.layout import (
    DESCRIPTOR_DIMENSIONS,
    EARLIER_VERSIONS,
    FEATURE_VERSION,
    FMA_DIM,
    VECTOR_DIM,
    feature_names,
    fma_names,
    is_readable_version,
    names_hash,
)


def test_fma_block_has_518_names_in_fma_order():
    names = fma_names()
    assert len(names) == FMA_DIM == 518
    assert len(set(names)) == 518
    assert all(
        re.fullmatch(r"[a-z_]+\.(mean|std|skew|kurtosis|median|min|max)\.\d\d", n) for n in names
    )
    # FMA's features.csv columns are sorted (feature, statistic, number) tuples.
    assert names[0] == "chroma_cens.kurtosis.01"
    assert names[-1] == "zcr.std.01"
    assert "mfcc.mean.01" in names and "mfcc.max.20" in names
    assert "chroma_cqt.kurtosis.12" in names and "spectral_contrast.std.07" in names
    assert "tonnetz.median.06" in names and "rmse.mean.01" in names


def test_full_vector_is_fma_then_descriptors():
    names = feature_names()
    assert len(names) == VECTOR_DIM == 518 + len(DESCRIPTOR_DIMENSIONS)
    assert names[518:] == DESCRIPTOR_DIMENSIONS
    assert "rhythm.tempo_bpm" in names and "loudness.integrated_lufs" in names


def test_layout_hash_is_pinned_to_the_feature_version():
    # Changing a name or order must come with a new FEATURE_VERSION (and this pin).
    # pv3 changed values only (the FMA block at the clip's own rate): same names as pv2;
    # pv4 only the tempo values; pv5 danceability's and multichannel loudness's values;
    # pv6 the tempo and beat confidence of clips with a silent lead-in or tail; pv7 those
    # of clips with a silent gap, without onsets, or at rates off 22.05 kHz multiples; pv8
    # every FFT-based value by float32 rounding.
    assert FEATURE_VERSION == "pv8"
    assert names_hash() == PINNED_HASH


def test_earlier_computations_of_the_layout_stay_readable():
    assert EARLIER_VERSIONS == ("pv2", "pv3", "pv4", "pv5", "pv6", "pv7")
    assert is_readable_version(FEATURE_VERSION) and is_readable_version("pv2")
    assert is_readable_version("pv3")
    assert not is_readable_version("pv1")  # another layout
    assert is_readable_version("pv4") and is_readable_version("pv5")
    assert is_readable_version("pv6") and is_readable_version("pv7")
    assert not is_readable_version("pv9")  # a later computation


PINNED_HASH = "c7220c90098062839c26a6e861bdac5bf3126e0df101512d079ce022c38159fd"
