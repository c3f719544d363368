"""`previewvec enqueue` of a catalog file against a real Redis: one enqueue per catalog (the
cursor lock), bounded memory on a huge line, repeated recordings and repeated keys."""

from __future__ import annotations

import base64
import json
import time
import tracemalloc
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from redis import Redis

from contract.errors import AlreadyRunning
from contract.settings import Settings
from contract.state import Runs, connect
from contract.state.keys import cursor_lock_key, run_key
from producers.queue import (
    MAX_CATALOG_LINE_BYTES,
    enqueue_file,
    plan_enqueue,
    queue_keys,
    read_catalog_lines,
)
from tests.harness.cli_env import point_cli_at


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> Iterator[tuple[Settings, Runs, Redis]]:
    client = connect(redis_url)
    client.flushdb()
    settings = Settings(broker_url=redis_url, store=str(tmp_path / "store"),
                        queue_high_water=100_000)
    yield settings, Runs.from_url(redis_url), client
    client.close()


def job(rid: str, url: str | None = None) -> str:
    return json.dumps({"recording_id": rid, "preview_url": url or f"https://p.scdn.co/{rid}"})


def published(client: Redis) -> list[dict]:
    """The jobs of every message on the batch queue."""
    out = []
    for key in queue_keys("batch"):
        for raw in client.lrange(key, 0, -1):
            body = json.loads(base64.b64decode(json.loads(raw)["body"]))
            out.append(body[0][0])
    return out


def enqueue(path: Path, settings: Settings, runs: Runs):
    return enqueue_file(path, plan_enqueue(path, runs), settings, runs=runs)


# --------------------------------------------------------------------------- the lock


def test_the_cursor_lock_is_held_renewed_and_released(env, tmp_path: Path) -> None:
    settings, runs, client = env
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(job("a") + "\n")
    plan = plan_enqueue(catalog, runs, lock_ttl_s=0.3)
    lock_key = cursor_lock_key(plan.cursor_name)
    with pytest.raises(AlreadyRunning, match=f"already running as run {plan.run_id}"):
        plan_enqueue(catalog, runs)
    time.sleep(1.0)  # three TTLs: held only because it is renewed
    assert client.exists(lock_key)
    with pytest.raises(AlreadyRunning):
        plan_enqueue(catalog, runs, restart=True)  # --restart does not break in either
    report = enqueue_file(catalog, plan, settings, runs=runs)
    assert report.queued == 1
    assert not client.exists(lock_key)  # released once done
    plan_enqueue(catalog, runs).lease.release()  # free again


def test_the_lock_of_a_dead_enqueue_expires(env, tmp_path: Path) -> None:
    settings, runs, _ = env
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(job("a") + "\n")
    plan = plan_enqueue(catalog, runs, lock_ttl_s=0.3)
    plan.lease._stop.set()  # the process "dies": nothing renews the lock any more
    with pytest.raises(AlreadyRunning):
        plan_enqueue(catalog, runs)
    time.sleep(0.5)
    assert enqueue(catalog, settings, runs).queued == 1


def test_the_lock_is_released_when_the_enqueue_fails(env, tmp_path: Path) -> None:
    settings, runs, client = env
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(job("a") + "\n")
    plan = plan_enqueue(catalog, runs)
    catalog.unlink()
    with pytest.raises(Exception, match="cannot read catalog"):
        enqueue_file(catalog, plan, settings, runs=runs)
    assert not client.keys("pv:cursor:*:lock")


def test_a_lost_lock_stops_the_enqueue_before_it_publishes(env, tmp_path: Path) -> None:
    settings, runs, client = env
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(job("a") + "\n")
    plan = plan_enqueue(catalog, runs)
    plan.lease.lost = True  # what the renewing thread records when the token is not ours
    with pytest.raises(AlreadyRunning, match="lost the lock"):
        enqueue_file(catalog, plan, settings, runs=runs)
    assert published(client) == []


# --------------------------------------------------------------------------- huge lines


