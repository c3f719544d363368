"""The ``previewvec`` command line: every command of the product."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import NoReturn

from contract.errors import (
    ConfigError,
    IndexUnreadable,
    InputUnreadable,
    InvalidQuery,
    NotFound,
    NothingStored,
    PreviewvecError,
    StoreError,
    StoreUnavailable,
    UnknownRun,
    UpstreamError,
    VectorIndexError,
)
from contract.layout import PITCH_CLASSES
from contract.settings import Settings
from previewvec.faults import MAX_K

# Exit statuses: one per family of expected operational fault (README "Commands").
EXIT_FAILED_INPUTS = 1  # extract: some inputs failed; also any other typed failure
EXIT_USAGE = 2  # bad arguments or configuration (argparse uses 2 as well)
EXIT_REDIS = 3  # Redis (PREVIEWVEC_BROKER_URL) unreachable
EXIT_STORE = 4  # the feature store is down, refuses the credentials, or has no bucket
EXIT_INDEX = 5  # the vector index is unreachable or refuses the request
EXIT_NOT_FOUND = 6  # unknown run id, recording not stored, empty store or index
EXIT_INPUT_FILE = 7  # a file named on the command line cannot be read (or written)
EXIT_UPSTREAM = 8  # MusicBrainz / iTunes unavailable or refusing
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it
EXIT_BROKEN_PIPE = 141  # the reader of stdout went away (128 + SIGPIPE), as shells report it

MAX_RUNS_SHOWN = 1_000_000  # `runs -n`
UVICORN_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # `api`
MIN_INTERVAL_S, MAX_INTERVAL_S = 0.1, 3600.0  # `status --watch --interval`


class Interrupted(PreviewvecError):
    """The user interrupted a command (Ctrl-C); the message says how to continue."""

    code = "interrupted"


# Most specific first; a typed failure of no listed family exits 1.
EXIT_FAMILIES: tuple[tuple[type[PreviewvecError], int], ...] = (
    (ConfigError, EXIT_USAGE),
    (InvalidQuery, EXIT_USAGE),
    (StoreError, EXIT_STORE),
    (VectorIndexError, EXIT_INDEX),
    (NotFound, EXIT_NOT_FOUND),
    (InputUnreadable, EXIT_INPUT_FILE),
    (UpstreamError, EXIT_UPSTREAM),
    (Interrupted, EXIT_INTERRUPTED),
)


def exit_status(exc: PreviewvecError) -> int:
    """The documented exit status for a typed failure."""
    if exc.code == "invalid_filter":  # built from the command's own options
        return EXIT_USAGE
    for family, status in EXIT_FAMILIES:
        if isinstance(exc, family):
            return status
    return EXIT_FAILED_INPUTS


def _say(message: str) -> None:
    """One line on stderr, whatever the message holds."""
    print("previewvec: " + " ".join(str(message).split()), file=sys.stderr, flush=True)


def _log_progress() -> None:
    """Long producer commands log their progress (INFO); libraries only their warnings."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("botocore", "boto3", "urllib3", "celery", "kombu", "amqp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _check_store(store: object) -> None:
    """Probe the store (S3: HEAD the bucket) so a misconfiguration fails now, typed."""
    check = getattr(store, "check", None)
    if check is not None:
        check()


