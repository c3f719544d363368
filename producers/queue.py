"""Publishing jobs to the broker by task name: producers never import worker code.

**Backpressure.** Every producer (``enqueue``, ``retry``, ``submit``, the API) publishes in
chunks and, before each chunk, reads the queue's depth (``LLEN`` of the kombu Redis list
plus its priority-suffixed siblings); while it is above ``settings.queue_high_water`` it
sleeps and polls (:func:`wait_for_room`). A chunk is at most the mark (and at most
:data:`PUBLISH_CHUNK`), so one producer never takes the queue past twice the mark.

**Resumable catalogs.** :func:`enqueue_file` keys a cursor on the catalog's content hash:
after every published chunk the last catalog line it covers is stored with the run id, in
the same Redis transaction as the run's ``submitted`` counter. Running the same command
again after an interruption continues that run after that line; the cursor is dropped once
the whole catalog is published (so a later ``enqueue`` of the same file is a new run).
SIGINT and SIGTERM are held while a chunk is published and its cursor moved, so Ctrl-C
never leaves a chunk published without its cursor; only a hard kill (SIGKILL) in that
instant republishes one chunk, which is harmless (jobs and run transitions are
idempotent).

**One enqueue per catalog.** The cursor has one owner: :func:`plan_enqueue` takes the
lock ``pv:cursor:enqueue:<hash>:lock`` (:class:`CursorLease`, expiring
:data:`ENQUEUE_LOCK_TTL_S` after its holder dies, renewed meanwhile) before it reads the
cursor, and :func:`enqueue_file` releases it. A second ``enqueue`` of the same catalog
meanwhile fails (:class:`~contract.errors.AlreadyRunning`) naming the run at work, instead
of resuming from a cursor still moving and publishing the same jobs again.

**What is a catalog.** A regular file of JSON Lines. Anything else is refused before
anything is published (:class:`~contract.errors.InputUnreadable`): a pipe or FIFO (the
file is read twice, to hash it and to enqueue it, and a stream cannot be read again nor
resumed), a gzip file, UTF-16, a JSON array. Lines are read with a bounded ``readline``,
so one huge line costs :data:`MAX_CATALOG_LINE_BYTES` of memory and is an invalid line.
A recording id repeated in a catalog is published once: a repeat of the same job is
counted as a duplicate, a repeat with another job is an invalid line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import IO, Any
from uuid import UUID, uuid4

from celery import Celery
from kombu import Producer, Queue
from kombu.entity import PERSISTENT_DELIVERY_MODE

from contract.broker import QUEUES, TASK_NAME, celery_settings, queue_keys  # noqa: F401 - re-exported
from contract.errors import AlreadyRunning, InputUnreadable, UnknownRun, is_transient
from contract.jobs import (
    MAX_CATALOG_LINE_CHARS,
    NOT_JSON_LINES,
    CatalogLine,
    InvalidJob,
    Job,
    no_duplicate_keys,
    parse_catalog,
)
from contract.settings import Settings
from contract.state import Runs, new_run_id
from producers.dumps import binary_at

log = logging.getLogger(__name__)

PUBLISH_CHUNK = 500
BACKPRESSURE_POLL_S = 1.0
HASH_BLOCK_BYTES = 1 << 20
# Every line under the parser's character cap fits (4 bytes per character at most).
MAX_CATALOG_LINE_BYTES = 4 * MAX_CATALOG_LINE_CHARS + 2
ENQUEUE_LOCK_TTL_S = 30.0  # how long the lock of an enqueue that died outlives it
GZIP_MAGIC = b"\x1f\x8b"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # UTF-32 LE starts like UTF-16 LE


def wait_for_room(runs: Runs, queue: str, high_water: int, *,
                  poll_s: float = BACKPRESSURE_POLL_S,
                  sleep: Callable[[float], None] = time.sleep) -> float:
    """Block while ``queue`` holds more than ``high_water`` messages; returns seconds waited."""
    started = time.monotonic()
    depth = runs.queue_depth(queue)
    logged = False
    while depth > high_water:
        if not logged:
            log.info("queue %s holds %d > %d messages: waiting for workers", queue, depth,
                     high_water)
            logged = True
        sleep(poll_s)
        depth = runs.queue_depth(queue)
    waited = time.monotonic() - started
    if logged:
        log.info("queue %s down to %d after %.1f s: publishing", queue, depth, waited)
    return waited


def chunk_size(high_water: int | None) -> int:
    """Jobs per published chunk: at most the high-water mark, so a small mark holds."""
    if high_water is None:
        return PUBLISH_CHUNK
    return max(1, min(PUBLISH_CHUNK, high_water))


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM for the duration of the block, then deliver what arrived.

    Around "publish a chunk, move its cursor": an interruption lands before or after the
    pair, never between them. Only the main thread can install handlers; elsewhere (the
    API's background threads) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, _frame: object) -> None:
        caught.append(signum)

    held = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, hold) for sig in held}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            signal.raise_signal(caught[0])


def make_client(settings: Settings) -> Celery:
    """A publishing-only Celery app speaking the workers' contract (JSON only)."""
    client = Celery("previewvec-producer", broker=settings.broker_url)
    client.conf.update(**celery_settings(settings.broker_url))
    return client