def test_a_huge_line_is_one_invalid_line_in_bounded_memory(env, tmp_path: Path) -> None:
    settings, runs, _ = env
    catalog = tmp_path / "catalog.jsonl"
    array = "[" + ",".join([job("x")] * 200_000) + "]"  # ≈ 13 MB on one line
    catalog.write_text(job("a") + "\n" + array + "\n" + job("b") + "\n")
    tracemalloc.start()
    try:
        report = enqueue(catalog, settings, runs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_CATALOG_LINE_BYTES + (2 << 20), peak
    assert (report.queued, report.invalid) == (2, 1)
    [(key, failure)] = runs.failures(report.run_id)
    assert key == "line:2"
    assert "longer than" in failure["message"] and "JSON Lines" in failure["message"]


def test_read_catalog_lines_keeps_line_numbers_around_a_long_line() -> None:
    long = b"x" * (3 * MAX_CATALOG_LINE_BYTES)
    lines = list(read_catalog_lines(BytesIO(b"a\n" + long + b"\nb\n" + long)))
    assert lines[0] == b"a\n" and lines[2] == b"b\n" and len(lines) == 4
    assert all(isinstance(lines[i], Exception) for i in (1, 3))


# --------------------------------------------------------------------------- repeats


def test_a_repeated_recording_is_published_once(env, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from previewvec import cli

    settings, runs, client = env
    point_cli_at(monkeypatch, settings, tmp_path)
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("\n".join([
        job("a"), job("b"), job("a"),  # 3: the same job again
        job("b", "https://p.scdn.co/other"),  # 4: another job for b
        json.dumps({"job": json.loads(job("a"))}),  # 5: a again, as resolve output
    ]) + "\n")
    assert cli.main(["enqueue", str(catalog)]) == 0
    out = capsys.readouterr()
    run_id = out.out.strip()
    assert out.err.splitlines()[-1] == "queued 2, invalid lines 1, duplicates 2"
    assert sorted((j["recording_id"], j["preview_url"]) for j in published(client)) == [
        ("a", "https://p.scdn.co/a"), ("b", "https://p.scdn.co/b")]
    status = runs.status(run_id)
    assert status.counts["queued"] == 2 and status.meta["submitted"] == "2"
    failures = dict(runs.failures(run_id))
    assert failures["line:4"]["message"].startswith(
        "line 4: conflicting duplicate of line 2: recording_id 'b'")
    jobs = {k: json.loads(v) for k, v in client.hgetall(run_key(run_id, "jobs")).items()}
    assert jobs["b"]["preview_url"] == "https://p.scdn.co/b"  # the first line wins


@pytest.mark.parametrize("line", [
    '{"recording_id": "a", "recording_id": "b", "preview_url": "https://p.scdn.co/b"}',
    '{"job": {"recording_id": "a", "recording_id": "b", "preview_url": "https://p.scdn.co/b"}}',
    '{"job": {"recording_id": "a", "preview_url": "https://p.scdn.co/a"}, '
    '"job": {"recording_id": "b", "preview_url": "https://p.scdn.co/b"}}',
])
def test_a_repeated_key_is_an_invalid_line(env, tmp_path: Path, line: str) -> None:
    settings, runs, client = env
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(job("c") + "\n" + line + "\n")
    report = enqueue(catalog, settings, runs)
    assert (report.queued, report.invalid) == (1, 1)
    assert "duplicate key" in dict(runs.failures(report.run_id))["line:2"]["message"]
    assert [j["recording_id"] for j in published(client)] == ["c"]


def test_the_same_catalog_enqueued_twice_publishes_each_job_once(
        env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Found by the input audit: the README says a job whose recording another run has
    queued ("the same catalog enqueued twice") is skipped and counted ``skipped_queued``,
    but a second ``enqueue`` of a finished catalog (or of the file grown since, which hashes
    to another cursor) published every job again. Now skipped; ``--force`` (or a line's
    own ``force``) queues it again."""
    from previewvec import cli

    settings, runs, client = env
    point_cli_at(monkeypatch, settings, tmp_path)
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(job("a") + "\n" + job("b") + "\n")
    assert cli.main(["enqueue", str(catalog)]) == 0
    first = capsys.readouterr().out.strip()
    # the operator adds a line and enqueues the file again
    catalog.write_text(catalog.read_text() + job("c") + "\n"
                       + json.dumps({**json.loads(job("d")), "force": True}) + "\n")
    runs.mark_many_queued("other-run", ["d"])  # d is queued elsewhere too, but forced
    assert cli.main(["enqueue", str(catalog)]) == 0
    out = capsys.readouterr()
    second = out.out.strip()
    assert second != first
    assert out.err.splitlines()[-1] == (
        "queued 2, invalid lines 0, skipped (queued in another run) 2")
    assert sorted(j["recording_id"] for j in published(client)) == ["a", "b", "c", "d"]
    status = runs.status(second)
    assert (status.counts["queued"], status.counts["skipped"]) == (2, 2)
    assert status.meta["skipped_queued"] == "2" and status.meta["submitted"] == "2"
    assert runs.pending_run("a") == first  # still the first run's job
    assert cli.main(["enqueue", str(catalog), "--force"]) == 0
    assert capsys.readouterr().err.splitlines()[-1] == "queued 4, invalid lines 0"
    assert len(published(client)) == 8


def test_a_resolve_output_line_with_an_error_code_of_another_type_is_recorded(
        env, tmp_path: Path) -> None:
    """Found by the input audit: a ``{"job": null, ...}`` line whose ``error_code`` is a
    list or an object ended ``enqueue`` in a TypeError traceback (unhashable type) at that
    line. It is an unresolved line like any other."""
    settings, runs, client = env
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("\n".join([
        '{"job": null, "recording_id": "x", "error_code": ["no_tracks"]}',
        '{"job": null, "recording_id": "y", "error_code": {"a": 1}, "match_reason": 5}',
        job("c"),
    ]) + "\n")
    report = enqueue(catalog, settings, runs)
    assert (report.queued, report.invalid, report.unresolved) == (1, 0, 2)
    failures = dict(runs.failures(report.run_id))
    assert failures["x"]["code"] == failures["y"]["code"] == "no_confident_match"
    assert failures["y"]["message"] == "not resolvable"
    assert [j["recording_id"] for j in published(client)] == ["c"]
