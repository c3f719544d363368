"""previewvec's Redis state: the one owner of every ``pv:`` key, Lua script and client.

One module per concern:

==========================  ==============================================================
``connection``              :func:`connect`, the one factory of Redis clients; :func:`ping`
``keys``                    every ``pv:`` key name (and nothing builds one elsewhere)
``scripts`` + ``lua/``      the Lua scripts, as files packaged with ``contract``
``runs``                    :class:`Runs`: ``pv:runs``, ``pv:run:<id>:{meta,counts,state,
                            failures,jobs,lost}``; closing and pruning runs. It mixes in
                            the seven concerns below, so one handle serves a whole process
``ready``                   the reducer's queue ``pv:ready`` and ``pv:ready:dead``
``lock``                    the reducer lock ``pv:reducer:lock`` (and the trim under it)
``crashes``                 crash counts ``pv:crash:<task id>``
``cursors``                 producers' resume cursors ``pv:cursor:<name>[:run]``, and a
                            dump's plan ``pv:cursor:<name>:plan[meta]``
``pending``                 ``pv:pending:<recording>``: the run a job of it is queued in
                            (written by the transition script); what needs no resolution
``queues``                  depths of kombu's queue lists (read only), PING
``lost``                    jobs the broker lost (``pv:run:<id>:jobs``/``lost``,
                            ``pv:redeliver:lock``); reads kombu's lists and ``unacked``
``ratelimit``               :class:`GcraState`, ``pv:ratelimit:<name>`` (shared GCRA state)
``cache``                   :class:`AnswerCache`, ``pv:itunes:cache:<sha1(url)>``
==========================  ==============================================================

No code outside this package holds a raw Redis client or spells a ``pv:`` key; the
rate limiter and the iTunes cache receive a client made by :func:`connect` and hand it
straight to :class:`GcraState` / :class:`AnswerCache`.

One exception, not ``pv:`` state: kombu's own keys. The broker's queues (``batch``,
``ondemand`` and their priority lists), ``unacked``, ``unacked_index`` and the
``_kombu.binding.*`` sets belong to kombu; workers/deliveries.py (the delivery heartbeat)
refreshes ``unacked_index`` through the connection kombu itself hands out
(``channel.client`` / ``conn_or_acquire``), because it must act on kombu's view of its
own deliveries. This package only reads their lengths (:mod:`contract.state.queues`,
:mod:`contract.state.lost`).
"""

from contract.state.cache import DEFAULT_CACHE_TTL_S, AnswerCache
from contract.state.connection import (
    RedisAuthenticationError,
    RedisConnectionError,
    RedisError,
    RedisProtocolError,
    RedisTimeoutError,
    RedisUnavailable,
    connect,
    ping,
    redis_outage,
    redis_refusal,
)
from contract.state.crashes import CRASH_COUNT_TTL_S, CrashCount
from contract.state.keys import (
    DEAD_LETTER_QUEUE,
    LOCK_KEY,
    PREFIX,
    READY_QUEUE,
    RUN_PARTS,
    RUNS_INDEX,
)
from contract.state.ratelimit import GcraState
from contract.state.ready import IF_ABSENT, parse_ready_entry
from contract.state.runs import (
    PRODUCER_ACTIVE_STATES,
    RUN_SETTLE_S,
    STATES,
    Housekeeping,
    Runs,
    RunStatus,
    new_run_id,
)

__all__ = [
    "CRASH_COUNT_TTL_S",
    "DEAD_LETTER_QUEUE",
    "DEFAULT_CACHE_TTL_S",
    "IF_ABSENT",
    "LOCK_KEY",
    "PREFIX",
    "PRODUCER_ACTIVE_STATES",
    "READY_QUEUE",
    "RUNS_INDEX",
    "RUN_PARTS",
    "RUN_SETTLE_S",
    "STATES",
    "AnswerCache",
    "CrashCount",
    "GcraState",
    "Housekeeping",
    "RedisAuthenticationError",
    "RedisConnectionError",
    "RedisError",
    "RedisProtocolError",
    "RedisTimeoutError",
    "RedisUnavailable",
    "RunStatus",
    "Runs",
    "connect",
    "new_run_id",
    "parse_ready_entry",
    "ping",
    "redis_outage",
    "redis_refusal",
]