@dataclass
class EnqueueReport:
    run_id: str
    queued: int
    invalid: int
    waited_s: float = 0.0  # time spent waiting on backpressure
    resumed_after: int = 0  # catalog lines a resumed enqueue skipped (published before)
    unresolved: int = 0  # `previewvec resolve` lines without a job
    duplicates: int = 0  # lines repeating an earlier line's job (published once)
    skipped_queued: int = 0  # jobs another run has queued: marked skipped, not published


def enqueue_catalog(lines: Iterable[str | bytes], settings: Settings, *, queue: str = "batch",
                    force: bool = False, run_id: str | None = None, source: str = "",
                    cursor_name: str | None = None, runs: Runs | None = None,
                    poll_s: float = BACKPRESSURE_POLL_S,
                    guard: Callable[[], None] | None = None,
                    skip_queued_elsewhere: bool = True) -> EnqueueReport:
    """Validate each catalog line, record invalid lines as failures of the run, publish
    the valid ones with backpressure. Returns the run id and counts.

    An existing ``run_id`` is continued (its meta kept). With ``cursor_name`` the last
    published line is recorded after every chunk (see :func:`enqueue_file`). A recording
    repeated is published once (:func:`once_per_recording`). ``guard`` is called before
    each chunk is published (:func:`publish`). A job another run has queued is skipped
    unless ``skip_queued_elsewhere`` is false (an enqueue started over: see
    :class:`EnqueuePlan`).
    """
    runs = runs or Runs.from_url(settings.broker_url)
    run_id = run_id or new_run_id()
    if not runs.exists(run_id):
        runs.create(run_id, queue=queue, source=source)
    duplicates: list[int] = []
    report = publish(once_per_recording(parse_catalog(lines), duplicates.append), runs,
                     settings, run_id=run_id, queue=queue, force=force,
                     high_water=settings.queue_high_water, poll_s=poll_s,
                     cursor_name=cursor_name, guard=guard,
                     skip_queued_elsewhere=skip_queued_elsewhere)
    report.duplicates = len(duplicates)
    return report


def once_per_recording(items: Iterable[CatalogLine],
                       on_duplicate: Callable[[int], None]) -> Iterator[CatalogLine]:
    """``items`` with each recording's first job only.

    A later line with the same job is dropped (reported to ``on_duplicate(line_no)``); one
    with another job for the recording becomes an invalid line: which of the two is meant
    is not ours to guess.
    """
    # 64-bit hashes, not the ids and jobs: ≈ 115 bytes per recording (1 M: 115 MB) instead
    # of ≈ 235. Two ids colliding (odds ≈ n² / 2⁶⁵: 3·10⁻⁸ for a million) would make the
    # later one a false duplicate.
    seen: dict[int, int] = {}  # hash(recording id) → line number << 64 | hash(job)
    for item in items:
        if item.job is None:
            yield item
            continue
        fingerprint = hash(item.job.to_json()) & _HASH_MASK
        first = seen.setdefault(hash(item.job.recording_id),
                                item.line_no << 64 | fingerprint)
        first_line = first >> 64
        if first_line == item.line_no:
            yield item
        elif first & _HASH_MASK == fingerprint:
            on_duplicate(item.line_no)
        else:
            yield CatalogLine(item.line_no, error=InvalidJob(
                f"conflicting duplicate of line {first_line}: recording_id "
                f"{item.job.recording_id!r} again, with another job"))


