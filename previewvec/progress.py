"""``previewvec status``: a run's counts, a progress bar and the processing rate."""

from __future__ import annotations

import time

from contract.errors import UnknownRun
from contract.settings import Settings
from contract.state import Runs, RunStatus

BAR_WIDTH = 30


RESOLUTION_COUNTERS = ("resolved", "unresolved", "skipped_existing")
# Deliberate skips (producers.submit.DELIBERATE_SKIPS) and recordings another run had
# queued (skipped_queued): shown when a run has any, so every skip has its reason.
SKIP_COUNTERS = ("skipped_video", "skipped_no_tracks", "skipped_queued")
# Resolution states (run meta "resolution_state", written by producers.submit) in which more
# jobs may still arrive: a run in one of them is not finished even with nothing queued.
RESOLVING_STATES = ("pending", "running")


def resolution_progress(status: RunStatus) -> dict[str, int | str] | None:
    """The run's resolution counters and state, or None for a plain catalog run."""
    meta = status.meta
    if "resolution_state" not in meta and not any(k in meta for k in RESOLUTION_COUNTERS):
        return None
    out: dict[str, int | str] = {}
    for name in RESOLUTION_COUNTERS + SKIP_COUNTERS:
        try:
            out[name] = int(meta.get(name, 0))
        except ValueError:
            out[name] = 0
    out["state"] = meta.get("resolution_state", "")
    return out


def still_resolving(status: RunStatus) -> bool:
    return status.meta.get("resolution_state") in RESOLVING_STATES


def format_status(status: RunStatus, rate_per_s: float | None = None) -> str:
    c = status.counts
    total = max(status.total, 1)
    filled = round(BAR_WIDTH * status.finished / total)
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    rate = f"  {rate_per_s:.1f}/s" if rate_per_s is not None else ""
    line = (f"{status.run_id} [{bar}] {status.finished}/{status.total}  "
            f"queued {c['queued']}  done {c['done']}  skipped {c['skipped']}  "
            f"failed {c['failed']}{rate}")
    res = resolution_progress(status)
    if res is not None:
        state = f" ({res['state']})" if res["state"] else ""
        line += (f"  | resolution{state}: resolved {res['resolved']}  "
                 f"unresolved {res['unresolved']}  skipped_existing {res['skipped_existing']}")
        line += "".join(f"  {name} {res[name]}" for name in SKIP_COUNTERS if res[name])
    return line


def watch_status(settings: Settings, run_id: str, *, watch: bool = False,
                 interval_s: float = 2.0) -> int:
    runs = Runs.from_url(settings.broker_url)
    if not runs.exists(run_id):
        raise UnknownRun(f"no such run: {run_id}")
    previous: tuple[float, int] | None = None
    while True:
        status = runs.status(run_id)
        now = time.monotonic()
        rate = None
        if previous is not None and now > previous[0]:
            rate = (status.finished - previous[1]) / (now - previous[0])
        previous = (now, status.finished)
        line = format_status(status, rate)
        if not watch:
            print(line)
            return 0
        print("\r" + line, end="", flush=True)
        if status.counts["queued"] == 0 and not still_resolving(status):
            print()
            return 0
        time.sleep(interval_s)
