"""producers/plan.py: the greedy cover of a dump and the passes that follow it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from producers.plan import (
    Plan,
    greedy_cover,
    iter_planned,
    make_plan,
    recording_ids,
    tracks_of,
)


def release(rid: str, recordings: list[str], artist: str = "Band",
            track_artists: list[str] | None = None) -> dict:
    """A dump release entity; ``track_artists`` credits each track to its own artist."""
    tracks = []
    for i, rec in enumerate(recordings):
        trk = {"position": i + 1, "title": rec, "recording": {"id": rec, "title": rec}}
        if track_artists:
            trk["artist-credit"] = [{"name": track_artists[i], "joinphrase": ""}]
        tracks.append(trk)
    return {"id": rid, "title": rid, "artist-credit": [{"name": artist, "joinphrase": ""}],
            "media": [{"position": 1, "tracks": tracks}]}


def write_dump(path: Path, entities: list[dict | str]) -> Path:
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n"
                            for e in entities))
    return path


def test_greedy_takes_the_largest_first_and_leaves_out_what_is_covered() -> None:
    # given releases 0: {0,1,2,3}, 1: {4,5,6}, 2: {1,5} (covered by 0 and 1), 3: {6,7}
    sets = [[0, 1, 2, 3], [4, 5, 6], [1, 5], [6, 7]]
    offsets = np.cumsum([0] + [len(s) for s in sets])
    members = np.array([m for s in sets for m in s])
    order, gains = greedy_cover(offsets, members)
    # then 0 (4 new), 1 (3 new), 3 (only 7 is new); 2 covers nothing new: not taken
    assert order.tolist() == [0, 1, 3]
    assert gains.tolist() == [4, 3, 1]


def test_ties_go_to_dump_order() -> None:
    sets = [[0, 1], [2, 3], [4]]
    offsets = np.cumsum([0] + [len(s) for s in sets])
    order, _ = greedy_cover(offsets, np.array([m for s in sets for m in s]))
    assert order.tolist() == [0, 1, 2]


def test_recounting_follows_the_lazy_greedy() -> None:
    # 2 is biggest (4); then 0 has 1 new ({2}), 1 has 3 new: 1 before 0
    sets = [[0, 1, 2], [3, 4, 7], [0, 1, 5, 6]]
    offsets = np.cumsum([0] + [len(s) for s in sets])
    order, gains = greedy_cover(offsets, np.array([m for s in sets for m in s]))
    assert order.tolist() == [2, 1, 0]
    assert gains.tolist() == [4, 3, 1]


def test_a_compilation_covered_by_two_albums_is_left_for_the_second_pass(
        tmp_path: Path) -> None:
    # given two albums and a various-artists compilation of four of their tracks, met first
    comp = release("comp", ["a1", "a2", "b1", "b2", "x1"], artist="Various Artists",
                   track_artists=["A", "A", "B", "B", "X"])
    dump = write_dump(tmp_path / "release", [
        comp,
        release("album-a", ["a1", "a2", "a3"], artist="A"),
        "not json",
        release("album-b", ["b1", "b2", "b3", "b4"], artist="B"),
        release("single-x", ["x1"], artist="X"),
    ])
    # when planned by recordings per estimated call
    plan, order = make_plan(dump)
    # then the albums and the single cover everything: the compilation is not needed
    assert order.tolist() == [4, 2, 5]
    assert [plan.in_cover(n) for n in range(1, 6)] == [False, True, False, True, True]
    assert (plan.lines, plan.releases, plan.recordings, plan.cover_releases) == (5, 4, 8, 3)
    # while the unweighted greedy takes the compilation (5 new) first
    _, unweighted = make_plan(dump, weighted=False)
    assert unweighted.tolist() == [1, 4, 2]


def test_passes_cover_first_then_the_rest_and_resume_mid_plan(tmp_path: Path) -> None:
    dump = write_dump(tmp_path / "release", [
        release("comp", ["a1", "b1"], artist="VA", track_artists=["A", "B"]),
        release("album-a", ["a1", "a2"], artist="A"),
        "[1]",
        release("album-b", ["b1", "b2"], artist="B"),
    ])
    plan, _ = make_plan(dump)
    every = [(pos, line) for pos, line, _ in iter_planned(dump, plan)]
    # the cover (lines 2 and 4) in dump order, then line 1 and the bad line 3
    assert every == [(2, 2), (4, 4), (4 + 1, 1), (4 + 3, 3)]
    items = {line: item for _, line, item in iter_planned(dump, plan)}
    assert getattr(items[3], "code", None) == "not_an_object"
    # resuming after position 4 (the cover done) starts the second pass
    assert [line for _, line, _ in iter_planned(dump, plan, 5)] == [1, 3]
    # and mid-pass: after position 2, line 4 is left in the first pass
    assert [line for _, line, _ in iter_planned(dump, plan, 3)] == [4, 1, 3]
    assert plan.locate(0) == (0, 0) and plan.locate(5) == (1, 1) and plan.locate(9) == (2, 1)


def test_plan_survives_its_stored_form(tmp_path: Path) -> None:
    dump = write_dump(tmp_path / "release", [release("r", ["a", "b"])])
    plan, _ = make_plan(dump)
    again = Plan.from_stored(plan.cover, {k: str(v) for k, v in plan.meta().items()})
    assert again == plan


def test_tracks_of_reads_recordings_once_and_marks_solo_tracks() -> None:
    rel = release("r", ["a", "b", "a"], artist="Band", track_artists=["Band", "Guest", "Band"])
    assert tracks_of(rel) == [("a", False), ("b", True)]
    assert tracks_of({"id": "rec", "length": 1000}) == [("rec", True)]
    assert tracks_of({"id": "x"}) == []


def test_tracks_of_reads_pregap_and_data_tracks_and_leaves_videos_out() -> None:
    rel = release("r", ["b"])
    rel["media"][0]["pregap"] = {"position": 0, "recording": {"id": "hidden"}}
    rel["media"][0]["data-tracks"] = [{"position": 2, "recording": {"id": "data"}}]
    rel["media"].append({"position": 2, "tracks": [
        {"position": 1, "recording": {"id": "clip", "video": True}}]})
    assert recording_ids(rel) == ["hidden", "b", "data"]
    assert tracks_of({"id": "clip", "length": 1000, "video": True}) == []
