"""Operational faults the command line and the HTTP API both meet, recognised alike.

A traceback (CLI) or a 500 (API) means a bug; these are not bugs but a backend refusing
or a setting naming something unusable, so each gets one line / a 503 instead.
"""

from __future__ import annotations

import re

import redis

# Redis answering but refusing commands for an operational reason: out of memory
# (maxmemory, noeviction), a read-only replica after a failover, an ACL without the
# permission, a master or cluster that is down, a slot being migrated.
_REDIS_REFUSALS: tuple[type[redis.RedisError], ...] = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.NoPermissionError,
    redis.exceptions.MasterDownError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
)
# The same, said by plain ResponseErrors: a failed RDB save (MISCONF: often a full
# disk) stops writes; a /N database number the server does not have.
_REDIS_REFUSAL_TEXT = ("MISCONF", "DB index is out of range")
_URL_PASSWORD = re.compile(r"(//[^/@:]*:)[^/@]*@")


def redis_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing commands for an operational reason (not a bug)."""
    if isinstance(exc, _REDIS_REFUSALS):
        return True
    return isinstance(exc, redis.ResponseError) and any(
        text in str(exc) for text in _REDIS_REFUSAL_TEXT)


def shown_url(url: str) -> str:
    """``url`` with any password masked, also when the URL does not parse (a bad port)."""
    from kombu.utils.url import maybe_sanitize_url

    try:
        return str(maybe_sanitize_url(url))
    except ValueError:
        return _URL_PASSWORD.sub(r"\1**@", url)
