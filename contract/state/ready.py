"""The reducer's queue ``pv:ready`` and its dead-letter queue ``pv:ready:dead``.

Entries are store keys of records whose vectors are not in the index yet, in completion
order; the reducer reads a batch with :meth:`ReadyQueue.peek_ready` and trims it off,
while it holds its lock, with :meth:`contract.state.lock.ReducerLock.trim_ready_if_owner`.
"""

from __future__ import annotations

from contract.state.keys import DEAD_LETTER_QUEUE, READY_QUEUE
from contract.state.scripts import StateBase

# A ready entry with this prefix is a record key the reducer upserts only if its vector is
# not in the index yet (a skipped job: its record was stored earlier, and was indexed
# unless the worker that stored it died before pushing its key). "?" cannot start a
# record key ("features/…").
IF_ABSENT = "?"


def parse_ready_entry(entry: str) -> tuple[str, bool]:
    """A ``pv:ready`` entry → (record key, upsert only if absent from the index)."""
    if entry.startswith(IF_ABSENT):
        return entry[len(IF_ABSENT):], True
    return entry, False


class ReadyQueue(StateBase):
    """Pushing, reading and parking record keys for the reducer."""

    def push_ready(self, record_key: str) -> None:
        """A freshly written record: the reducer always upserts it."""
        self._redis.rpush(READY_QUEUE, record_key)

    def push_ready_if_absent(self, record_key: str) -> None:
        """A record found already stored: the reducer upserts it only if the index does
        not hold its vector (its writer may have died before pushing it)."""
        self._redis.rpush(READY_QUEUE, IF_ABSENT + record_key)

    def peek_ready(self, n: int) -> list[str]:
        """The first ``n`` entries, left in the queue."""
        return list(self._redis.lrange(READY_QUEUE, 0, n - 1))

    def ready_depth(self) -> int:
        return int(self._redis.llen(READY_QUEUE))

    def park(self, record_key: str) -> None:
        """Move an entry that cannot be indexed to ``pv:ready:dead`` (kept visible, e.g.
        another feature version written during a rolling deploy; `reindex` recovers it)."""
        self._redis.rpush(DEAD_LETTER_QUEUE, record_key)

    def dead_letters(self) -> list[str]:
        """Every parked entry, oldest first."""
        return list(self._redis.lrange(DEAD_LETTER_QUEUE, 0, -1))

    def dead_letter_depth(self) -> int:
        return int(self._redis.llen(DEAD_LETTER_QUEUE))
