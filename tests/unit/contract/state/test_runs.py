"""contract/state/runs.py: the named operations callers use instead of a raw client
(the transition and closing rules are in tests/integration/test_runs_lifecycle.py)."""

from __future__ import annotations

import json

from redis import Redis

from contract.broker import queue_keys
from contract.state import Runs


def test_meta_updates_counters_and_states(runs: Runs) -> None:
    runs.create("r1", queue="batch")
    runs.update_meta("r1", resolution_state="failed", resolution_error="boom")
    runs.update_meta("r1", drop=("resolution_error",), resolution_state="running")
    runs.count("r1", "resolved")
    runs.count("r1", "resolved", 2)
    meta = runs.status("r1").meta
    assert meta["resolution_state"] == "running" and "resolution_error" not in meta
    assert meta["resolved"] == "3"
    runs.set_producing("r1", False)
    assert runs.status("r1").meta["resolution_state"] == "finished"
    runs.mark_many_queued("r1", ["a", "b"])
    runs.succeed("r1", "a", "done")
    assert runs.states("r1") == {"a": "done", "b": "queued"}


def test_failures_page_walks_every_failure(runs: Runs) -> None:
    runs.create("r1")
    for i in range(30):
        runs.fail("r1", f"rec-{i:02d}", "http_404", f"gone {i}")
    seen: dict[str, str] = {}
    cursor = 0
    while True:
        cursor, page = runs.failures_page("r1", cursor, 10)
        seen.update(page)
        if cursor == 0:
            break
    assert len(seen) == 30
    assert json.loads(seen["rec-07"])["message"] == "gone 7"
    assert dict(runs.failures("r1")).keys() == seen.keys()


def test_key_ttls_lists_the_runs_keys(runs: Runs) -> None:
    runs.create("r1")
    runs.mark_many_queued("r1", ["a"])
    assert runs.key_ttls("r1") == {"pv:run:r1:meta": -1, "pv:run:r1:state": -1,
                                   "pv:run:r1:counts": -1}
    assert runs.key_ttls("other") == {}


def test_queue_depth_counts_every_priority_list(runs: Runs, raw: Redis) -> None:
    for n, key in enumerate(queue_keys("batch"), start=1):
        raw.rpush(key, *["m"] * n)
    assert runs.queue_depth("batch") == 1 + 2 + 3 + 4
    assert runs.list_length("batch") == 1  # the default-priority list alone
    assert runs.queue_depth("ondemand") == 0
