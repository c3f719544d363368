"""Coverage order for a dump: resolve first the releases that cover the most recordings.

A recording appears on many releases (the album, compilations, reissues, regional
editions). Once a release is resolved its recordings are queued, so a later release whose
recordings are all stored, queued or resolved in this run costs no call
(producers/resolve.py); one with some of them costs calls for the others only. Which
releases end up fully covered depends on the order: a compilation met before its albums
is resolved track by track, met after them it is skipped.

**The plan.** One streamed pass over the dump keeps, per release line, only its line
number and its distinct recording ids, each as a 64-bit hash (8 bytes; two recordings
sharing a hash only blur the order, never what is resolved: the resolver checks real
ids). Lazy greedy set cover then orders the releases, the standard approximation: a
max-heap of releases by priority; the top one is re-scored (scores only fall as
recordings get covered), taken if it still beats the next one, else pushed back with its
new score. The releases taken with something new are the *cover*: every recording of
the dump is on one of them. The priority is weighted by cost: uncovered recordings per
estimated call, a release's album costing :data:`ALBUM_CALLS` and each uncovered track
credited to another artist than the release one more (a compilation's tracks are
matched one by one). Unweighted (uncovered recordings alone), the greedy takes the big
compilations first, resolved track by track, and saves less (measured in
benchmarks/resolution.py ``--order``).

**Two passes.** A compressed dump cannot be read in an arbitrary order, so the plan is
kept as one bit per dump line (in the cover or not) and the dump is read twice: first
the cover lines, in dump order, then every other line (releases the cover already
covered; bad lines), each skipped without a call when nothing of it is left unresolved.
What matters most of the greedy order, every release it needed before every release it
did not, is kept; the order within the cover is the dump's. Cost: one extra read of the
dump for the plan and one for the second pass (its other lines are not parsed), and
while planning ≈ 57 B per track reference at peak, interpreter included (measured: 608 MB
for 1 M releases, 10.6 M tracks, 30 CPU-s; docs/benchmarks.md "Dump order"), so ≈ 3 GB
for all of MusicBrainz; afterwards only the bitmap (one bit per dump line).

**Positions.** With a plan the resumable cursor counts positions in the passes:
``position = pass × lines + line`` (:meth:`Plan.position`), increasing through both passes
as submit's cursor needs.
"""

from __future__ import annotations

import hashlib
import heapq
import os
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from producers import dumps
from producers.musicbrainz import medium_tracks

PLAN_FORMAT = "previewvec-plan/1"
PASSES = 2  # the cover, then the rest
_INDEX_BITS = 32  # a heap entry is -(priority << 32) + release index: one int, not a tuple
_SCALE_BITS = 16  # priorities are fixed-point: uncovered recordings per call × 2**16
# Calls a release costs before any per-track call: its album (a barcode lookup, or an
# album search and its track list). A lone recording entity costs only its own.
ALBUM_CALLS = 2


def _credit_names(credit: Any) -> str:
    if not isinstance(credit, list):
        return ""
    return "|".join(str(c.get("name") or (c.get("artist") or {}).get("name") or "")
                    for c in credit if isinstance(c, dict))


def tracks_of(entity: dict[str, Any]) -> list[tuple[str, bool]]:
    """The distinct audio recordings of a dump entity as the resolver reads them (pregap
    and data tracks included, videos left out: they cost no call), each with whether it
    is *solo*: likely to need calls of its own rather than being matched with its
    release's album (a track credited to another artist than the release, as on a
    compilation; a lone recording entity)."""
    kind = dumps.entity_type(entity)
    if kind == "recording":
        rid = entity.get("id")
        video = entity.get("video") is True
        return [(rid, True)] if isinstance(rid, str) and rid and not video else []
    if kind != "release":
        return []
    release_credit = _credit_names(entity.get("artist-credit"))
    out: dict[str, bool] = {}
    for medium in entity.get("media") or []:
        for trk in medium_tracks(medium):  # pregap and data tracks too
            rec = trk.get("recording")
            if not isinstance(rec, dict) or rec.get("video") is True:
                continue  # a video is skipped without a call: nothing to cover
            rid = rec.get("id")
            if isinstance(rid, str) and rid and rid not in out:
                credit = _credit_names(trk.get("artist-credit") or rec.get("artist-credit"))
                out[rid] = bool(credit) and credit != release_credit
    return list(out.items())


def recording_ids(entity: dict[str, Any]) -> list[str]:
    """The distinct recording ids of a dump entity (a release's tracks, or a recording)."""
    return [rid for rid, _ in tracks_of(entity)]


def _hash(recording_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(recording_id.encode("utf-8", "surrogateescape"),
                                          digest_size=8).digest(), "little")


