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

The GET runs inside the job's fetch budget (``budget_s``, what the preview fetch left of
``fetch_total_timeout_s``; the rate-limit wait counts against it) and through
:func:`workers.fetch.fetch_preview`, the one bounded reader: a total deadline enforced
on every read, ``Accept-Encoding: identity`` with compressed bodies refused at their
headers, and a body cap of :data:`MAX_BODY_BYTES`. A source API that drips its answer or
sends a gzip bomb then costs the job its budget at most, and the job fails with the
CDN's own status, as any refresh that gets no fresh URL does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from contract.jobs import Job
from contract.settings import Settings
from contract.sources import SOURCES
from contract.state.ratelimit import GcraState
from workers.fetch import FetchError, fetch_preview, make_session

EXPIRED_STATUSES = frozenset({403, 410})
MAX_WAIT_S = 5.0  # for a rate-limit slot, and never past the budget: then give up
# A Deezer /track/<id> answer is 2-5 KB of JSON; 1 MB leaves room for any growth and
# bounds what a hostile or broken API can make a worker hold.
MAX_BODY_BYTES = 1_000_000


class PreviewRefresher:
    """``refresh(job)`` → a fresh preview URL, or None (not refreshable, or no answer)."""

    def __init__(self, settings: Settings, redis_client: Any = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self._redis = redis_client
        self._api_settings = _api_settings(settings)
        # Built once per worker: fetch.py's pinned session, allowed the source APIs only.
        self.session = make_session(self._api_settings)
        self.session.headers["Accept"] = "application/json"
        self._sleep = sleep
        self.calls = 0

    def refreshable(self, job: Job) -> bool:
        spec = SOURCES.get(job.source or "")
        return bool(spec and spec.previews_expire and spec.track_path
                    and job.source_track_id and job.source in self.settings.sources)

    def _slot(self, source: str, max_wait_s: float) -> bool:
        """Take a slot of the source's shared limit; False when it is more than
        ``max_wait_s`` away."""
        if self._redis is None:
            from contract.state import connect

            self._redis = connect(self.settings.broker_url, decode=False, retry=False)
        rate = float(getattr(self.settings, f"{source}_rate_per_s"))
        interval_us = max(1, round(1_000_000 / rate))
        granted, wait_us = GcraState(self._redis, source).acquire(
            interval_us, 1, round(max_wait_s * 1_000_000))
        if granted and wait_us:
            self._sleep(wait_us / 1_000_000)
        return granted

    def refresh(self, job: Job, budget_s: float | None = None) -> str | None:
        """The job's fresh preview URL, asked of its source within ``budget_s`` (default
        ``fetch_total_timeout_s``), rate-limit wait included; None when the budget is
        already spent, or the source gives no usable answer in it."""
        if not self.refreshable(job):
            return None
        if budget_s is None:
            budget_s = self.settings.fetch_total_timeout_s
        if budget_s <= 0:
            return None
        deadline = time.monotonic() + budget_s
        spec = SOURCES[job.source or ""]
        base = str(getattr(self.settings, f"{spec.name}_url")).rstrip("/")
        if not self._slot(spec.name, min(MAX_WAIT_S, budget_s)):
            return None
        left_s = deadline - time.monotonic()
        if left_s <= 0:
            return None
        self.calls += 1
        url = f"{base}/{spec.track_path.format(id=job.source_track_id)}"
        try:
            body = fetch_preview(url, self._api_settings, session=self.session,
                                 budget_s=left_s).data
            data = json.loads(body)
        except (FetchError, ValueError):  # ValueError: not JSON (UnicodeDecodeError too)
            return None
        if not isinstance(data, dict) or (
                spec.playable_field and data.get(spec.playable_field) is False):
            return None
        url = data.get(spec.preview_field)
        return url if isinstance(url, str) and url and url != job.preview_url else None


def _api_settings(settings: Settings) -> Settings:
    """``settings`` as :func:`fetch_preview` needs them for a source API call: only the
    hosts of the refreshable sources' API URLs, which are trusted as configured (so they
    may be private, e.g. a mock API on a compose network), one attempt (a retry would
    take a second rate-limit slot) and :data:`MAX_BODY_BYTES`."""
    hosts: list[str] = []
    for spec in SOURCES.values():
        if spec.previews_expire and spec.track_path:
            host = urlsplit(str(getattr(settings, f"{spec.name}_url"))).hostname
            if host and host not in hosts:
                hosts.append(host)
    return replace(settings, allowed_audio_hosts=tuple(hosts),
                   private_audio_hosts=tuple(hosts), fetch_retries=1,
                   fetch_max_bytes=MAX_BODY_BYTES)
