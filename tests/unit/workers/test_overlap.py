"""workers/overlap.py without a worker: the hand-off framing, the switch, the fallbacks;
writing behind when the run state (Redis) stays away or refuses commands (retried like a
store outage, then ``state_unavailable``, no longer ``internal_error``), and a write given
up (never acknowledged, no longer kept visible)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from contract.records import record_key
from contract.retry import Backoff
from contract.settings import Settings
from contract.state import Runs, connect
from contract.store import open_store
from previewvec.localredis import LocalRedis
from tests.harness.faults import redis_out_of_memory
from workers import overlap
from workers.featurize import Outcome, WorkerContext


def test_framing_round_trips_header_and_payload() -> None:
    """Given a header and a binary payload sent over a socket, expect both back intact,
    and None once the peer hangs up."""
    a, b = socket.socketpair()
    with a, b, b.makefile("rb") as stream:
        payload = b"\0\n{binary}\n"
        overlap._send(a, {"op": "take", "task": "t-1"}, payload)
        overlap._send(a, {"op": "store"})
        assert overlap._recv(stream) == ({"op": "take", "task": "t-1", "size": len(payload)},
                                         payload)
        assert overlap._recv(stream) == ({"op": "store", "size": 0}, b"")
        a.shutdown(socket.SHUT_WR)
        assert overlap._recv(stream) is None


def _consumer(multiplier: int, configured: int, hub: object = object()) -> SimpleNamespace:
    app = SimpleNamespace(conf=SimpleNamespace(worker_prefetch_multiplier=configured))
    return SimpleNamespace(app=app, prefetch_multiplier=multiplier, hub=hub)


def test_on_only_at_the_configured_multiplier_above_one() -> None:
    """An explicit --prefetch-multiplier that differs from the setting keeps plain Celery;
    so does a multiplier of 1, and a pool without an event loop."""
    settings = Settings(prefetch_multiplier=16)
    assert overlap.enabled(_consumer(16, 16), settings)
    assert not overlap.enabled(_consumer(1, 16), settings)
    assert not overlap.enabled(_consumer(24, 16), settings)
    assert not overlap.enabled(_consumer(16, 16, hub=None), settings)
    assert not overlap.enabled(_consumer(1, 1), Settings(prefetch_multiplier=1))


def test_a_child_without_its_main_process_does_everything_itself(tmp_path: Path) -> None:
    """No socket, or a dead one: nothing taken ahead, no record written behind."""
    line = overlap.Handoff(tmp_path / "gone.sock")
    assert line.take("t-1") is None
    from workers.featurize import Outcome

    outcome = Outcome("r", None, "done")
    assert line.writer("t-1")("k", b"{}", outcome, {}) is False
    assert outcome.written_behind is None


# --------------------------------------------------------------------------- writing behind

RUN, RECORDING = "run-wb", "rec-1"
JOB = {"recording_id": RECORDING, "run_id": RUN, "preview_url": "https://x.test/1.m4a"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalRedis]:
    with LocalRedis(appendonly=True, data_dir=tmp_path / "redis") as redis_server:
        yield redis_server


@pytest.fixture
def ctx(server: LocalRedis, tmp_path: Path) -> WorkerContext:
    settings = Settings.from_env({"PREVIEWVEC_BROKER_URL": server.url,
                                  "PREVIEWVEC_STORE": str(tmp_path / "store"),
                                  "PREVIEWVEC_CACHE_DIR": str(tmp_path / "cache")})
    runs = Runs.from_url(server.url)
    runs.create(RUN, queue="batch")
    runs.mark_many_queued(RUN, {RECORDING: json.dumps(JOB)})
    # No client-side retry: each attempt fails at once while Redis is away.
    return WorkerContext(settings=settings, store=open_store(settings.store, settings),
                         runs=Runs.from_url(server.url, retry=False, connect_timeout_s=1.0),
                         session=requests.Session())


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("workers.tasks.STORE_RETRIES", 6)
    monkeypatch.setattr("workers.tasks.STORE_BACKOFF", Backoff(base_s=0.3, cap_s=0.3))


def write(ctx: WorkerContext) -> tuple[Outcome | None, str]:
    key = record_key(ctx.version, RECORDING)
    outcome = Outcome(recording_id=RECORDING, run_id=RUN, status="done")
    return overlap._write_record(ctx, key, b"{}", outcome, dict(JOB),
                                 threading.Event()), key


def test_a_run_state_outage_through_every_retry_is_recorded_as_state_unavailable(
        ctx: WorkerContext, server: LocalRedis) -> None:
    server.stop()
    final, key = write(ctx)
    server.start()

    assert final is not None
    assert (final.status, final.error_code) == ("failed", "state_unavailable")
    assert "the run state (Redis) did not answer" in (final.error_message or "")
    assert ctx.store.exists(key)  # the record itself was written: a retry skips it


def test_a_run_state_back_within_the_retries_finishes_the_job(
        ctx: WorkerContext, server: LocalRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    class BackAfterFirstWait:
        """The outage ends during the first wait between attempts."""

        waits = 0

        def delay(self, attempt: int) -> float:
            self.waits += 1
            if self.waits == 1:
                server.start()
            return 0.01

    backoff = BackAfterFirstWait()
    monkeypatch.setattr("workers.tasks.STORE_BACKOFF", backoff)
    server.stop()
    final, key = write(ctx)

    assert backoff.waits == 1  # one failed attempt, then done
    assert final is not None and final.status == "done", final
    assert ctx.store.exists(key)
    status = Runs.from_url(server.url).status(RUN)
    assert status.counts.get("done") == 1 and not status.counts.get("queued")


def test_a_run_state_out_of_memory_is_retried_and_the_record_reaches_the_ready_list(
        ctx: WorkerContext, server: LocalRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given Redis at its maxmemory while a record is written behind (the audit: the
    stored record was recorded as failed ``internal_error``, its key never pushed), expect
    the refusal retried like an outage and, once memory is freed, the job done and its
    key on the ready list for the reducer."""
    raw = connect(server.url)
    refusals = []

    class FreedAfterFirstWait:
        waits = 0

        def delay(self, attempt: int) -> float:
            self.waits += 1
            if self.waits == 1:
                raw.config_set("maxmemory", "0")
            return 0.01

    monkeypatch.setattr("workers.tasks.STORE_BACKOFF", FreedAfterFirstWait())
    monkeypatch.setattr(overlap.log, "warning", lambda *args: refusals.append(args))
    with redis_out_of_memory(raw):
        final, key = write(ctx)

    assert final is not None and final.status == "done", final
    assert [args[1] for args in refusals] == ["state_unavailable"]
    assert Runs.from_url(server.url).peek_ready(10) == [key]
    status = Runs.from_url(server.url).status(RUN)
    assert status.counts.get("done") == 1 and not status.counts.get("failed")