_HASH_MASK = (1 << 64) - 1


def catalog_digest(path: str | os.PathLike[str]) -> str:
    """BLAKE2b of the file's bytes (hex, 128 bits): what names its resume cursor.

    Refuses (:class:`InputUnreadable`) what is not a catalog: not a regular file, or a
    gzip, UTF-16 or JSON array file (:func:`check_catalog_start`).
    """
    try:
        # stat, not open: opening a FIFO blocks until something writes to it.
        if not stat.S_ISREG(os.stat(path).st_mode) and not os.path.isdir(path):
            raise InputUnreadable(
                f"catalog {os.fspath(path)!r} is not a regular file (a pipe, FIFO or "
                "device is read twice, to hash and to enqueue it, and cannot be resumed): "
                "save the stream to a file first and enqueue that file")
        digest = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as handle:
            block = handle.read(HASH_BLOCK_BYTES)
            check_catalog_start(path, block)
            while block:
                digest.update(block)
                block = handle.read(HASH_BLOCK_BYTES)
    except OSError as exc:
        raise InputUnreadable(_unreadable(path, exc)) from None
    return digest.hexdigest()


def check_catalog_start(path: str | os.PathLike[str], head: bytes) -> None:
    """Refuse a file whose first bytes show it is not JSON Lines in UTF-8: each would
    otherwise become one or two invalid "lines" and an enqueue that did nothing."""
    name = os.fspath(path)
    if head.startswith(GZIP_MAGIC):
        raise InputUnreadable(f"catalog {name!r} is gzip-compressed: decompress it first "
                              f"(gunzip -k {name})")
    if head.startswith(UTF16_BOMS):
        raise InputUnreadable(f"catalog {name!r} is UTF-16 or UTF-32 (it starts with a byte "
                              "order mark): save it as UTF-8")
    if head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"["):
        raise InputUnreadable(f"catalog {name!r} is a JSON array; {NOT_JSON_LINES} "
                              f"(convert it with: jq -c '.[]' {name})")
    if (bad := binary_at(head)) is not None:
        raise InputUnreadable(f"catalog {name!r} is not UTF-8 text (binary data at byte "
                              f"{bad}: an audio file?); {NOT_JSON_LINES}")



def _unreadable(path: str | os.PathLike[str], exc: OSError) -> str:
    reason = exc.strerror or type(exc).__name__
    return f"cannot read catalog {os.fspath(path)!r}: {reason}"


def enqueue_cursor_name(digest: str) -> str:
    return f"enqueue:{digest}"


class CursorLease:
    """The lock on one cursor, held by one producer: taken with a TTL, renewed by a daemon
    thread every third of it, released when done. A process that dies stops renewing, so
    its lock expires by itself; one whose lock expired anyway (Redis unreachable for a
    whole TTL) learns it from :meth:`check` before it publishes again."""

    def __init__(self, runs: Runs, name: str, run_id: str,
                 ttl_s: float = ENQUEUE_LOCK_TTL_S) -> None:
        self.runs, self.name, self.run_id, self.ttl_s = runs, name, run_id, ttl_s
        self.token = f"{run_id} {uuid4().hex}"  # the holder's run, for whoever finds it held
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lock and start renewing it; False when another producer holds it."""
        if not self.runs.acquire_cursor_lock(self.name, self.token, self.ttl_s):
            return False
        self._thread = threading.Thread(target=self._renew, name="pv-cursor-lock",
                                        daemon=True)
        self._thread.start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self.runs.renew_cursor_lock(self.name, self.token, self.ttl_s):
                    self.lost = True
                    return
            except Exception:  # Redis away for a moment: try again next time
                log.warning("could not renew the lock on %s", self.name, exc_info=True)

    def check(self) -> None:
        """Raise :class:`AlreadyRunning` once the lock is no longer ours."""
        if self.lost:
            raise AlreadyRunning(f"lost the lock on this catalog's cursor (Redis unreachable "
                                 f"for {self.ttl_s:.0f} s?): stopped run {self.run_id}; run "
                                 "the same command again to continue it")

    def release(self) -> None:
        """Stop renewing and delete the lock if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.runs.release_cursor_lock(self.name, self.token)


