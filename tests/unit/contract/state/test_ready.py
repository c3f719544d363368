"""contract/state/ready.py: the reducer's queue and its dead letters."""

from __future__ import annotations

from contract.state import Runs, parse_ready_entry


def test_push_peek_depth_and_if_absent_entries(runs: Runs) -> None:
    runs.push_ready("features/pv2/a.json")
    runs.push_ready_if_absent("features/pv2/b.json")
    assert runs.ready_depth() == 2
    entries = runs.peek_ready(10)
    assert [parse_ready_entry(e) for e in entries] == [("features/pv2/a.json", False),
                                                       ("features/pv2/b.json", True)]
    assert runs.peek_ready(1) == entries[:1]
    assert runs.ready_depth() == 2  # peeking removes nothing


def test_park_keeps_dead_letters_in_order(runs: Runs) -> None:
    assert runs.dead_letters() == [] and runs.dead_letter_depth() == 0
    runs.park("normalizers/pv2.json")
    runs.park("features/pv1/x.json")
    assert runs.dead_letters() == ["normalizers/pv2.json", "features/pv1/x.json"]
    assert runs.dead_letter_depth() == 2
    assert runs.ready_depth() == 0
