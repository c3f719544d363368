"""Locks: the reducer lock ``pv:reducer:lock`` (one reducer at a time works on
``pv:ready``) and the cursor locks ``pv:cursor:<name>:lock`` (one producer at a time moves
a resume cursor, so two ``enqueue`` of one catalog cannot both publish it).

The lock holds a random token, with a short TTL renewed while a batch is in progress. A
reducer whose lock expired mid-batch (slow upsert, long normaliser fit) must not trim the
queue, whose head may already be another reducer's batch, nor delete that reducer's lock:
both only happen while the token is still ours (one script each).
"""

from __future__ import annotations

from contract.state.keys import LOCK_KEY, READY_QUEUE, cursor_lock_key
from contract.state.scripts import StateBase


class ReducerLock(StateBase):
    """Take, renew and release the lock; trim a batch off the ready queue under it."""

    def acquire_reducer_lock(self, token: str, ttl_s: float) -> bool:
        """Take the lock for ``ttl_s`` unless another reducer holds it."""
        return bool(self._redis.set(LOCK_KEY, token, nx=True, px=int(ttl_s * 1000)))

    def renew_reducer_lock(self, token: str, ttl_s: float) -> bool:
        """Extend our lock to ``ttl_s`` from now; False once it is no longer ours."""
        return bool(self._script("lock_renew", [LOCK_KEY], [token, int(ttl_s * 1000)]))

    def release_reducer_lock(self, token: str) -> bool:
        """Delete the lock if it is still ours."""
        return bool(self._script("lock_release", [LOCK_KEY], [token]))

    def trim_ready_if_owner(self, token: str, entries: list[str]) -> int:
        """Remove ``entries`` (a batch read with ``peek_ready``) from the head of the
        ready queue: 1 trimmed, 0 the lock is not ours, -1 the head is not this batch
        (e.g. a retried trim whose first execution succeeded)."""
        return int(self._script("lock_trim_ready", [LOCK_KEY, READY_QUEUE], [token, *entries]))

    def reducer_lock_holder(self) -> str | None:
        """The token of the reducer holding the lock, if any."""
        raw = self._redis.get(LOCK_KEY)
        return None if raw is None else str(raw)


class CursorLock(StateBase):
    """Take, renew and release the lock on a producer's resume cursor.

    The same primitive as the reducer lock (SET NX PX, renewed and released only while
    the token is ours), so a producer that dies leaves a lock that expires by itself.
    """

    def acquire_cursor_lock(self, name: str, token: str, ttl_s: float) -> bool:
        """Take the lock on cursor ``name`` for ``ttl_s`` unless another producer holds it."""
        return bool(self._redis.set(cursor_lock_key(name), token, nx=True,
                                    px=int(ttl_s * 1000)))

    def renew_cursor_lock(self, name: str, token: str, ttl_s: float) -> bool:
        """Extend our lock to ``ttl_s`` from now; False once it is no longer ours."""
        return bool(self._script("lock_renew", [cursor_lock_key(name)],
                                 [token, int(ttl_s * 1000)]))

    def release_cursor_lock(self, name: str, token: str) -> bool:
        """Delete the lock if it is still ours."""
        return bool(self._script("lock_release", [cursor_lock_key(name)], [token]))

    def cursor_lock_holder(self, name: str) -> str | None:
        """The token of the producer holding the lock on cursor ``name``, if any."""
        raw = self._redis.get(cursor_lock_key(name))
        return None if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))