def _valid_unicode(text: str) -> str:
    """``text`` as valid Unicode, for a JSON line: the bytes of a file name that are not
    UTF-8 (``sys.argv`` holds them as lone surrogates) shown as ``\\xNN``. Written as they
    were, they failed the whole batch with a UnicodeEncodeError under a strict UTF-8
    stdout, or made a line that is not UTF-8."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name's byte gives
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _extract_one(path: str, settings: Settings) -> dict[str, object]:
    from contract.versions import derived_version
    from workers.analysis import analyze

    shown = _valid_unicode(path)
    try:
        result = analyze(path, settings)
    except PreviewvecError as exc:
        error = exc.to_dict()
        return {"input": shown, "ok": False,
                "error": {**error, "message": _valid_unicode(str(error["message"]))}}
    except OSError as exc:
        return {"input": shown, "ok": False,
                "error": {"code": "unreadable", "message": _valid_unicode(str(exc))}}
    except Exception as exc:  # a bug must not end the batch: this file fails, the rest run
        return {"input": shown, "ok": False, "error": {
            "code": "internal_error",
            "message": _valid_unicode(f"{type(exc).__name__}: {exc}")}}
    features = result.features
    return {
        "input": shown,
        "ok": True,
        "feature_version": derived_version(settings),  # what these settings computed
        "descriptors": features.descriptors,
        "vector": [float(v) for v in features.vector],
    }


def cmd_extract(args: argparse.Namespace, settings: Settings) -> int:
    from previewvec.lib import warm_jit_cache

    warm_jit_cache(settings)
    failed = 0
    for path in args.paths:
        record = _extract_one(path, settings)
        failed += not record["ok"]
        print(json.dumps(record, ensure_ascii=False), flush=True)
    return 1 if failed else 0


def cmd_features(args: argparse.Namespace, settings: Settings) -> int:
    from contract.layout import feature_names

    for name in feature_names():
        print(name)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from previewvec.demo import run_demo

    out = Path(args.out)
    try:  # now, before songs are generated: a file in the way, no permission, read-only
        out.mkdir(parents=True, exist_ok=True)
        (out / ".previewvec-write-check").touch()
        (out / ".previewvec-write-check").unlink()
    except OSError as exc:
        raise InputUnreadable(f"cannot write {args.out!r}: "
                              f"{exc.strerror or type(exc).__name__}") from None
    return run_demo(settings, out_dir=out, renderer=args.renderer)


def _check_cache_dir(settings: Settings) -> None:
    """One line (exit 2) now when ``PREVIEWVEC_CACHE_DIR`` cannot hold the compile cache,
    instead of Celery's "Unable to load celery application" and four tracebacks: the
    worker app points numba there as it loads (Flower loads it too)."""
    import tempfile

    from workers.jitcache import cache_dir_for

    folder = cache_dir_for(settings)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise ConfigError(f"cannot use the compile cache under {settings.cache_dir} "
                          f"(PREVIEWVEC_CACHE_DIR): {exc.strerror or exc}") from None


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from contract.store import check_writable, open_store
    from contract.versions import check_claim, register

    check_claim(settings)  # a pinned version these settings do not compute: exit 2
    _check_cache_dir(settings)
    # The store's registry too, when the store answers (each worker re-checks it). A store
    # that is down may come back; one this worker can never use (a folder that is a file,
    # refused credentials, no bucket) is one line and exit 4, not a worker whose every
    # child fails to start.
    with contextlib.suppress(StoreUnavailable):
        store = open_store(settings.store, settings)
        register(store, settings)
        check_writable(store)  # read-only: every job would fail for good
    argv = [
        sys.executable, "-m", "celery", "-A", "workers.app", "worker",
        "--loglevel", args.loglevel, "--concurrency", str(args.concurrency),
        "--queues", args.queues, "--events",  # prefetch: PREVIEWVEC_PREFETCH_MULTIPLIER
    ]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    os.execv(sys.executable, argv)
    return 0  # pragma: no cover


# Flower's settings for this deployment, one place for compose and k8s: keep 10 min of
# offline workers, 50 000 tasks, and task-runtime buckets around the 25 s hard limit.
FLOWER_OPTIONS = ("--purge_offline_workers=600", "--max_tasks=50000",
                  "--task_runtime_metric_buckets=0.5,1,2,5,10,20,30,60,120,240,300")


def flower_login_problem(environ: Mapping[str, str]) -> str | None:
    """Why Flower would lock everyone out, or None: ``FLOWER_BASIC_AUTH`` empty or with an
    entry that is not ``user:password`` (Flower takes ``""`` as a login nobody can give,
    and answers 401 to every request). ``FLOWER_AUTH`` (Flower's OAuth) replaces it."""
    if environ.get("FLOWER_AUTH", "").strip():
        return None
    value = environ.get("FLOWER_BASIC_AUTH", "")
    if not value.strip():
        return ("FLOWER_BASIC_AUTH is empty: Flower would refuse every login; set "
                "user:password (comma-separate several) in .env or the previewvec-flower "
                "Secret")
    for entry in value.split(","):
        user, colon, password = entry.partition(":")
        if not (colon and user and password):
            return (f"FLOWER_BASIC_AUTH has an entry that is not user:password "
                    f"({len(entry)} characters, no {'password' if colon else 'colon'}): "
                    "nobody could log in with it")
    return None


def flower_argv(port: int, db: str | None) -> list[str]:
    """The ``celery flower`` command line :func:`cmd_flower` runs."""
    argv = [sys.executable, "-m", "celery", "-A", "workers.app", "flower", f"--port={port}"]
    if db:  # saved every 60 s, so a restart keeps the task list
        argv += ["--persistent=True", f"--db={db}", "--state_save_interval=60000"]
    return argv + list(FLOWER_OPTIONS)


def cmd_flower(args: argparse.Namespace, settings: Settings) -> int:
    problem = flower_login_problem(os.environ)
    if problem:
        raise ConfigError(problem)
    # Flower (Tornado) answers both with tracebacks: say it in one line first.
    _check_listen("0.0.0.0", args.port)
    if args.db and not Path(args.db).expanduser().parent.is_dir():
        raise InputUnreadable(f"cannot keep Flower's state in {args.db!r}: its folder "
                              "does not exist")
    _check_cache_dir(settings)
    argv = flower_argv(args.port, args.db)
    os.execv(sys.executable, argv)
    return 0  # pragma: no cover


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    from contract.state import Runs
    from producers.queue import enqueue_file, plan_enqueue

    _log_progress()  # the backpressure waits ("queue batch holds N > M messages: waiting")
    # SIGTERM (a stopped container, `kill`) ends the enqueue like Ctrl-C: between chunks,
    # with the resume hint, instead of dying silently.
    signal.signal(signal.SIGTERM, _interrupt)
    runs = Runs.from_url(settings.broker_url)
    plan = plan_enqueue(args.catalog, runs, restart=args.restart)
    print(plan.run_id, flush=True)  # at once: `status` can follow a long enqueue
    if plan.resume_after:
        print(f"resuming run {plan.run_id} after catalog line {plan.resume_after} "
              "(--restart starts a new run)", file=sys.stderr)
    try:
        report = enqueue_file(args.catalog, plan, settings, runs=runs, queue=args.queue,
                              force=args.force)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: run the same command again to continue run "
                          f"{plan.run_id} (--restart starts over)") from None
    extra = f", unresolved {report.unresolved}" if report.unresolved else ""
    extra += f", duplicates {report.duplicates}" if report.duplicates else ""
    extra += (f", skipped (queued in another run) {report.skipped_queued}"
              if report.skipped_queued else "")
    print(f"queued {report.queued}, invalid lines {report.invalid}{extra}", file=sys.stderr)
    return 0


def _resolve_input(args: argparse.Namespace) -> tuple[str, object]:
    """The one input flag given to ``resolve`` / ``submit`` as ``(kind, value)``."""
    for flag in ("release", "query"):
        value = getattr(args, flag)
        if value is not None and not value.strip():
            # Not "no flag given": '' fell through to --dump ("cannot read dump 'None'").
            raise InvalidQuery(f"--{flag} is empty")
    if args.release is not None:
        return "release", args.release
    if args.isrc:
        return "isrcs", args.isrc
    if args.query is not None:
        return "query", args.query
    if args.new_releases:
        return "new_releases", (args.since, args.until)
    return "dump", args.dump


