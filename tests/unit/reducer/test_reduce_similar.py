"""The similar-recordings query helpers shared by the CLI and the API (reducer/reduce.py)."""

from __future__ import annotations

import pytest

from contract.errors import InvalidQuery
from contract.layout import DESCRIPTORS
from reducer.index import FILTER_FIELDS, Match
from reducer.index.base import normalize_filter
from reducer.reduce import match_descriptors, similar_filter


def test_no_bounds_is_no_filter() -> None:
    assert similar_filter() is None


def test_every_bound_becomes_a_condition_the_index_accepts() -> None:
    where = similar_filter(tempo_min=90.0, tempo_max=120.5, key="F#", mode="minor")
    assert where == {"tempo_bpm": {"$gte": 90.0, "$lte": 120.5}, "key": "F#", "mode": "minor"}
    assert normalize_filter(where)
    assert similar_filter(tempo_max=0.0) == {"tempo_bpm": {"$lte": 0.0}}  # 0 is a bound


def test_a_tempo_range_that_holds_nothing_is_refused() -> None:
    with pytest.raises(InvalidQuery, match="above tempo_max"):
        similar_filter(tempo_min=200.0, tempo_max=100.0)
    assert similar_filter(tempo_min=100.0, tempo_max=100.0)  # one tempo is a range


def test_match_descriptors_leave_out_our_own_keys() -> None:
    match = Match("v1", 0.9, {"recording_id": "r1", "normalizer": "n1", "tempo_bpm": 120.0,
                              "key": "A", "artist": "X"})
    assert match_descriptors(match) == {"tempo_bpm": 120.0, "key": "A", "artist": "X"}


def test_every_descriptor_is_filterable() -> None:
    assert FILTER_FIELDS == DESCRIPTORS
