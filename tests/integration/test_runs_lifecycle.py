"""Run state that does not grow with the catalog: closing (compaction and expiry) of
finished runs, transitions on a compacted run, `retry` of a closed run, pruning of
``pv:runs``, and the reducer's "upsert if absent" entries. Real redis-server (private,
per test), folder store and embedded index.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from redis import Redis

from contract.layout import VECTOR_DIM
from contract.records import FeatureRecord, encode_record, make_provenance
from contract.settings import Settings
from contract.state import IF_ABSENT, RUNS_INDEX, STATES, Runs, connect
from previewvec.localredis import LocalRedis
from reducer.reduce import Reducer

TTL_S = 3600


@pytest.fixture
def local_redis(tmp_path: Path) -> Iterator[LocalRedis]:
    with LocalRedis(data_dir=tmp_path / "redis") as server:
        yield server


@pytest.fixture
def runs(local_redis: LocalRedis) -> Runs:
    return Runs.from_url(local_redis.url)


@pytest.fixture
def raw(local_redis: LocalRedis) -> Redis:
    """A separate client, to look at (and tamper with) the keys behind ``runs``."""
    return connect(local_redis.url)


def keys_of(runs: Runs, run_id: str) -> dict[str, int]:
    """Each existing key of the run → its TTL in seconds (-1: none)."""
    return runs.key_ttls(run_id)


def counts(runs: Runs, run_id: str) -> dict[str, int]:
    return runs.status(run_id).counts


def finished_run(runs: Runs, run_id: str = "r1", n: int = 10) -> list[str]:
    """A run of ``n`` recordings: 0, 1 failed (0 by a producer, 1 by a worker), 2 skipped,
    the rest done."""
    ids = [f"rec-{i:03d}" for i in range(n)]
    runs.create(run_id, queue="batch")
    runs.fail(run_id, ids[0], "invalid_job", "line 1: bad")  # a producer's, no job
    runs.mark_many_queued(run_id, ids[1:])
    runs.fail(run_id, ids[1], "http_404", "gone", {"recording_id": ids[1], "run_id": run_id})
    runs.succeed(run_id, ids[2], "skipped")
    for rid in ids[3:]:
        runs.succeed(run_id, rid, "done")
    return ids


def test_a_finished_run_is_compacted_and_expires(runs: Runs, raw: Redis) -> None:
    ids = finished_run(runs)
    before = counts(runs, "r1")
    assert before == {"queued": 0, "done": 7, "skipped": 1, "failed": 2}
    assert raw.hlen("pv:run:r1:state") == 10

    report = runs.close_finished(ttl_s=TTL_S, settle_s=0)
    assert report.closed == ["r1"] and report.pruned == [] and report.open == 0
    # Per-recording state is gone; counts, meta and failures stay, and expire together.
    ttls = keys_of(runs, "r1")
    assert set(ttls) == {"pv:run:r1:meta", "pv:run:r1:counts", "pv:run:r1:failures"}
    assert all(TTL_S - 5 <= ttl <= TTL_S for ttl in ttls.values()), ttls
    assert counts(runs, "r1") == before
    assert {rid: e["code"] for rid, e in runs.failures("r1")} == {
        ids[0]: "invalid_job", ids[1]: "http_404"}
    meta = runs.status("r1").meta
    assert int(meta["expires_at"]) - int(meta["closed_at"]) == TTL_S
    assert "compacted_at" in meta
    # Closing again changes nothing.
    assert runs.close_finished(ttl_s=TTL_S, settle_s=0).closed == []


def test_runs_are_not_closed_while_they_may_still_change(runs: Runs, raw: Redis) -> None:
    runs.create("busy")
    runs.mark_many_queued("busy", ["a", "b"])
    runs.succeed("busy", "a", "done")
    runs.create("resolving", resolution_state="running")
    runs.fail("resolving", "x", "no_confident_match", "title=0.1")
    runs.create("dump", resolution_state="failed", cursor="nightly")  # may be resumed
    runs.fail("dump", "line:7", "upstream_unavailable", "503")
    runs.create("fresh", resolution_state="finished")
    runs.mark_many_queued("fresh", ["c"])
    runs.succeed("fresh", "c", "done")

    report = runs.close_finished(ttl_s=TTL_S, settle_s=60)
    assert report.closed == [] and report.open == 4
    # Settled: only the run with nothing queued and no producer is closed.
    report = runs.close_finished(ttl_s=TTL_S, settle_s=0)
    assert report.closed == ["fresh"] and report.open == 3
    # A run quiet for a whole TTL is abandoned: it expires, compacted only when nothing
    # is queued (the producer's run), as it is otherwise (its queued job never ended).
    report = runs.close_finished(ttl_s=TTL_S, settle_s=0, now=time.time() + TTL_S + 5)
    assert sorted(report.closed) == ["dump", "resolving"] and report.abandoned == ["busy"]
    assert raw.hlen("pv:run:busy:state") == 2
    assert 0 < raw.ttl("pv:run:busy:state") <= TTL_S
    assert not raw.exists("pv:run:resolving:state")


def test_closing_refuses_a_run_that_changed_meanwhile(runs: Runs, raw: Redis) -> None:
    finished_run(runs)
    stale = runs.status("r1").meta["changed_at"]
    raw.hset("pv:run:r1:meta", "changed_at", int(stale) + 1)  # a transition since
    assert not runs.close("r1", ttl_s=TTL_S, changed_at=stale)
    runs.mark_many_queued("r1", ["new"])
    changed = runs.status("r1").meta["changed_at"]
    assert not runs.close("r1", ttl_s=TTL_S, changed_at=changed)  # something is queued
    assert raw.hlen("pv:run:r1:state") == 11


def test_late_deliveries_on_a_compacted_run_never_move_the_counters(runs: Runs) -> None:
    ids = finished_run(runs)
    runs.close_finished(ttl_s=TTL_S, settle_s=0)
    before = counts(runs, "r1")
    job = {"recording_id": ids[5], "run_id": "r1"}
    # Redeliveries of jobs that succeeded (their state was compacted away): no-ops,
    # whatever they end in, and no failure entry appears.
    assert not runs.succeed("r1", ids[5], "skipped")
    assert not runs.succeed("r1", ids[5], "done")
    assert not runs.succeed("r1", ids[2], "done")
    assert not runs.fail("r1", ids[5], "timeout", "late", job)
    assert counts(runs, "r1") == before
    assert {rid for rid, _ in runs.failures("r1")} == {ids[0], ids[1]}
    # A redelivered failed job is still known as failed (from `failures`): failing again
    # refreshes its entry, succeeding moves it, exactly as in an open run.
    assert not runs.fail("r1", ids[1], "http_503", "again", {"recording_id": ids[1]})
    assert dict(runs.failures("r1"))[ids[1]]["code"] == "http_503"
    assert runs.succeed("r1", ids[1], "done")
    assert not runs.succeed("r1", ids[1], "skipped")  # done is not downgraded
    after = counts(runs, "r1")
    assert after == {**before, "failed": 1, "done": before["done"] + 1}
    assert sum(after.values()) == len(ids)
    assert {rid for rid, _ in runs.failures("r1")} == {ids[0]}
    # The state entry that move created expires with the rest of the run.
    ttls = keys_of(runs, "r1")
    assert "pv:run:r1:state" in ttls and all(0 < t <= TTL_S for t in ttls.values()), ttls


def test_retry_reopens_a_closed_run_and_keeps_the_total(runs: Runs, raw: Redis) -> None:
    ids = finished_run(runs)
    runs.close_finished(ttl_s=TTL_S, settle_s=0)
    total = runs.status("r1").total
    # `previewvec retry`: the failed jobs that have a job are queued again.
    retried = [rid for rid, entry in runs.failures("r1") if entry["job"]]
    assert retried == [ids[1]]
    runs.mark_many_queued("r1", retried)
    assert counts(runs, "r1") == {"queued": 1, "done": 7, "skipped": 1, "failed": 1}
    assert all(ttl == -1 for ttl in keys_of(runs, "r1").values())  # no longer expiring
    assert "closed_at" not in runs.status("r1").meta
    assert runs.close_finished(ttl_s=TTL_S, settle_s=0).closed == []  # queued: open
    # The retried job succeeds; its failure entry goes; a second delivery is a no-op.
    assert runs.succeed("r1", ids[1], "done")
    assert not runs.succeed("r1", ids[1], "skipped")
    assert counts(runs, "r1") == {"queued": 0, "done": 8, "skipped": 1, "failed": 1}
    assert runs.status("r1").total == total
    assert runs.close_finished(ttl_s=TTL_S, settle_s=0).closed == ["r1"]
    assert not raw.exists("pv:run:r1:state")
    assert all(0 < ttl <= TTL_S for ttl in keys_of(runs, "r1").values())


def test_a_producer_adding_to_a_compacted_run_counts_new_recordings(runs: Runs) -> None:
    ids = finished_run(runs)
    runs.close_finished(ttl_s=TTL_S, settle_s=0)
    # A resumed dump adds recordings to its run: a producer's transitions count them.
    runs.mark_many_queued("r1", ["new-1"])
    assert runs.succeed("r1", "new-2", "skipped", delivered=False)  # already stored
    assert runs.fail("r1", "line:99", "invalid_job", "bad line")
    assert not runs.fail("r1", ids[0], "invalid_job", "line 1: bad")  # already listed
    assert runs.succeed("r1", "new-1", "done")
    assert counts(runs, "r1") == {"queued": 0, "done": 8, "skipped": 2, "failed": 3}
    assert runs.status("r1").total == len(ids) + 3


def test_ttl_zero_compacts_but_keeps_the_run(runs: Runs, raw: Redis) -> None:
    finished_run(runs)
    assert runs.close_finished(ttl_s=0, settle_s=0).closed == ["r1"]
    assert not raw.exists("pv:run:r1:state")
    assert all(ttl == -1 for ttl in keys_of(runs, "r1").values())
    assert "expires_at" not in runs.status("r1").meta
    assert runs.close_finished(ttl_s=0, settle_s=0).closed == []


def test_expired_runs_leave_pv_runs_and_late_jobs_do_not_revive_them(
        runs: Runs, raw: Redis) -> None:
    ids = finished_run(runs, "old")
    finished_run(runs, "kept")
    runs.close_finished(ttl_s=1, settle_s=0)
    runs.close("kept", ttl_s=0)  # still closed, but made permanent below
    for key in raw.scan_iter(match="pv:run:kept:*"):
        raw.persist(key)
    deadline = time.monotonic() + 10
    while keys_of(runs, "old"):
        assert time.monotonic() < deadline, "the closed run did not expire"
        time.sleep(0.1)
    assert set(runs.recent_runs()) == {"old", "kept"}
    report = runs.close_finished(ttl_s=1, settle_s=0)
    assert report.pruned == ["old"]
    assert runs.recent_runs() == ["kept"]
    # A job of the expired run delivered now changes nothing and creates no key.
    assert not runs.succeed("old", ids[4], "done")
    assert not runs.fail("old", ids[5], "timeout", "late", {"recording_id": ids[5]})
    assert keys_of(runs, "old") == {}
    assert raw.zscore(RUNS_INDEX, "old") is None


def test_transitions_keep_counters_equal_to_states_in_an_open_run(runs: Runs, raw: Redis) -> None:
    """The rules of an open run are unchanged: repeated and downgrading transitions."""
    runs.create("open")
    runs.mark_many_queued("open", ["a", "b", "c"])
    runs.mark_many_queued("open", ["a"])  # republished: not counted twice
    assert runs.succeed("open", "a", "done")
    assert not runs.succeed("open", "a", "skipped")
    assert runs.fail("open", "b", "http_404", "gone", {"recording_id": "b"})
    assert runs.succeed("open", "b", "skipped")  # retried elsewhere; the failure goes
    assert runs.fail("open", "c", "timeout", "slow", {"recording_id": "c"})
    state = raw.hgetall("pv:run:open:state")
    assert counts(runs, "open") == {s: list(state.values()).count(s) for s in STATES}
    assert [rid for rid, _ in runs.failures("open")] == ["c"]
    with pytest.raises(ValueError):
        runs.mark("open", "c", "failed")  # a failure needs its entry: fail()


def test_legacy_indexed_sets_are_dropped(runs: Runs, raw: Redis) -> None:
    raw.sadd("pv:indexed:pv1", "a", "b")
    raw.sadd("pv:indexed:pv2", "a")
    raw.set("pv:other", "1")
    assert runs.drop_legacy_indexed_sets() == 2
    assert raw.keys("pv:*") == ["pv:other"]


# --------------------------------------------------------------------------- reducer


def _record(rid: str, rng: np.random.Generator) -> FeatureRecord:
    return FeatureRecord(
        recording_id=rid,
        vector=rng.standard_normal(VECTOR_DIM).astype(np.float32).tolist(),
        descriptors={"tempo_bpm": 100.0, "key": "C", "mode": "major", "duration_s": 10.0},
        provenance=make_provenance(preview_url="http://127.0.0.1/x.m4a",
                                   audio_sha256="0" * 64, source="test", run_id="r",
                                   decoder="test", created_at="2024-01-01T00:00:00Z"),
    )


@pytest.mark.timeout(120)
def test_reducer_upserts_if_absent_entries_only_when_the_index_lacks_them(
        tmp_path: Path, local_redis: LocalRedis) -> None:
    raw = connect(local_redis.url)
    settings = Settings(broker_url=local_redis.url, store=str(tmp_path / "store"),
                        index=str(tmp_path / "index"), cache_dir=tmp_path / "cache")
    reducer = Reducer.build(settings)
    rng = np.random.default_rng(3)
    records = [_record(f"rec:{i} ü", rng) for i in range(12)]
    for record in records:
        reducer.store.put(record.key, encode_record(record))
    for record in records[:8]:
        reducer.runs.push_ready(record.key)
    assert reducer.drain() == 8
    indexed = {r.recording_id for r in records[:8]}

    upserted: list[str] = []
    upsert = reducer.index.upsert

    def counting_upsert(items):
        upserted.extend(item.id for item in items)
        upsert(items)

    reducer.index.upsert = counting_upsert  # type: ignore[method-assign]
    # Skipped jobs of every record (one never indexed: its writer died before pushing),
    # one if-absent entry twice, one also as a plain entry (a record rewritten: upserted),
    # and one entry that is not a record key (parked, not retried for ever).
    for record in records:
        reducer.runs.push_ready_if_absent(record.key)
    reducer.runs.push_ready_if_absent(records[9].key)
    reducer.runs.push_ready(records[2].key)
    raw.rpush("pv:ready", IF_ABSENT + "normalizers/pv2.json")
    assert reducer.drain(batch_size=100) == len(records) + 3
    assert sorted(upserted) == sorted([records[2].recording_id]
                                      + [r.recording_id for r in records[8:]])
    assert reducer.runs.ready_depth() == 0
    assert reducer.runs.dead_letters() == ["normalizers/pv2.json"]
    everything = indexed | {r.recording_id for r in records[8:]}
    assert reducer.index.contains(sorted(everything)) == everything
    assert reducer.index.count() == len(records)


def test_the_reducer_closes_settled_runs_with_the_configured_ttl(
        tmp_path: Path, local_redis: LocalRedis) -> None:
    raw = connect(local_redis.url)
    settings = Settings(broker_url=local_redis.url, store=str(tmp_path / "store"),
                        index=str(tmp_path / "index"), cache_dir=tmp_path / "cache",
                        run_ttl_s=1234)
    reducer = Reducer.build(settings)
    runs = reducer.runs
    finished_run(runs, "settled")
    finished_run(runs, "recent")
    quiet_since = int(time.time()) - 400  # longer ago than RUN_SETTLE_S
    raw.hset("pv:run:settled:meta", "changed_at", quiet_since)
    raw.sadd("pv:indexed:pv2", "rec-003")  # left by an earlier version
    assert reducer.drain() == 0
    assert not raw.exists("pv:run:settled:state", "pv:indexed:pv2")
    assert all(1200 <= ttl <= 1234 for ttl in keys_of(runs, "settled").values())
    assert raw.hlen("pv:run:recent:state") == 10  # not settled yet: untouched
    assert all(ttl == -1 for ttl in keys_of(runs, "recent").values())
