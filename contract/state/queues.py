"""Depth of kombu's queue lists (``batch``, ``ondemand``): read for backpressure and
metrics. These are kombu's keys, not ``pv:`` keys; nothing here writes them."""

from __future__ import annotations

from contract.broker import queue_keys
from contract.state.scripts import StateBase


class Queues(StateBase):
    def queue_depth(self, queue: str) -> int:
        """Messages waiting in ``queue``, every priority step (not counting ones a worker
        has already taken)."""
        pipe = self._redis.pipeline(transaction=False)
        for key in queue_keys(queue):
            pipe.llen(key)
        return int(sum(pipe.execute()))

    def list_length(self, name: str) -> int:
        """LLEN of one list (the exporter's per-queue gauge: the default-priority list)."""
        return int(self._redis.llen(name))

    def ping(self) -> bool:
        """True when Redis answers PING (raises redis' errors when it cannot be reached)."""
        return bool(self._redis.ping())
