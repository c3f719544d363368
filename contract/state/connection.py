"""The one factory of Redis clients (every process, every role).

Commands that keep run state use :func:`connect` with its default retry: it rides out a
Redis restart (seconds), so a worker that cannot record "done" or push its record key
does not ack a job whose bookkeeping is lost. Every command the state modules send is
idempotent or harmless when repeated (a ready key pushed twice is deduplicated by the
reducer). :func:`ping` is the quick reachability check of CLIs and health checks.
"""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

# Retries of a Redis command on connection errors: 0.05 s doubling to 1 s, ≈ 30 s in all.
REDIS_RETRIES = 35
REDIS_RETRY_CAP_S = 1.0
REDIS_RETRY_BASE_S = 0.05
HEALTH_CHECK_INTERVAL_S = 30
# A Redis that accepts and never answers (stopped by SIGSTOP, a hung host behind a live
# proxy) held a command for ever: no socket timeout was set. Each try now gives up after
# this long and is retried like a lost connection (every command here is idempotent), so
# such a Redis is given up after about REDIS_RETRIES × this (≈ 3 min), never a hang. A
# healthy Redis answers in milliseconds; nothing here blocks on the server side.
SOCKET_TIMEOUT_S = 5.0

# What callers catch (re-exported so they need not import redis themselves).
RedisError = redis.RedisError
RedisConnectionError = redis.ConnectionError
RedisTimeoutError = redis.TimeoutError
RedisAuthenticationError = redis.AuthenticationError
# What answers is no Redis (another server on the port: its banner is no RESP reply).
RedisProtocolError = redis.exceptions.InvalidResponse
# Redis cannot be reached (or stopped answering) for longer than the client's retries, or
# what is there is not Redis: no command of ours can run.
RedisUnavailable = (RedisConnectionError, RedisTimeoutError, RedisProtocolError)

# Redis answering but refusing commands for an operational reason: out of memory
# (maxmemory, noeviction), a read-only replica after a failover, an ACL without the
# permission, a master or cluster that is down, a slot being migrated (class names of
# redis.exceptions). Plain ResponseErrors say some too: a failed RDB save (MISCONF: often
# a full disk) stops writes; a /N database number the server does not have.
_REDIS_REFUSALS = ("OutOfMemoryError", "ReadOnlyError", "NoPermissionError",
                   "MasterDownError", "ClusterDownError", "TryAgainError")
_REDIS_REFUSAL_TEXT = ("MISCONF", "DB index is out of range")


def redis_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing commands for an operational reason (not a bug)."""
    if not isinstance(exc, redis.ResponseError):
        return False
    return (type(exc).__name__ in _REDIS_REFUSALS
            or any(text in str(exc) for text in _REDIS_REFUSAL_TEXT))


def redis_outage(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis away (:data:`RedisUnavailable`) or refusing commands
    (:func:`redis_refusal`): no fault of the caller, worth waiting out and retrying."""
    return isinstance(exc, RedisUnavailable) or redis_refusal(exc)


def connect(url: str, *, decode: bool = True, retry: bool = True,
            connect_timeout_s: float | None = None, timeout_s: float | None = None,
            health_check_interval_s: int = HEALTH_CHECK_INTERVAL_S) -> redis.Redis:
    """A client for ``url``. ``decode``: replies as str (False: bytes); ``retry``: retry a
    command on connection errors for ≈ 30 s (False: fail at once)."""
    options: dict = {"decode_responses": decode,
                     "health_check_interval": health_check_interval_s}
    if retry:
        options["retry"] = Retry(ExponentialBackoff(cap=REDIS_RETRY_CAP_S,
                                                    base=REDIS_RETRY_BASE_S), REDIS_RETRIES)
    options["socket_connect_timeout"] = (SOCKET_TIMEOUT_S if connect_timeout_s is None
                                         else connect_timeout_s)
    options["socket_timeout"] = SOCKET_TIMEOUT_S if timeout_s is None else timeout_s
    _check_database(url)
    return redis.Redis.from_url(url, **options)


def _check_database(url: str) -> None:
    """ValueError unless ``url``'s path names a database by number (or none).

    redis-py reads ``redis://host/abc`` as database 0 without a word, while Celery's
    transport refuses it: producers would fill database 0 for workers that never start.
    """
    from urllib.parse import unquote, urlsplit

    split = urlsplit(url)
    if split.scheme == "unix":  # the database is a query parameter there
        return
    path = unquote(split.path).strip("/")
    if path and not path.isdigit():
        raise ValueError(f"the database must be a number (redis://host:6379/0), not {path!r}")


def ping(url: str, *, timeout_s: float) -> bool:
    """PING Redis at ``url`` once, with no retry; raises redis' connection, timeout or
    authentication error (or ValueError for a bad URL) when it does not answer."""
    client = connect(url, decode=False, retry=False, connect_timeout_s=timeout_s,
                     timeout_s=timeout_s, health_check_interval_s=0)
    try:
        return bool(client.ping())
    finally:
        client.close()
