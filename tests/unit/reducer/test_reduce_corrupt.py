"""reducer/reduce.py: a record that cannot be decoded is logged with its key and
skipped by the normaliser's fit, a reindex and a query; it never stops them.

Real store (a folder) and real index (embedded LanceDB); no Redis needed for these paths.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from contract.errors import NothingStored
from contract.layout import FEATURE_VERSION, VECTOR_DIM
from contract.records import encode_record
from contract.settings import Settings
from contract.store.local import LocalStore
from reducer.index.embedded import EmbeddedIndex
from reducer.normalize import Normalizer, normalizer_key, reservoir_sample
from reducer.reduce import Reducer
from testkit.records import synthetic_record

SAMPLE = 50


@pytest.fixture
def reducer(tmp_path: Path) -> Reducer:
    settings = Settings(store=str(tmp_path / "store"), index=str(tmp_path / "index"),
                        normalizer_sample=SAMPLE)
    return Reducer(settings=settings, store=LocalStore(settings.store),
                   index=EmbeddedIndex(settings.index, VECTOR_DIM), runs=None)  # type: ignore[arg-type]


def store_records(store: LocalStore, n: int) -> list[str]:
    keys = []
    for i in range(n):
        record = synthetic_record(i)
        store.put(record.key, encode_record(record))
        keys.append(record.key)
    return keys


def sampled_key(reducer: Reducer) -> str:
    """A key the (seeded) fit sample draws."""
    keys, _ = reservoir_sample(reducer.store.iter_keys(f"features/{FEATURE_VERSION}/"),
                               SAMPLE)
    return sorted(keys)[0]


def test_a_corrupt_record_in_the_fit_sample_is_replaced_and_named(
        reducer: Reducer, caplog: pytest.LogCaptureFixture) -> None:
    """Given 80 records, one of those the seeded sample draws truncated, expect a fit on
    a full sample of 50 readable records, a reindex of the 79 others, and the key logged."""
    store_records(reducer.store, 80)
    bad = sampled_key(reducer)
    reducer.store.put(bad, reducer.store.get(bad)[:100])
    with caplog.at_level(logging.ERROR, logger="reducer.reduce"):
        assert reducer.reindex() == 79
    assert reducer.normalizer().fitted_on == SAMPLE
    assert reducer.index.count() == 79
    assert any(bad in r.getMessage() and "corrupt_record" in r.getMessage()
               for r in caplog.records)


def test_a_catalog_smaller_than_the_sample_fits_on_its_readable_records(
        reducer: Reducer) -> None:
    keys = store_records(reducer.store, 10)
    reducer.store.put(keys[3], b"{not json")
    assert reducer.reindex() == 9
    assert reducer.normalizer().fitted_on == 9


def test_only_corrupt_records_is_nothing_stored_not_a_crash(reducer: Reducer) -> None:
    for key in store_records(reducer.store, 3):
        reducer.store.put(key, b"\xff\xfe")
    with pytest.raises(NothingStored, match="no readable records"):
        reducer.reindex()


def test_a_query_is_not_stopped_by_a_corrupt_record_in_the_sample(reducer: Reducer) -> None:
    store_records(reducer.store, 80)
    bad = sampled_key(reducer)
    reducer.store.put(bad, b"")
    assert reducer.reindex() == 79
    # A refit with no stored normaliser draws the same seeded sample, corrupt record and
    # all, and fits too (queries never fit one: reduce.py, _query_normalizer).
    reducer.store.delete(normalizer_key(FEATURE_VERSION))
    reducer._normalizer = None
    assert reducer.reindex(refit=True) == 79
    matches = reducer.similar("rec-0000001", 3)
    assert len(matches) == 3 and all(m.id for m in matches)


def test_a_record_under_another_recordings_key_is_skipped_not_indexed_twice(
        reducer: Reducer, caplog: pytest.LogCaptureFixture) -> None:
    """Given record 3 also stored under record 60's key, expect a reindex of 60 records
    (record 60's key skipped and named in the log), not 61 upserts for 60 vectors."""
    keys = store_records(reducer.store, 61)
    reducer.store.put(keys[60], encode_record(synthetic_record(3)))
    with caplog.at_level(logging.ERROR, logger="reducer.reduce"):
        assert reducer.reindex() == 60
    assert reducer.index.count() == 60
    assert any(keys[60] in r.getMessage() and "rec-0000003" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("damage", [b"", b"{not json", b'{"mean": [1, 2]}', b"[]",
                                    b'{"feature_version": "pv8", "mean": [0.0, 1.0], '
                                    b'"std": [1.0], "fitted_on": 10}'])
def test_an_unreadable_stored_normaliser_is_fitted_anew_by_the_reducer_and_named_to_a_query(
        reducer: Reducer, damage: bytes, caplog: pytest.LogCaptureFixture) -> None:
    from contract.records import CorruptRecord

    store_records(reducer.store, 80)
    assert reducer.reindex() == 80
    key = normalizer_key(FEATURE_VERSION)
    good = reducer.store.get(key)
    reducer.store.put(key, damage)
    reducer._normalizer = None
    # A query only reads: a typed error naming the file and the fix, never a traceback.
    with pytest.raises(CorruptRecord, match=r"normalizers/.*reindex --refit"):
        reducer.similar("rec-0000001", 3)
    # The reducer's own path fits a new one (derived data) and carries on.
    with caplog.at_level(logging.ERROR, logger="reducer.reduce"):
        assert reducer.reindex() == 80
    assert any("fitting a new one" in r.getMessage() for r in caplog.records)
    # The same seeded sample: the same normaliser (its version hashes mean and std).
    assert Normalizer.from_json(reducer.store.get(key)).version == \
        Normalizer.from_json(good).version
    assert len(reducer.similar("rec-0000001", 3)) == 3


def test_similar_asks_an_index_with_a_top_k_cap_for_no_more(reducer: Reducer) -> None:
    """An index that answers at most ``max_k`` (Vectorize: 100) is asked for at most that,
    not k + 1: k at the cap answers; above it, InvalidQuery names the cap."""
    from contract.errors import InvalidQuery

    store_records(reducer.store, 80)
    reducer.reindex()
    reducer.index.max_k = 5  # type: ignore[attr-defined]
    matches = reducer.similar("rec-0000001", 5)
    assert 4 <= len(matches) <= 5 and all(m.id for m in matches)
    with pytest.raises(InvalidQuery, match="at most 5"):
        reducer.similar("rec-0000001", 6)


def refused_records(store: LocalStore) -> list[str]:
    """Records 0-9, two of which decode but make items the index refuses: record 3 with a
    tempo that is text, record 6 with a title over the index's metadata limit."""
    keys = []
    for i in range(10):
        record = synthetic_record(i)
        if i == 3:
            record.descriptors["tempo_bpm"] = "fast"
        if i == 6:
            record.provenance["title"] = "T" * 20_000
        store.put(record.key, encode_record(record))
        keys.append(record.key)
    return keys


def test_a_record_the_index_refuses_is_skipped_and_named_by_a_reindex(
        reducer: Reducer, caplog: pytest.LogCaptureFixture) -> None:
    """Given 10 records, two of which the index refuses (InvalidIndexItem), expect a
    reindex of the 8 others with each refused key logged, not a reindex that fails whole
    (exit 5, as if the index were down) and indexes nothing."""
    keys = refused_records(reducer.store)
    with caplog.at_level(logging.ERROR, logger="reducer.reduce"):
        assert reducer.reindex() == 8
    assert reducer.index.count() == 8
    for bad in (keys[3], keys[6]):
        assert any(bad in r.getMessage() and "invalid_index_item" in r.getMessage()
                   for r in caplog.records)


def test_a_ready_record_the_index_refuses_is_parked_not_a_stuck_queue(
        tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Given the same 10 records queued ready (real Redis), expect one reduce pass to index
    the 8 others, park the two refused keys in the dead-letter queue and empty the ready
    queue; before, the whole batch failed on every pass and stayed queued for good."""
    from contract.state import DEAD_LETTER_QUEUE, Runs, connect

    connect(redis_url).flushdb()
    settings = Settings(store=str(tmp_path / "store"), index=str(tmp_path / "index"),
                        broker_url=redis_url)
    runs = Runs.from_url(redis_url, retry=False)
    reducer = Reducer(settings=settings, store=LocalStore(settings.store),
                      index=EmbeddedIndex(settings.index, VECTOR_DIM), runs=runs)
    keys = refused_records(reducer.store)
    for key in keys:
        runs.push_ready(key)
    with caplog.at_level(logging.ERROR, logger="reducer.reduce"):
        assert reducer.drain() == 10
    assert reducer.index.count() == 8
    assert runs.ready_depth() == 0
    assert sorted(connect(redis_url).lrange(DEAD_LETTER_QUEUE, 0, -1)) == \
        sorted([keys[3], keys[6]])
    assert any(keys[3] in r.getMessage() and "parked" in r.getMessage()
               for r in caplog.records)
