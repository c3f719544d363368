"""workers/overlap.py without a worker: the hand-off framing, the switch, the fallbacks."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

from contract.settings import Settings
from workers import overlap


def test_framing_round_trips_header_and_payload() -> None:
    """Given a header and a binary payload sent over a socket, expect both back intact,
    and None once the peer hangs up."""
    a, b = socket.socketpair()
    with a, b, b.makefile("rb") as stream:
        payload = b"\0\n{binary}\n"
        overlap._send(a, {"op": "take", "task": "t-1"}, payload)
        overlap._send(a, {"op": "store"})
        assert overlap._recv(stream) == ({"op": "take", "task": "t-1", "size": len(payload)},
                                         payload)
        assert overlap._recv(stream) == ({"op": "store", "size": 0}, b"")
        a.shutdown(socket.SHUT_WR)
        assert overlap._recv(stream) is None


def _consumer(multiplier: int, configured: int, hub: object = object()) -> SimpleNamespace:
    app = SimpleNamespace(conf=SimpleNamespace(worker_prefetch_multiplier=configured))
    return SimpleNamespace(app=app, prefetch_multiplier=multiplier, hub=hub)


def test_on_only_at_the_configured_multiplier_above_one() -> None:
    """An explicit --prefetch-multiplier that differs from the setting keeps plain Celery;
    so does a multiplier of 1, and a pool without an event loop."""
    settings = Settings(prefetch_multiplier=16)
    assert overlap.enabled(_consumer(16, 16), settings)
    assert not overlap.enabled(_consumer(1, 16), settings)
    assert not overlap.enabled(_consumer(24, 16), settings)
    assert not overlap.enabled(_consumer(16, 16, hub=None), settings)
    assert not overlap.enabled(_consumer(1, 1), Settings(prefetch_multiplier=1))


def test_a_child_without_its_main_process_does_everything_itself(tmp_path: Path) -> None:
    """No socket, or a dead one: nothing taken ahead, no record written behind."""
    line = overlap.Handoff(tmp_path / "gone.sock")
    assert line.take("t-1") is None
    from workers.featurize import Outcome

    outcome = Outcome("r", None, "done")
    assert line.writer("t-1")("k", b"{}", outcome, {}) is False
    assert outcome.written_behind is None
