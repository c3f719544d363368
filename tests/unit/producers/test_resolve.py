"""The resolver's handling of what it is given: ISRC inputs (in-memory sources and
MusicBrainz, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.unit.producers.test_sources import FakeSource, resolver_with


@dataclass
class FakeMusicBrainz:
    """Knows no ISRC; records the ones it was asked for."""

    asked: list[str] = field(default_factory=list)

    def isrc(self, isrc: str) -> dict[str, Any]:
        self.asked.append(isrc)
        return {"isrc": isrc, "recordings": []}


# -- ISRC inputs -------------------------------------------------------------------------
def test_isrcs_are_checked_and_deduplicated_before_any_call() -> None:
    """Given spellings of one ISRC and values that are none, expect one MusicBrainz call
    for the ISRC and an ``invalid_isrc`` for each other value, without a call (one went to
    ``/isrc/NOT AN ISRC``, one to another endpoint: ``/isrc/../RELEASE/ABC?INC=X``)."""
    resolver = resolver_with(FakeSource("itunes", []))
    resolver.mb = mb = FakeMusicBrainz()
    given = ["not an isrc", "usrc17607839", " USRC17607839 ", "US-RC1-76-07839",
             "../release/abc?inc=x", "not an isrc", "\u0131SRC17607839"]
    got = {r.recording_id: r for r in resolver.resolve_isrcs(given)}
    assert mb.asked == ["USRC17607839"]
    assert {rid: r.error_code for rid, r in got.items()} == {
        "isrc:not an isrc": "invalid_isrc",
        "isrc:../release/abc?inc=x": "invalid_isrc",
        "isrc:\\u0131SRC17607839": "invalid_isrc",  # dotless i: upper() would make it "I"
        "isrc:USRC17607839": "isrc_unknown"}
    assert got["isrc:not an isrc"].reason == (
        '"not an isrc" is not an ISRC (12 characters like USRC17607839)')
