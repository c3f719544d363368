"""Every ``pv:`` key previewvec writes in the broker's Redis, and nothing else.

A new key is added here (and to the table in docs/architecture.md), never spelled out
elsewhere. Kombu's own keys (queues, ``unacked``, ``unacked_index``, bindings) are not
``pv:`` keys: see :mod:`contract.state.queues` and :mod:`contract.state`.
"""

from __future__ import annotations

PREFIX = "pv"
RUNS_INDEX = f"{PREFIX}:runs"  # zset: run id → creation time
READY_QUEUE = f"{PREFIX}:ready"  # list: record keys for the reducer
DEAD_LETTER_QUEUE = f"{PREFIX}:ready:dead"  # list: ready entries that cannot be indexed
LOCK_KEY = f"{PREFIX}:reducer:lock"  # string: the token of the reducer at work
REDELIVER_LOCK = f"{PREFIX}:redeliver:lock"  # string: the worker sweeping for lost jobs
RATELIMIT_PREFIX = f"{PREFIX}:ratelimit:"  # + limiter name: GCRA theoretical arrival time
ITUNES_CACHE_PREFIX = f"{PREFIX}:itunes:cache:"  # + sha1(url): cached iTunes answers
DEEZER_CACHE_PREFIX = f"{PREFIX}:deezer:cache:"  # + sha1(url): cached Deezer answers
PENDING_PREFIX = f"{PREFIX}:pending:"  # + recording id: the run its job is queued in
LEGACY_INDEXED_PATTERN = f"{PREFIX}:indexed:*"  # sets of versions before 0.x; deleted
# The keys of one run (pv:run:<id>:<part>), in the order the close script takes them;
# all of them expire together once the run is closed. A new per-run key belongs here.
# "jobs" holds the job of each recording still queued (for redelivery of a job the broker
# lost, contract/state/lost.py), "lost" how often each was redelivered so.
RUN_PARTS = ("meta", "counts", "state", "failures", "jobs", "lost")


def run_key(run_id: str, part: str) -> str:
    """``pv:run:<id>:<part>``, ``part`` one of :data:`RUN_PARTS`."""
    return f"{PREFIX}:run:{run_id}:{part}"


def run_keys(run_id: str) -> list[str]:
    """The run's keys in the order the close script expects (:data:`RUN_PARTS`)."""
    return [run_key(run_id, part) for part in RUN_PARTS]


def run_pattern(run_id: str) -> str:
    """SCAN pattern matching every key of one run."""
    return f"{PREFIX}:run:{run_id}:*"


def crash_key(task_id: str) -> str:
    """``pv:crash:<task id>``: crash counts of one job's deliveries."""
    return f"{PREFIX}:crash:{task_id}"


def cursor_key(name: str) -> str:
    """``pv:cursor:<name>``: a producer's last fully published input line."""
    return f"{PREFIX}:cursor:{name}"


def cursor_run_key(name: str) -> str:
    """``pv:cursor:<name>:run``: the run that cursor's lines belong to."""
    return f"{PREFIX}:cursor:{name}:run"


def cursor_input_key(name: str) -> str:
    """``pv:cursor:<name>:input``: which file that cursor counts the lines of (its size and
    hashes of its first and last MiB), so a different file is not resumed mid-way."""
    return f"{PREFIX}:cursor:{name}:input"


def cursor_lock_key(name: str) -> str:
    """``pv:cursor:<name>:lock``: the producer working on that cursor (its run and token)."""
    return f"{PREFIX}:cursor:{name}:lock"


def pending_key(recording_id: str) -> str:
    """``pv:pending:<recording id>``: the run in which a job of the recording is queued."""
    return PENDING_PREFIX + recording_id


def plan_key(name: str) -> str:
    """``pv:cursor:<name>:plan``: a dump's coverage plan (bitmap of its cover lines)."""
    return f"{PREFIX}:cursor:{name}:plan"


def plan_meta_key(name: str) -> str:
    """``pv:cursor:<name>:planmeta``: what that plan was made from, and its sizes."""
    return f"{PREFIX}:cursor:{name}:planmeta"


def ratelimit_key(name: str) -> str:
    return RATELIMIT_PREFIX + name
