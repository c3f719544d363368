"""Operational faults the command line and the HTTP API both meet, recognised alike.

A traceback (CLI) or a 500 (API) means a bug; these are not bugs but a backend refusing
or a setting naming something unusable, so each gets one line / a 503 instead.
"""

from __future__ import annotations

import re

# The most neighbours a similar query asks for (CLI -k, Python API k; the HTTP API caps
# at 100): LanceDB takes k as a C long, and a larger one was an OverflowError.
MAX_K = 10_000

# Redis answering but refusing commands for an operational reason: out of memory
# (maxmemory, noeviction), a read-only replica after a failover, an ACL without the
# permission, a master or cluster that is down, a slot being migrated (class names of
# redis.exceptions). Plain ResponseErrors say some too: a failed RDB save (MISCONF: often
# a full disk) stops writes; a /N database number the server does not have.
_REDIS_REFUSALS = ("OutOfMemoryError", "ReadOnlyError", "NoPermissionError",
                   "MasterDownError", "ClusterDownError", "TryAgainError")
_REDIS_REFUSAL_TEXT = ("MISCONF", "DB index is out of range")
_URL_PASSWORD = re.compile(r"(//[^/@:]*:)[^/@]*@")


def redis_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing commands for an operational reason (not a bug)."""
    import redis  # lazily: the CLI imports this module for every command

    if not isinstance(exc, redis.ResponseError):
        return False
    return (type(exc).__name__ in _REDIS_REFUSALS
            or any(text in str(exc) for text in _REDIS_REFUSAL_TEXT))


def shown_url(url: str) -> str:
    """``url`` with any password masked, also when the URL does not parse (a bad port)."""
    from kombu.utils.url import maybe_sanitize_url

    try:
        return str(maybe_sanitize_url(url))
    except ValueError:
        return _URL_PASSWORD.sub(r"\1**@", url)
