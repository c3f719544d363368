"""Overlap a worker's network I/O with its pool's compute, inside one worker process.

A pool child is worth its core only while it computes (decode, extract, encode). With
previews and the store far away, a job also waits ≈ 1 s on the network (a 300 ms first
byte, 0.5 MB at 8 Mbit/s, a HEAD and a PUT) against ≈ 0.1 CPU-s of work, so a child
that does its own I/O idles most of the time. Here the worker's main process, which
already holds the jobs Celery reserved for its children, does that waiting in threads:

* **ahead** (:class:`Overlap.defer`): for each job received, the store check (HEAD) and
  the preview fetch (:func:`workers.fetch.fetch_preview`: the same SSRF rules, size cap,
  timeouts and retries as in a child) run in up to ``prefetch_fetches`` threads per pool
  child. The job
  reaches the pool only once that is done, so the children take jobs whose preview is
  already in memory; a slow preview host holds back its own job, not the others.
* **behind** (:class:`Overlap.write_behind`): a child hands the encoded record back and
  returns; the main process stores it, pushes it to the ready list, accounts for it in
  its run, and only then acknowledges the message. Ack-after-store holds: a worker killed
  before the write leaves the message unacknowledged, to be redelivered (then skipped,
  since the record exists, or done again). Store outages are retried here with the task's
  backoff (``workers/tasks.py``), then recorded as ``store_unavailable``, as in a child.
  A run state (Redis) that stays away longer than its client's own retries, or refuses
  commands (at its maxmemory, MISCONF), is retried the same way, then recorded as
  ``state_unavailable`` (before, as ``internal_error``).

Children reach the main process over a Unix socket named after its pid
(:func:`socket_path`); without it (the feature off, the main process gone) a child does
everything itself, as before. Bounds per worker process: reserved jobs ≤ children ×
``prefetch_multiplier`` (Celery's QoS: unacknowledged messages, written-behind ones
included), so previews held ≤ that × ``fetch_max_bytes``; fetches at once ≤ children ×
``prefetch_fetches``; writes at once ≤ children × ``write_behind``.

It is on when the worker runs with the configured ``prefetch_multiplier`` (> 1). An
explicit ``--prefetch-multiplier`` on Celery's command line keeps plain Celery: the
reserved jobs wait, unfetched, and each child does its own I/O (the test harness and the
demo use that to keep one job per child in flight).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import bootsteps

from contract.errors import PreviewvecError
from contract.jobs import InvalidJob, Job
from contract.records import record_key
from contract.settings import Settings
from contract.store import StoreUnavailable
from workers import crashes

# workers.featurize pulls in librosa (numba): imported where used, so that workers.app,
# which registers the step below, can still set numba's cache up before numba loads.
if TYPE_CHECKING:
    from workers.featurize import Ahead, Outcome, WorkerContext

log = logging.getLogger(__name__)

_active: Overlap | None = None  # the main process's, while its consumer runs


def socket_path(main_pid: int) -> Path:
    return Path(tempfile.gettempdir()) / f"previewvec-overlap-{main_pid}.sock"


def active() -> Overlap | None:
    return _active


# --------------------------------------------------------------------------- framing


def _send(sock: socket.socket, header: dict[str, Any], payload: bytes = b"") -> None:
    sock.sendall(json.dumps({**header, "size": len(payload)}).encode() + b"\n" + payload)


def _recv(stream: Any) -> tuple[dict[str, Any], bytes] | None:
    line = stream.readline()
    if not line:
        return None
    header = json.loads(line)
    size = int(header.get("size", 0))
    payload = stream.read(size) if size else b""
    if len(payload) != size:
        return None
    return header, payload


# --------------------------------------------------------------------------- main process


@dataclass
class _Entry:
    request: Any
    dispatch: Callable[[], None]
    received: float = field(default_factory=time.perf_counter)
    ahead: Ahead | None = None  # None: not done ahead; the child does it itself


@dataclass
class _Write:
    job: dict[str, Any]
    outcome: Outcome | None = None  # set once written
    request: Any = None  # the request whose ack waits for the write
    abandoned: bool = False  # not written (the worker is stopping): never acknowledged


class Overlap:
    """The main process's side: prefetching, the hand-off socket, writing behind.

    Celery's calls (:meth:`defer`, :meth:`hold_ack`, :meth:`forget`) come on the
    consumer's event loop; finished fetches and writes are handed back to it through a
    pipe it watches, so dispatching and acknowledging stay on that loop.
    """

    def __init__(self, settings: Settings, hub: Any, children: int = 1) -> None:
        from workers.featurize import WorkerContext

        self.settings = settings
        self.ctx = WorkerContext.build(settings)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.entries: dict[str, _Entry] = {}
        self.writes: dict[str, _Write] = {}
        self.done: deque[Callable[[], None]] = deque()  # run on the event loop
        self.local = threading.local()
        children = max(1, children)
        self.fetchers = ThreadPoolExecutor(max(1, settings.prefetch_fetches) * children,
                                           "pv-ahead")
        self.writers = (ThreadPoolExecutor(settings.write_behind * children, "pv-behind")
                        if settings.write_behind > 0 else None)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.hub = hub
        self.attach(hub)
        self.path = socket_path(os.getpid())
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(self.path))
        self.server.listen(64)
        threading.Thread(target=self._accept, name="pv-handoff", daemon=True).start()

    def attach(self, hub: Any) -> None:
        """Watch the wake pipe from the consumer's event loop; again after every restart
        of the consumer: Celery resets the hub after a broker connection error, which
        drops every reader, and finished fetches would then never be dispatched (jobs
        received, never run). Wakes the loop once for what finished meanwhile."""
        self.hub = hub
        hub.add_reader(self.wake_r, self._drain)
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.wake_w, b"x")

    def close(self) -> None:
        """Stop handing out (children fall back to their own I/O); finish the writes
        under way (one in an outage stops retrying: unacknowledged, it is redelivered)."""
        self.stopping.set()
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            self.server.close()
        with contextlib.suppress(Exception):
            self.hub.remove_reader(self.wake_r)
        self.fetchers.shutdown(wait=False, cancel_futures=True)
        if self.writers is not None:
            self.writers.shutdown(wait=True)  # unacked: redelivered if we die meanwhile
        # Still on the event loop's thread, the connection still open: acknowledge what
        # was written (else it is redelivered, then skipped as stored).
        self._drain()

    # --- on the event loop ---------------------------------------------------------------

    def defer(self, request: Any, dispatch: Callable[[], None]) -> None:
        """Check and fetch ``request``'s job ahead; ``dispatch`` it to the pool once done."""
        entry = _Entry(request, dispatch)
        with self.lock:
            self.entries[request.id] = entry
        self.fetchers.submit(self._ahead, entry)

    def hold_ack(self, request: Any) -> bool:
        """True if ``request``'s record is still being written: acknowledged after it."""
        with self.lock:
            write = self.writes.get(request.id)
            if write is None:
                return False
            if write.abandoned:  # left unacknowledged: redelivered after the timeout
                del self.writes[request.id]
                return True
            if write.outcome is None:
                write.request = request
                return True
            del self.writes[request.id]
            return False

    def forget(self, task_id: str) -> None:
        with self.lock:
            self.entries.pop(task_id, None)

    def held_tags(self) -> set[str]:
        """Delivery tags of messages whose ack waits for a write (kept visible)."""
        with self.lock:
            requests = [w.request for w in self.writes.values() if w.request is not None]
        return {str(r.message.delivery_tag) for r in requests
                if getattr(getattr(r, "message", None), "delivery_tag", None)}

    def _drain(self, *_: Any) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_r, 4096):
                pass
        while self.done:
            callback = self.done.popleft()
            try:
                callback()
            except Exception:  # one bad request must not stop the others
                log.exception("overlap: could not hand on a finished job")

    def _on_loop(self, callback: Callable[[], None]) -> None:
        self.done.append(callback)
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.wake_w, b"x")

    # --- ahead, in fetch threads --------------------------------------------------------

    def _ahead(self, entry: _Entry) -> None:
        task_id = entry.request.id
        # The fetch ahead is an attempt of the job like the child's (workers/crashes.py):
        # a preview whose fetch kills this whole process must use up the crash cap, or it
        # is redelivered for ever. Past the cap nothing is fetched: the child records the
        # failure at its start.
        counted = self._attempt_started(task_id)
        try:
            if counted is not False:
                entry.ahead = self._check_and_fetch(entry.request.args[0])
        except Exception:  # anything unexpected: the child does it all, as before
            log.exception("overlap: could not work ahead on %s", entry.request.id)
        finally:
            if counted:
                self._attempt_ended(task_id)
        self._on_loop(entry.dispatch)

    def _attempt_started(self, task_id: str) -> bool | None:
        """Count the fetch ahead's start: True counted, False past the crash cap (do
        nothing), None not counted (Redis away: fetch uncounted rather than not at all)."""
        try:
            count = self.ctx.runs.attempt_started(task_id)
        except Exception:
            log.exception("overlap: could not count the start of %s", task_id)
            return None
        if crashes.over_cap(count, self.settings.max_crash_redeliveries):
            self._attempt_ended(task_id)  # the child counts its own start and gives up
            return False
        return True

    def _attempt_ended(self, task_id: str) -> None:
        """The fetch ahead returned: no crash; the child's attempt is counted apart."""
        try:
            self.ctx.runs.attempt_retried(task_id)
        except Exception:  # at worst a later crash counts one too many; the key expires
            log.exception("overlap: could not end the count of %s", task_id)

    def _check_and_fetch(self, job_data: Any) -> Ahead | None:
        from workers.featurize import Ahead
        from workers.fetch import FetchError, fetch_preview, make_session

        try:
            job = Job.from_dict(job_data)
        except InvalidJob:
            return None  # the child records it
        exists, check_s = None, 0.0
        if not job.force:
            t0 = time.perf_counter()
            try:
                exists = self.ctx.store.exists(record_key(self.ctx.version, job.recording_id))
            except (StoreUnavailable, PreviewvecError):
                return None  # the child meets the outage and takes the retry path
            check_s = time.perf_counter() - t0
            if exists:
                return Ahead(exists=True, check_s=check_s)
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = make_session(self.settings)
        t0 = time.perf_counter()
        try:
            data = fetch_preview(job.preview_url, self.settings, session=session).data
        except FetchError as exc:
            return Ahead(exists=exists, check_s=check_s, error=(exc.code, exc.message),
                         fetch_s=time.perf_counter() - t0)
        return Ahead(exists=exists, check_s=check_s, data=data,
                     fetch_s=time.perf_counter() - t0)

    # --- the hand-off socket --------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="pv-child",
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as stream:
            while (message := _recv(stream)) is not None:
                header, payload = message
                if header.get("op") == "take":
                    self._take(conn, str(header.get("task")))
                elif header.get("op") == "store":
                    _send(conn, {"taken": self._store(header, payload)})
                else:
                    return

    def _take(self, conn: socket.socket, task_id: str) -> None:
        with self.lock:
            entry = self.entries.pop(task_id, None)
        ahead = entry.ahead if entry is not None else None
        if ahead is None:
            _send(conn, {"found": False})
            return
        _send(conn, {"found": True, "exists": ahead.exists, "check_s": ahead.check_s,
                     "error": ahead.error, "fetch_s": ahead.fetch_s,
                     "held_s": time.perf_counter() - entry.received}, ahead.data or b"")

    # --- behind, in writer threads ----------------------------------------------------------

    def _store(self, header: dict[str, Any], payload: bytes) -> bool:
        from workers.featurize import Outcome

        if self.writers is None or self.stopping.is_set():
            return False
        task_id = str(header["task"])
        outcome = Outcome(**header["outcome"])
        with self.lock:
            self.writes[task_id] = _Write(header["job"])
        try:
            self.writers.submit(self._write, task_id, str(header["key"]), payload, outcome)
        except RuntimeError:  # shutting down: the child writes it itself
            with self.lock:
                self.writes.pop(task_id, None)
            return False
        return True

    def _write(self, task_id: str, key: str, data: bytes, outcome: Outcome) -> None:
        with self.lock:
            job = self.writes[task_id].job
        outcome.written_behind = True
        final = _write_record(self.ctx, key, data, outcome, job, self.stopping)
        if final is None:
            # Not written: never acknowledged, and no longer kept visible by the
            # heartbeat, so the message comes back after the visibility timeout.
            with self.lock:
                write = self.writes[task_id]
                if write.request is not None:  # the child is done: nothing will ask
                    del self.writes[task_id]
                else:
                    write.abandoned = True  # hold_ack drops it when the child is done
            return
        log.info("Task previewvec.featurize[%s] written behind: %r", task_id, final.to_dict())
        with self.lock:
            write = self.writes[task_id]
            write.outcome = final
            request = write.request
            if request is not None:
                del self.writes[task_id]
        if request is not None:
            self._on_loop(request.acknowledge_written)


