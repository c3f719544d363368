"""contract/state/keys.py: the only place ``pv:`` key names are spelled."""

from __future__ import annotations

import ast
from pathlib import Path

from redis import Redis

from contract.state import AnswerCache, GcraState, Runs, keys

ROOT = Path(__file__).resolve().parents[4]
PRODUCT = ("contract", "producers", "workers", "reducer", "previewvec", "infra")


def test_key_names() -> None:
    assert keys.run_keys("r1") == ["pv:run:r1:meta", "pv:run:r1:counts", "pv:run:r1:state",
                                   "pv:run:r1:failures", "pv:run:r1:jobs", "pv:run:r1:lost"]
    assert keys.crash_key("t") == "pv:crash:t"
    assert (keys.cursor_key("dump:x"), keys.cursor_run_key("dump:x")) == (
        "pv:cursor:dump:x", "pv:cursor:dump:x:run")
    assert keys.cursor_lock_key("enqueue:h") == "pv:cursor:enqueue:h:lock"
    assert keys.ratelimit_key("itunes") == "pv:ratelimit:itunes"
    assert keys.pending_key("rec-1") == "pv:pending:rec-1"
    assert (keys.plan_key("dump:x"), keys.plan_meta_key("dump:x")) == (
        "pv:cursor:dump:x:plan", "pv:cursor:dump:x:planmeta")
    assert keys.cursor_input_key("dump:x") == "pv:cursor:dump:x:input"
    assert (keys.READY_QUEUE, keys.DEAD_LETTER_QUEUE, keys.LOCK_KEY, keys.RUNS_INDEX) == (
        "pv:ready", "pv:ready:dead", "pv:reducer:lock", "pv:runs")


def _string_starts(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(
            node.values[0], ast.Constant):
        return str(node.values[0].value)
    return None


def test_no_product_module_outside_state_spells_a_pv_key_or_builds_a_client() -> None:
    """One owner: a ``"pv:…"`` string, a ``redis.Redis`` client or a registered script
    anywhere else in product code fails this test."""
    offenders = []
    for top in PRODUCT:
        for path in (ROOT / top).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("contract/state/"):
                continue
            tree = ast.parse(path.read_text(), rel)
            for node in ast.walk(tree):
                text = _string_starts(node)
                if text is not None and text.startswith("pv:"):
                    offenders.append(f"{rel}:{node.lineno}: {text[:40]!r}")
                if isinstance(node, ast.Attribute) and node.attr in (
                        "from_url", "register_script", "Redis") and isinstance(
                        node.value, ast.Name) and node.value.id in ("redis", "Redis"):
                    offenders.append(f"{rel}:{node.lineno}: redis.{node.attr}")
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                        ("contract.state", "contract.runs")) and any(
                        alias.name == "PREFIX" for alias in node.names):
                    offenders.append(f"{rel}:{node.lineno}: builds keys from PREFIX")
                if isinstance(node, ast.Attribute) and node.attr == "redis" and isinstance(
                        node.value, ast.Name) and node.value.id == "runs":
                    offenders.append(f"{rel}:{node.lineno}: runs.redis")
    assert offenders == []


def test_everything_the_state_writes_is_a_known_pv_key(runs: Runs, raw: Redis) -> None:
    runs.create("r1", queue="batch")
    runs.mark_many_queued("r1", ["a", "b"])
    runs.fail("r1", "a", "http_404", "gone")
    runs.push_ready("features/pv2/b.json")
    runs.park("bad")
    runs.acquire_reducer_lock("tok", 10)
    runs.attempt_started("task-1")
    runs.chunk_published("r1", 2, cursor_name="dump:x", line=3)
    runs.set_plan("dump:x", b"\x80", {"format": "f", "lines": 1})
    GcraState(raw, "itunes").acquire(1000, 1, -1)
    AnswerCache(raw).set("https://itunes.apple.com/search?term=x", {"ok": 1})
    known = ("pv:run:r1:", "pv:runs", "pv:ready", "pv:reducer:lock", "pv:crash:",
             "pv:cursor:", "pv:ratelimit:", "pv:itunes:cache:", "pv:pending:")
    written = sorted(raw.scan_iter(match="*"))
    assert written and all(k.startswith(known) for k in written), written
