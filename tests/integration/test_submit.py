"""producers.submit against a real Redis: skipping, backpressure, the resumable dump cursor."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from redis import Redis

from contract.jobs import Job
from contract.layout import FEATURE_VERSION
from contract.records import record_key
from contract.settings import Settings
from contract.state import IF_ABSENT, Runs, connect
from contract.store import open_store
from producers import submit as submit_mod
from producers.queue import unwrap_resolution_lines
from producers.submit import (
    queue_keys,
    submit,
)
from tests.harness.cli_env import point_cli_at


@dataclass(frozen=True)
class FakeResolution:
    """Same shape as producers.resolve.Resolution."""

    recording_id: str
    job: Job | None
    score: float
    reason: str
    error_code: str | None


def rid(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def resolution(i: int) -> FakeResolution:
    """Every 7th recording is unresolvable; the others get a job."""
    if i % 7 == 3:
        return FakeResolution(rid(i), None, 0.4, "title=0.40", "no_confident_match")
    job = Job(recording_id=rid(i), preview_url=f"https://audio-ssl.itunes.apple.com/{i}.m4a",
              source="itunes")
    return FakeResolution(rid(i), job, 0.98, "title=1.00 artist=0.95", None)


def tracks(line: int) -> list[int]:
    """Recording numbers a dump line resolves to: every 4th line is a 3-track release."""
    return [line * 10 + k for k in range(3 if line % 4 == 0 else 1)]


class FakeResolver:
    """A dump of ``n`` lines; optionally breaks off after ``fail_after`` resolutions (which
    may be in the middle of a release's tracks)."""

    def __init__(self, n: int, *, fail_after: int | None = None,
                 error: type[BaseException] = RuntimeError) -> None:
        self.n = n
        self.fail_after = fail_after
        self.error = error
        self.calls: list[int] = []

    def resolve_dump(self, path: str, start_line: int = 0) -> Iterator[tuple[int, FakeResolution]]:
        self.calls.append(start_line)
        count = 0
        for line in range(start_line, self.n):
            for i in tracks(line):
                if self.fail_after is not None and count >= self.fail_after:
                    raise self.error("upstream went away")
                count += 1
                yield line, resolution(i)


@pytest.fixture
def env(redis_url: str, tmp_path: Path):
    client = connect(redis_url)
    client.flushdb()
    settings = Settings(broker_url=redis_url, store=str(tmp_path / "store"),
                        queue_high_water=100_000)
    yield settings, Runs.from_url(redis_url), client
    client.close()


def decode_message(raw: str) -> dict:
    """The job dict inside one kombu/Celery (protocol 2) message on a Redis list."""
    envelope = json.loads(raw)
    body = json.loads(base64.b64decode(envelope["body"]))
    args = body[0]
    return args[0]


def drain_all(client: Redis, queue: str) -> list[dict]:
    out = []
    for key in queue_keys(queue):
        out += [decode_message(m) for m in client.lrange(key, 0, -1)]
    return out


def test_unresolved_skipped_and_published(env) -> None:
    settings, runs, client = env
    store = open_store(settings.store)
    for i in (1, 2):  # already analysed at the current feature version
        store.put(record_key(FEATURE_VERSION, rid(i)), b"{}")
    report = submit([resolution(i) for i in range(10)], settings, queue="ondemand")
    # 10 inputs: 3 is unresolvable; 1 and 2 are stored.
    assert (report.resolved, report.unresolved, report.skipped, report.queued) == (9, 1, 2, 7)
    published = drain_all(client, "ondemand")
    assert sorted(m["recording_id"] for m in published) == sorted(
        rid(i) for i in range(10) if i not in (1, 2, 3))
    assert all(m["run_id"] == report.run_id for m in published)
    status = runs.status(report.run_id)
    assert status.counts == {"queued": 7, "done": 0, "skipped": 2, "failed": 1}
    assert status.meta["resolved"] == "9" and status.meta["unresolved"] == "1"
    assert status.meta["skipped_existing"] == "2"
    assert status.meta["resolution_state"] == "finished"
    failures = dict(runs.failures(report.run_id))
    assert failures[rid(3)]["code"] == "no_confident_match"
    assert failures[rid(3)]["message"] == "title=0.40"
    # Stored: handed to the reducer to upsert if the index lacks them, as a worker would.
    assert set(runs.peek_ready(10)) == {
        IF_ABSENT + record_key(FEATURE_VERSION, rid(i)) for i in (1, 2)}

    from previewvec.progress import format_status

    line = format_status(status)
    assert "resolved 9" in line and "unresolved 1" in line and "skipped_existing 2" in line

    # --force publishes the stored ones too.
    forced = submit([resolution(i) for i in (1, 2)], settings, queue="batch", force=True)
    assert (forced.skipped, forced.queued) == (0, 2)
    assert all(m["force"] for m in drain_all(client, "batch"))


def test_releases_the_resolver_skipped_as_stored_count_as_skipped(env) -> None:
    """Given resolutions the resolver did not attempt because every recording of their
    release is stored (``already_stored``, no upstream call), expect them counted
    skipped, handed to the reducer, and not recorded as failures."""
    settings, runs, _ = env
    stored = [FakeResolution(rid(i), None, 0.0, "every recording of the release is stored",
                             "already_stored") for i in (1, 2)]
    report = submit([*stored, resolution(4)], settings, queue="ondemand")
    assert (report.resolved, report.unresolved, report.skipped, report.queued) == (1, 0, 2, 1)
    status = runs.status(report.run_id)
    assert status.counts == {"queued": 1, "done": 0, "skipped": 2, "failed": 0}
    assert status.meta["skipped_existing"] == "2" and dict(runs.failures(report.run_id)) == {}
    assert set(runs.peek_ready(10)) == {
        IF_ABSENT + record_key(FEATURE_VERSION, rid(i)) for i in (1, 2)}


def test_backpressure_keeps_queue_under_high_water(env) -> None:
    settings, _, _ = env
    high_water, batch = 60, 25
    settings = replace(settings, queue_high_water=high_water)
    n = 600
    stop = threading.Event()
    consumed: list[str] = []
    max_depth = 0

    def monitor() -> None:
        nonlocal max_depth
        mon = Runs.from_url(settings.broker_url)
        while not stop.is_set():
            max_depth = max(max_depth, mon.queue_depth("batch"))

    def consumer() -> None:
        con = connect(settings.broker_url)
        while not stop.is_set():
            raw = con.lpop("batch")
            if raw is None:
                time.sleep(0.002)
                continue
            consumed.append(decode_message(raw)["recording_id"])
            time.sleep(0.0005)  # workers are slower than the producer

    threads = [threading.Thread(target=monitor), threading.Thread(target=consumer)]
    for t in threads:
        t.start()
    try:
        jobs = (Job(recording_id=rid(i), preview_url=f"https://p.scdn.co/{i}")
                for i in range(n))
        report = submit(jobs, settings, queue="batch", batch_size=batch, poll_s=0.005,
                        force=True)
        deadline = time.monotonic() + 20
        while len(consumed) < n and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert report.queued == n
    assert sorted(consumed) == sorted(rid(i) for i in range(n))
    assert report.waited_s > 0, "the producer never had to wait: the test proves nothing"
    assert 0 < max_depth <= high_water + batch


class HardStop(BaseException):
    """Like KeyboardInterrupt or SIGTERM: not an ``Exception``, so nothing is flushed."""


@pytest.mark.parametrize("error", [RuntimeError, HardStop])
@pytest.mark.parametrize("fail_after", [96, 97, 99])  # before, inside, after a release
def test_interrupted_dump_resumes_from_cursor(env, error: type[BaseException],
                                              fail_after: int) -> None:
    """RuntimeError: the input broke off (submit publishes the complete lines it had, then
    re-raises). HardStop: the process stops without flushing its buffered batch."""
    settings, runs, client = env
    store = open_store(settings.store)
    store.put(record_key(FEATURE_VERSION, rid(41)), b"{}")
    n, batch = 230, 20
    first = FakeResolver(n, fail_after=fail_after, error=error)
    with pytest.raises(error):
        submit(first.resolve_dump("dump.jsonl", start_line=runs.resume_line("dump")),
               settings, queue="batch", cursor_name="dump", batch_size=batch)
    cursor = runs.cursor("dump")
    assert cursor is not None
    done_items = sum(len(tracks(line)) for line in range(cursor + 1))
    assert done_items <= fail_after
    if error is RuntimeError:  # every complete line before the break was published
        assert sum(len(tracks(line)) for line in range(cursor + 2)) >= fail_after
    run_id = client.get("pv:cursor:dump:run")
    assert runs.status(run_id).meta["resolution_state"] in ("running", "failed")

    second = FakeResolver(n)
    report = submit(second.resolve_dump("dump.jsonl", start_line=runs.resume_line("dump")),
                    settings, queue="batch", cursor_name="dump", batch_size=batch)
    assert second.calls == [cursor + 1]
    assert report.run_id == run_id  # the resumed dump keeps counting in the same run
    assert report.cursor == n - 1
    assert runs.cursor("dump") is None and runs.cursor_run("dump") is None  # done: removed

    per_recording = Counter(m["recording_id"] for m in drain_all(client, "batch"))
    every = [i for line in range(n) for i in tracks(line)]
    expected = {rid(i) for i in every if i % 7 != 3 and i != 41}
    assert set(per_recording) == expected, "a job was lost"
    assert max(per_recording.values()) == 1, "a job was published twice"
    status = runs.status(run_id)
    assert status.counts["queued"] == len(expected)
    assert status.counts["failed"] == len([i for i in every if i % 7 == 3])
    assert status.counts["skipped"] == 1
    assert status.meta["resolution_state"] == "finished"

    # Run again once finished: a new run from line 0 (the real resolver knows the first
    # run's recordings and makes no call for them: test_dump_order.py).
    third = FakeResolver(n)
    again = submit(third.resolve_dump("dump.jsonl", start_line=runs.resume_line("dump")),
                   settings, queue="batch", cursor_name="dump", batch_size=batch)
    assert third.calls == [0] and again.run_id != run_id


def test_unwrap_resolution_lines(env) -> None:
    _, runs, _ = env
    ok = resolution(1)
    bad = resolution(3)
    plain = resolution(2).job.to_json()
    lines = [submit_mod.resolution_line(ok) + "\n", submit_mod.resolution_line(bad).encode(),
             plain, '{"job": 5}', "not json", ""]
    seen: list[tuple[int, dict]] = []
    out = list(unwrap_resolution_lines(lines, on_unresolved=lambda n, o: seen.append((n, o))))
    assert Job.from_json(out[0]) == ok.job
    assert out[1] == "" and seen[0][0] == 2 and seen[0][1]["error_code"] == "no_confident_match"
    assert out[2:] == [plain, "5", "not json", ""]

    run_id = "unwrap-test"
    runs.create(run_id)
    submit_mod.record_unresolved_line(runs, run_id, *seen[0])
    failures = dict(runs.failures(run_id))
    assert failures[rid(3)]["code"] == "no_confident_match"


def test_cli_enqueue_accepts_resolve_output_and_submit_resumes(
        env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from previewvec import cli

    settings, runs, client = env
    point_cli_at(monkeypatch, settings, tmp_path)

    # `previewvec resolve` output (and a plain job line) → `previewvec enqueue`.
    catalog = tmp_path / "resolved.jsonl"
    catalog.write_text("\n".join([submit_mod.resolution_line(resolution(i)) for i in range(5)]
                                 + [resolution(9).job.to_json(), "{broken"]) + "\n")
    assert cli.main(["enqueue", str(catalog), "--queue", "ondemand"]) == 0
    run_id = capsys.readouterr().out.strip()
    status = runs.status(run_id)
    assert status.counts["queued"] == 5  # 0, 1, 2, 4 and the plain line 9
    assert status.counts["failed"] == 2  # unresolved 3, the broken line
    failures = dict(runs.failures(run_id))
    assert failures[rid(3)]["code"] == "no_confident_match"
    assert failures["line:7"]["code"] == "invalid_job"

    # `previewvec submit --dump`: interrupted, then rerun with the same command.
    dump = tmp_path / "dump.jsonl"
    dump.write_text("")
    resolvers = iter([FakeResolver(40, fail_after=13), FakeResolver(40)])
    monkeypatch.setattr(submit_mod, "build_resolver", lambda s, **kw: next(resolvers))
    with pytest.raises(RuntimeError):
        cli.main(["submit", "--dump", str(dump)])
    capsys.readouterr()
    assert cli.main(["submit", "--dump", str(dump)]) == 0
    out = capsys.readouterr()
    run_id = out.out.strip()
    assert "resuming dump at line" in out.err
    per_recording = Counter(m["recording_id"] for m in drain_all(client, "batch"))
    assert max(per_recording.values()) == 1
    # 0, 1 and 2 (line 0) are still queued by the enqueue above: skipped, not published
    # twice (skipped_queued), as the real resolver's "queued in another run" check does
    assert len(per_recording) == len([i for line in range(40) for i in tracks(line)
                                      if i % 7 != 3 and i not in (0, 1, 2)])
    assert runs.status(run_id).meta["resolution_state"] == "finished"
    assert runs.status(run_id).meta["skipped_queued"] == "3"


def test_cli_resolve_writes_enqueueable_lines(
        env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from previewvec import cli

    settings, runs, _ = env
    monkeypatch.setenv("PREVIEWVEC_BROKER_URL", settings.broker_url)
    monkeypatch.setenv("PREVIEWVEC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(submit_mod, "build_resolver", lambda s, **kw: FakeResolver(8))
    out = tmp_path / "resolved.jsonl"
    assert cli.main(["resolve", "--dump", "x.jsonl", "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    every = [i for line in range(8) for i in tracks(line)]
    assert [line["recording_id"] for line in lines] == [rid(i) for i in every]
    assert set(lines[0]) == {"job", "recording_id", "match_score", "match_reason", "error_code"}
    unresolved = [line for line in lines if line["job"] is None]
    assert unresolved and all(u["error_code"] == "no_confident_match" for u in unresolved)
    capsys.readouterr()
    assert cli.main(["enqueue", str(out)]) == 0
    status = runs.status(capsys.readouterr().out.strip())
    assert status.counts["queued"] == len(lines) - len(unresolved)
    assert status.counts["failed"] == len(unresolved)
    with pytest.raises(SystemExit):
        cli.main(["resolve", "--new-releases", "--out", str(out)])  # needs --since


def test_an_unresolved_id_or_reason_with_a_lone_surrogate_is_recorded(env) -> None:
    """Written by the API-layer review: a lone surrogate (a JSON "\\udc80" escape in an
    answer or a resolve-output line, or a command-line argument of invalid bytes: "--release
    $'\\xff'") in an unresolved resolution's id or reason made the run's Redis write raise
    UnicodeEncodeError, ending the whole submission. It is recorded backslash-escaped."""
    settings, runs, _ = env
    odd = [FakeResolution("release:\udcff", None, 0.0, "MusicBrainz release/\udcff: HTTP 400",
                          "upstream_rejected"),
           FakeResolution("rec-\ud800", None, 0.0, "no recordings", "no_tracks")]
    report = submit([*odd, resolution(4)], settings, queue="ondemand")
    assert (report.unresolved, report.skipped, report.queued) == (1, 1, 1)
    failures = dict(runs.failures(report.run_id))
    assert failures["release:\\udcff"]["message"] == "MusicBrainz release/\\udcff: HTTP 400"
    run_id = report.run_id + "-file"
    runs.create(run_id, queue="batch", source="test")
    obj = {"recording_id": "rec-\udfff", "job": None, "error_code": "no_confident_match",
           "match_reason": "best \ud800"}
    assert submit_mod.record_unresolved_line(runs, run_id, 1, obj) is True
    assert dict(runs.failures(run_id))["rec-\\udfff"]["message"] == "best \\ud800"


def test_a_resolve_output_line_with_a_lone_surrogate_is_utf8(env) -> None:
    """Written by the API-layer review: ``previewvec resolve --out`` writes UTF-8; a lone
    surrogate in a resolution (see above) raised UnicodeEncodeError mid-run. The line
    carries it as its JSON escape, and reads back the same."""
    res = FakeResolution("release:\udcff", None, 0.0, "best 'x\ud800'", "upstream_rejected")
    line = submit_mod.resolution_line(res)
    assert "\\udcff" in line and line.encode("utf-8")
    back = json.loads(line)
    assert (back["recording_id"], back["match_reason"]) == (res.recording_id, res.reason)


def test_videos_and_releases_without_recordings_are_skipped_not_failed(env) -> None:
    """Given a video recording and a release without recordings (``video_recording``,
    ``no_tracks``: no call made), expect both marked skipped under their own counters,
    no failure recorded and nothing handed to the reducer."""
    settings, runs, _ = env
    skips = [FakeResolution(rid(1), None, 0.0, "a video recording", "video_recording"),
             FakeResolution("release:rel-9", None, 0.0, "no recordings", "no_tracks")]
    report = submit([*skips, resolution(4)], settings, queue="ondemand")
    assert (report.resolved, report.unresolved, report.skipped, report.queued) == (1, 0, 2, 1)
    status = runs.status(report.run_id)
    assert status.counts == {"queued": 1, "done": 0, "skipped": 2, "failed": 0}
    assert status.meta["skipped_video"] == "1" and status.meta["skipped_no_tracks"] == "1"
    assert dict(runs.failures(report.run_id)) == {} and runs.peek_ready(10) == []
    from previewvec.progress import format_status

    assert "skipped_video 1  skipped_no_tracks 1" in format_status(status)
    # the same lines of `previewvec resolve` output, enqueued
    run_id = report.run_id + "-file"
    runs.create(run_id, queue="batch", source="test")
    for n, res in enumerate(skips):
        obj = {"recording_id": res.recording_id, "job": None, "error_code": res.error_code}
        assert submit_mod.record_unresolved_line(runs, run_id, n, obj) is False
    assert runs.status(run_id).counts["skipped"] == 2 and dict(runs.failures(run_id)) == {}


def test_a_job_given_as_is_that_another_run_has_queued_is_skipped(env) -> None:
    """From the data-scientist review: the same POST /v1/jobs sent twice (a client's retry
    after a timeout) queued the recording twice; a job given as is never passed the
    resolver's "queued in another run" check. Its reason is shown by status."""
    settings, runs, client = env
    jobs = [resolution(i).job for i in (0, 1)]
    first = submit(jobs, settings, queue="ondemand")
    again = submit(jobs, settings, queue="ondemand")
    assert (first.queued, again.queued, again.skipped_queued) == (2, 0, 2)
    assert len(drain_all(client, "ondemand")) == 2
    status = runs.status(again.run_id)
    assert status.counts["skipped"] == 2 and status.meta["skipped_queued"] == "2"
    from previewvec.progress import format_status

    assert "skipped_queued 2" in format_status(status)
    forced = submit(jobs, settings, queue="ondemand", force=True)  # --force: published
    assert forced.queued == 2


class _AgainResolver:
    """Answers every recording with a job (the upstream is back)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def resolve_recording(self, mbid: str) -> FakeResolution:
        self.asked.append(mbid)
        return resolution(int(mbid[-12:]))


def test_retry_resolves_again_what_failed_for_a_transient_cause(
        env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """From the data-scientist review: a submission that failed while MusicBrainz was down
    (upstream_unavailable, no job) could not be retried: `retry` said "no job to re-run"
    for it, as for an invalid line."""
    from previewvec import cli

    settings, runs, client = env
    point_cli_at(monkeypatch, settings, tmp_path)
    run_id = "run-down"
    runs.create(run_id, queue="ondemand")
    runs.fail(run_id, rid(1), "upstream_unavailable", "MusicBrainz: HTTP 503")
    runs.fail(run_id, f"recording:{rid(2)}", "upstream_unavailable", "timed out")
    runs.fail(run_id, rid(4), "no_confident_match", "title=0.20")  # permanent: kept
    runs.fail(run_id, "line:7", "invalid_job", "not JSON")
    again = _AgainResolver()
    monkeypatch.setattr(submit_mod, "build_resolver", lambda s, **kw: again)
    assert cli.main(["retry", run_id]) == 0
    out = capsys.readouterr().out
    assert "resolved 2 recordings again" in out and "queued 2" in out
    assert sorted(again.asked) == [rid(1), rid(2)]
    assert sorted(m["recording_id"] for m in drain_all(client, "ondemand")) == [rid(1), rid(2)]
    status = runs.status(run_id)
    assert status.counts == {"queued": 2, "done": 0, "skipped": 1, "failed": 2}
    # rid(1) keeps its entry while its job is queued again (as a retried job's does, until
    # it is done); the lookup's own entry "recording:<rid 2>" is gone, marked skipped
    assert sorted(dict(runs.failures(run_id))) == sorted([rid(1), rid(4), "line:7"])
