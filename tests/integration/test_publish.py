"""Batched publishing (``producers.queue.publish``) against a real Redis and a real worker.

Given jobs published through kombu's publish batch (one Redis round trip per chunk),
expect the very messages ``send_task`` alone would produce, on the list kombu's workers
consume for the queue's default priority; and expect a real ``celery worker`` to consume
and complete every one of them, with the run's counts consistent across chunks.
"""

from __future__ import annotations

import base64
import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
from redis import Redis

from contract.jobs import Job, parse_catalog
from contract.layout import FEATURE_VERSION
from contract.records import record_key
from contract.settings import Settings
from contract.state import Runs, connect, new_run_id
from producers import queue as queue_mod
from producers.queue import TASK_NAME, make_client, publish
from producers.submit import queue_keys
from tests.harness.pipeline import (
    ClipServer,
    Pipeline,
    catalog_line,
    make_clips,
    warm_numba_cache,
)

# Unique per message (ids) or per producer app (reply_to: the app's thread oid);
# everything else must match exactly.
PER_MESSAGE_HEADERS = ("id", "root_id")
PER_MESSAGE_PROPERTIES = ("correlation_id", "delivery_tag", "reply_to")


def _messages(client: Redis, queue: str) -> dict[str, list[dict]]:
    """Every message on each of the queue's priority lists (oldest first)."""
    return {key: [json.loads(raw) for raw in reversed(client.lrange(key, 0, -1))]
            for key in queue_keys(queue)}


def _comparable(message: dict) -> dict:
    headers = {k: v for k, v in message["headers"].items() if k not in PER_MESSAGE_HEADERS}
    properties = {k: v for k, v in message["properties"].items()
                  if k not in PER_MESSAGE_PROPERTIES}
    return {**message, "headers": headers, "properties": properties,
            "body": json.loads(base64.b64decode(message["body"]))}


SHAPE_JOBS = {
    "plain": Job(recording_id="shape-0", preview_url="https://audio-ssl.itunes.apple.com/z.m4a",
                 artist="Björk & Ñandú", title="Ça va (2024 remaster)", duration_ms=29_000,
                 source="itunes"),
    "metadata": Job(recording_id="shape-1", preview_url="https://audio-ssl.itunes.apple.com/a.m4a",
                    isrc="USRC17607839", artist="Ünïcode 'quoted'", title="T",
                    duration_ms=30000, source="test", force=True),
    "escapes": Job(recording_id="shape-2", preview_url="https://audio-ssl.itunes.apple.com/b.m4a",
                   artist='both \'quotes\' "and" \\ backslash\ttab 🎵', title="line\nbreak"),
    # longer than Celery's argsrepr cap: Celery abbreviates it the same way in both
    "long": Job(recording_id="shape-3", preview_url="https://audio-ssl.itunes.apple.com/c.m4a",
                artist="a" * 500, title="t" * 500),
}


@pytest.mark.parametrize("queue", ["batch", "ondemand"])
@pytest.mark.parametrize("kind", sorted(SHAPE_JOBS))
def test_batched_message_equals_send_task_message(redis_url: str, queue: str,
                                                  kind: str) -> None:
    """Given one job, when it is published by ``publish`` and by a plain ``send_task``,
    expect the same message (but for its ids) on the same, default-priority list."""
    runs, raw = Runs.from_url(redis_url), connect(redis_url)
    raw.flushdb()
    settings = Settings(broker_url=redis_url)
    job = SHAPE_JOBS[kind]
    run_id = new_run_id()
    runs.create(run_id)

    publish([job], runs, settings, run_id=run_id, queue=queue)
    batched = _messages(raw, queue)
    raw.delete(*queue_keys(queue))
    payload = replace(job, run_id=run_id).to_dict()
    assert job.force == payload["force"]
    make_client(settings).send_task(TASK_NAME, args=[payload], queue=queue)
    plain = _messages(raw, queue)

    assert [k for k, v in batched.items() if v] == [queue]  # priority 0: the bare list
    assert [k for k, v in plain.items() if v] == [queue]
    (got,), (want,) = batched[queue], plain[queue]
    assert got.keys() == want.keys()
    assert got["headers"].keys() == want["headers"].keys()
    assert got["properties"].keys() == want["properties"].keys()
    assert _comparable(got) == _comparable(want)
    assert got["headers"]["task"] == TASK_NAME
    assert got["headers"]["root_id"] == got["headers"]["id"]
    assert got["properties"]["delivery_info"] == {"exchange": "", "routing_key": queue}
    assert _comparable(got)["body"][0] == [payload]


