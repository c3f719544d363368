"""Preview sources as settings see them: the default fetch allow-list follows the enabled
sources; jobs carry attribution and match evidence, validated."""

from __future__ import annotations

import pytest

from contract.jobs import InvalidJob, Job
from contract.settings import Settings
from contract.sources import SOURCES, audio_hosts, check_sources, link_back


def test_allow_list_follows_the_enabled_sources() -> None:
    both = Settings()
    assert both.sources == ("itunes", "deezer")
    assert {"audio-ssl.itunes.apple.com", "dzcdn.net", "cdnt-preview.dzcdn.net"} <= set(
        both.allowed_audio_hosts)
    itunes_only = Settings.from_env({"PREVIEWVEC_SOURCES": "itunes"})
    assert not any("dzcdn" in h for h in itunes_only.allowed_audio_hosts)
    deezer_only = Settings.from_env({"PREVIEWVEC_SOURCES": "deezer"})
    assert not any("apple" in h or "mzstatic" in h for h in deezer_only.allowed_audio_hosts)
    assert "p.scdn.co" in deezer_only.allowed_audio_hosts  # catalog-only, always
    listed = Settings.from_env({"PREVIEWVEC_SOURCES": "itunes",
                                "PREVIEWVEC_ALLOWED_AUDIO_HOSTS": "cdn.test"})
    assert listed.allowed_audio_hosts == ("cdn.test",)  # an explicit list wins


@pytest.mark.parametrize(("raw", "problem"), [("itunes,spotify", "unknown source 'spotify'"),
                                              ("deezer,deezer", "source 'deezer' listed twice")])
def test_bad_source_lists_name_the_setting(raw: str, problem: str) -> None:
    with pytest.raises(ValueError, match=f"PREVIEWVEC_SOURCES: {problem}"):
        Settings.from_env({"PREVIEWVEC_SOURCES": raw})
    with pytest.raises(ValueError, match="at least one"):
        check_sources([])


def test_link_back_and_hosts() -> None:
    assert link_back("deezer", "3135556") == "https://www.deezer.com/track/3135556"
    assert link_back("nope", "1") is None
    assert audio_hosts(["deezer"])[: len(SOURCES["deezer"].cdn_hosts)] == SOURCES[
        "deezer"].cdn_hosts


def test_job_attribution_fields() -> None:
    job = Job(recording_id="r1", preview_url="https://CDNT-preview.dzcdn.net/a.mp3?x=1",
              source="deezer", source_track_id="3135556",
              source_url="https://www.deezer.com/track/3135556", match_rule="upc+position",
              confidence=1)
    assert job.preview_host == "cdnt-preview.dzcdn.net"
    assert job.confidence == 1.0 and isinstance(job.confidence, float)
    assert Job.from_json(job.to_json()) == job
    old = Job.from_dict({"recording_id": "r1", "preview_url": "https://a.test/x"})
    assert old.match_rule is None and old.source_url is None  # older jobs stay valid
    for field, value in [("match_rule", "guess"), ("confidence", 1.5),
                         ("confidence", True), ("source_url", "ftp://x"),
                         ("source_track_id", "a/b")]:
        with pytest.raises(InvalidJob) as err:
            Job.from_dict({"recording_id": "r1", "preview_url": "https://a.test/x",
                           field: value})
        assert err.value.field == field