def test_a_run_state_refusing_through_every_retry_is_recorded_as_state_unavailable(
        ctx: WorkerContext, server: LocalRedis) -> None:
    with redis_out_of_memory(connect(server.url)):
        final, key = write(ctx)

    assert final is not None
    assert (final.status, final.error_code) == ("failed", "state_unavailable")
    assert "the run state (Redis) refused the command: OutOfMemoryError" in (
        final.error_message or "")
    assert ctx.store.exists(key)  # the record itself was written: a retry skips it


def bare_overlap() -> overlap.Overlap:
    """Only the bookkeeping of held acknowledgements (no threads, socket or hub)."""
    state = overlap.Overlap.__new__(overlap.Overlap)
    state.lock = threading.Lock()
    state.writes = {}
    state.ctx = state.stopping = None
    return state


def request(task_id: str) -> SimpleNamespace:
    return SimpleNamespace(id=task_id, message=SimpleNamespace(delivery_tag=f"tag-{task_id}"))


@pytest.mark.parametrize("child_done_first", [False, True])
def test_a_write_given_up_is_never_acknowledged_nor_kept_visible(
        monkeypatch: pytest.MonkeyPatch, child_done_first: bool) -> None:
    monkeypatch.setattr(overlap, "_write_record", lambda *args: None)
    state = bare_overlap()
    state.writes["t1"] = overlap._Write(dict(JOB))
    if child_done_first:
        assert state.hold_ack(request("t1"))  # the child is done: its ack waits
        assert state.held_tags() == {"tag-t1"}
    state._write("t1", "key", b"{}", Outcome(recording_id=RECORDING, run_id=RUN,
                                             status="done"))
    assert state.held_tags() == set()  # the heartbeat lets it expire: redelivered
    if not child_done_first:
        assert state.hold_ack(request("t1"))  # held for good: never acknowledged
    assert state.writes == {}
