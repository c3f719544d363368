"""contract/versions.py: a feature version names the computation, not just the layout."""

from __future__ import annotations

import dataclasses
import json

import pytest

from contract.layout import FEATURE_VERSION
from contract.settings import Settings
from contract.store.local import LocalStore
from contract.versions import (
    BASE_COMPUTATION,
    NEUTRAL_SETTINGS,
    VALUE_SETTINGS,
    VersionMismatch,
    check_claim,
    computation,
    current_version,
    derived_version,
    is_our_layout,
    register,
    registered,
    registry_key,
)


def test_every_setting_is_classified_as_changing_values_or_not() -> None:
    # A new setting must be put on one side: one that changes vectors and is left out
    # would let two workers write different vectors under one version.
    names = {f.name for f in dataclasses.fields(Settings)}
    assert set(VALUE_SETTINGS) | NEUTRAL_SETTINGS == names
    assert not set(VALUE_SETTINGS) & NEUTRAL_SETTINGS


def test_the_default_settings_compute_the_bare_layout_version() -> None:
    # Records written before versions were derived stay the records of this version.
    assert computation(Settings()) == BASE_COMPUTATION
    assert derived_version(Settings()) == FEATURE_VERSION


@pytest.mark.parametrize("change", [{"analysis_sr": 44_100}, {"max_duration_s": 20.0},
                                    {"analysis_sr": 16_000, "max_duration_s": 29.0}])
def test_any_value_setting_changes_the_version(change: dict) -> None:
    version = derived_version(Settings(**change))
    assert version != FEATURE_VERSION and version.startswith(FEATURE_VERSION + "-")
    assert is_our_layout(version)


def test_different_settings_never_share_a_version_and_equal_ones_always_do() -> None:
    variants = [Settings(analysis_sr=sr, max_duration_s=d)
                for sr in (16_000, 22_050, 32_000, 44_100, 48_000) for d in (10.0, 29.0, 30.0)]
    versions = [derived_version(s) for s in variants]
    assert len(set(versions)) == len(variants)
    assert derived_version(Settings(max_duration_s=30)) == FEATURE_VERSION  # int or float


def test_neutral_settings_do_not_change_the_version() -> None:
    assert derived_version(Settings(min_duration_s=3.0, max_input_bytes=5, store="/x",
                                    fetch_retries=9)) == FEATURE_VERSION


def test_a_pinned_version_is_what_readers_use() -> None:
    assert current_version(Settings(feature_version="pv2-abc")) == "pv2-abc"
    assert current_version(Settings(analysis_sr=44_100)) == derived_version(
        Settings(analysis_sr=44_100))


def test_a_worker_refuses_a_pinned_version_its_settings_do_not_compute() -> None:
    with pytest.raises(VersionMismatch, match="analysis_sr=44100") as caught:
        check_claim(Settings(feature_version=FEATURE_VERSION, analysis_sr=44_100))
    assert caught.value.code == "version_mismatch"
    assert check_claim(Settings(feature_version=FEATURE_VERSION)) == FEATURE_VERSION


def test_the_first_claim_registers_the_version_and_agreeing_claims_pass(tmp_path) -> None:
    store = LocalStore(tmp_path)
    settings = Settings(analysis_sr=44_100)
    version = register(store, settings)
    entry = registered(store, version)
    assert entry is not None and entry["computation"] == {"analysis_sr": 44_100,
                                                          "max_duration_s": 30.0}
    assert register(store, settings) == version
    assert registered(store, "pv9") is None


def test_a_claim_that_disagrees_with_the_registry_is_refused(tmp_path) -> None:
    # E.g. a release that changed what pv2 computes without a new layout version.
    store = LocalStore(tmp_path)
    store.put(registry_key(FEATURE_VERSION), json.dumps(
        {"computation": {"analysis_sr": 44_100, "max_duration_s": 30.0}}).encode())
    with pytest.raises(VersionMismatch, match="registered in the store"):
        register(store, Settings())


def test_a_registry_entry_that_is_not_json_is_refused(tmp_path) -> None:
    store = LocalStore(tmp_path)
    store.put(registry_key(FEATURE_VERSION), b"{nope")
    with pytest.raises(VersionMismatch, match="not valid JSON"):
        register(store, Settings())
