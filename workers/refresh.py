"""A fresh preview URL for a job whose URL expired: the worker's one call to a source API.

Deezer's preview URLs carry an expiring token; a job that waited in the queue past it gets
HTTP 403 or 410 from the CDN. :func:`workers.featurize.featurize` then asks the job's
source once for the track by its id (``contract.sources.SourceSpec.track_path``,
``GET <PREVIEWVEC_DEEZER_URL>/track/<id>``) and fetches the fresh URL, instead of failing
the job. The call takes a slot of the source's shared rate limit
(``pv:ratelimit:<source>``, the producers' GCRA state) so workers and producers together
stay inside the source's published limit.

Why here and not through ``producers/deezer.py``: stages do not import each other
(tests/test_layers.py). What both sides need to agree on — the source, its API path and
its preview field — is in ``contract/sources.py``; this module only makes the one GET.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests

from contract import __version__
from contract.jobs import Job
from contract.settings import Settings
from contract.sources import SOURCES
from contract.state.ratelimit import GcraState

EXPIRED_STATUSES = frozenset({403, 410})
TIMEOUT_S = (5.0, 10.0)
MAX_WAIT_S = 5.0  # inside the task's soft limit: past this, give up (the job fails)


class PreviewRefresher:
    """``refresh(job)`` → a fresh preview URL, or None (not refreshable, or no answer)."""

    def __init__(self, settings: Settings, redis_client: Any = None,
                 session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self._redis = redis_client
        self.session = session or requests.Session()
        self.session.headers.update({"User-Agent": f"previewvec/{__version__}",
                                     "Accept": "application/json"})
        self._sleep = sleep
        self.calls = 0

    def refreshable(self, job: Job) -> bool:
        spec = SOURCES.get(job.source or "")
        return bool(spec and spec.previews_expire and spec.track_path
                    and job.source_track_id and job.source in self.settings.sources)

    def _slot(self, source: str) -> bool:
        """Take a slot of the source's shared limit; False when it is too far away."""
        if self._redis is None:
            from contract.state import connect

            self._redis = connect(self.settings.broker_url, decode=False, retry=False)
        rate = float(getattr(self.settings, f"{source}_rate_per_s"))
        interval_us = max(1, round(1_000_000 / rate))
        granted, wait_us = GcraState(self._redis, source).acquire(
            interval_us, 1, round(MAX_WAIT_S * 1_000_000))
        if granted and wait_us:
            self._sleep(wait_us / 1_000_000)
        return granted

    def refresh(self, job: Job) -> str | None:
        if not self.refreshable(job):
            return None
        spec = SOURCES[job.source or ""]
        base = str(getattr(self.settings, f"{spec.name}_url")).rstrip("/")
        if not self._slot(spec.name):
            return None
        self.calls += 1
        try:
            resp = self.session.get(f"{base}/{spec.track_path.format(id=job.source_track_id)}",
                                    timeout=TIMEOUT_S)
            data = resp.json() if resp.status_code == 200 else None
        except (requests.RequestException, ValueError):
            return None
        if not isinstance(data, dict) or (
                spec.playable_field and data.get(spec.playable_field) is False):
            return None
        url = data.get(spec.preview_field)
        return url if isinstance(url, str) and url and url != job.preview_url else None