@dataclass
class EnqueuePlan:
    """Where an ``enqueue`` of a file starts: a new run, or the run a cursor names."""

    run_id: str
    cursor_name: str
    resume_after: int  # catalog lines already published (0: from the start)
    lease: CursorLease | None = field(default=None, repr=False)  # released by enqueue_file
    # `--restart`: the operator starts over, so what earlier runs claim to have queued is
    # published again (their messages may be gone: a purged queue); a worker skips a
    # job whose record is stored, so a job still queued costs a lookup, not a vector.
    restarted: bool = False


def plan_enqueue(path: str | os.PathLike[str], runs: Runs, *, restart: bool = False,
                 lock_ttl_s: float = ENQUEUE_LOCK_TTL_S) -> EnqueuePlan:
    """Check and hash the catalog, take the lock on its cursor and look the cursor up
    (``restart`` forgets it). Raises :class:`AlreadyRunning` while another enqueue of the
    same catalog holds the lock; :func:`enqueue_file` releases it."""
    name = enqueue_cursor_name(catalog_digest(path))
    for _ in range(5):
        before = _cursor_state(name, runs)
        run_id = new_run_id() if restart or before[0] is None else before[0]
        lease = CursorLease(runs, name, run_id, lock_ttl_s)
        if not lease.acquire():
            holder = runs.cursor_lock_holder(name)
            who = f"as run {holder.split()[0]}" if holder else "right now"
            raise AlreadyRunning(
                f"an enqueue of this catalog is already running {who}: wait for it to "
                f"finish, or if it died, run again after {lock_ttl_s:.0f} s")
        # The run id the lock names was chosen before the lock was ours: the cursor may
        # have moved (finished, started) in between; then plan again.
        if restart or _cursor_state(name, runs) == before:
            break
        lease.release()
    else:
        raise AlreadyRunning("other enqueues of this catalog keep starting: try again")
    if restart or before[0] is None:
        runs.clear_cursor(name)  # forgotten, or a cursor whose run is gone (expired)
        return EnqueuePlan(run_id, name, 0, lease, restarted=restart)
    return EnqueuePlan(run_id, name, before[1], lease)


def _cursor_state(name: str, runs: Runs) -> tuple[str | None, int]:
    """The cursor's run (None if none, or gone) and its line."""
    run_id = runs.cursor_run(name)
    if run_id is None or not runs.exists(run_id):
        return None, 0
    return run_id, runs.cursor(name) or 0