def cmd_resolve(args: argparse.Namespace, settings: Settings) -> int:
    from previewvec.export import output_path, temporary_path
    from producers.submit import build_resolver, iter_resolutions, resolution_line

    kind, value = _resolve_input(args)
    resolver = build_resolver(settings)
    resolved = unresolved = 0
    # A file is written under a temporary name beside it and renamed when complete, or
    # when a failed or interrupted run (a truncated dump, Ctrl-C) has written lines: they
    # cost upstream calls and are kept. A run that wrote nothing (a missing input) leaves
    # an existing file as it was.
    tmp: Path | None = None
    written, complete = 0, False
    try:
        try:
            if args.out == "-":
                out = sys.stdout
            else:
                target = output_path(args.out)  # a device or FIFO would be replaced
                # Named before it is created, so the last ``finally`` removes it whatever
                # instant Ctrl-C lands at (previewvec/export.py says why).
                tmp = temporary_path(target)
                out = open(tmp, "x", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise InputUnreadable(f"cannot write {args.out!r}: "
                                  f"{exc.strerror or type(exc).__name__}") from None
        try:
            for item in iter_resolutions(resolver, kind, value):
                res = item[1] if kind == "dump" else item
                if res.job is None:
                    unresolved += 1
                else:
                    resolved += 1
                with _writing(args.out):
                    out.write(resolution_line(res) + "\n")
                written += 1
            with _writing(args.out):
                out.flush()
            complete = True
        finally:
            if out is not sys.stdout:
                # After a failed write the buffer's rest fails again: the first error is
                # the one to tell.
                with _writing(args.out) if complete else contextlib.suppress(OSError):
                    out.close()
            if tmp is not None and (complete or written):
                try:
                    os.chmod(tmp, 0o644)  # whatever the umask: the file is meant to be shared
                    os.replace(tmp, Path(args.out).expanduser())
                except OSError as exc:
                    raise InputUnreadable(f"cannot write {args.out!r}: "
                                          f"{exc.strerror or type(exc).__name__}") from None
                tmp = None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):  # EROFS too: keep the error that matters
                tmp.unlink(missing_ok=True)
    print(f"resolved {resolved}, unresolved {unresolved}", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _writing(name: str) -> Iterator[None]:
    """Writes to the output ``name``: a full disk or a file-size limit is
    :class:`InputUnreadable` (exit 7); a reader that went away stays a BrokenPipeError
    (exit 141)."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise InputUnreadable(f"cannot write {name!r}: "
                              f"{exc.strerror or type(exc).__name__}") from None


def _planning_progress(line_no: int) -> None:
    if line_no % 1_000_000 == 0:
        print(f"planning the dump: line {line_no}", file=sys.stderr, flush=True)


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    from contract.state import Runs, new_run_id
    from producers.submit import (
        build_resolver,
        default_queue,
        dump_cursor_name,
        iter_resolutions,
        start_dump,
        submit,
    )

    _log_progress()
    kind, value = _resolve_input(args)
    queue = args.queue or default_queue(kind)
    store = None
    if not args.force:  # stored recordings are skipped: the store must answer
        from contract.store import open_store

        store = open_store(settings.store, settings)
        _check_store(store)
    runs = Runs.from_url(settings.broker_url)
    cursor = begin = None
    run_id = new_run_id()
    if kind == "dump":
        cursor = args.cursor or dump_cursor_name(str(value))
        begin = start_dump(runs, str(value), cursor, order=args.order, restart=args.restart,
                           progress=_planning_progress)
        if begin.note:
            print(f"{begin.note} (cursor {cursor})", file=sys.stderr)
        run_id = runs.cursor_run(cursor) or run_id  # a resumed dump continues its run
    # Not resolved (no upstream call), unless --force: recordings stored at the current
    # feature version, queued in any run, or already in this run.
    resolver = build_resolver(settings, store=store, runs=None if args.force else runs,
                              run_id=run_id)
    items = iter_resolutions(resolver, kind, value,
                             start_line=begin.start if begin else 0,
                             plan=begin.plan if begin else None)
    source = str(value)[:200] if kind != "new_releases" else "new_releases"
    meta: dict[str, str | int] = {"input": kind, "source": source}
    if begin is not None:
        meta["order"] = "coverage" if begin.plan is not None else "dump"
    report = submit(items, settings, queue=queue, force=args.force, cursor_name=cursor,
                    store=store, runs=runs, run_id=run_id, meta=meta)
    print(report.run_id)
    print(f"resolved {report.resolved}, unresolved {report.unresolved}, "
          f"skipped (stored or queued elsewhere) {report.skipped}, queued {report.queued}, "
          f"already in this run {report.in_run}", file=sys.stderr)
    return 0


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.api_tokens:
        raise ConfigError("PREVIEWVEC_API_TOKENS is not set: every request would be "
                          "refused (comma-separated bearer tokens)")
    _check_listen(args.host, args.port)
    import uvicorn

    from previewvec.api import create_app

    uvicorn.run(create_app(settings), host=args.host, port=args.port,
                log_level=args.loglevel, proxy_headers=False)
    return 0


def _check_listen(host: str, port: int) -> None:
    """Fail with one line now if ``host:port`` cannot be listened on (in use, bad host),
    instead of uvicorn's log lines and its exit status 3 (ours for Redis)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            sock.bind(address)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: "
                          f"{exc.strerror or exc}") from None


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from previewvec.progress import watch_status

    return watch_status(settings, args.run_id, watch=args.watch, interval_s=args.interval)


