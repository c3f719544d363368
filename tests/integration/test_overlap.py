"""Workers that overlap I/O with compute (workers/overlap.py), with real processes.

A private ``redis-server``, ``celery worker`` subprocesses at the configured prefetch
multiplier (so the main process checks, fetches ahead and writes behind), clips over
HTTP from 127.0.0.1, the folder store, the embedded index:

- a batch is done exactly once, each preview fetched once, every record written behind
  the pool child and acknowledged after it; failures ahead keep their codes and messages
  (the SSRF rules and the size cap apply to fetches made ahead);
- a preview host that does not answer holds back its own job only: the others are
  fetched and computed meanwhile;
- a worker SIGKILLed as a whole while it holds fetched-ahead jobs and unwritten records
  loses none and duplicates none: another worker does them once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from contract.settings import Settings
from tests.harness.pipeline import FETCH_MAX_BYTES, ClipServer, Pipeline, catalog_line
from tests.integration.test_lost_workers import (
    Assets,
    assert_exactly_once,
    serve_batch,
    states,
)
from tests.integration.test_lost_workers import assets as assets
from tests.integration.test_lost_workers import clip_server as clip_server

pytestmark = [pytest.mark.slow, pytest.mark.faults]

OVERLAP = Settings().prefetch_multiplier  # the configured multiplier: overlap on


def _failures(pipeline: Pipeline, run_id: str) -> dict[str, dict]:
    listed = pipeline.cli("failures", run_id)
    assert listed.returncode == 0, listed.stderr
    return {row["recording_id"]: row for row in map(json.loads, listed.stdout.splitlines())}


@pytest.fixture
def pipeline(tmp_path: Path, assets: Assets) -> Iterator[Pipeline]:
    pipe = Pipeline(tmp_path / "pipe", cache_dir=assets.cache_dir,
                    store=str(tmp_path / "store"),
                    extra_env={"PREVIEWVEC_VISIBILITY_TIMEOUT_S": "12"})
    yield pipe
    pipe.close()


@pytest.mark.timeout(300)
def test_batch_fetched_ahead_and_written_behind_exactly_once(
        tmp_path: Path, assets: Assets, clip_server: ClipServer,
        pipeline: Pipeline) -> None:
    worker = pipeline.start_worker("o", prefetch=OVERLAP)
    worker.wait_warm()
    ids, lines, paths = serve_batch(clip_server, assets.clips, "ahead", 12, delay_ms=500)
    big = clip_server.add("/big.m4a", b"\0" * (FETCH_MAX_BYTES + 1), "audio/mp4")
    bad = {
        "bad-404": (clip_server.url("/missing.m4a"), "http_404"),
        "bad-big": (big, "too_large"),
        # Only 127.0.0.1 is allowed: the same server by another name is refused.
        "bad-host": (clip_server.url("/ahead/0/x.m4a", host="localhost"), "host_not_allowed"),
    }
    run = pipeline.enqueue([*lines, *(catalog_line(rid, url) for rid, (url, _) in bad.items())])

    status = pipeline.wait_run(run.run_id, expected_total=len(ids) + len(bad), timeout_s=180)

    assert status.counts == {"queued": 0, "done": len(ids), "skipped": 0, "failed": len(bad)}
    failures = _failures(pipeline, run.run_id)
    assert {rid: f["code"] for rid, f in failures.items()} == {
        rid: code for rid, (_, code) in bad.items()}
    assert "exceeds" in failures["bad-big"]["message"]
    assert {clip_server.hits[path] for path in paths.values()} == {1}
    log = worker.log()
    assert "overlapping I/O" in log
    assert log.count("written behind") == len(ids)
    pipeline.wait_until(lambda: not pipeline.unacked(), timeout_s=30,
                        what="every delivery acknowledged")
    assert_exactly_once(pipeline, tmp_path, ids)


@pytest.mark.timeout(400)
def test_killed_overlapping_worker_loses_and_duplicates_nothing(
        tmp_path: Path, assets: Assets, clip_server: ClipServer,
        pipeline: Pipeline) -> None:
    a = pipeline.start_worker("a", prefetch=OVERLAP)
    a.wait_warm()
    ids, lines, _ = serve_batch(clip_server, assets.clips, "killed", 24, delay_ms=1500)
    run = pipeline.enqueue(lines)
    # A holds every job (fetching ahead), and has finished a few.
    pipeline.wait_until(lambda: pipeline.runs.status(run.run_id).counts["done"] >= 2,
                        timeout_s=120, what="2 jobs done before the kill")
    held = len(pipeline.unacked())
    a.kill_hard()
    assert pipeline.runs.status(run.run_id).counts["queued"] >= 4, "the kill came too late"
    assert held >= 4, held
    b = pipeline.start_worker("b", prefetch=OVERLAP)
    b.wait_warm()

    status = pipeline.wait_run(run.run_id, expected_total=len(ids), timeout_s=240)

    # A record A wrote but did not acknowledge is found by B and skipped: never twice.
    assert status.counts["queued"] == 0 and status.counts["failed"] == 0, status.counts
    assert set(states(pipeline, run.run_id).values()) <= {"done", "skipped"}
    pipeline.wait_until(lambda: not pipeline.unacked(), timeout_s=30,
                        what="every delivery acknowledged")
    assert_exactly_once(pipeline, tmp_path, ids)
    print(f"A held {held} jobs when killed; {status.counts}")


@pytest.fixture
def stalled_host(assets: Assets) -> Iterator[tuple[str, threading.Event]]:
    """A preview host that answers (with a real clip) only once the test opens the gate."""
    gate = threading.Event()
    body = assets.clips[0].data

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            gate.wait(60)
            self.send_response(200)
            self.send_header("Content-Type", "audio/mp4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/stalled.m4a", gate
    gate.set()
    server.shutdown()
    server.server_close()


@pytest.mark.timeout(300)
def test_a_stalled_preview_host_holds_back_only_its_own_job(
        assets: Assets, clip_server: ClipServer, pipeline: Pipeline,
        stalled_host: tuple[str, threading.Event]) -> None:
    url, gate = stalled_host
    worker = pipeline.start_worker("s", prefetch=OVERLAP)
    worker.wait_warm()
    ids, lines, _ = serve_batch(clip_server, assets.clips, "free", 5, delay_ms=0)
    # The stalled job first: a child fetching in job order would wait on it.
    run = pipeline.enqueue([catalog_line("stalled", url), *lines])

    pipeline.wait_until(lambda: all(states(pipeline, run.run_id).get(rid) == "done"
                                    for rid in ids),
                        timeout_s=120, what="the other jobs done while one host stalls")

    assert states(pipeline, run.run_id)["stalled"] == "queued"
    gate.set()
    status = pipeline.wait_run(run.run_id, expected_total=len(ids) + 1, timeout_s=60)
    assert status.counts["queued"] == 0