def test_chunks_are_marked_queued_and_all_published(redis_url: str, monkeypatch) -> None:
    """Given more jobs than one chunk and some invalid lines, expect every valid job
    queued in the run and published once, in input order, and the invalid lines failed."""
    monkeypatch.setattr(queue_mod, "PUBLISH_CHUNK", 7)
    runs, raw = Runs.from_url(redis_url), connect(redis_url)
    raw.flushdb()
    settings = Settings(broker_url=redis_url)
    lines = [catalog_line(f"chunk-{i:02d}", f"https://audio-ssl.itunes.apple.com/{i}.m4a")
             for i in range(30)]
    lines[4] = '{"recording_id": "x"}'  # no preview_url
    lines[19] = "not json"
    run_id = new_run_id()
    runs.create(run_id)

    report = publish(parse_catalog(lines), runs, settings, run_id=run_id)

    assert (report.queued, report.invalid) == (28, 2)
    status = runs.status(run_id)
    assert status.counts == {"queued": 28, "done": 0, "skipped": 0, "failed": 2}
    assert status.meta["submitted"] == "28"
    published = [_comparable(m)["body"][0][0] for m in _messages(raw, "batch")["batch"]]
    assert [j["recording_id"] for j in published] == [
        f"chunk-{i:02d}" for i in range(30) if i not in (4, 19)]
    assert all(j["run_id"] == run_id and j["force"] is False for j in published)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_batched_jobs_are_consumed_by_a_real_worker(
        tmp_path: Path, request: pytest.FixtureRequest, monkeypatch) -> None:
    """Given clips published in several batched chunks, expect a real ``celery worker`` to
    take every message, store every record and leave nothing queued or unacknowledged."""
    monkeypatch.setattr(queue_mod, "PUBLISH_CHUNK", 3)
    cache = getattr(request.config, "cache", None)
    cache_dir = (Path(os.environ["PREVIEWVEC_TEST_CACHE_DIR"])
                 if os.environ.get("PREVIEWVEC_TEST_CACHE_DIR")
                 else Path(cache.mkdir("previewvec-worker-cache")) if cache is not None
                 else tmp_path / "worker-cache")
    warm = warm_numba_cache(cache_dir)  # shared with test_pipeline: usually already warm
    try:
        clips = make_clips(4, duration_s=8.0)
        output, _ = warm.communicate(timeout=400)
        assert warm.returncode == 0, output.decode()
    finally:
        if warm.poll() is None:
            os.killpg(warm.pid, signal.SIGKILL)
            warm.wait()
    server = ClipServer().start()
    pipeline = Pipeline(tmp_path / "pipe", cache_dir=cache_dir, store=str(tmp_path / "store"))
    try:
        urls = [server.add_clip(clip) for clip in clips]
        pipeline.start_worker("batched")
        lines = [catalog_line(f"batched-{i:02d}", urls[i % len(urls)]) for i in range(8)]
        report = pipeline.enqueue(lines)
        assert report.queued == 8

        status = pipeline.wait_run(report.run_id, expected_total=8, timeout_s=240)

        assert status.counts == {"queued": 0, "done": 8, "skipped": 0, "failed": 0}
        store = Path(pipeline.store_url)
        assert all((store / record_key(FEATURE_VERSION, f"batched-{i:02d}")).is_file()
                   for i in range(8))
        assert pipeline.queue_depth("batch") == 0
        pipeline.wait_until(lambda: not pipeline.unacked(), timeout_s=30,
                            what="every message acknowledged")
    finally:
        pipeline.close()
        server.stop()
