"""Settings parsed from the environment: values refused before any command starts."""

from __future__ import annotations

import logging

import pytest

from contract.settings import Settings


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379/0", "amqp://guest@localhost//",
                                 "127.0.0.1:6379", "redis:/x"])
def test_a_broker_url_that_is_no_redis_url_is_refused(url: str) -> None:
    """From the operations review: the worker, the reducer and the API each failed with a
    traceback of their own on such a URL (exit 1), which the one-off commands' check
    reported as a configuration error."""
    with pytest.raises(ValueError, match=r"PREVIEWVEC_BROKER_URL=.*not a Redis URL"):
        Settings.from_env({"PREVIEWVEC_BROKER_URL": url})


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://:pw@h:6380/1",
                                 "unix:///run/redis.sock?db=2"])
def test_redis_urls_are_taken(url: str) -> None:
    assert Settings.from_env({"PREVIEWVEC_BROKER_URL": url}).broker_url == url


def test_a_visibility_timeout_of_0_is_refused() -> None:
    """0 made every task's soft time limit half a second: each job would time out."""
    with pytest.raises(ValueError, match=r"PREVIEWVEC_VISIBILITY_TIMEOUT_S.*above 0"):
        Settings.from_env({"PREVIEWVEC_VISIBILITY_TIMEOUT_S": "0"})


def test_an_unknown_prefixed_variable_is_warned_about_once(caplog) -> None:
    """Given a misspelt setting (as an operator's PREVIEWVEC_MUSICBRAINZ_URLS), expect one
    warning naming it and the closest setting, however often settings are read; the test
    harness's and CI's own variables are not settings and pass without a word."""
    env = {"PREVIEWVEC_MUSICBRAINZ_URLS": "http://127.0.0.1:1/",
           "PREVIEWVEC_TEST_CACHE": "1", "PREVIEWVEC_CI_REQUIRE_STACK": "1",
           "PREVIEWVEC_STORE": "/tmp/store"}
    with caplog.at_level(logging.WARNING, logger="contract.settings"):
        first = Settings.from_env(env)
        Settings.from_env(env)
    assert first.musicbrainz_url == Settings().musicbrainz_url  # ignored
    assert [r.getMessage() for r in caplog.records] == [
        "PREVIEWVEC_MUSICBRAINZ_URLS is not a previewvec setting and is ignored "
        "(did you mean PREVIEWVEC_MUSICBRAINZ_URL?)"]
