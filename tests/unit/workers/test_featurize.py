"""The featurize stage's fetch of an expired preview: one budget for both fetches.

An expired preview (403/410 from a source whose URLs expire) is re-resolved and fetched
again; the second fetch gets what the first left of ``fetch_total_timeout_s``, so the
pair stays inside the task's soft time limit instead of starting a second budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from contract.jobs import Job
from contract.settings import Settings
from workers import featurize
from workers.fetch import FetchResult, HTTPStatusError

OLD_URL = "https://cdn.example/old.m4a"
NEW_URL = "https://cdn.example/new.m4a"


@dataclass
class Clock:
    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Refresher:
    answer: str | None = NEW_URL
    calls: int = 0

    def refreshable(self, job: Job) -> bool:
        return True

    def refresh(self, job: Job) -> str | None:
        self.calls += 1
        return self.answer


@dataclass
class Context:
    settings: Settings
    refresher: Refresher
    session: Any = None
    budgets: list[float | None] = field(default_factory=list)


def _job() -> Job:
    return Job.from_dict({"recording_id": "rec-1", "preview_url": OLD_URL,
                          "source": "deezer", "source_track_id": "3135556"})


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(featurize, "_clock", fake)
    return fake


def _fake_fetch(ctx: Context, clock: Clock, first_takes_s: float):
    def fetch_preview(url: str, settings: Settings, *, session: Any = None,
                      budget_s: float | None = None) -> FetchResult:
        ctx.budgets.append(budget_s)
        if url == OLD_URL:
            clock.now += first_takes_s  # a slow host before its 403
            raise HTTPStatusError(403, url=url)
        return FetchResult(data=b"audio", final_url=url, content_type="audio/mp4",
                           elapsed_s=0.0, attempts=1)
    return fetch_preview


def test_the_second_fetch_of_an_expired_preview_gets_what_the_first_left(
        monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    ctx = Context(Settings(fetch_total_timeout_s=15.0), Refresher())
    monkeypatch.setattr(featurize, "fetch_preview", _fake_fetch(ctx, clock, 11.0))
    job, fetched = featurize._fetch_now(_job(), ctx)  # type: ignore[arg-type]
    assert job.preview_url == NEW_URL and fetched.data == b"audio"
    assert ctx.budgets == [None, pytest.approx(4.0)]


def test_an_expired_preview_with_no_budget_left_is_its_first_error(
        monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    ctx = Context(Settings(fetch_total_timeout_s=15.0), Refresher())
    monkeypatch.setattr(featurize, "fetch_preview", _fake_fetch(ctx, clock, 15.5))
    with pytest.raises(HTTPStatusError) as caught:
        featurize._fetch_now(_job(), ctx)  # type: ignore[arg-type]
    assert caught.value.code == "http_403"
    assert ctx.budgets == [None]  # no second fetch started past the budget