def enqueue_file(path: str | os.PathLike[str], plan: EnqueuePlan, settings: Settings, *,
                 runs: Runs, queue: str = "batch", force: bool = False,
                 poll_s: float = BACKPRESSURE_POLL_S) -> EnqueueReport:
    """Enqueue a JSON Lines catalog (jobs, or `previewvec resolve` output) per ``plan``.

    Lines up to ``plan.resume_after`` are read but not parsed or published again. The
    cursor is dropped once the file is done.
    """
    from producers.submit import record_unresolved_line

    unresolved = 0

    def on_unresolved(line_no: int, obj: dict[str, Any]) -> None:
        nonlocal unresolved
        unresolved += record_unresolved_line(runs, plan.run_id, line_no, obj)

    try:
        try:
            handle: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise InputUnreadable(_unreadable(path, exc)) from None
        if not runs.exists(plan.run_id):
            runs.create(plan.run_id, queue=queue, source=os.path.basename(os.fspath(path)))
        if runs.cursor_run(plan.cursor_name) is None:
            # Named now, not at the first chunk: an enqueue stopped before it (Ctrl-C in a
            # backpressure wait) is continued in this run, not left as an empty open one.
            runs.set_cursor_run(plan.cursor_name, plan.run_id)
        runs.set_producing(plan.run_id, True)  # until the file is done; kept if interrupted
        with handle:
            lines = _skip_lines(read_catalog_lines(handle), plan.resume_after)
            report = enqueue_catalog(unwrap_resolution_lines(lines, on_unresolved), settings,
                                     queue=queue, force=force, run_id=plan.run_id,
                                     source=os.path.basename(os.fspath(path)),
                                     cursor_name=plan.cursor_name, runs=runs, poll_s=poll_s,
                                     guard=plan.lease.check if plan.lease else None,
                                     skip_queued_elsewhere=not plan.restarted)
        runs.clear_cursor(plan.cursor_name)
        runs.set_producing(plan.run_id, False)
    finally:
        if plan.lease is not None:
            plan.lease.release()
    report.resumed_after = plan.resume_after
    report.unresolved = unresolved
    return report


def read_catalog_lines(handle: IO[bytes]) -> Iterator[bytes | InvalidJob]:
    """The lines of a catalog, each at most :data:`MAX_CATALOG_LINE_BYTES` in memory; a
    longer one is skipped to its end and comes as an :class:`InvalidJob`."""
    while raw := handle.readline(MAX_CATALOG_LINE_BYTES + 1):
        if len(raw) > MAX_CATALOG_LINE_BYTES and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # drain the rest of the long line
                raw = handle.readline(MAX_CATALOG_LINE_BYTES)
            yield InvalidJob(f"line longer than {MAX_CATALOG_LINE_BYTES} bytes (a JSON "
                             f"array on one line? {NOT_JSON_LINES})")
            continue
        yield raw


def unwrap_resolution_lines(
        lines: Iterable[str | bytes | InvalidJob],
        on_unresolved: Callable[[int, dict[str, Any]], None] | None = None,
) -> Iterator[str | bytes | InvalidJob]:
    """Turn ``previewvec resolve`` output lines into plain catalog lines.

    A line that is a JSON object with a ``"job"`` key is unwrapped to that job; the job
    schema refuses unknown fields, so a plain job line never has one and the two formats
    cannot be confused. A ``"job": null`` line (unresolved) becomes a blank line (line
    numbers stay right) and is reported to ``on_unresolved(line_no, obj)``. Every other
    line, one with a repeated key included, passes through untouched for
    :func:`contract.jobs.parse_catalog` to judge (it refuses repeated keys too).
    """
    for line_no, raw in enumerate(lines, start=1):
        if isinstance(raw, InvalidJob):
            yield raw
            continue
        marker = b'"job"' if isinstance(raw, bytes) else '"job"'
        if marker not in raw:  # type: ignore[operator]
            yield raw
            continue
        try:
            obj = json.loads(raw, object_pairs_hook=no_duplicate_keys)
        except (ValueError, RecursionError):  # also bad UTF-8: parse_catalog reports it
            yield raw
            continue
        if not isinstance(obj, dict) or "job" not in obj:
            yield raw
            continue
        if obj["job"] is None:
            if on_unresolved is not None:
                on_unresolved(line_no, obj)
            yield ""
            continue
        yield json.dumps(obj["job"], ensure_ascii=False)


def _skip_lines(lines: Iterable[bytes | InvalidJob], after: int) -> Iterator[bytes | InvalidJob]:
    """``lines`` with the first ``after`` blanked (line numbers stay right)."""
    for line_no, raw in enumerate(lines, start=1):
        yield b"" if line_no <= after else raw


@dataclass
class RetryReport:
    run_id: str
    queued: int = 0
    permanent: Counter[str] = field(default_factory=Counter)  # skipped, by code
    no_job: int = 0  # failures with nothing to re-run (invalid lines, unresolved)
    waited_s: float = 0.0
    # Recordings whose resolution failed for a cause that may be gone (an upstream that
    # was down): failure ids ("<mbid>", "recording:<mbid>") to resolve again.
    unresolved: list[str] = field(default_factory=list)


