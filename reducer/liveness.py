"""Liveness of ``previewvec reduce --follow``: a heartbeat file its loop touches.

The follow loop waits out broker, store and index outages itself (:meth:`Reducer.follow`),
so its container's liveness check must not ask those services: a Redis outage would get
every reducer restarted for nothing. It asks the loop instead. The loop touches
:func:`heartbeat_path` on every pass, also between the retries of an outage (at most
``OUTAGE_BACKOFF_CAP_S`` apart), and ``infra/healthcheck.py reducer`` reports unhealthy
only when the file is older than :data:`STALE_AFTER_S`: a loop stuck that long is wedged.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from contract.settings import Settings

log = logging.getLogger(__name__)

HEARTBEAT_FILE = "reducer.alive"
# Longer than any healthy pass: a full reduce batch with the index clients' own retries
# (minutes at worst against Vectorize), or the 30 s pause between retries of an outage.
STALE_AFTER_S = 600.0


def heartbeat_path(settings: Settings) -> Path:
    """Where this container's follow loop keeps its heartbeat (under the cache folder,
    writable in the image and in every deployment's volume layout)."""
    return settings.cache_dir / HEARTBEAT_FILE


class Heartbeat:
    """Touches ``path`` when asked; a file that cannot be written is logged once, never
    raised: liveness must not stop the loop it reports on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._warned = False

    def beat(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
            os.utime(self.path)  # touch() on an existing file keeps no new mtime on some fs
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot write the liveness heartbeat %s: %s", self.path, exc)


def heartbeat_age_s(path: Path, now: float | None = None) -> float | None:
    """Seconds since the loop last touched ``path``; None if it never did."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    return max((time.time() if now is None else now) - mtime, 0.0)
