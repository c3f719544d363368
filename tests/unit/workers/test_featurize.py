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
    budgets: list[float | None] = field(default_factory=list)
    takes_s: float = 0.0  # a slow source API
    clock: Clock | None = None

    def refreshable(self, job: Job) -> bool:
        return True

    def refresh(self, job: Job, budget_s: float | None = None) -> str | None:
        self.calls += 1
        self.budgets.append(budget_s)
        if self.clock is not None:
            self.clock.now += self.takes_s
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


def test_the_refresh_gets_what_the_first_fetch_left_and_the_second_fetch_the_rest(
        monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    """Given a 403 after 6 s and a source API that takes 5 s, expect the refresh to get
    9 s of the 15 s budget and the second fetch the last 4 s."""
    ctx = Context(Settings(fetch_total_timeout_s=15.0),
                  Refresher(takes_s=5.0, clock=clock))
    monkeypatch.setattr(featurize, "fetch_preview", _fake_fetch(ctx, clock, 6.0))
    job, _ = featurize._fetch_now(_job(), ctx)  # type: ignore[arg-type]
    assert job.preview_url == NEW_URL
    assert ctx.refresher.budgets == [pytest.approx(9.0)]
    assert ctx.budgets == [None, pytest.approx(4.0)]


def test_no_refresh_is_asked_for_once_the_budget_is_spent(
        monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    ctx = Context(Settings(fetch_total_timeout_s=15.0), Refresher())
    monkeypatch.setattr(featurize, "fetch_preview", _fake_fetch(ctx, clock, 15.5))
    with pytest.raises(HTTPStatusError, match="HTTP 403"):
        featurize._fetch_now(_job(), ctx)  # type: ignore[arg-type]
    assert ctx.refresher.calls == 0


def test_a_refresh_that_spends_the_budget_fails_the_job_with_the_cdn_status(
        monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    ctx = Context(Settings(fetch_total_timeout_s=15.0),
                  Refresher(takes_s=14.0, clock=clock))
    monkeypatch.setattr(featurize, "fetch_preview", _fake_fetch(ctx, clock, 1.0))
    with pytest.raises(HTTPStatusError) as caught:
        featurize._fetch_now(_job(), ctx)  # type: ignore[arg-type]
    assert caught.value.code == "http_403" and ctx.budgets == [None]


def test_a_prefetched_expiry_gives_the_refresh_a_whole_budget_for_both(
        monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    """Fetched ahead (in the worker's main process), the 403 cost the task nothing: the
    refresh starts a budget of its own, which the second fetch shares."""
    ctx = Context(Settings(fetch_total_timeout_s=15.0),
                  Refresher(takes_s=5.0, clock=clock))
    monkeypatch.setattr(featurize, "fetch_preview", _fake_fetch(ctx, clock, 0.0))
    ahead = featurize.Ahead(error=("http_403", "HTTP 403: " + OLD_URL), fetch_s=0.2)
    job, data = featurize._fetch(_job(), ctx, ahead, {}, {})  # type: ignore[arg-type]
    assert (job.preview_url, data) == (NEW_URL, b"audio")
    assert ctx.refresher.budgets == [pytest.approx(15.0)]
    assert ctx.budgets == [pytest.approx(10.0)]