def cmd_failures(args: argparse.Namespace, settings: Settings) -> int:
    from contract.state import Runs

    runs = Runs.from_url(settings.broker_url)
    if not runs.exists(args.run_id):
        raise UnknownRun(f"no such run: {args.run_id}")
    for recording_id, entry in sorted(runs.failures(args.run_id)):
        print(json.dumps({"recording_id": recording_id, "code": entry["code"],
                          "message": entry["message"]}, ensure_ascii=False))
    return 0


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    from contract.state import Runs
    from producers.queue import retry_run

    runs = Runs.from_url(settings.broker_url)
    report = retry_run(args.run_id, runs, settings, queue=args.queue, everything=args.all)
    print(f"re-enqueued {report.queued} failed jobs of {args.run_id}")
    if report.unresolved:
        from producers.submit import resolve_again

        queue = args.queue or runs.status(args.run_id).meta.get("queue", "ondemand")
        again = resolve_again(report.unresolved, args.run_id, settings, runs, queue=queue)
        print(f"resolved {len(report.unresolved)} recordings again (their resolution had "
              f"failed for a transient cause): queued {again.queued}, unresolved "
              f"{again.unresolved}, skipped {again.skipped}")
    if report.permanent:
        codes = ", ".join(f"{code} {n}" for code, n in sorted(report.permanent.items()))
        print(f"skipped {sum(report.permanent.values())} permanent failures ({codes}); "
              "--all re-runs them too")
    if report.no_job:
        print(f"{report.no_job} failures have no job to re-run (invalid catalog lines, "
              "recordings no source matched, releases or searches that failed: submit "
              "those again)")
    return 0


def cmd_reduce(args: argparse.Namespace, settings: Settings) -> int:
    from reducer.liveness import Heartbeat, heartbeat_path
    from reducer.reduce import Reducer

    # The container's liveness check reads this heartbeat (reducer/liveness.py): beat
    # before the index and store open, which may take a while, and on every pass after.
    heartbeat = Heartbeat(heartbeat_path(settings)) if args.follow else None
    if heartbeat is not None:
        heartbeat.beat()
    # Never creates the store: a reducer on a mistyped folder would read every queued
    # record as missing. One-shot: store_folder_missing (after the index's own faults,
    # found opening it); --follow waits for the folder.
    reducer = Reducer.build(settings, create_store=False, probe_store=False)
    if args.follow:  # waits out store and index outages itself
        reducer.follow(args.batch_size, heartbeat=heartbeat)
        return 0
    _check_store(reducer.store)
    n = reducer.drain(args.batch_size)
    reducer.index.wait_for_writes()
    print(f"reduced {n} ready records; index holds {reducer.index.count()} vectors")
    return 0


def cmd_reindex(args: argparse.Namespace, settings: Settings) -> int:
    from reducer.reduce import Reducer

    reducer = Reducer.build(settings, create_store=False)  # probes the store
    n = reducer.reindex(args.batch_size, refit=args.refit)
    reducer.index.wait_for_writes()
    print(f"reindexed {n} records; index holds {reducer.index.count()} vectors")
    return 0


def cmd_similar(args: argparse.Namespace, settings: Settings) -> int:
    from reducer.reduce import similar_filter

    if (args.recording_id is None) == (args.audio is None):
        raise ConfigError("similar needs a RECORDING_ID or --audio FILE (one of them)")
    where = similar_filter(tempo_min=args.tempo_min, tempo_max=args.tempo_max,
                           key=args.key, mode=args.mode)
    if args.audio is not None:
        matches = _similar_to_audio(args.audio, args.k, where, settings)
    else:
        matches = _similar_to_stored(args.recording_id, args.k, where, settings)
    for match in matches:
        print(json.dumps({"recording_id": match.metadata.get("recording_id", match.id),
                          "score": round(match.score, 4),
                          "descriptors": _match_descriptors(match)},
                         ensure_ascii=False))
    return 0


def _match_descriptors(match: object) -> dict[str, object]:
    from reducer.reduce import match_descriptors

    return match_descriptors(match)  # type: ignore[arg-type]


def _reducer(settings: Settings):  # -> Reducer
    from reducer.reduce import Reducer

    return Reducer.build(settings, create_store=False, create_index=False)  # probes the store


def _not_empty(matches: list, reducer: object) -> list:
    """``matches``, unless there were none because the index is empty (a typed fault)."""
    if not matches and reducer.index.count() == 0:  # type: ignore[attr-defined]
        raise NothingStored("the vector index holds no vectors: run `previewvec reduce` "
                            "(or `previewvec reindex`) first")
    return matches


def _similar_to_stored(recording_id: str, k: int, where: dict | None,
                       settings: Settings) -> list:
    from contract.records import record_key
    from contract.store import validate_key
    from contract.versions import current_version

    version = current_version(settings)
    missing = NotFound(f"no stored record for {recording_id!r} of feature version {version} "
                       f"in the feature store ({settings.store})")
    try:
        validate_key(record_key(version, recording_id))
    except ValueError:  # an id that can never be stored
        raise missing from None
    reducer = _reducer(settings)
    try:
        return _not_empty(reducer.similar(recording_id, k, filter=where), reducer)
    except FileNotFoundError:
        raise missing from None


