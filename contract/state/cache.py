"""The upstream answer cache: decoded JSON answers keyed by request URL (SHA-1 of it),
``pv:itunes:cache:<sha1>``, expiring after a TTL."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from contract.state.keys import ITUNES_CACHE_PREFIX
from contract.state.scripts import StateBase

DEFAULT_CACHE_TTL_S = 7 * 86_400


class AnswerCache(StateBase):
    def __init__(self, client: Any, ttl_s: int = DEFAULT_CACHE_TTL_S,
                 prefix: str = ITUNES_CACHE_PREFIX) -> None:
        super().__init__(client)
        self.ttl_s = int(ttl_s)
        self.prefix = prefix

    def _key(self, url: str) -> str:
        return self.prefix + hashlib.sha1(url.encode("utf-8")).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached answer, or None (missing, expired, or not a JSON object)."""
        raw = self._redis.get(self._key(key))
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def set(self, key: str, value: dict[str, Any]) -> None:
        self._redis.set(self._key(key), json.dumps(value, separators=(",", ":")),
                        ex=self.ttl_s)