def recording_mbid(failure_id: str) -> str | None:
    """The MusicBrainz recording id a resolution failure is recorded under ("<mbid>", or
    "recording:<mbid>" for a failed lookup), or None (a release, a line, an ISRC)."""
    text = failure_id.removeprefix("recording:")
    try:
        return str(UUID(text)) if len(text) == 36 else None
    except ValueError:
        return None


def retry_run(run_id: str, runs: Runs, settings: Settings, *, queue: str | None = None,
              everything: bool = False, poll_s: float = BACKPRESSURE_POLL_S) -> RetryReport:
    """Re-publish a run's failed jobs into the same run: the transient failures
    (:func:`contract.errors.is_transient`), or every one with a job if ``everything``."""
    if not runs.exists(run_id):
        raise UnknownRun(f"no such run: {run_id}")
    report = RetryReport(run_id)
    jobs: list[Job] = []
    for failure_id, entry in runs.failures(run_id):
        raw_job = entry.get("job")
        code = str(entry.get("code", ""))
        if not raw_job:
            if is_transient(code) and recording_mbid(failure_id):
                report.unresolved.append(failure_id)
            else:
                report.no_job += 1
            continue
        if not everything and not is_transient(code):
            report.permanent[code] += 1
            continue
        try:
            jobs.append(Job.from_dict(raw_job))
        except InvalidJob:
            report.no_job += 1
    queue = queue or runs.status(run_id).meta.get("queue", "batch")
    published = publish(jobs, runs, settings, run_id=run_id, queue=queue,
                        high_water=settings.queue_high_water, poll_s=poll_s)
    report.queued = published.queued
    report.waited_s = published.waited_s
    return report


def publish(items: Iterable[CatalogLine | Job], runs: Runs, settings: Settings, *,
            run_id: str, queue: str = "batch", force: bool = False,
            high_water: int | None = None, poll_s: float = BACKPRESSURE_POLL_S,
            cursor_name: str | None = None,
            guard: Callable[[], None] | None = None,
            skip_queued_elsewhere: bool = False) -> EnqueueReport:
    """Mark the valid jobs queued in the run, then publish them, a chunk at a time.

    With ``skip_queued_elsewhere`` (catalogs), a job (without ``force``) whose recording
    another run has queued is marked skipped in this run and counted ``skipped_queued``
    instead, as :func:`producers.submit.submit` does for jobs given as is: the same
    catalog enqueued twice publishes each job once.

    With ``high_water``, each chunk waits until the queue holds at most that many messages
    and is at most that large (:func:`chunk_size`). With ``cursor_name``, each chunk's last
    catalog line is stored as the resume cursor together with the run's ``submitted``
    count, while SIGINT/SIGTERM are held (:func:`signals_held`). ``guard`` is called
    before each chunk goes out and may raise to stop (the cursor lock was lost).

    Each chunk goes out in one Redis round trip: kombu's publish batch buffers the LPUSHes
    that publishing one message at a time would make, and each message is what
    ``send_task`` produces (built by Celery's own ``create_task_message``, routed to the
    queue's default-priority list; tests/integration/test_publish.py compares the two).
    Publishing is at-least-once: a failed flush raises ``kombu.exceptions.BatchPublishError``
    (some of the chunk may be queued) and the caller republishes, which is harmless
    because jobs and run transitions are idempotent.
    """
    if queue not in QUEUES:
        raise ValueError(f"queue must be one of {QUEUES}")
    client = make_client(settings)
    report = EnqueueReport(run_id, 0, 0)
    with client.producer_pool.acquire(block=True) as producer:
        # Batched, a publish only appends to a pipeline, so kombu's per-message retry
        # wrapper has nothing to retry; keep it only where the transport cannot batch.
        retry = not producer.supports_batch_publish
        # Declared once here, not per message (send_task re-binds the queue every time).
        target = client.amqp.queues[queue]
        producer.maybe_declare(target)
        for chunk in _chunks(items, chunk_size(high_water)):
            jobs: list[Job] = []
            for item in chunk:
                if isinstance(item, CatalogLine) and item.job is None:
                    report.invalid += 1
                    runs.fail(run_id, f"line:{item.line_no}", "invalid_job",
                              f"line {item.line_no}: {item.error}")
                    continue
                job = item.job if isinstance(item, CatalogLine) else item
                jobs.append(replace(job, run_id=run_id, force=force or job.force))
            last_line = chunk[-1].line_no if isinstance(chunk[-1], CatalogLine) else None
            if jobs and high_water is not None:
                report.waited_s += wait_for_room(runs, queue, high_water, poll_s=poll_s)
            if guard is not None:
                guard()
            with signals_held():
                if jobs and skip_queued_elsewhere:
                    jobs = _skip_queued_elsewhere(jobs, runs, run_id, report)
                if jobs:
                    # Queued before published: a worker can finish a job within
                    # milliseconds, and a "queued" written after its "done" would count it
                    # as queued for ever.
                    # Each with its job: one the broker loses is published again
                    # (contract/state/lost.py).
                    runs.mark_many_queued(run_id, {j.recording_id: j.to_json() for j in jobs})
                    with producer.batch(max_size=len(jobs)):
                        for job in jobs:
                            _publish_task(client, producer, target, job.to_dict(), retry=retry)
                    report.queued += len(jobs)
                runs.chunk_published(run_id, len(jobs), cursor_name=cursor_name,
                                     line=last_line)
    return report


