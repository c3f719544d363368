"""Redis at its maxmemory (noeviction) mid-batch, with the production timing settings.

Real processes throughout: a private ``redis-server``, two ``celery worker`` subprocesses
(one at the production prefetch, whose main process fetches ahead and writes behind; one
at prefetch 1, whose pool child stores, accounts and acknowledges itself), clips over
HTTP from 127.0.0.1, the folder store, and ``previewvec reduce --follow`` into the
embedded index. While Redis refuses writes, every write, acknowledgement and reducer pass
is refused (the audit: both workers exited "Unrecoverable error: OutOfMemoryError",
``reduce --follow`` exited 3, and stored records were recorded as ``internal_error``).
Expected: no process exits, and once memory is freed every recording ends ``done`` (or
``skipped``: its acknowledgement refused, it came back after the visibility timeout and
found its record stored), once in the store and once in the index.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.layout import FEATURE_VERSION
from contract.records import record_key
from tests.harness.faults import FaultPipeline, lance_ids, redis_out_of_memory
from tests.harness.pipeline import (
    Assets,
    ClipServer,
    catalog_line,
    prepare_assets,
    running_clip_server,
)

pytestmark = [pytest.mark.slow, pytest.mark.faults]

JOBS = 40  # more than the prefetching worker reserves: both workers get jobs
DELAY_MS = 1000  # per preview, so that jobs are in flight when Redis fills up


@pytest.fixture(scope="module")
def assets(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Assets:
    return prepare_assets(request, tmp_path_factory, 4, duration_s=6.0)


@pytest.fixture
def clip_server() -> Iterator[ClipServer]:
    with running_clip_server() as server:
        yield server


@pytest.mark.timeout(480)
def test_redis_out_of_memory_mid_batch_ends_no_process_and_loses_nothing(
        tmp_path: Path, assets: Assets, clip_server: ClipServer) -> None:
    index = tmp_path / "index"
    pipeline = FaultPipeline(tmp_path / "pipe", cache_dir=assets.cache_dir,
                             store=str(tmp_path / "store"), appendonly=False,
                             extra_env={"PREVIEWVEC_INDEX": str(index)})
    try:
        workers = [pipeline.start_worker("ahead", prefetch=None),
                   pipeline.start_worker("plain", prefetch=1)]
        for worker in workers:
            worker.wait_warm()
        reducer = pipeline.start_reducer(batch_size=5)
        ids, lines = [], []
        for i in range(JOBS):
            rid, clip = f"oom-{i:02d}", assets.clips[i % len(assets.clips)]
            path = f"/oom/{i}/{clip.name}"
            clip_server.add(path, clip.data, clip.content_type)
            ids.append(rid)
            lines.append(catalog_line(rid, f"{clip_server.url(path)}?delay_ms={DELAY_MS}"))
        run = pipeline.enqueue(lines)
        pipeline.wait_until(lambda: pipeline.runs.status(run.run_id).counts["done"] >= 2,
                            timeout_s=120, what="2 jobs done before Redis fills up")

        with redis_out_of_memory(pipeline.raw):
            # Held until a worker and the reducer have met the refusal.
            pipeline.wait_until(
                lambda: any("OutOfMemoryError" in w.log() for w in workers)
                and "reduce failed (OutOfMemoryError" in reducer.log_tail(200),
                timeout_s=120, what=lambda: f"the refusals\n{pipeline.logs()}")
            assert pipeline.runs.status(run.run_id).counts["queued"] > 0, "refused too late"
        status = pipeline.wait_run(run.run_id, expected_total=JOBS, timeout_s=240)

        # A job whose acknowledgement was refused comes back after the visibility timeout
        # and is skipped as stored.
        assert status.counts["failed"] == 0, pipeline.logs()
        assert status.counts["done"] + status.counts["skipped"] == JOBS, status.counts
        assert all(w.alive() for w in workers), pipeline.logs()
        assert reducer.proc.poll() is None, pipeline.reducer_logs()
        assert "Unrecoverable error" not in "".join(w.log() for w in workers)
        stored = sorted(str(p.relative_to(tmp_path / "store"))
                        for p in (tmp_path / "store" / f"features/{FEATURE_VERSION}")
                        .rglob("*.json"))
        assert stored == sorted(record_key(FEATURE_VERSION, rid) for rid in ids)

        def indexed() -> bool:
            return (pipeline.runs.ready_depth() == 0 and index.exists()
                    and len(lance_ids(index)) >= JOBS)

        pipeline.wait_for(indexed, timeout_s=120, what="the reducer to index every record")
        rows = Counter(lance_ids(index))
        assert set(rows) == set(ids) and set(rows.values()) == {1}, rows
        for worker in workers:
            met = Counter(line.split("] ", 1)[-1][:60] for line in worker.log().splitlines()
                          if "OutOfMemoryError" in line or "maxmemory" in line)
            print(f"worker {worker.name}: {sum(met.values())} refusals met: {dict(met)}")
    finally:
        pipeline.close()