def greedy_cover(offsets: np.ndarray, members: np.ndarray, *,
                 solo: np.ndarray | None = None, base: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Lazy greedy max coverage. Release ``i`` holds ``members[offsets[i]:offsets[i+1]]``
    (dense recording numbers, distinct within a release).

    Unweighted (no ``solo``): a release's priority is its count of uncovered recordings.
    Weighted: that count over the release's estimated calls, ``base[i]`` plus one per
    uncovered *solo* track (``solo``, aligned with ``members``), the weighted set-cover
    greedy. Priorities only fall as recordings get covered, as lazy evaluation needs,
    except where a solo track's coverage lowers the cost faster (then it is approximate).

    Returns (order, gains): the releases taken, in the greedy's order, and how many new
    recordings each covered when taken (> 0). Ties go to the lower index (dump order)."""
    n = len(offsets) - 1
    covered = np.zeros(int(members.max()) + 1 if len(members) else 0, dtype=bool)
    sizes = np.diff(offsets)

    def priority(i: int) -> tuple[int, int]:
        """(priority as an int, gain) of release i now."""
        ids = members[offsets[i]:offsets[i + 1]]
        fresh = ~covered[ids]
        gain = int(np.count_nonzero(fresh))
        if solo is None or gain == 0:
            return gain << _SCALE_BITS, gain
        calls = int(base[i]) + int(np.count_nonzero(solo[offsets[i]:offsets[i + 1]] & fresh))
        return (gain << _SCALE_BITS) // max(1, calls), gain

    heap = [-(priority(i)[0] << _INDEX_BITS) + i for i in range(n) if sizes[i] > 0]
    heapq.heapify(heap)
    order: list[int] = []
    gains: list[int] = []
    mask = (1 << _INDEX_BITS) - 1
    while heap:
        i = heapq.heappop(heap) & mask
        prio, gain = priority(i)
        if gain == 0:
            continue  # covered by the releases taken before it: not in the cover
        if not heap or prio >= -(heap[0] >> _INDEX_BITS):
            covered[members[offsets[i]:offsets[i + 1]]] = True
            order.append(i)
            gains.append(gain)
        else:
            heapq.heappush(heap, -(prio << _INDEX_BITS) + i)
    return np.asarray(order, dtype=np.int64), np.asarray(gains, dtype=np.int64)


@dataclass(frozen=True)
class Plan:
    """A dump's coverage plan: which lines are in the first pass."""

    lines: int  # the dump's last line number
    cover: bytes  # bit n (Redis bit order: MSB first) set when line n is in the cover
    releases: int  # lines with at least one recording
    recordings: int  # distinct recordings (64-bit hashes)
    cover_releases: int
    dump_bytes: int  # the dump file's size when planned (a changed dump voids the plan)

    def in_cover(self, line: int) -> bool:
        byte = line >> 3
        return byte < len(self.cover) and bool(self.cover[byte] & (0x80 >> (line & 7)))

    def position(self, pass_no: int, line: int) -> int:
        return pass_no * self.lines + line

    def locate(self, position: int) -> tuple[int, int]:
        """(pass, line) of a position; position 0 is before the first line."""
        if position <= 0:
            return 0, 0
        pass_no, rest = divmod(position - 1, max(1, self.lines))
        return pass_no, rest + 1

    def meta(self) -> dict[str, str | int]:
        return {"format": PLAN_FORMAT, "lines": self.lines, "releases": self.releases,
                "recordings": self.recordings, "cover_releases": self.cover_releases,
                "dump_bytes": self.dump_bytes}

    @classmethod
    def from_stored(cls, cover: bytes, meta: dict[str, str]) -> Plan:
        if meta.get("format") != PLAN_FORMAT:
            raise ValueError(f"unknown plan format {meta.get('format')!r}")
        return cls(int(meta["lines"]), cover, int(meta["releases"]),
                   int(meta["recordings"]), int(meta["cover_releases"]),
                   int(meta["dump_bytes"]))


def make_plan(path: str | Path, *, member: str | None = None, weighted: bool = True,
              progress: Callable[[int], None] | None = None) -> tuple[Plan, np.ndarray]:
    """Read the dump once and plan it; returns the plan and the greedy order (dump line
    numbers of the cover, in the order the greedy took them). ``weighted``: by uncovered
    recordings per estimated call (the default), else by uncovered recordings alone."""
    lines_of = array("q")
    offsets = array("q", [0])
    hashes = array("Q")
    solo = array("b")
    base = array("b")
    last = 0
    for line_no, item in dumps.iter_dump(path, member=member):
        last = line_no
        if isinstance(item, dumps.DumpError):
            continue
        tracks = tracks_of(item)
        if tracks:
            lines_of.append(line_no)
            hashes.extend(_hash(rid) for rid, _ in tracks)
            solo.extend(int(s) for _, s in tracks)
            base.append(ALBUM_CALLS if dumps.entity_type(item) == "release" else 0)
            offsets.append(len(hashes))
        if progress is not None and line_no % 100_000 == 0:
            progress(line_no)
    flat = np.frombuffer(hashes, dtype=np.uint64) if len(hashes) else np.zeros(0, np.uint64)
    uniq, members = np.unique(flat, return_inverse=True)
    del flat, hashes
    order, _ = greedy_cover(
        np.frombuffer(offsets, dtype=np.int64), members.ravel(),
        solo=np.frombuffer(solo, dtype=np.int8).astype(bool) if weighted else None,
        base=np.frombuffer(base, dtype=np.int8) if weighted else None)
    cover_lines = np.frombuffer(lines_of, dtype=np.int64)[order] if len(order) else \
        np.zeros(0, np.int64)
    bitmap = bytearray((last >> 3) + 1)
    for line in cover_lines.tolist():
        bitmap[line >> 3] |= 0x80 >> (line & 7)
    plan = Plan(last, bytes(bitmap), len(lines_of), len(uniq), len(order),
                os.path.getsize(path))
    return plan, cover_lines


def iter_planned(path: str | Path, plan: Plan, start: int = 0, *,
                 member: str | None = None
                 ) -> Iterator[tuple[int, int, dict[str, Any] | dumps.DumpError]]:
    """``(position, line_no, item)`` for the plan's passes from position ``start``: the
    cover lines, then the others, each pass in dump order, other lines left unparsed."""
    first_pass, first_line = plan.locate(start)
    for pass_no in range(first_pass, PASSES):
        wanted = pass_no == 0

        def keep(line: int, wanted: bool = wanted) -> bool:
            return plan.in_cover(line) == wanted

        begin = first_line if pass_no == first_pass else 0
        for line_no, item in dumps.iter_dump(path, begin, member=member, keep=keep):
            yield plan.position(pass_no, line_no), line_no, item