def _write_record(ctx: WorkerContext, key: str, data: bytes, outcome: Outcome,
                  job: dict[str, Any], stopping: threading.Event) -> Outcome | None:
    """Store, push and account as the child would; outages of the store or of the run
    state (Redis) retried with the task's backoff, then recorded (``store_unavailable``,
    ``state_unavailable``). Returns the outcome with the timings behind the child, or
    None (left unacknowledged, to be redelivered) if the worker stopped meanwhile."""
    from workers.featurize import Outcome, account, store
    from workers.tasks import STORE_BACKOFF, STORE_RETRIES, is_outage, outage, record_failure

    t0 = time.perf_counter()
    for attempt in range(STORE_RETRIES + 1):
        try:
            store(ctx, key, data, outcome)
            account(ctx, outcome, job)
            break
        except Exception as exc:
            if not is_outage(exc):
                if isinstance(exc, PreviewvecError):  # a permanent store error
                    failed = record_failure(job, exc.code, exc.message, runs=ctx.runs)
                else:
                    log.exception("unexpected failure writing %s", key)
                    failed = record_failure(job, "internal_error",
                                            f"{type(exc).__name__}: {exc}", runs=ctx.runs)
                return Outcome(**{**outcome.__dict__, **failed})
            # The store, or Redis away (after its client's ~30 s of retries) or refusing.
            code, message = outage(exc)
            if attempt == STORE_RETRIES:
                failed = record_failure(job, code, message, runs=ctx.runs)
                return Outcome(**{**outcome.__dict__, **failed})
            log.warning("%s writing %s (%s); retry %d", code, key, exc, attempt + 1)
            if stopping.wait(STORE_BACKOFF.delay(attempt + 1)):
                return None
    for stage in ("store", "account"):
        outcome.overlapped_s[stage] = outcome.timings_s.get(stage, 0.0)
    outcome.overlapped_s["behind"] = time.perf_counter() - t0
    return outcome


