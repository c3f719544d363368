"""Vector index: the same behaviour tests on the embedded LanceDB index and on the Vectorize
client.

The Vectorize runs are contract tests against a local server that speaks Vectorize's
documented HTTP API (tests/contract/vectorize_server.py); not the real service.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from contract.errors import ConfigError
from contract.settings import Settings
from reducer.index import (
    FILTER_FIELDS,
    IndexItem,
    IndexRejected,
    IndexUnavailable,
    InvalidFilter,
    InvalidIndexItem,
    VectorIndex,
    open_index,
)
from reducer.index.base import normalize_filter
from reducer.index.embedded import EmbeddedIndex, filter_to_sql
from reducer.index.vectorize import VectorizeIndex
from tests.contract.vectorize_server import VectorizeContractServer

DIM = 32  # small for speed; the layout's 530-d vectors are used in the throughput test
KEYS = ("C", "G", "D", "A", "E", "B", "F#", "C#", "F", "Bb", "Eb", "Ab")


def make_items(n: int, *, seed: int = 0, dim: int = DIM, prefix: str = "rec") -> list[IndexItem]:
    """Random unit-ish vectors; mode alternates, tempo = 60 + 2·i, key cycles."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((n, dim)).astype(np.float32)
    return [
        IndexItem(
            f"{prefix}-{i:05d}",
            values[i],
            {
                "mode": "minor" if i % 2 else "major",
                "tempo_bpm": 60.0 + 2 * i,
                "key": KEYS[i % len(KEYS)],
                "energy": round(float(i % 10) / 10, 2),
                "title": f"Song {i}",
            },
        )
        for i in range(n)
    ]


@pytest.fixture
def contract_server() -> Iterator[VectorizeContractServer]:
    with VectorizeContractServer(dimensions=DIM, apply_delay_s=0.05) as server:
        yield server


def vectorize_client(server: VectorizeContractServer, **overrides) -> VectorizeIndex:
    options = dict(
        account_id=server.account_id,
        api_token=server.token,
        dim=DIM,
        base_url=server.base_url,
        backoff_base_s=0.01,
        backoff_max_s=0.2,
        poll_interval_s=0.02,
    )
    options.update(overrides)
    return VectorizeIndex(server.index_name, **options)


