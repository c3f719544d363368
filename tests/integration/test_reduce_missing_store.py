"""A reducer never reads a missing store as "every queued record vanished": the folder is
not created, nothing queued is trimmed, and a record that did vanish is parked, not
dropped. Real redis-server (private), folder store, embedded index, the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.records import encode_record
from contract.settings import Settings
from contract.state import Runs
from previewvec.localredis import LocalRedis
from reducer.reduce import Reducer
from testkit.records import synthetic_record


@pytest.fixture
def local_redis(tmp_path: Path) -> Iterator[LocalRedis]:
    with LocalRedis(data_dir=tmp_path / "redis") as server:
        yield server


def settings_for(tmp_path: Path, url: str, store: Path) -> Settings:
    return Settings(broker_url=url, store=str(store), index=str(tmp_path / "index"),
                    cache_dir=tmp_path / "cache")


def cli_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "PREVIEWVEC_BROKER_URL": settings.broker_url,
            "PREVIEWVEC_STORE": settings.store, "PREVIEWVEC_INDEX": settings.index,
            "PREVIEWVEC_CACHE_DIR": str(settings.cache_dir)}


def test_a_queued_record_missing_from_the_store_is_parked_not_dropped(
        tmp_path: Path, local_redis: LocalRedis) -> None:
    reducer = Reducer.build(settings_for(tmp_path, local_redis.url, tmp_path / "store"))
    records = [synthetic_record(i) for i in range(12)]
    for record in records:
        reducer.store.put(record.key, encode_record(record))
        reducer.runs.push_ready(record.key)
    reducer.store.delete(records[3].key)
    assert reducer.drain() == 12
    assert reducer.runs.dead_letters() == [records[3].key]
    assert reducer.index.count() == 11


def test_reduce_on_a_missing_store_folder_fails_typed_and_trims_nothing(
        tmp_path: Path, local_redis: LocalRedis) -> None:
    store = tmp_path / "not-mounted"
    settings = settings_for(tmp_path, local_redis.url, store)
    runs = Runs.from_url(local_redis.url)
    keys = [synthetic_record(i).key for i in range(5)]
    for key in keys:
        runs.push_ready(key)
    result = subprocess.run([sys.executable, "-m", "previewvec.cli", "reduce"],
                            capture_output=True, text=True, env=cli_env(settings), timeout=120)
    assert result.returncode == 4, result.stderr
    assert "no feature store at" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not store.exists()
    assert runs.ready_depth() == 5 and runs.dead_letters() == []


def test_reduce_follow_waits_for_a_missing_store_folder_then_reduces(
        tmp_path: Path, local_redis: LocalRedis) -> None:
    store = tmp_path / "mounted-later"
    settings = settings_for(tmp_path, local_redis.url, store)
    runs = Runs.from_url(local_redis.url)
    records = [synthetic_record(i) for i in range(5)]
    for record in records:
        runs.push_ready(record.key)
    proc = subprocess.Popen([sys.executable, "-m", "previewvec.cli", "reduce", "--follow"],
                            env=cli_env(settings), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        # Its loop runs (the heartbeat), tries and backs off while the folder is missing.
        for _ in range(600):  # a bound on polls, not a timing claim
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            if (settings.cache_dir / "reducer.alive").exists():
                break
            time.sleep(0.1)
        time.sleep(3)  # let a few passes meet the missing folder
        assert proc.poll() is None
        assert not store.exists(), "the reducer must not create the store it reads"
        assert runs.ready_depth() == 5 and runs.dead_letters() == []
        # The volume arrives with its records: they are reduced, none lost.
        writer = Reducer.build(settings)  # a worker's side: creates the folder
        for record in records:
            writer.store.put(record.key, encode_record(record))
        for _ in range(1200):
            if runs.ready_depth() == 0:
                break
            assert proc.poll() is None
            time.sleep(0.1)
        assert runs.ready_depth() == 0 and runs.dead_letters() == []
    finally:
        proc.kill()
        proc.wait()
    reader = Reducer.build(settings, create_store=False)
    assert reader.index.count() == 5