def _skip_queued_elsewhere(jobs: list[Job], runs: Runs, run_id: str,
                           report: EnqueueReport) -> list[Job]:
    """``jobs`` less those whose recording another run has queued (one round trip to
    know), which are marked skipped in ``run_id``. A job of this run (a chunk published
    again after a hard kill) is published again: its message may never have gone out."""
    handled = runs.handled(run_id, [job.recording_id for job in jobs if not job.force])
    elsewhere = [job for job in jobs if handled.get(job.recording_id) == "queued"]
    for job in elsewhere:
        runs.succeed(run_id, job.recording_id, "skipped", delivered=False)
    if elsewhere:
        runs.count(run_id, "skipped_queued", len(elsewhere))
        report.skipped_queued += len(elsewhere)
    return [job for job in jobs if handled.get(job.recording_id) != "queued"]


def _publish_task(client: Celery, producer: Producer, queue: Queue, job: dict[str, Any], *,
                  retry: bool) -> None:
    """Publish one featurize task as ``send_task(TASK_NAME, args=[job], queue=queue)`` would.

    The message comes from Celery's protocol-2 builder; what is left out of send_task is
    its per-call option routing and the ``before/after_task_publish`` signals (producers
    connect none), which cost about as much CPU as the rest of a publish.
    """
    task_id = str(uuid4())
    args = [job]
    # The text Flower shows as the arguments. Celery's saferepr is the largest single cost
    # of building a message. For a flat dict of ints, bools and strings that repr()
    # leaves unescaped (the usual job) the builtin repr is the same text; anything else,
    # or anything longer than Celery's cap, is left to saferepr (None).
    text = repr(args)
    plain = all(not isinstance(v, str) or repr(v) == f"'{v}'" for v in job.values())
    argsrepr = text if plain and len(text) <= client.amqp.argsrepr_maxsize else None
    headers, properties, body, _ = client.amqp.create_task_message(
        task_id, TASK_NAME, args, {}, root_id=task_id, reply_to=client.thread_oid,
        ignore_result=None, argsrepr=argsrepr, kwargsrepr="{}")
    # A direct exchange is published through the anonymous exchange, the queue's name as
    # the routing key: kombu's Redis transport pushes it onto that queue's list.
    producer.publish(body, exchange="", routing_key=queue.name, serializer="json",
                     delivery_mode=queue.exchange.delivery_mode or PERSISTENT_DELIVERY_MODE,
                     headers=headers, declare=[], retry=retry, **properties)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
