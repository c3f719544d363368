"""Do no call twice, against a real Redis: recordings queued in another run or already in
this one are not resolved again, and a dump in coverage order resumes mid-plan."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.errors import InputUnreadable
from contract.jobs import Job
from contract.layout import FEATURE_VERSION
from contract.records import record_key
from contract.settings import Settings
from contract.state import Runs, connect
from contract.store import open_store
from producers import submit as submit_mod
from producers.resolve import Resolution, Resolver
from producers.submit import start_dump, submit
from tests.harness.cli_env import point_cli_at
from tests.integration.test_submit import drain_all
from tests.unit.producers.test_plan import release, write_dump


class CountingResolver(Resolver):
    """The real resolver's skip checks and dump passes; the cascade's outcome replaced by
    a job per recording, each one counted as the calls it would have cost."""

    def __init__(self, settings: Settings, runs: Runs | None = None,
                 run_id: str | None = None, store=None) -> None:
        handled = None if runs is None else (lambda ids: runs.handled(run_id, ids))
        stored = None if store is None else (
            lambda rid: store.exists(record_key(FEATURE_VERSION, rid)))
        super().__init__(settings, None, None, handled=handled, stored=stored)
        self.resolved: list[str] = []
        self.lines: list[int] = []

    def _outcome(self, state, i: int) -> Resolution:
        rid = state.entries[i].recording_id
        self.resolved.append(rid)
        job = Job(recording_id=rid, preview_url=f"https://audio-ssl.itunes.apple.com/{rid}.m4a",
                  source="itunes")
        return Resolution(rid, job, 1.0, "test", None)

    def _resolve_line(self, line_no: int, item):
        self.lines.append(line_no)
        return super()._resolve_line(line_no, item)


@pytest.fixture
def env(redis_url: str, tmp_path: Path):
    client = connect(redis_url)
    client.flushdb()
    settings = Settings(broker_url=redis_url, store=str(tmp_path / "store"),
                        queue_high_water=100_000, sources=("itunes",))
    yield settings, Runs.from_url(redis_url), client
    client.close()


def overlap_dump(path: Path) -> Path:
    """Two albums, a compilation of four of their tracks (met first) and a reissue."""
    return write_dump(path, [
        release("comp", ["a1", "a2", "b1", "b2"], artist="Various Artists",
                track_artists=["A", "A", "B", "B"]),
        release("album-a", ["a1", "a2", "a3"], artist="A"),
        release("album-b", ["b1", "b2", "b3"], artist="B"),
        release("reissue-a", ["a1", "a2", "a3", "a4"], artist="A"),
    ])


def test_recordings_queued_in_another_run_are_not_resolved_again(env, tmp_path: Path) -> None:
    """Given run A (an earlier dump, an on-demand submission) with jobs of a1 and a2
    queued, when a second producer submits a dump holding them, expect no resolution of
    them: skipped in its run, nothing published for them; once A's job of a1 is done, a
    third producer finds it stored instead."""
    settings, runs, client = env
    store = open_store(settings.store)
    dump = write_dump(tmp_path / "release", [
        release("album-a", ["a1", "a2"], artist="A"),
        release("album-c", ["a1", "c1"], artist="A"),
    ])
    jobs = [Job(recording_id=r, preview_url=f"https://audio-ssl.itunes.apple.com/{r}.m4a",
                source="itunes") for r in ("a1", "a2")]
    first = submit([Resolution(j.recording_id, j, 1.0, "", None) for j in jobs], settings,
                   queue="ondemand", runs=runs, store=store)
    resolver = CountingResolver(settings, runs, "B", store)
    report = submit(resolver.resolve_dump(dump), settings, queue="batch", runs=runs,
                    run_id="B", store=store)
    assert resolver.resolved == ["c1"]  # album-a: no call at all; album-c: c1 only
    assert resolver.stats["releases_skipped"] == 1
    assert (report.skipped, report.skipped_queued, report.queued) == (2, 2, 1)
    assert report.in_run == 1  # a1 again on album-c: skipped in this run already
    status = runs.status("B")
    assert status.counts == {"queued": 1, "done": 0, "skipped": 2, "failed": 0}
    assert status.meta["skipped_queued"] == "2"
    assert [m["recording_id"] for m in drain_all(client, "batch")] == ["c1"]
    assert runs.status(first.run_id).counts["queued"] == 2  # A's jobs untouched

    # A's worker stores a1 and marks it done: no longer pending, stored instead
    store.put(record_key(FEATURE_VERSION, "a1"), b"{}")
    runs.succeed(first.run_id, "a1", "done")
    third = CountingResolver(settings, runs, "C", store)
    results = [res for _, res in third.resolve_dump(dump)]
    assert {r.recording_id: r.error_code for r in results} == {
        "a1": "already_stored", "a2": "already_queued", "c1": "already_queued"}
    assert third.resolved == []


def test_in_run_skip_works_in_line_order(env, tmp_path: Path) -> None:
    """Given a dump where a reissue repeats an album, expect the reissue to cost only its
    new recording, and nothing published twice."""
    settings, runs, client = env
    dump = overlap_dump(tmp_path / "release")
    resolver = CountingResolver(settings, runs, "R")
    report = submit(resolver.resolve_dump(dump), settings, queue="batch", runs=runs,
                    run_id="R", store=open_store(settings.store))
    # comp: 4; album-a: a3; album-b: b3; reissue: a4 (a1-a3 already in the run)
    assert resolver.resolved == ["a1", "a2", "b1", "b2", "a3", "b3", "a4"]
    assert report.in_run == 4 + 3
    published = Counter(m["recording_id"] for m in drain_all(client, "batch"))
    assert len(published) == 7 and max(published.values()) == 1


def test_coverage_order_skips_the_compilation_and_resumes_mid_plan(
        env, tmp_path: Path) -> None:
    """Given the compilation first in the dump, expect the plan to resolve the albums and
    the reissue first and the compilation then to cost no call; broken off after the
    first release, expect the rerun to continue at the next plan position."""
    settings, runs, client = env
    store = open_store(settings.store)
    dump = overlap_dump(tmp_path / "release")
    begin = start_dump(runs, str(dump), "d", order="coverage")
    assert begin.plan is not None and begin.start == 0
    assert [begin.plan.in_cover(n) for n in (1, 2, 3, 4)] == [False, False, True, True]

    first = CountingResolver(settings, runs, "P")

    def breaks_off() -> Iterator:
        for n, item in enumerate(first.resolve_dump(dump, plan=begin.plan)):
            if n == 4:  # album-b's 3 recordings are in, the reissue's only begun
                raise RuntimeError("upstream went away")
            yield item

    with pytest.raises(RuntimeError):
        submit(breaks_off(), settings, queue="batch", runs=runs, run_id="P", store=store,
               cursor_name="d")
    assert first.lines == [3, 4]  # the cover pass: album-b, the reissue (dump order)
    assert runs.cursor("d") == 3  # position 3: album-b's line in pass 1

    again = start_dump(runs, str(dump), "d", order="dump")  # a started run keeps its order
    assert again.plan == begin.plan and again.start == 4
    assert "coverage order" in again.note
    second = CountingResolver(settings, runs, "P")
    report = submit(second.resolve_dump(dump, start_line=again.start, plan=again.plan),
                    settings, queue="batch", runs=runs, run_id="P", store=store,
                    cursor_name="d")
    assert second.lines == [4, 1, 2]  # the reissue; then the compilation and album-a
    assert second.resolved == ["a1", "a2", "a3", "a4"]  # nothing of the second pass
    assert second.stats["releases_skipped"] == 2
    assert report.cursor == 4 + 2  # position of the last line, album-a, in pass 2
    published = Counter(m["recording_id"] for m in drain_all(client, "batch"))
    assert set(published) == {"a1", "a2", "a3", "a4", "b1", "b2", "b3"}
    assert max(published.values()) == 1
    runs.clear_cursor("d")
    assert runs.plan("d") is None


def test_cli_submit_dump_in_coverage_order(env, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from previewvec import cli

    settings, runs, client = env
    point_cli_at(monkeypatch, settings, tmp_path)
    dump = overlap_dump(tmp_path / "release.jsonl")
    built: list[CountingResolver] = []

    def build(s: Settings, *, store=None, runs=None, run_id=None) -> CountingResolver:
        built.append(CountingResolver(s, runs, run_id, store))
        return built[-1]

    monkeypatch.setattr(submit_mod, "build_resolver", build)
    assert cli.main(["submit", "--dump", str(dump), "--order", "coverage"]) == 0
    out = capsys.readouterr()
    run_id = out.out.strip()
    assert "planned: 2 of 4 releases cover 7 recordings" in out.err
    assert built[0].lines == [3, 4, 1, 2] and built[0].stats["releases_skipped"] == 2
    status = runs.status(run_id)
    assert status.meta["order"] == "coverage" and status.counts["queued"] == 7
    assert len(drain_all(client, "batch")) == 7

    # the same command again: the finished run left no cursor, so a new run, planned
    # anew, where every recording is known (queued in the first run): no call, no job
    assert runs.cursor(submit_mod.dump_cursor_name(str(dump))) is None
    assert cli.main(["submit", "--dump", str(dump), "--order", "coverage"]) == 0
    out = capsys.readouterr()
    assert "planned:" in out.err and "queued 0," in out.err and out.out.strip() != run_id
    assert built[1].resolved == []
    # in line order, in a new run: every recording is queued in the first run's jobs
    assert cli.main(["submit", "--dump", str(dump), "--restart"]) == 0
    err = capsys.readouterr().err
    assert "planned" not in err and built[2].lines == [1, 2, 3, 4]
    assert built[2].resolved == []
    assert runs.plan(submit_mod.dump_cursor_name(str(dump))) is None


def test_a_dump_changed_since_its_plan_is_refused(env, tmp_path: Path) -> None:
    _, runs, _ = env
    dump = overlap_dump(tmp_path / "release")
    start_dump(runs, str(dump), "d", order="coverage")
    with dump.open("a") as fh:
        fh.write(json.dumps(release("late", ["z1"])) + "\n")
    with pytest.raises(InputUnreadable, match="changed since it was planned"):
        start_dump(runs, str(dump), "d", order="coverage")
    assert start_dump(runs, str(dump), "d", order="coverage", restart=True).plan.lines == 5


def test_a_new_dump_at_the_same_path_is_read_in_full(env, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    """Given ``submit --dump weekly`` finished over a 3-line file, then the file replaced
    by another 2-line dump, expect the second command to read both new lines (the first
    run's cursor went with it), not to resume at line 4 and queue nothing."""
    from previewvec import cli

    runs = env[1]
    built = _cli_env(env, tmp_path, monkeypatch)
    weekly = write_dump(tmp_path / "weekly", [release(f"r{i}", [f"x{i}"]) for i in range(3)])
    assert cli.main(["submit", "--dump", str(weekly)]) == 0
    assert "queued 3," in capsys.readouterr().err
    write_dump(weekly, [release(f"n{i}", [f"y{i}"]) for i in range(2)])
    assert cli.main(["submit", "--dump", str(weekly)]) == 0
    err = capsys.readouterr().err
    assert "resuming" not in err and "queued 2," in err
    assert built[1].lines == [1, 2] and built[1].resolved == ["y0", "y1"]
    assert runs.cursor(submit_mod.dump_cursor_name(str(weekly))) is None


def test_an_interrupted_dump_replaced_by_another_file_is_not_resumed(
        env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Given a dump run stopped at line 2, then another file at its path, expect a refusal
    in one line (exit 7) saying what to do, and ``--restart`` to read the new file from
    line 1; the same file copied over itself (a new mtime) resumes."""
    import os

    from previewvec import cli

    settings, runs, _ = env
    monkeypatch.setenv("PREVIEWVEC_BROKER_URL", settings.broker_url)
    monkeypatch.setenv("PREVIEWVEC_STORE", settings.store)
    dump = write_dump(tmp_path / "weekly", [release(f"r{i}", [f"x{i}"]) for i in range(3)])
    name = submit_mod.dump_cursor_name(str(dump))
    assert start_dump(runs, str(dump), name).start == 0
    runs.set_cursor(name, 2)  # lines 1 and 2 published, then the run stopped
    os.utime(dump, (1, 1))  # touched, same bytes: still the same dump
    assert start_dump(runs, str(dump), name).start == 3

    write_dump(dump, [release(f"n{i}", [f"y{i}"]) for i in range(2)])
    assert cli.main(["submit", "--dump", str(dump)]) == 7
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "is not the file cursor" in err and "--restart" in err
    # the same size as the cursor's file, another content: refused as well
    write_dump(dump, [release(f"m{i}", [f"z{i}"]) for i in range(3)])
    with pytest.raises(InputUnreadable, match="same size"):
        start_dump(runs, str(dump), name)
    assert start_dump(runs, str(dump), name, restart=True).start == 0


def _cli_env(env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
             ) -> list[CountingResolver]:
    settings = env[0]
    point_cli_at(monkeypatch, settings, tmp_path)
    built: list[CountingResolver] = []

    def build(s: Settings, *, store=None, runs=None, run_id=None) -> CountingResolver:
        built.append(CountingResolver(s, runs, run_id, store))
        return built[-1]

    monkeypatch.setattr(submit_mod, "build_resolver", build)
    return built


def test_a_truncated_dump_stops_in_one_line_after_queueing_what_it_had(
        env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Given a .xz dump cut short, expect ``submit`` and ``resolve`` to stop with exit 7
    and one line "corrupt or truncated after line N", every line up to N queued (resolved)
    and the cursor at N, so running it again stops there again with nothing lost or
    queued twice."""
    import lzma

    from previewvec import cli

    _, runs, client = env
    built = _cli_env(env, tmp_path, monkeypatch)
    body = "".join(json.dumps(release(f"r{i}", [f"x{i}"])) + "\n" for i in range(2000))
    dump = tmp_path / "release.xz"
    dump.write_bytes(lzma.compress(body.encode())[:-100])
    assert cli.main(["submit", "--dump", str(dump)]) == 7
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is corrupt or truncated after line " in err[0]
    last = int(err[0].split("after line ")[1].split()[0])
    assert 0 < last < 2000 and built[0].lines == list(range(1, last + 1))
    assert runs.cursor(submit_mod.dump_cursor_name(str(dump))) == last
    assert len(drain_all(client, "batch")) == last  # line `last` included: nothing lost

    assert cli.main(["submit", "--dump", str(dump)]) == 7
    assert f"after line {last} " in capsys.readouterr().err
    assert built[1].lines == [] and len(drain_all(client, "batch")) == last

    out = tmp_path / "resolved.jsonl"
    assert cli.main(["resolve", "--dump", str(dump), "--out", str(out)]) == 7
    assert f"after line {last} " in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == last


def test_an_entity_that_breaks_the_resolver_does_not_stop_submit(
        env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Given ``"artist-credit": "Various"`` on the release between two good ones, expect
    the dump to finish: the good ones queued, the odd one failed ``invalid_entity``."""
    from previewvec import cli

    _, runs, _ = env
    _cli_env(env, tmp_path, monkeypatch)
    odd = {**release("r-odd", ["x-odd"]), "artist-credit": "Various"}
    dump = write_dump(tmp_path / "release", [release("r1", ["x1"]), odd,
                                             release("r2", ["x2"])])
    assert cli.main(["submit", "--dump", str(dump)]) == 0
    out = capsys.readouterr()
    assert "queued 2," in out.err and "unresolved 1," in out.err
    failures = dict(runs.failures(out.out.strip()))
    assert {rid: f["code"] for rid, f in failures.items()} == {
        "release:r-odd": "invalid_entity"}
