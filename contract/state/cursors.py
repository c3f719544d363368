"""Producers' resume cursors: ``pv:cursor:<name>`` (the last input line whose jobs are
all published) and ``pv:cursor:<name>:run`` (the run that line belongs to).

Used by resumable dumps (producers/submit.py, ``dump:<file>``) and interrupted
``enqueue`` of a catalog (producers/queue.py, ``enqueue:<content hash>``).
"""

from __future__ import annotations

from contract.state.keys import cursor_key, cursor_run_key, run_key
from contract.state.scripts import StateBase


def _text(raw: object) -> str:
    return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)


class Cursors(StateBase):
    def cursor(self, name: str) -> int | None:
        """The last fully published line, or None for a new cursor."""
        raw = self._redis.get(cursor_key(name))
        return None if raw is None else int(raw)

    def resume_line(self, name: str) -> int:
        """The first line still to do: the stored cursor + 1, or 0 for a new cursor."""
        cursor = self.cursor(name)
        return 0 if cursor is None else cursor + 1

    def cursor_run(self, name: str) -> str | None:
        """The run a cursor belongs to (so a resumed input keeps counting in it)."""
        raw = self._redis.get(cursor_run_key(name))
        return None if raw is None else _text(raw)

    def set_cursor(self, name: str, line: int) -> None:
        self._redis.set(cursor_key(name), line)

    def set_cursor_run(self, name: str, run_id: str) -> None:
        self._redis.set(cursor_run_key(name), run_id)

    def clear_cursor(self, name: str) -> None:
        """Forget the cursor and its run (the input is done, or restarted)."""
        self._redis.delete(cursor_key(name), cursor_run_key(name))

    def chunk_published(self, run_id: str, n: int, *, cursor_name: str | None = None,
                        line: int | None = None) -> None:
        """Count ``n`` more published jobs in the run's ``submitted`` and, with a cursor,
        move it to ``line``, in one transaction: the count and the cursor always agree."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hincrby(run_key(run_id, "meta"), "submitted", n)
        if cursor_name is not None and line is not None:
            pipe.set(cursor_key(cursor_name), line)
            pipe.set(cursor_run_key(cursor_name), run_id)
        pipe.execute()
