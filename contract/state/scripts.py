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


class Scripts:
    """Scripts registered on one client, on first use (EVALSHA, loading when missing)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._scripts: dict[str, Script] = {}

    def __call__(self, name: str, keys: list[str], args: list[Any] | None = None,
                 client: Any = None) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._client.register_script(source(name))
        return script(keys=keys, args=args or [], client=client)


class StateBase:
    """What every state concern shares: the client (private) and its scripts."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._script = Scripts(client)
