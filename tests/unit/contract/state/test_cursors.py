"""contract/state/cursors.py: producers' resume cursors."""

from __future__ import annotations

from contract.state import Runs


def test_a_new_cursor_starts_at_line_zero(runs: Runs) -> None:
    assert runs.cursor("dump:x") is None
    assert runs.cursor_run("dump:x") is None
    assert runs.resume_line("dump:x") == 0


def test_chunk_published_moves_count_and_cursor_together(runs: Runs) -> None:
    runs.create("r1")
    runs.chunk_published("r1", 5)  # no cursor: only the count
    assert runs.cursor("dump:x") is None
    runs.chunk_published("r1", 3, cursor_name="dump:x", line=41)
    assert runs.status("r1").meta["submitted"] == "8"
    assert (runs.cursor("dump:x"), runs.cursor_run("dump:x")) == (41, "r1")
    assert runs.resume_line("dump:x") == 42


def test_set_and_clear(runs: Runs) -> None:
    runs.set_cursor_run("dump:y", "r2")
    runs.set_cursor("dump:y", 7)
    assert (runs.cursor("dump:y"), runs.cursor_run("dump:y")) == (7, "r2")
    runs.clear_cursor("dump:y")
    assert (runs.cursor("dump:y"), runs.cursor_run("dump:y")) == (None, None)


def test_the_cursors_input_is_kept_until_the_cursor_is_cleared(runs: Runs) -> None:
    assert runs.cursor_input("dump:z") is None
    runs.set_cursor_input("dump:z", {"bytes": 10, "head": "aa", "tail": "bb"})
    runs.set_cursor_input("dump:z", {"bytes": 12, "head": "cc", "tail": "dd"})  # replaced
    assert runs.cursor_input("dump:z") == {"bytes": "12", "head": "cc", "tail": "dd"}
    runs.set_cursor("dump:z", 3)
    runs.clear_cursor("dump:z")
    assert runs.cursor_input("dump:z") is None
