"""reducer/reduce.py: the normaliser fits a sample of the catalog, is refitted as the
catalog grows, and the index is re-normalised (idempotently) when it changes.

Real store (a folder) and real index (embedded LanceDB); no Redis needed for these paths.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from contract.jobs import vector_id
from contract.layout import FEATURE_VERSION, VECTOR_DIM
from contract.records import encode_record
from contract.settings import Settings
from contract.store.local import LocalStore
from reducer.index.embedded import EmbeddedIndex
from reducer.normalize import Normalizer, normalizer_history_key, normalizer_key
from reducer.reduce import Reducer
from testkit.records import synthetic_record


def store_records(store: LocalStore, ids: range, scale: float = 1.0) -> None:
    for i in ids:
        record = synthetic_record(i, scale=scale)
        store.put(record.key, encode_record(record))


@pytest.fixture
def reducer(tmp_path: Path) -> Reducer:
    settings = Settings(store=str(tmp_path / "store"), index=str(tmp_path / "index"),
                        normalizer_sample=50, normalizer_refit_growth=2.0)
    return Reducer(settings=settings, store=LocalStore(settings.store),
                   index=EmbeddedIndex(settings.index, VECTOR_DIM), runs=None)  # type: ignore[arg-type]


def normalizers_of(reducer: Reducer, ids: range) -> set[str]:
    return {item.metadata["normalizer"]
            for item in reducer.index.get([vector_id(f"rec-{i:07d}") for i in ids])}


def test_the_fit_samples_at_most_n_records_and_knows_the_catalog(reducer: Reducer) -> None:
    store_records(reducer.store, range(120))
    norm = reducer.normalizer()
    assert (norm.fitted_on, norm.catalog_size) == (50, 120)
    stored = Normalizer.from_json(reducer.store.get(normalizer_key(FEATURE_VERSION)))
    assert stored.version == norm.version
    assert reducer.store.exists(normalizer_history_key(FEATURE_VERSION, norm.version))


def test_the_index_is_renormalised_once_the_catalog_doubles(reducer: Reducer) -> None:
    """Given an index of 30 records normalised on them, when it grows to 60 records of a
    wider distribution, expect a refit on a sample of all 60 and every vector (old ones
    too) normalised by the new normaliser."""
    store_records(reducer.store, range(30))
    assert reducer.reindex() == 30
    first = reducer.normalizer()
    assert first.catalog_size == 30 and normalizers_of(reducer, range(30)) == {first.version}
    assert reducer.maintain_normalizer() is False  # nothing grew

    store_records(reducer.store, range(30, 60), scale=5.0)
    reducer.index.upsert(reducer.items_for([synthetic_record(i, scale=5.0)
                                            for i in range(30, 60)]))
    assert reducer.maintain_normalizer() is True

    second = reducer.normalizer()
    assert second.version != first.version and second.catalog_size == 60
    assert normalizers_of(reducer, range(60)) == {second.version}
    assert reducer.indexed_with() == second.version
    assert reducer.maintain_normalizer() is False  # done: idempotent


def test_a_renormalisation_cut_short_is_redone_by_the_next_reducer(reducer: Reducer) -> None:
    """Given a refit whose re-normalisation died before its end (the index's marker still
    names the old normaliser), expect a fresh reducer to redo it, to the same result."""
    store_records(reducer.store, range(40))
    reducer.reindex()
    old = reducer.indexed_with()
    store_records(reducer.store, range(40, 45), scale=3.0)
    reducer._fit()  # a refit stored, its re-normalisation never done
    fresh = dataclasses.replace(reducer, _normalizer=None, _indexed_with=None)
    assert fresh.indexed_with() == old != fresh.normalizer().version
    assert fresh.maintain_normalizer() is True
    assert normalizers_of(fresh, range(45)) == {fresh.normalizer().version}
    vectors = [item.values for item in fresh.index.get([vector_id("rec-0000003")])]
    assert fresh.maintain_normalizer() is False
    again = [item.values for item in fresh.index.get([vector_id("rec-0000003")])]
    np.testing.assert_array_equal(vectors, again)
    assert fresh.index.count() == 45  # the stored records not yet indexed too


def test_the_first_fit_on_an_empty_index_renormalises_nothing(reducer: Reducer) -> None:
    store_records(reducer.store, range(10))
    assert reducer.maintain_normalizer() is False
    assert reducer.indexed_with() == reducer.normalizer().version
    assert reducer.index.count() == 0


def test_growth_1_turns_automatic_refits_off(reducer: Reducer) -> None:
    store_records(reducer.store, range(10))
    reducer.reindex()
    fixed = dataclasses.replace(reducer, settings=dataclasses.replace(
        reducer.settings, normalizer_refit_growth=1.0))
    store_records(reducer.store, range(10, 100))
    fixed.index.upsert(fixed.items_for([synthetic_record(i) for i in range(10, 100)]))
    version = fixed.normalizer().version
    assert fixed.maintain_normalizer() is False and fixed.normalizer().version == version


def test_a_query_never_fits_a_normaliser(reducer: Reducer) -> None:
    """Given stored records that were never reduced, expect a query by vector to find
    nothing and to write nothing (a query is a read: an API may hold read-only store
    credentials); given an index whose normaliser was deleted, expect a typed index error
    that says how to rebuild it, not a normaliser fitted afresh that its vectors do not
    match."""
    from contract.errors import VectorIndexError

    store_records(reducer.store, range(20))
    query = synthetic_record(3).vector_array()
    assert reducer.similar_to_vector(query, 5) == []
    assert not reducer.store.exists(normalizer_key(reducer.version))
    assert not list(reducer.store.iter_keys("normalizers/"))

    reducer.reindex()
    assert [m.id for m in reducer.similar_to_vector(query, 1)] == [vector_id("rec-0000003")]
    reducer.store.delete(normalizer_key(reducer.version))
    fresh = Reducer(settings=reducer.settings, store=reducer.store, index=reducer.index,
                    runs=None)  # type: ignore[arg-type]
    with pytest.raises(VectorIndexError, match="reindex --refit"):
        fresh.similar_to_vector(query, 5)
