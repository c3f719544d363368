"""Resolved recordings → jobs on the broker: skip what is stored, bound the queue, resume.

:func:`submit` consumes :class:`~producers.resolve.Resolution` objects (or plain
:class:`~contract.jobs.Job` objects, or ``(line_no, Resolution)`` pairs from a dump) and,
for each one:

- **unresolved** (``job is None``): recorded as a failure of the run under its
  ``recording_id`` with the resolver's ``error_code`` and ``reason``; counted
  ``unresolved``;
- **already stored** (a record exists at the current feature version, and not
  ``force``): marked ``skipped`` in the run without publishing (pushed to the reducer's
  ready queue to be upserted only if the index lacks it, as a worker would); counted
  ``skipped_existing``;
- **queued in another run** (``already_queued``: the resolver made no call, a job of it
  is queued elsewhere, ``pv:pending:<id>``; or a job given as is, from a catalog line or
  ``POST /v1/jobs``, whose recording is pending there): marked ``skipped`` in this run, not
  published (that run's job computes it); counted ``skipped_queued`` (and in
  ``skipped``). If that job then fails for good, this run does not retry it: a later
  submission resolves it again;
- **skipped on purpose** (``video_recording``, ``no_tracks``: the resolver made no call
  for a video recording or a release without recordings): marked ``skipped`` in the run,
  not a failure; counted ``skipped_video`` / ``skipped_no_tracks`` (and in ``skipped``);
- **already in this run** (``already_in_run``: queued, done, skipped or failed for good
  here, or resolved by an earlier line of the same input): nothing written, counted in
  the report only;
- otherwise buffered and **published in batches** through :func:`producers.queue.publish`
  (a recording twice in one batch, resolved by two releases in flight at once, once).

Resolution progress lives in the run's meta hash (``resolved``, ``unresolved``,
``skipped_existing``, ``resolution_state``), next to the processing counters, so
``previewvec status`` and ``GET /v1/runs/{id}`` show both.

**Backpressure.** Before each batch is published the broker queue's depth is read
(:func:`producers.queue.wait_for_room`: ``LLEN`` of the kombu Redis list, plus its
priority-suffixed siblings); while it is above ``settings.queue_high_water`` the producer
sleeps and polls. The queue therefore never holds more than the mark plus one batch
because of this producer.

**Resumable dump runs.** With ``cursor_name``, the last dump line whose jobs were all
published is written to ``pv:cursor:<name>`` after every batch (and the run id to
``pv:cursor:<name>:run``). One dump line (a release) can yield many resolutions, so
batches are cut at line boundaries only and the cursor never names a half-done line. A
restarted run resolves from ``cursor + 1`` (``Runs.resume_line``) into the same run, once
:func:`start_dump` has checked that the file is the one the cursor counted (its size and
hashes of its first and last MiB; another file is refused, ``--restart`` starts over).
The cursor is removed when the input ends: running the command again starts a new run,
where what the first run queued or stored costs no call. In
coverage order (:func:`start_dump`, producers/plan.py) the cursor is a position in the
plan's passes instead, and the plan is stored next to the cursor. When
the input breaks off with an exception, the complete lines are published and the cursor
moved before the error surfaces; on a hard stop the unpublished tail is simply redone.
Publishing is *at-least-once*: a crash between publishing a batch and moving the cursor
republishes that one batch on restart. That is harmless: run state is per recording (the
queued/done/failed counters do not double), a worker skips a recording whose record is
already stored, and this function skips it before publishing. Only the resolution
counters in the run meta (``resolved`` …) may count the redone lines twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from contract.errors import InputUnreadable
from contract.jobs import Job
from contract.settings import Settings
from contract.state import Runs, new_run_id
from producers import dumps
from producers.queue import (  # noqa: F401 - the backpressure helpers lived here before
    BACKPRESSURE_POLL_S,
    PUBLISH_CHUNK,
    QUEUES,
    publish,
    queue_keys,
    wait_for_room,
)

log = logging.getLogger(__name__)

# Resolutions the resolver did not attempt (producers/resolve.py): the recording is stored
# (counted as skipped, not as a failure), queued in another run (skipped: that run's job
# computes it), or already in this run (its state left alone).
ALREADY_STORED = "already_stored"
ALREADY_QUEUED = "already_queued"
ALREADY_IN_RUN = "already_in_run"
# Resolutions deliberately not attempted (producers/resolve.py): a video recording, a
# release that lists no recording. Nothing failed and a retry would do the same, so they
# are marked skipped (not failed: a run of them alone does not end with failures),
# counted under their own name.
DELIBERATE_SKIPS = {"video_recording": "skipped_video", "no_tracks": "skipped_no_tracks"}

# A dump cursor moves at least this often (in input items) even when nothing is published,
# e.g. through a long stretch of already-stored recordings.
CURSOR_EVERY_ITEMS = 5_000
# Inputs that a person asked for go to the fast lane; bulk inputs to the batch queue.
DEFAULT_QUEUES = {
    "release": "ondemand",
    "isrcs": "ondemand",
    "new_releases": "ondemand",
    "jobs": "ondemand",
    "query": "batch",
    "dump": "batch",
}


class ResolutionLike(Protocol):
    recording_id: str
    job: Job | None
    score: float
    reason: str
    error_code: str | None


@dataclass
class SubmitReport:
    run_id: str
    resolved: int = 0
    unresolved: int = 0
    skipped: int = 0  # stored at the current feature version, queued elsewhere, or a
    # deliberate skip (a video recording, a release without recordings)
    queued: int = 0
    skipped_queued: int = 0  # of `skipped`: a job of it queued in another run
    in_run: int = 0  # resolved (or handled) earlier in this run: nothing done
    cursor: int | None = None  # last dump line fully published (dump runs)
    waited_s: float = 0.0  # time spent waiting on backpressure


# --------------------------------------------------------------------------- helpers


def default_queue(kind: str) -> str:
    return DEFAULT_QUEUES.get(kind, "batch")


# --------------------------------------------------------------------------- submit


def _split(item: Any) -> tuple[int | None, Any]:
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], int):
        return item[0], item[1]
    return None, item


def _previous_complete(line: int, cursor: int | None) -> int | None:
    """The cursor for "every line before ``line`` is done" (never moving it backwards)."""
    if line == 0:
        return cursor
    return line - 1 if cursor is None else max(cursor, line - 1)


def _open_store(settings: Settings):
    from contract.store import open_store

    return open_store(settings.store, settings)


def _open_run(runs: Runs, run_id: str | None, cursor_name: str | None, queue: str,
              meta: dict[str, str | int] | None) -> str:
    """Create or continue the run (default: the cursor's run when resuming a dump)."""
    if run_id is None and cursor_name is not None:
        run_id = runs.cursor_run(cursor_name)
    run_id = run_id or new_run_id()
    fields: dict[str, str | int] = {"queue": queue, "resolution_state": "running",
                                    **(meta or {})}
    if cursor_name is not None:
        fields["cursor"] = cursor_name
    if runs.exists(run_id):
        runs.update_meta(run_id, **fields)
        runs.update_meta(run_id, drop=("resolution_error",))
    else:
        runs.create(run_id, **fields)
    if cursor_name is not None:
        runs.set_cursor_run(cursor_name, run_id)
    return run_id


class _Submission:
    """One :func:`submit` call's state: pending jobs, the line in progress, the cursor.

    Dump items come as (line_no, resolution); one line (a release) may yield many. A line
    is complete once an item of a later line arrives (or the input ends), so batches are
    cut at line boundaries and the cursor only ever names complete lines.
    """

    def __init__(self, runs: Runs, settings: Settings, report: SubmitReport, *, queue: str,
                 force: bool, cursor_name: str | None, store: Any, batch_size: int,
                 poll_s: float) -> None:
        self.runs, self.settings, self.report = runs, settings, report
        self.run_id = report.run_id
        self.queue, self.force, self.cursor_name = queue, force, cursor_name
        self.store, self.batch_size, self.poll_s = store, batch_size, poll_s
        self.pending: list[Job] = []
        self.pending_ids: set[str] = set()  # a recording twice in a batch is published once
        self.line: int | None = None  # the line of the latest item
        self.line_start = 0  # index in `pending` where that line's jobs begin
        self.since_flush = 0

    def flush(self, upto: int, cursor: int | None) -> None:
        """Publish pending[:upto]; then move the cursor to ``cursor`` (a complete line)."""
        report = self.report
        if upto:
            report.waited_s += wait_for_room(self.runs, self.queue,
                                             self.settings.queue_high_water,
                                             poll_s=self.poll_s)
            published = publish(self.pending[:upto], self.runs, self.settings,
                                run_id=self.run_id, queue=self.queue, force=self.force)
            report.queued += published.queued
            self.pending = self.pending[upto:]
            self.pending_ids = {job.recording_id for job in self.pending}
            self.line_start = max(0, self.line_start - upto)
        if self.cursor_name is not None and cursor is not None and cursor != report.cursor:
            self.runs.set_cursor(self.cursor_name, cursor)
            report.cursor = cursor
        self.since_flush = 0

    def due(self) -> bool:
        return (len(self.pending) >= self.batch_size
                or self.since_flush >= CURSOR_EVERY_ITEMS)

    def take(self, n: int, item: Any) -> None:
        """Account one input item: record it unresolved, skip it, or add its job."""
        line_no, res = _split(item)
        if line_no is not None and line_no != self.line:
            if self.line is not None and self.due():  # `line` is complete: safe to cut
                self.flush(len(self.pending), self.line)
            self.line, self.line_start = line_no, len(self.pending)
        job = res if isinstance(res, Job) else res.job
        code = getattr(res, "error_code", None)
        if job is None and code == ALREADY_STORED:
            self._stored(res.recording_id)
        elif job is None and code == ALREADY_QUEUED:
            self._queued_elsewhere(res.recording_id)
        elif job is None and code == ALREADY_IN_RUN:
            self.report.in_run += 1
        elif job is None and code in DELIBERATE_SKIPS:
            self.report.skipped += 1
            skip_deliberately(self.runs, self.run_id, res.recording_id, code)
        elif job is None:
            self._unresolved(n, line_no, res)
        else:
            self._resolved(job)
        self.since_flush += 1
        if line_no is None and self.due():
            self.flush(len(self.pending), None)

    def _unresolved(self, n: int, line_no: int | None, res: Any) -> None:
        self.report.unresolved += 1
        fallback = f"line:{line_no}" if line_no is not None else f"unresolved:{n}"
        recording_id = str(getattr(res, "recording_id", "") or fallback)
        self.runs.fail(self.run_id, storable(recording_id[:200]),
                       storable(getattr(res, "error_code", None) or "no_confident_match"),
                       storable(getattr(res, "reason", "") or "not resolvable"))
        self.runs.count(self.run_id, "unresolved")

    def _stored(self, recording_id: str) -> None:
        """The resolver skipped a release entirely stored: count it as skipped."""
        from contract.layout import FEATURE_VERSION
        from contract.records import record_key

        self.report.skipped += 1
        self.runs.succeed(self.run_id, recording_id, "skipped", delivered=False)
        self.runs.push_ready_if_absent(record_key(FEATURE_VERSION, recording_id))
        self.runs.count(self.run_id, "skipped_existing")

    def _queued_elsewhere(self, recording_id: str) -> None:
        """A job of it is queued in another run, which computes it: skipped here."""
        self.report.skipped += 1
        self.report.skipped_queued += 1
        self.runs.succeed(self.run_id, recording_id, "skipped", delivered=False)
        self.runs.count(self.run_id, "skipped_queued")

    def _resolved(self, job: Job) -> None:
        from contract.records import record_key
        from contract.versions import current_version

        self.report.resolved += 1
        self.runs.count(self.run_id, "resolved")
        key = record_key(current_version(self.settings), job.recording_id)
        if not self.force and self.store.exists(key):
            self.report.skipped += 1
            self.runs.succeed(self.run_id, job.recording_id, "skipped", delivered=False)
            self.runs.push_ready_if_absent(key)  # indexed unless its writer died
            self.runs.count(self.run_id, "skipped_existing")
        elif not self.force and self.runs.pending_run(job.recording_id) not in (
                None, self.run_id):
            # A job given as is (a catalog line, POST /v1/jobs, a client's retry) that
            # another run has queued: the resolver's check never saw it.
            self._queued_elsewhere(job.recording_id)
        elif job.recording_id in self.pending_ids:
            self.report.in_run += 1  # two releases in flight resolved it at once
        else:
            self.pending.append(job)
            self.pending_ids.add(job.recording_id)

    def broke_off(self, *, between_lines: bool = False) -> None:
        """The input broke off: publish what was resolved except the line in progress (it
        may be incomplete; a resumed run redoes it), move the cursor to the last complete
        line. ``between_lines``: the input says its last line was whole (a dump unreadable
        from the next line on), so that one is published too: a resume would stop at the
        same place again and never get to it. Best effort: Redis may be the cause."""
        try:
            if self.line is None or between_lines:
                self.flush(len(self.pending), self.line)
            else:
                self.flush(self.line_start, _previous_complete(self.line, self.report.cursor))
        except Exception:
            log.exception("could not publish the last batch after an error")


def submit(resolutions: Iterable[ResolutionLike | Job | tuple[int, ResolutionLike]],
           settings: Settings, *, queue: str, force: bool = False, run_id: str | None = None,
           cursor_name: str | None = None, runs: Runs | None = None, store: Any = None,
           batch_size: int = PUBLISH_CHUNK, poll_s: float = BACKPRESSURE_POLL_S,
           meta: dict[str, str | int] | None = None) -> SubmitReport:
    """Record, skip or publish every resolution (see the module docstring); returns counts.

    ``run_id`` names an existing or new run (default: the cursor's run when resuming a
    dump, else a new id). ``cursor_name`` enables the resumable dump cursor; pass items as
    ``(line_no, resolution)`` pairs then. The store is only opened when ``force`` is false.
    """
    if queue not in QUEUES:
        raise ValueError(f"queue must be one of {QUEUES}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    runs = runs or Runs.from_url(settings.broker_url)
    run_id = _open_run(runs, run_id, cursor_name, queue, meta)
    if store is None and not force:
        store = _open_store(settings)
    report = SubmitReport(run_id, cursor=runs.cursor(cursor_name)
                          if cursor_name is not None else None)
    sub = _Submission(runs, settings, report, queue=queue, force=force,
                      cursor_name=cursor_name, store=store, batch_size=batch_size,
                      poll_s=poll_s)
    try:
        for n, item in enumerate(resolutions):
            sub.take(n, item)
        sub.flush(len(sub.pending), sub.line)  # the input ended: its last line is complete
    except Exception as exc:
        # Then let the error surface, the run marked failed (resumable with its cursor).
        # A dump that cannot be read on is raised by the reader between lines.
        sub.broke_off(between_lines=isinstance(exc, InputUnreadable))
        runs.update_meta(run_id, resolution_state="failed",
                         resolution_error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    runs.update_meta(run_id, resolution_state="finished")
    if cursor_name is not None:  # done: the same command again is a new run, as enqueue's
        runs.clear_cursor(cursor_name)
    return report


# --------------------------------------------------------------------------- resolve output


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def resolution_line(res: ResolutionLike) -> str:
    """One line of ``previewvec resolve`` output (also accepted by ``previewvec enqueue``)."""
    line = json.dumps({
        "job": res.job.to_dict() if res.job is not None else None,
        "recording_id": res.recording_id,
        "match_score": round(float(res.score), 4),
        "match_reason": res.reason,
        "error_code": res.error_code,
    }, ensure_ascii=False, separators=(",", ":"))
    # A lone surrogate (from an answer's JSON escape, or an argument of invalid bytes) is
    # written as its JSON escape: as a character no UTF-8 file can hold it.
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", line)


def storable(text: str) -> str:
    """``text`` with lone surrogates backslash-escaped: an id or reason read from an
    upstream answer or an input (JSON may escape a lone surrogate; a command-line argument
    of invalid bytes holds them) must not make the run's Redis write fail
    (UnicodeEncodeError), ending the submission on one odd entity."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def skip_deliberately(runs: Runs, run_id: str, recording_id: str, code: str) -> None:
    """Mark a recording (or ``release:<mbid>``) the resolver skipped on purpose
    (:data:`DELIBERATE_SKIPS`) as skipped in the run: nothing to compute, nothing failed."""
    runs.succeed(run_id, storable(recording_id[:200]), "skipped", delivered=False)
    runs.count(run_id, DELIBERATE_SKIPS[code])


def record_unresolved_line(runs: Runs, run_id: str, line_no: int, obj: dict[str, Any]) -> bool:
    """Record a ``"job": null`` resolve-output line as a failure of the run; True when it
    was one (a deliberate skip, such as a video recording, is marked skipped)."""
    rid = obj.get("recording_id")
    recording_id = rid[:200] if isinstance(rid, str) and rid else f"line:{line_no}"
    code = obj.get("error_code")
    if isinstance(code, str) and code in DELIBERATE_SKIPS:  # a list or object: no code
        skip_deliberately(runs, run_id, recording_id, code)
        return False
    reason = obj.get("match_reason")
    runs.fail(run_id, storable(recording_id), storable(
        code if isinstance(code, str) and code else "no_confident_match"),
        storable(reason if isinstance(reason, str) else "not resolvable"))
    runs.count(run_id, "unresolved")
    return True


# --------------------------------------------------------------------------- inputs


INPUT_KINDS = ("release", "isrcs", "query", "new_releases", "dump")


def resolve_again(failure_ids: Iterable[str], run_id: str, settings: Settings, runs: Runs,
                  *, queue: str) -> SubmitReport:
    """Resolve again, into ``run_id``, the recordings whose resolution failed there for a
    cause that may be gone (``previewvec retry``; ids from
    :func:`producers.queue.retry_run`). A lookup's own failure ("recording:<mbid>") is
    marked skipped once the recording has an answer of its own."""
    from producers.queue import recording_mbid

    store = _open_store(settings)
    resolver = build_resolver(settings, store=store, runs=runs, run_id=run_id)

    def resolutions() -> Iterator[Any]:
        for failure_id in failure_ids:
            res = resolver.resolve_recording(recording_mbid(failure_id))
            if res.recording_id != failure_id:
                runs.succeed(run_id, failure_id, "skipped", delivered=False)
            yield res

    return submit(resolutions(), settings, queue=queue, run_id=run_id, runs=runs, store=store)


def build_resolver(settings: Settings, *, store: Any = None, runs: Runs | None = None,
                   run_id: str | None = None) -> Any:
    """The resolver on ``settings``. Recordings that have a record at the current feature
    version (``store``), or a job queued in any run, or a state in ``run_id`` (``runs``)
    are not resolved, and a release whose recordings are all such costs no call (neither
    with --force, which passes neither)."""
    from producers.resolve import Resolver  # lazy: network clients only when resolving

    handled = None
    if runs is not None:
        def handled(recording_ids: Any) -> dict[str, str]:
            return runs.handled(run_id, recording_ids)
    if store is None:
        return Resolver.build(settings, handled=handled)
    from contract.layout import FEATURE_VERSION
    from contract.records import record_key

    return Resolver.build(
        settings, stored=lambda rid: store.exists(record_key(FEATURE_VERSION, rid)),
        handled=handled)


def iter_resolutions(resolver: Any, kind: str, value: Any, *,
                     start_line: int = 0, plan: Any = None) -> Iterator[Any]:
    """Dispatch one input to the resolver. ``value`` per kind: release → MBID, isrcs → list,
    query → Lucene string, new_releases → ``(since, until | None)`` dates, dump → path (the
    items are then ``(line_no, Resolution)`` pairs, from ``start_line``; with a ``plan``,
    ``(position, Resolution)`` pairs in the plan's order, from position ``start_line``)."""
    if kind == "release":
        return resolver.resolve_release(value)
    if kind == "isrcs":
        return resolver.resolve_isrcs(list(value))
    if kind == "query":
        return resolver.resolve_query(value)
    if kind == "new_releases":
        since, until = value
        return resolver.resolve_new_releases(since, until)
    if kind == "dump":
        if plan is None:
            return resolver.resolve_dump(value, start_line=start_line)
        return resolver.resolve_dump(value, start_line=start_line, plan=plan)
    raise ValueError(f"unknown input kind {kind!r}; known: {INPUT_KINDS}")


DUMP_ORDERS = ("dump", "coverage")


@dataclass
class DumpStart:
    """Where a dump run starts: the first line (or plan position) and the plan, if any."""

    start: int
    plan: Any = None  # producers.plan.Plan, or None for line order
    note: str = ""  # what the user should know (resuming, planned, order kept)


def start_dump(runs: Runs, path: str, cursor_name: str, *, order: str = "dump",
               restart: bool = False,
               progress: Callable[[int], None] | None = None) -> DumpStart:
    """Resume or begin a dump run under ``cursor_name``, in ``order``.

    A run that has started keeps the order it started in: its cursor counts plan positions
    or dump lines, and only ``restart`` (which forgets the cursor and the plan) changes
    that. A new ``coverage`` run plans the dump first (one extra read, producers/plan.py)
    and stores the plan next to the cursor."""
    from producers.plan import Plan, make_plan

    if order not in DUMP_ORDERS:
        raise ValueError(f"order must be one of {DUMP_ORDERS}")
    if restart:
        runs.clear_cursor(cursor_name)
    started = runs.cursor(cursor_name) is not None
    stored = runs.plan(cursor_name)
    identity = dumps.file_identity(path)
    size = int(identity["bytes"])
    plan = Plan.from_stored(*stored) if stored is not None else None
    if plan is not None and plan.dump_bytes != size:
        raise InputUnreadable(f"dump {path!r} changed since it was planned "
                              f"({plan.dump_bytes} → {size} bytes): --restart starts over")
    if started:
        _check_same_dump(runs, path, cursor_name, identity)
        start = runs.resume_line(cursor_name)
        kept = "coverage" if plan is not None else "dump"
        note = f"resuming dump at {'plan position' if plan else 'line'} {start}"
        if kept != order:
            note += f" (in {kept} order, as the run began; --restart to change)"
        return DumpStart(start, plan, note)
    if order == "dump":
        if plan is not None:
            runs.clear_cursor(cursor_name)  # planned, nothing published: plan dropped
        runs.set_cursor_input(cursor_name, identity)
        return DumpStart(0, None, "")
    if plan is None:
        plan, _ = make_plan(path, progress=progress)
        runs.set_plan(cursor_name, plan.cover, plan.meta())
    runs.set_cursor_input(cursor_name, identity)
    return DumpStart(0, plan, f"planned: {plan.cover_releases} of {plan.releases} releases "
                              f"cover {plan.recordings} recordings; they go first")


def _check_same_dump(runs: Runs, path: str, cursor_name: str,
                     identity: dict[str, int | str]) -> None:
    """Refuse to resume a cursor over another file than the one it counts the lines of.

    Refused rather than started afresh: the cursor's run is half done, and the file may
    have been replaced by mistake; the user chooses (``--restart`` or another
    ``--cursor``). A cursor from before files were recorded adopts this file."""
    recorded = runs.cursor_input(cursor_name)
    if recorded is None:
        runs.set_cursor_input(cursor_name, identity)
        return
    if recorded == {k: str(v) for k, v in identity.items()}:
        return
    was, now = recorded.get("bytes", "?"), identity["bytes"]
    change = (f"{was} → {now} bytes" if str(was) != str(now)
              else f"same size, {now} bytes, other content")
    raise InputUnreadable(
        f"dump {path!r} is not the file cursor {cursor_name!r} was counting ({change}): "
        f"--restart starts this file over in a new run, or --cursor NAME keeps both")


def dump_cursor_name(path: str) -> str:
    """Default cursor name for a dump: its file name plus a hash of its absolute path."""
    absolute = os.path.abspath(path)
    digest = hashlib.sha1(absolute.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"{os.path.basename(absolute)}-{digest}"
