"""Operational faults the command line and the HTTP API both meet, recognised alike.

A traceback (CLI) or a 500 (API) means a bug; these are not bugs but a backend refusing
or a setting naming something unusable, so each gets one line / a 503 instead.
"""

from __future__ import annotations

import re

# The most neighbours a similar query asks for (CLI -k, Python API k; the HTTP API caps
# at 100): LanceDB takes k as a C long, and a larger one was an OverflowError.
MAX_K = 10_000

_URL_PASSWORD = re.compile(r"(//[^/@:]*:)[^/@]*@")


def redis_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing commands for an operational reason (not a bug);
    the one classification, shared with the workers and the reducer, is
    :func:`contract.state.redis_refusal`."""
    # Lazily: the CLI imports this module for every command, redis only some need.
    from contract.state.connection import redis_refusal as refusal

    return refusal(exc)


def shown_url(url: str) -> str:
    """``url`` with any password masked, also when the URL does not parse (a bad port)."""
    from kombu.utils.url import maybe_sanitize_url

    try:
        return str(maybe_sanitize_url(url))
    except ValueError:
        return _URL_PASSWORD.sub(r"\1**@", url)
