"""The Lua scripts of the state modules, kept as files in ``contract/state/lua/``.

Each file starts with a comment saying what it takes (KEYS, ARGV) and returns.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script


@cache
def source(name: str) -> str:
    """The text of ``lua/<name>.lua`` (packaged with contract, see pyproject.toml)."""
    return resources.files("contract.state").joinpath("lua", f"{name}.lua").read_text("utf-8")


# Sent as EVAL with their text every time, as the reducer always did: short scripts on a
# path where one call per batch costs nothing, and a dropped connection retries the very
# command that was sent (tests/integration/test_reducer_lock.py cuts the reply of the
# trim, recognised by its text, and checks that the retried trim drops nothing).
EVAL_EVERY_TIME = frozenset({"lock_trim_ready", "lock_renew", "lock_release", "runs_prune"})


class Scripts:
    """Scripts registered on one client, on first use (EVALSHA, loading when missing);
    those in :data:`EVAL_EVERY_TIME` are sent with their text."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._scripts: dict[str, Script] = {}

    def __call__(self, name: str, keys: list[str], args: list[Any] | None = None,
                 client: Any = None) -> Any:
        if name in EVAL_EVERY_TIME and client is None:
            return self._client.eval(source(name), len(keys), *keys, *(args or []))
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._client.register_script(source(name))
        return script(keys=keys, args=args or [], client=client)


class StateBase:
    """What every state concern shares: the client (private) and its scripts."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._script = Scripts(client)