@pytest.fixture(params=["embedded", "vectorize-contract"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> VectorIndex:
    if request.param == "embedded":
        return EmbeddedIndex(tmp_path / "index", DIM)
    return vectorize_client(request.getfixturevalue("contract_server"))


def total_calls(server: VectorizeContractServer) -> int:
    return sum(server.calls.values())


# --- both backends ----------------------------------------------------------------------


def test_upsert_get_count(index: VectorIndex) -> None:
    items = make_items(200)
    index.upsert(items)
    index.wait_for_writes(10)
    assert index.count() == 200
    got = index.get(["rec-00007", "missing", "rec-00003"])
    assert [g.id for g in got] == ["rec-00007", "rec-00003"]
    np.testing.assert_array_equal(np.asarray(got[0].values), items[7].values)
    assert got[1].metadata == items[3].metadata


def test_contains_answers_which_ids_are_held(index: VectorIndex) -> None:
    """What the reducer asks for a skipped job's record instead of a set in Redis."""
    assert index.contains(["rec-00001"]) == set()  # empty index
    index.upsert(make_items(60))
    index.wait_for_writes(10)
    asked = [f"rec-{i:05d}" for i in range(0, 120, 3)] + ["rec-00003", "other"]
    assert index.contains(asked) == {f"rec-{i:05d}" for i in range(0, 60, 3)}
    assert index.contains([]) == set()


def test_reupsert_replaces_and_never_duplicates(index: VectorIndex) -> None:
    index.upsert(make_items(100, seed=1))
    index.wait_for_writes(10)
    newer = make_items(100, seed=2)
    for item in newer:
        item.metadata["title"] = "replaced"
    index.upsert(newer)
    index.upsert(newer[:10])  # and once more: still no duplicates
    index.wait_for_writes(10)
    assert index.count() == 100
    got = index.get([item.id for item in newer])
    assert len(got) == 100
    for stored, item in zip(got, newer, strict=True):
        np.testing.assert_array_equal(np.asarray(stored.values), item.values)
        assert stored.metadata["title"] == "replaced"
    top = index.query(newer[5].values, 3)
    assert top[0].id == newer[5].id
    assert len({m.id for m in top}) == 3


def test_duplicate_ids_in_one_batch_keep_the_last(index: VectorIndex) -> None:
    first, second = make_items(1, seed=3)[0], make_items(1, seed=4)[0]
    index.upsert([first, second])
    index.wait_for_writes(10)
    assert index.count() == 1
    np.testing.assert_array_equal(np.asarray(index.get([first.id])[0].values), second.values)


def test_query_finds_itself_first(index: VectorIndex) -> None:
    items = make_items(300, seed=5)
    index.upsert(items)
    index.wait_for_writes(10)
    for item in items[::60]:
        matches = index.query(item.values, 5)
        assert matches[0].id == item.id
        assert matches[0].score == pytest.approx(1.0, abs=1e-5)
        assert matches[0].metadata == item.metadata
        scores = [m.score for m in matches]
        assert scores == sorted(scores, reverse=True)


def test_query_more_than_twenty_still_has_metadata(index: VectorIndex) -> None:
    items = make_items(60, seed=6)
    index.upsert(items)
    index.wait_for_writes(10)
    matches = index.query(items[0].values, 30)
    assert len(matches) == 30
    assert all(m.metadata.get("title") for m in matches)


def test_filter_by_mode_and_tempo_range(index: VectorIndex) -> None:
    items = make_items(60, seed=7)
    index.upsert(items)
    index.wait_for_writes(10)
    query = items[0].values
    wanted = {
        item.id
        for item in items
        if item.metadata["mode"] == "minor" and 90 <= item.metadata["tempo_bpm"] <= 110
    }
    assert 3 <= len(wanted) <= 20
    matches = index.query(
        query, 20, filter={"mode": "minor", "tempo_bpm": {"$gte": 90, "$lte": 110}}
    )
    assert {m.id for m in matches} == wanted
    assert all(m.metadata["mode"] == "minor" for m in matches)

    in_keys = index.query(query, 20, filter={"key": {"$in": ["C", "G"]}, "tempo_bpm": {"$lt": 90}})
    assert {m.id for m in in_keys} == {
        i.id for i in items if i.metadata["key"] in ("C", "G") and i.metadata["tempo_bpm"] < 90
    }
    major = index.query(query, 20, filter={"mode": {"$ne": "minor"}, "tempo_bpm": {"$gt": 130}})
    assert {m.id for m in major} == {
        i.id for i in items if i.metadata["mode"] == "major" and i.metadata["tempo_bpm"] > 130
    }
    nin = index.query(query, 20, filter={"key": {"$nin": list(KEYS[1:])}})
    assert {m.id for m in nin} == {i.id for i in items if i.metadata["key"] == "C"}
    # A hostile string is just a value that matches nothing.
    assert index.query(query, 5, filter={"mode": "x' OR '1'='1"}) == []


def test_invalid_filters_are_typed_errors(index: VectorIndex) -> None:
    vector = make_items(1)[0].values
    bad = [
        {"title": "Song 1"},  # not a filterable field
        {"tempo_bpm": {"$regex": "1"}},
        {"tempo_bpm": "fast"},
        {"mode": {"$in": "minor"}},
        {"energy": {"$gt": float("nan")}},
        {"`mode`; drop table vectors; --": "x"},
    ]
    for spec in bad:
        with pytest.raises(InvalidFilter):
            index.query(vector, 3, filter=spec)


def test_invalid_items_are_refused_before_anything_is_sent(
    index: VectorIndex, request: pytest.FixtureRequest
) -> None:
    server = (
        request.getfixturevalue("contract_server") if isinstance(index, VectorizeIndex) else None
    )
    before = total_calls(server) if server else 0
    good = make_items(3, seed=8)
    too_long = IndexItem("x" * 65, good[0].values, {})
    multibyte = IndexItem("é" * 33, good[0].values, {})  # 33 chars but 66 bytes
    too_big = IndexItem("big", good[0].values, {"blob": "a" * (10 * 1024)})
    wrong_dim = IndexItem("dim", np.ones(DIM + 1, np.float32), {})
    not_finite = IndexItem("nan", np.full(DIM, np.nan, np.float32), {})
    zero = IndexItem("zero", np.zeros(DIM, np.float32), {})
    bad_key = IndexItem("key", good[0].values, {"a.b": 1})
    bad_type = IndexItem("type", good[0].values, {"tempo_bpm": "120"})
    for bad in (too_long, multibyte, too_big, wrong_dim, not_finite, zero, bad_key, bad_type):
        with pytest.raises(InvalidIndexItem) as info:
            index.upsert([*good, bad])
        assert info.value.code == "invalid_index_item"
    if server:
        assert total_calls(server) == before  # validated before any request
    index.wait_for_writes(10)
    assert index.count() == 0  # and the good items of a refused batch were not written


def test_delete(index: VectorIndex) -> None:
    items = make_items(50, seed=9)
    index.upsert(items)
    index.wait_for_writes(10)
    index.delete([items[0].id, items[1].id, "never-existed"])
    index.wait_for_writes(10)
    assert index.count() == 48
    assert index.get([items[0].id, items[2].id])[0].id == items[2].id
    assert all(m.id != items[0].id for m in index.query(items[0].values, 10))


def test_batches_over_5000(index: VectorIndex, request: pytest.FixtureRequest) -> None:
    items = make_items(10_001, seed=10)
    index.upsert(items)
    index.wait_for_writes(30)
    assert index.count() == 10_001
    if isinstance(index, VectorizeIndex):
        server = request.getfixturevalue("contract_server")
        assert server.calls["upsert"] == 3  # 5000 + 5000 + 1: the API's per-request limit


def test_an_index_it_cannot_write_is_a_typed_error(tmp_path: Path) -> None:
    """The write lock beside the table cannot be opened (here a folder in its place; a
    read-only mount in the field raised EROFS): an index error, not an OSError trace."""
    from contract.errors import VectorIndexError
    from reducer.index.embedded import WRITE_LOCK_FILE

    index = EmbeddedIndex(tmp_path / "index", DIM)
    (tmp_path / "index" / WRITE_LOCK_FILE).mkdir()
    with pytest.raises(VectorIndexError, match="cannot write the index"):
        index.upsert(make_items(2))


def test_open_index_dispatches(tmp_path: Path, contract_server: VectorizeContractServer) -> None:
    settings = Settings(
        vectorize_account_id=contract_server.account_id,
        vectorize_api_token=contract_server.token,
        vectorize_base_url=contract_server.base_url,
    )
    assert isinstance(open_index(str(tmp_path / "idx"), settings, DIM), EmbeddedIndex)
    remote = open_index(f"vectorize://{contract_server.index_name}", settings, DIM)
    assert isinstance(remote, VectorizeIndex)
    assert contract_server.token not in repr(remote)
    with pytest.raises(ValueError):
        open_index("vectorize://pv-test", Settings(), DIM)  # no account/token configured


@pytest.mark.parametrize("url", ["", "file://"])
def test_an_index_url_naming_no_folder_is_refused(url: str) -> None:
    # It was the current directory, silently: a LanceDB table wherever a command ran.
    with pytest.raises(ConfigError, match="names no folder"):
        open_index(url, Settings(), DIM)


# --- Vectorize contract: async writes, retries, errors ---------------------------------


def test_contract_metadata_indexes_created_before_first_write(
    contract_server: VectorizeContractServer,
) -> None:
    client = vectorize_client(contract_server)
    client.upsert(make_items(5))
    client.wait_for_writes(10)
    assert contract_server.metadata_indexes == dict(FILTER_FIELDS)
    client2 = vectorize_client(contract_server)  # a second process: nothing created twice
    client2.upsert(make_items(5, seed=1))
    client2.wait_for_writes(10)
    assert contract_server.calls["metadata_index/create"] == len(FILTER_FIELDS)


def test_contract_wait_for_mutation(contract_server: VectorizeContractServer) -> None:
    client = vectorize_client(contract_server)
    client.ensure_metadata_indexes()
    client.wait_for_writes(10)
    contract_server.pause_apply()
    items = make_items(20)
    client.upsert(items[:10])
    first = client.last_mutation_id
    client.upsert(items[10:])
    second = client.last_mutation_id
    assert first and second and first != second
    assert client.info().processed_up_to_mutation not in (first, second)
    assert client.count() == 0  # accepted, not yet visible
    with pytest.raises(IndexUnavailable, match="not processed"):
        client.wait_for_mutation(first, timeout_s=0.2)
    contract_server.resume_apply()
    # Both are applied in one go: processedUpToMutation jumps straight to `second`.
    client.wait_for_mutation(first, timeout_s=10)
    assert client.info().processed_up_to_mutation == second
    assert client.count() == 20
    assert client.info().processed_up_to_datetime


@pytest.mark.parametrize("status", [429, 503])
def test_contract_retries_then_succeeds(
    contract_server: VectorizeContractServer, status: int
) -> None:
    client = vectorize_client(contract_server)
    client.ensure_metadata_indexes()
    contract_server.fail_next(3, status=status, retry_after="0.05" if status == 429 else None)
    started = time.monotonic()
    client.upsert(make_items(10))
    assert contract_server.calls["fault"] == 3
    assert contract_server.calls["upsert"] == 4  # three refused, the fourth accepted
    if status == 429:
        assert time.monotonic() - started >= 3 * 0.05  # honoured Retry-After each time
    contract_server.fail_next(2, status=status)
    client.wait_for_writes(10)
    assert client.count() == 10


def test_contract_gives_up_as_unavailable(contract_server: VectorizeContractServer) -> None:
    client = vectorize_client(contract_server, max_attempts=3)
    contract_server.fail_next(10, status=503)
    with pytest.raises(IndexUnavailable) as info:
        client.query(make_items(1)[0].values, 3)
    assert info.value.code == "index_unavailable"
    assert contract_server.calls["fault"] == 3
    assert contract_server.token not in str(info.value)


def test_contract_unreachable_is_unavailable() -> None:
    from tests.conftest import free_port

    client = VectorizeIndex(
        "pv-test",
        account_id="acct",
        api_token="secret-token-value",
        dim=DIM,
        base_url=f"http://127.0.0.1:{free_port()}/client/v4",
        max_attempts=2,
        backoff_base_s=0.01,
    )
    with pytest.raises(IndexUnavailable, match="ConnectionError") as info:
        client.count()
    assert "secret-token-value" not in str(info.value)


def test_contract_rejections_carry_the_api_message(
    contract_server: VectorizeContractServer,
) -> None:
    wrong_token = vectorize_client(contract_server, api_token="wrong-token-123")
    with pytest.raises(IndexRejected, match="Authentication error") as info:
        wrong_token.count()
    assert "wrong-token-123" not in str(info.value)
    assert info.value.code == "index_rejected"
    # A client configured for the wrong dimension passes its own checks; the API refuses.
    mismatched = vectorize_client(contract_server, dim=DIM + 1, manage_metadata_indexes=False)
    with pytest.raises(IndexRejected, match="dimension"):
        mismatched.upsert(make_items(2, dim=DIM + 1))
    unknown = VectorizeIndex(
        "no-such-index",
        account_id=contract_server.account_id,
        api_token=contract_server.token,
        dim=DIM,
        base_url=contract_server.base_url,
    )
    with pytest.raises(IndexRejected, match="not_found"):
        unknown.count()


# --- embedded (LanceDB) specifics -------------------------------------------------------


def test_filter_sql_is_escaped_and_typed() -> None:
    sql = filter_to_sql(
        normalize_filter(
            {"mode": "it's", "tempo_bpm": {"$gte": 90, "$lt": 110.5}, "key": {"$in": []}}
        )
    )
    assert sql == "`mode` = 'it''s' AND `tempo_bpm` >= 90 AND `tempo_bpm` < 110.5 AND false"
    assert filter_to_sql(normalize_filter({"key": {"$nin": ["C"]}})) == (
        "(`key` IS NULL OR `key` NOT IN ('C'))"
    )
    assert filter_to_sql([]) is None


def test_embedded_persists_and_checks_dimension(tmp_path: Path) -> None:
    first = EmbeddedIndex(tmp_path / "idx", DIM)
    first.upsert(make_items(10))
    first.optimize()
    assert EmbeddedIndex(tmp_path / "idx", DIM).count() == 10
    with pytest.raises(IndexRejected):
        EmbeddedIndex(tmp_path / "idx", DIM + 1)


def test_embedded_upsert_throughput(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Measures (does not assert) LanceDB merge_insert throughput at the real dimension."""
    from contract.layout import VECTOR_DIM

    index = EmbeddedIndex(tmp_path / "idx", VECTOR_DIM)
    batch, total = 5_000, 40_000
    items = make_items(total, seed=11, dim=VECTOR_DIM)
    started = time.perf_counter()
    for start in range(0, total, batch):
        index.upsert(items[start : start + batch])
    insert_rate = total / (time.perf_counter() - started)
    # Re-upsert a quarter with new values: the update path of merge_insert.
    again = make_items(total // 4, seed=12, dim=VECTOR_DIM)
    started = time.perf_counter()
    for start in range(0, len(again), batch):
        index.upsert(again[start : start + batch])
    update_rate = len(again) / (time.perf_counter() - started)
    assert index.count() == total
    started = time.perf_counter()
    matches = index.query(items[20_001].values, 10, filter={"mode": "minor"})
    query_ms = (time.perf_counter() - started) * 1000
    assert matches[0].id == items[20_001].id
    assert index.query(again[123].values, 1)[0].id == again[123].id  # replaced in place
    with capsys.disabled():
        print(
            f"\n[lancedb] {VECTOR_DIM}-d, batches of {batch}: insert {insert_rate:,.0f} vec/s, "
            f"update {update_rate:,.0f} vec/s; filtered exact query over {total:,}: "
            f"{query_ms:.0f} ms"
        )


def test_embedded_id_index_keeps_contains_exact(tmp_path: Path) -> None:
    """create_ann_index also builds the B-tree on id; rows written after it still count."""
    index = EmbeddedIndex(tmp_path / "index", DIM)
    index.upsert(make_items(300))
    index.create_ann_index(num_partitions=2, num_sub_vectors=2)
    assert {i.name for i in index._table.list_indices()} >= {"id_idx"}
    index.upsert(make_items(5, seed=3, prefix="late"))
    asked = ["rec-00000", "rec-00299", "late-00004", "rec-00300", "nope"]
    assert index.contains(asked) == {"rec-00000", "rec-00299", "late-00004"}


def test_embedded_unreadable_files_are_a_typed_index_error(tmp_path: Path) -> None:
    """Given an index folder whose data files were overwritten (a bad copy, a full disk
    during a write), expect every read to raise VectorIndexError naming the folder, without
    LanceDB's Rust source location, instead of LanceDB's RuntimeError; and a later open
    too."""
    from contract.errors import VectorIndexError

    index = EmbeddedIndex(tmp_path / "idx", dim=DIM)
    items = make_items(5)
    index.upsert(items)
    for path in (tmp_path / "idx").glob("**/data/*.lance"):
        path.write_bytes(b"garbage")
    reads = [
        lambda ix: ix.query(items[0].values, 3),
        lambda ix: ix.get([items[0].id]),
        lambda ix: ix.contains([items[0].id]),
    ]
    for read in reads:
        with pytest.raises(VectorIndexError, match="cannot read the vector index") as caught:
            read(index)
        assert str(tmp_path / "idx") in caught.value.message
        assert ".rs:" not in caught.value.message
    with pytest.raises(VectorIndexError, match="cannot read the vector index"):
        reads[0](EmbeddedIndex(tmp_path / "idx", dim=DIM))
