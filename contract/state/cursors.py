"""Producers' resume cursors: ``pv:cursor:<name>`` (the last input line whose jobs are
all published) and ``pv:cursor:<name>:run`` (the run that line belongs to).

Used by resumable dumps (producers/submit.py, ``dump:<file>``) and interrupted
``enqueue`` of a catalog (producers/queue.py, ``enqueue:<content hash>``).

A dump processed in coverage order (producers/plan.py) keeps its plan next to its cursor:
``pv:cursor:<name>:plan`` (a bitmap, bit ``n`` set when dump line ``n`` is in the cover
pass, as base64 text since the state clients decode replies) and
``pv:cursor:<name>:planmeta`` (what the plan was made from). Its cursor then counts
positions in the plan's passes, not dump lines; the plan goes with the cursor
(:meth:`Cursors.clear_cursor`).

A dump's cursor also keeps which file it counts: ``pv:cursor:<name>:input`` (size and
hashes, :func:`producers.dumps.file_identity`), checked before a resume.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

from contract.state.keys import (
    cursor_input_key,
    cursor_key,
    cursor_run_key,
    plan_key,
    plan_meta_key,
    run_key,
)
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
        """Forget the cursor, its run, its plan and its input (done, or restarted)."""
        self._redis.delete(cursor_key(name), cursor_run_key(name), plan_key(name),
                           plan_meta_key(name), cursor_input_key(name))

    def set_cursor_input(self, name: str, identity: Mapping[str, str | int]) -> None:
        """Record which input file the cursor counts the lines of (replacing any)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(cursor_input_key(name))
        pipe.hset(cursor_input_key(name), mapping=dict(identity))
        pipe.execute()

    def cursor_input(self, name: str) -> dict[str, str] | None:
        """The recorded input file's identity, or None (none recorded: an older cursor)."""
        raw = self._redis.hgetall(cursor_input_key(name))
        return {_text(k): _text(v) for k, v in raw.items()} or None

    def set_plan(self, name: str, bitmap: bytes, meta: Mapping[str, str | int]) -> None:
        """Store a dump's plan (replacing any) in one transaction."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(plan_key(name), plan_meta_key(name))
        pipe.set(plan_key(name), base64.b64encode(bitmap))
        pipe.hset(plan_meta_key(name), mapping=dict(meta))
        pipe.execute()

    def plan(self, name: str) -> tuple[bytes, dict[str, str]] | None:
        """The cursor's plan (bitmap, meta), or None when its dump runs in line order."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.get(plan_key(name))
        pipe.hgetall(plan_meta_key(name))
        bitmap, meta = pipe.execute()
        if bitmap is None or not meta:
            return None
        return base64.b64decode(bitmap), {_text(k): _text(v) for k, v in meta.items()}

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