def enabled(consumer: Any, settings: Settings) -> bool:
    """On with the configured prefetch multiplier (> 1) and an event loop to report to."""
    configured = consumer.app.conf.worker_prefetch_multiplier
    return (settings.prefetch_multiplier > 1 and consumer.prefetch_multiplier == configured
            and getattr(consumer, "hub", None) is not None)


class OverlapStep(bootsteps.StartStopStep):
    """Consumer step: starts :class:`Overlap` and routes received jobs through it."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.overlap: Overlap | None = None
        plain = c.on_task_request  # what the strategies call to hand a job to the pool

        def on_task_request(request: Any) -> None:
            overlap = self.overlap
            if overlap is None:
                plain(request)
                return

            def dispatch() -> None:
                if not overlap.stopping.is_set():  # stopping: left unstarted, redelivered
                    plain(request)

            overlap.defer(request, dispatch)

        # Before Tasks.start builds the strategies, which read this attribute.
        c.on_task_request = on_task_request

    def start(self, c: Any) -> None:
        global _active
        if self.overlap is not None:  # the consumer restarted (after a connection error)
            self.overlap.attach(c.hub)
            return
        settings = Settings.from_env()
        if not enabled(c, settings):
            return
        children = int(getattr(c.pool, "num_processes", 1) or 1)
        self.overlap = _active = Overlap(settings, c.hub, children)
        log.warning("overlapping I/O: per pool child (%d) %d jobs reserved, %d fetches "
                    "ahead, %d writes behind", children, c.prefetch_multiplier,
                    settings.prefetch_fetches, settings.write_behind)

    def shutdown(self, c: Any) -> None:
        global _active
        overlap, self.overlap = self.overlap, None
        _active = None
        if overlap is not None:
            overlap.close()


# --------------------------------------------------------------------------- pool child


class Handoff:
    """A pool child's line to its main process; every failure means "do it yourself"."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock: socket.socket | None = None
        self.stream: Any = None

    @classmethod
    def for_parent(cls) -> Handoff | None:
        path = socket_path(os.getppid())
        return cls(path) if path.exists() else None

    def _call(self, header: dict[str, Any], payload: bytes = b"") -> tuple[dict, bytes] | None:
        try:
            if self.sock is None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(self.path))
                self.stream = self.sock.makefile("rb")
            _send(self.sock, header, payload)
            reply = _recv(self.stream)
        except (OSError, ValueError):
            reply = None
        if reply is None:
            self.close()
        return reply

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.stream is not None:
                self.stream.close()
            if self.sock is not None:
                self.sock.close()
        self.sock = self.stream = None

    def take(self, task_id: str) -> Ahead | None:
        """What the main process did ahead for ``task_id``, or None (do it all here)."""
        from workers.featurize import Ahead

        reply = self._call({"op": "take", "task": task_id})
        if reply is None or not reply[0].get("found"):
            return None
        header, data = reply
        error = header.get("error")
        return Ahead(exists=header.get("exists"), check_s=float(header["check_s"]),
                     data=data if data else None, error=tuple(error) if error else None,
                     fetch_s=float(header["fetch_s"]), held_s=float(header["held_s"]))

    def writer(self, task_id: str) -> Callable[[str, bytes, Outcome, dict[str, Any]], bool]:
        def write_behind(key: str, data: bytes, outcome: Outcome, job: dict[str, Any]) -> bool:
            reply = self._call({"op": "store", "task": task_id, "key": key, "job": job,
                                "outcome": outcome.__dict__}, data)
            taken = bool(reply and reply[0].get("taken"))
            if taken:
                outcome.written_behind = True
            return taken

        return write_behind