def _similar_to_audio(path: str, k: int, where: dict | None, settings: Settings) -> list:
    """Extract ``path`` as workers would, normalise it with the index's normaliser, query."""
    from contract.versions import check_claim

    check_claim(settings)  # the clip must be analysed as the index's records were
    result = _extract_one(path, settings)
    if not result["ok"]:
        error = result["error"]  # type: ignore[index]
        raise InputUnreadable(f"cannot use {path!r}: {error['code']}: {error['message']}")
    import numpy as np

    reducer = _reducer(settings)
    try:
        matches = reducer.similar_to_vector(np.asarray(result["vector"], np.float32), k,
                                            filter=where)
    except NothingStored:  # no normaliser: nothing stored to fit one on
        matches = []
    return _not_empty(matches, reducer)


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from contract.store import open_store
    from contract.versions import current_version
    from previewvec.export import export_parquet

    # SIGTERM (a stopped container, `kill`) and SIGHUP (a closed terminal) end the export
    # like Ctrl-C, so the temporary file is removed instead of left behind.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    store = open_store(settings.store, settings, create=False)
    _check_store(store)
    version = args.version or current_version(settings)
    # disable=None: a bar on a terminal only; logs and pipes get the summary line.
    with tqdm(unit=" records", desc=f"export {version}", disable=None, file=sys.stderr,
              dynamic_ncols=True) as bar:
        try:
            report = export_parquet(store, args.out, version=version, run_id=args.run,
                                    threads=args.threads, progress=bar.update)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted: nothing written to {args.out} (run the "
                              "export again)") from None
    skipped = f"; skipped {report.skipped} unreadable records" if report.skipped else ""
    print(f"exported {report.rows} records of {version} to {report.path}{skipped}",
          file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from contract.records import decode_stored, record_key
    from contract.store import open_store
    from contract.versions import current_version

    version = args.version or current_version(settings)
    missing = NotFound(f"no stored record for {args.recording_id!r} of feature version "
                       f"{version} in the feature store ({settings.store})")
    store = open_store(settings.store, settings, create=False)
    try:
        key = record_key(version, args.recording_id)
        record = decode_stored(key, store.get(key), version)
    except (FileNotFoundError, ValueError):  # ValueError: an id that cannot be stored
        raise missing from None
    if args.json:
        print(json.dumps(_record_doc(record, with_vector=True), ensure_ascii=False))
        return 0
    print(_readable(record, full_vector=args.vector))
    return 0


def _record_doc(record: object, *, with_vector: bool) -> dict[str, object]:
    doc = {name: getattr(record, name) for name in (
        "recording_id", "feature_version", "computation", "descriptors", "provenance",
        "timings_s")}
    if with_vector:
        doc["vector"] = [float(x) for x in record.vector]  # type: ignore[attr-defined]
    return doc


def _readable(record: object, *, full_vector: bool) -> str:
    """A record as aligned ``name  value`` lines, grouped."""
    from contract.layout import feature_names

    doc = _record_doc(record, with_vector=False)
    lines = [f"recording_id     {doc['recording_id']}",
             f"feature_version  {doc['feature_version']}"]
    computation = doc["computation"] or {}
    if computation:
        lines.append("computation      " + ", ".join(f"{k}={v}" for k, v in
                                                     sorted(computation.items())))
    for title in ("descriptors", "provenance", "timings_s"):
        section = doc[title] or {}
        lines.append(f"{title}:")
        width = max((len(k) for k in section), default=0)
        lines += [f"  {k:<{width}}  {v}" for k, v in section.items() if v not in (None, "")]
    vector = record.vector  # type: ignore[attr-defined]
    names = feature_names()
    shown = len(vector) if full_vector else 5
    lines.append(f"vector: {len(vector)} dimensions"
                 + ("" if full_vector else " (first 5; --vector shows all)"))
    width = max(len(n) for n in names[:shown])
    lines += [f"  {n:<{width}}  {float(v):.6g}" for n, v in zip(names[:shown], vector,
                                                                strict=False)]
    return "\n".join(lines)


def cmd_runs(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from contract.state import STATES, Runs

    runs = Runs.from_url(settings.broker_url)
    run_ids = runs.recent_runs(args.limit)
    if not run_ids:
        raise NothingStored("no runs: `previewvec enqueue` or `previewvec submit` start one")
    print(f"{'run':<26} {'created (UTC)':<20} {'total':>7} "
          + " ".join(f"{s:>7}" for s in STATES) + "  state")
    for run_id in run_ids:
        status = runs.status(run_id)
        created = status.meta.get("created_at")
        when = (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(created)))
                if created else "-")
        # No meta: the closed run's keys expired and housekeeping has not yet pruned it
        # from the index; it is gone, not an open run of nothing.
        state = ("expired" if not status.meta else
                 "closed" if status.meta.get("closed_at") else
                 "finished" if status.total and status.counts["queued"] == 0 else "open")
        print(f"{run_id:<26} {when:<20} {status.total:>7} "
              + " ".join(f"{status.counts[s]:>7}" for s in STATES) + f"  {state}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="previewvec",
        description="Audio-feature vectors from preview clips, at catalog scale.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "extract",
        help="extract features from audio files (JSON Lines on stdout)",
        description="Print one JSON object per input: features, or a typed error. "
        "Exit status 1 if any input failed (all inputs are processed first).",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help=".m4a, .mp3, .ogg, .flac or .wav")
    p.set_defaults(handler=cmd_extract)

    p = sub.add_parser(
        "features",
        help="print the ordered names of the vector's dimensions",
        description="Print every dimension name of the feature vector, one per line, in order.",
    )
    p.set_defaults(handler=cmd_features)

    p = sub.add_parser(
        "demo",
        help="run the main job on embedded defaults with generated songs",
        description="The whole path with nothing installed by hand: generate songs with "
        "known tempo and key, encode them as AAC/MP3/OGG/FLAC/WAV and serve them from "
        "127.0.0.1; start a private Redis and two worker processes; enqueue, fetch, "
        "extract, store, reduce into the embedded index; print a summary table and a "
        "similarity query.",
    )
    p.add_argument("--out", default="data/demo", help="where generated songs go")
    p.add_argument(
        "--renderer",
        default="auto",
        choices=("auto", "fluidsynth", "synth"),
        help="fluidsynth (General MIDI soundfont) when installed, else the built-in synth",
    )
    p.set_defaults(handler=cmd_demo)

    p = sub.add_parser(
        "flower", help="start Flower, the ops UI, once its login is set",
        description="Check FLOWER_BASIC_AUTH (user:password, comma-separate several; or "
        "FLOWER_AUTH for Flower's OAuth), then run `celery -A workers.app flower` with this "
        "deployment's options. An empty or malformed login exits 2 instead of starting a "
        "Flower that refuses everyone.")
    p.add_argument("--port", type=_port, default=5555)
    p.add_argument("--db", default=None, metavar="FILE",
                   help="keep Flower's state in FILE across restarts (default: in memory)")
    p.set_defaults(handler=cmd_flower)

    p = sub.add_parser("worker", help="start a Celery worker (featurize jobs)",
                       description="Start a Celery worker on the broker at "
                       "PREVIEWVEC_BROKER_URL; same as `celery -A workers.app worker`.")
    p.add_argument("--concurrency", type=_count(1024), default=os.cpu_count() or 1)
    p.add_argument("--queues", default="ondemand,batch", type=_queues,
                   help="comma-separated, in priority order (default: ondemand,batch)")
    p.add_argument("--hostname", default=None, help="Celery node name, e.g. w1@%%h")
    p.add_argument("--loglevel", default="info")
    p.set_defaults(handler=cmd_worker)

    p = sub.add_parser("enqueue", help="enqueue a JSON Lines catalog of jobs; prints the run id",
                       description="Validate every line (bad lines are recorded as failures "
                       "of the run with their line number) and enqueue the valid jobs, "
                       "waiting while the queue holds more than PREVIEWVEC_QUEUE_HIGH_WATER. "
                       "Resumable: after an interruption, the same command continues the "
                       "same run after the last published line (--restart starts over). "
                       "`previewvec resolve` output is accepted too: {\"job\": {...}, ...} "
                       "lines are unwrapped, {\"job\": null, ...} lines are recorded as "
                       "failures with their error_code.")
    p.add_argument("catalog", help="JSON Lines file, one job (or resolve result) per line")
    p.add_argument("--queue", choices=("batch", "ondemand"), default="batch")
    p.add_argument("--force", action="store_true", help="recompute even if a record exists")
    p.add_argument("--restart", action="store_true",
                   help="forget an interrupted enqueue of this catalog and start a new run "
                   "that publishes every job again (even those an earlier run queued)")
    p.set_defaults(handler=cmd_enqueue)

    for name, help_, description in (
        ("resolve", "resolve MusicBrainz input to jobs (JSON Lines), without enqueueing",
         "Resolve a release, ISRCs, a search query, new releases or a dump to preview "
         "jobs. Writes one JSON line per recording: {\"job\": {...} | null, "
         "\"recording_id\", \"match_score\", \"match_reason\", \"error_code\"}; "
         "`previewvec enqueue` accepts this file as a catalog."),
        ("submit", "resolve input and enqueue the jobs; prints the run id",
         "Resolve, skip recordings already stored at the current feature version or queued "
         "in any run (unless --force), record unresolvable ones as failures, and enqueue "
         "the rest with "
         "backpressure (waits while the queue holds more than PREVIEWVEC_QUEUE_HIGH_WATER). "
         "Dump runs are resumable: rerunning the same command continues after the last "
         "published line."),
    ):
        p = sub.add_parser(name, help=help_, description=description)
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--release", metavar="MBID", help="a MusicBrainz release id")
        group.add_argument("--isrc", nargs="+", metavar="ISRC", help="one or more ISRCs")
        group.add_argument("--query", metavar="LUCENE", help="a MusicBrainz recording search")
        group.add_argument("--new-releases", action="store_true",
                           help="releases dated --since .. --until")
        group.add_argument("--dump", metavar="FILE", help="a MusicBrainz JSON dump file")
        p.add_argument("--since", type=_date, metavar="YYYY-MM-DD")
        p.add_argument("--until", type=_date, metavar="YYYY-MM-DD")
        if name == "resolve":
            p.add_argument("--out", required=True, metavar="FILE", type=_output_file,
                           help="JSON Lines; - = stdout")
            p.set_defaults(handler=cmd_resolve)
        else:
            p.add_argument("--queue", choices=("batch", "ondemand"), default=None,
                           help="default: ondemand for --release/--isrc/--new-releases, "
                           "batch for --query/--dump")
            p.add_argument("--force", action="store_true",
                           help="recompute even if a record exists")
            p.add_argument("--cursor", metavar="NAME", default=None,
                           help="dump runs: the resume cursor's name (default: from the "
                           "dump's path)")
            p.add_argument("--restart", action="store_true",
                           help="dump runs: forget the cursor (and plan) and start over")
            p.add_argument("--order", choices=("dump", "coverage"), default="dump",
                           help="dump runs: 'coverage' plans the dump first (one extra "
                           "read) and resolves the releases covering the most recordings "
                           "first, so fewer releases need any call; a started run keeps "
                           "its order")
            p.set_defaults(handler=cmd_submit)

    p = sub.add_parser("api", help="serve the HTTP submission API (uvicorn)",
                       description="POST /v1/jobs, GET /v1/runs/{id}, /v1/recordings/{id}, "
                       "/v1/similar/{id}; bearer tokens from PREVIEWVEC_API_TOKENS; "
                       "OpenAPI docs at /docs.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument("--loglevel", default="info", choices=UVICORN_LOG_LEVELS)
    p.set_defaults(handler=cmd_api)

    p = sub.add_parser("status", help="show a run's progress",
                       description="Queued/done/skipped/failed counts with a progress bar.")
    p.add_argument("run_id")
    p.add_argument("--watch", action="store_true", help="refresh until the run finishes")
    p.add_argument("--interval", type=_interval, default=2.0,
                   help=f"seconds between refreshes ({MIN_INTERVAL_S:g} to {MAX_INTERVAL_S:g})")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("failures", help="list a run's failures (JSON Lines)",
                       description="One line per failed recording: id, error code, message.")
    p.add_argument("run_id")
    p.set_defaults(handler=cmd_failures)

    p = sub.add_parser("retry", help="re-enqueue a run's transient failures",
                       description="Re-enqueue the run's failed jobs whose cause may be gone "
                       "(network, 5xx/429, timeouts, store outages, crashed workers, internal "
                       "errors); permanent ones (http_404, undecodable, ...) only with --all. "
                       "Invalid catalog lines and unresolved recordings have no job to "
                       "re-run. Waits while the queue is above PREVIEWVEC_QUEUE_HIGH_WATER.")
    p.add_argument("run_id")
    p.add_argument("--queue", choices=("batch", "ondemand"), default=None)
    p.add_argument("--all", action="store_true",
                   help="re-run every failure with a job, permanent ones too")
    p.set_defaults(handler=cmd_retry)

    p = sub.add_parser("reduce", help="load ready records into the vector index",
                       description="Normalise ready records and upsert them into the index "
                       "in batches; once (default) or --follow.")
    p.add_argument("--follow", action="store_true", help="keep running")
    p.add_argument("--batch-size", type=_count(5000), default=None, help="1 to 5000")
    p.set_defaults(handler=cmd_reduce)

    p = sub.add_parser("reindex", help="rebuild the vector index from the feature store",
                       description="Upsert every stored record of the current feature "
                       "version; --refit fits the normaliser again first.")
    p.add_argument("--batch-size", type=_count(5000), default=None, help="1 to 5000")
    p.add_argument("--refit", action="store_true")
    p.set_defaults(handler=cmd_reindex)

    p = sub.add_parser("similar", help="tracks that sound like RECORDING_ID or an audio file",
                       description="Nearest neighbours in the index with scores and "
                       "descriptors (JSON Lines), of a stored recording or of an audio "
                       "file (--audio: extracted here, normalised as the index's vectors).")
    p.add_argument("recording_id", nargs="?", default=None)
    p.add_argument("--audio", metavar="FILE", default=None,
                   help="an audio file (.m4a, .mp3, ...) instead of a stored recording")
    p.add_argument("-k", type=_count(MAX_K), default=10,
                   help=f"how many neighbours (at most {MAX_K})")
    p.add_argument("--tempo-min", type=float, default=None, help="only neighbours >= BPM")
    p.add_argument("--tempo-max", type=float, default=None, help="only neighbours <= BPM")
    p.add_argument("--key", default=None, choices=PITCH_CLASSES, metavar="KEY",
                   help="only neighbours in this key: " + ", ".join(PITCH_CLASSES))
    p.add_argument("--mode", choices=("major", "minor"), default=None)
    p.set_defaults(handler=cmd_similar)

    p = sub.add_parser("export", help="write every record of a version to a Parquet file",
                       description="Stream every stored record of a feature version (of one "
                       "run with --run) into OUT as Parquet: recording_id, feature_version, "
                       "vector (fixed-size list<float32>), one column per descriptor, the "
                       "computation and provenance; dimension names in the schema metadata. "
                       "Written to a temporary name and renamed when complete.")
    p.add_argument("out", metavar="OUT.parquet", type=_parquet_file)
    p.add_argument("--version", default=None, type=_version,
                   help="feature version (default: the one these settings compute)")
    p.add_argument("--run", default=None, metavar="RUN_ID", type=_nonblank,
                   help="only the records this run wrote (their provenance run_id)")
    p.add_argument("--threads", type=_count(256, minimum=0), default=None,
                   help="concurrent reads (default: 32 from S3/R2, 0 from a folder)")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("show", help="show one stored record, readably",
                       description="Descriptors, computation, provenance, timings and the "
                       "start of the vector of one stored record.")
    p.add_argument("recording_id")
    p.add_argument("--version", default=None, type=_version,
                   help="feature version (default: current)")
    p.add_argument("--vector", action="store_true", help="every dimension, by name")
    p.add_argument("--json", action="store_true", help="the whole record as one JSON line")
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser("runs", help="recent runs with their counts",
                       description="The most recent runs, newest first: queued, done, "
                       "skipped and failed recordings, and whether the run is open, "
                       "finished or closed.")
    p.add_argument("-n", "--limit", type=_count(MAX_RUNS_SHOWN), default=20,
                   help="how many runs (default 20)")
    p.set_defaults(handler=cmd_runs)
    return parser


def _version(text: str) -> str:
    """An argparse type: the shape of a feature version (``pv8``, ``pv8-<10 hex>``);
    "../x" or a typo read as "no records" before."""
    from contract.versions import is_version_name

    if not is_version_name(text):
        raise argparse.ArgumentTypeError(
            f"not a feature version: {text!r} (e.g. pv8, or pv8-<10 hex> for other settings)")
    return text


def _output_file(text: str) -> str:
    """An argparse type: a file to write ('' read as "it is a folder" before)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an output file is needed, not an empty name")
    if text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{text!r} names a folder; give a file name")
    return text


# What `export` would write under a name that promises another format.
_NOT_PARQUET = (".csv", ".tsv", ".json", ".jsonl", ".npy", ".npz", ".feather", ".arrow",
                ".xlsx", ".h5", ".pkl")


def _parquet_file(text: str) -> str:
    """An argparse type: :func:`_output_file` not named as another format ("out.csv" was
    written as Parquet without a word)."""
    text = _output_file(text)
    if text.lower().endswith(_NOT_PARQUET):
        raise argparse.ArgumentTypeError(
            f"{text!r}: export writes Parquet; name it .parquet (pandas and polars read it, "
            "and write CSV from it)")
    return text


def _nonblank(text: str) -> str:
    """An argparse type: a value that is not empty ('--run ""' read as no --run)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _queues(text: str) -> str:
    """An argparse type: queue names this project publishes to (a typo would make a worker
    that waits on a queue no job ever reaches)."""
    from contract.broker import QUEUES

    names = [name.strip() for name in text.split(",")]
    unknown = [name for name in names if name not in QUEUES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown queue {', '.join(map(repr, unknown))}: choose from {', '.join(QUEUES)}")
    return ",".join(names)


def _count(limit: int, minimum: int = 1) -> Callable[[str], int]:
    """An argparse type: an integer from ``minimum`` (1) to ``limit`` (a count of things).

    The cap matters: LanceDB and Redis take a count as a 64-bit integer, and a larger
    one was a traceback after the command had started."""

    def count(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        if value > limit:
            raise argparse.ArgumentTypeError(f"must be at most {limit}, not {value}")
        return value

    return count


def _port(text: str) -> int:
    """An argparse type: a TCP port (bind() raises OverflowError, not OSError, beyond)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535, not {value}")
    return value


def _interval(text: str) -> float:
    """An argparse type: seconds between refreshes, a number time.sleep() takes."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not MIN_INTERVAL_S <= value <= MAX_INTERVAL_S:  # NaN fails this too
        raise argparse.ArgumentTypeError(
            f"must be from {MIN_INTERVAL_S:g} to {MAX_INTERVAL_S:g} seconds, not {text}")
    return value


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "new_releases", False) and args.since is None:
        parser.error("--new-releases needs --since YYYY-MM-DD")
    if getattr(args, "since", None) is not None and not getattr(args, "new_releases", False):
        parser.error("--since/--until only go with --new-releases")
    if (getattr(args, "until", None) is not None and getattr(args, "since", None) is not None
            and args.until < args.since):
        parser.error(f"--until {args.until} is before --since {args.since}")
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        _say(str(exc))
        return EXIT_USAGE
    # `reduce --follow` is the long-running service: it waits out outages by design.
    if args.handler in _BROKER_COMMANDS and not getattr(args, "follow", False):
        try:
            problem, status = _broker_problem(settings)
        except KeyboardInterrupt:  # a Redis that accepts and never answers: Ctrl-C
            _say("interrupted")
            return EXIT_INTERRUPTED
        if problem:
            _say(problem)
            return status
    return run_handler(args, settings)


class _Stdout:
    """``sys.stdout`` while a command runs: a write error (a full disk or a file-size
    limit behind a redirect) is :class:`InputUnreadable`, exit 7, instead of an OSError
    traceback; a reader that went away stays a BrokenPipeError (exit 141)."""

    def __init__(self, stream: object) -> None:
        self._stream = stream

    def _failed(self, exc: OSError) -> InputUnreadable:
        # What is still buffered would fail again at exit ("Exception ignored ..."):
        # it goes nowhere instead.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())  # type: ignore[attr-defined]
        return InputUnreadable(f"cannot write to stdout: "
                               f"{exc.strerror or type(exc).__name__}")

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)  # type: ignore[attr-defined,no-any-return]
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._failed(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()  # type: ignore[attr-defined]
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._failed(exc) from None

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def run_handler(args: argparse.Namespace, settings: Settings) -> int:
    """Run the command; an expected operational fault becomes one line and its exit status.

    Anything else (a bug) keeps its traceback.
    """
    real_stdout = sys.stdout
    sys.stdout = _Stdout(real_stdout)  # type: ignore[assignment]
    try:
        return _run_guarded(args, settings)
    finally:
        sys.stdout = real_stdout


def _end_now(status: int) -> NoReturn:
    """Exit with ``status`` without tearing the interpreter down.

    After LanceDB failed to read its files, its tokio threads may still hold a cancelled
    background scan; at teardown one of them panics and prints a Rust backtrace under the
    one line already said (seen in ~1 of 16 runs on a loaded machine). Nothing of this
    process needs finalising (the failure wrote nothing), so end it here.
    """
    import logging

    with contextlib.suppress(OSError):
        sys.stdout.flush()
    logging.shutdown()
    os._exit(status)


def _run_guarded(args: argparse.Namespace, settings: Settings) -> int:
    from contract.state import RedisError, RedisUnavailable
    from previewvec.faults import redis_refusal, shown_url

    try:
        status = int(args.handler(args, settings))
        sys.stdout.flush()  # a full disk behind stdout shows here, not at exit
        return status
    except BrokenPipeError:
        # The reader went away (`previewvec runs | head -3`): nothing is wrong, and
        # Python's flush of stdout at exit must not fail on the closed pipe either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except IndexUnreadable as exc:
        _say(exc.message)
        _end_now(exit_status(exc))
    except PreviewvecError as exc:
        _say(exc.message)
        return exit_status(exc)
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_INTERRUPTED
    except RedisUnavailable as exc:
        # Redis answered at the start and went away for longer than the client's retries.
        _say(f"lost Redis at {shown_url(settings.broker_url)} "
             f"(PREVIEWVEC_BROKER_URL): {exc}")
        return EXIT_REDIS
    except RedisError as exc:
        if not redis_refusal(exc):
            raise  # any other error reply is a bug: keep its traceback
        _say(f"Redis at {shown_url(settings.broker_url)} (PREVIEWVEC_BROKER_URL) refused "
             f"the command: {exc}")
        return EXIT_REDIS


# Commands that keep run state in Redis (resolve: the upstream rate limits shared by
# every producer). Their Redis client rides out a restart by retrying for ~30 s, which is
# right once a run is under way; when Redis cannot be reached at all the command should
# say so at once instead of retrying and then printing a traceback.
_BROKER_COMMANDS = frozenset({cmd_enqueue, cmd_submit, cmd_resolve, cmd_status, cmd_failures,
                              cmd_retry, cmd_reduce, cmd_reindex, cmd_runs})
BROKER_CONNECT_TIMEOUT_S = 3.0


def _broker_problem(settings: Settings) -> tuple[str, int]:
    """Why Redis at ``settings.broker_url`` cannot be used and the exit status, or
    ``("", 0)`` if it answers PING."""
    from contract.state import RedisAuthenticationError, RedisError, RedisUnavailable, ping
    from previewvec.faults import redis_refusal, shown_url

    url = shown_url(settings.broker_url)
    try:
        ping(settings.broker_url, timeout_s=BROKER_CONNECT_TIMEOUT_S)
    except ValueError as exc:  # not a Redis URL (a bad scheme or port): configuration
        return (f"PREVIEWVEC_BROKER_URL={url!r} is not a usable Redis URL: {exc}",
                EXIT_USAGE)
    except RedisAuthenticationError as exc:  # reached: the password is what is wrong
        return (f"Redis at {url} (PREVIEWVEC_BROKER_URL) refused the login: {exc}",
                EXIT_REDIS)
    except RedisUnavailable as exc:
        return f"cannot reach Redis at {url} (PREVIEWVEC_BROKER_URL): {exc}", EXIT_REDIS
    except RedisError as exc:
        if not redis_refusal(exc):
            raise
        return f"Redis at {url} (PREVIEWVEC_BROKER_URL) refused: {exc}", EXIT_REDIS
    return "", 0


if __name__ == "__main__":
    sys.exit(main())
