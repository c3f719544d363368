"""Feature versions name computations: the layout plus every setting that changes values.

A vector depends on the code's layout (:data:`contract.layout.FEATURE_VERSION`) and on the
settings listed in :data:`VALUE_SETTINGS` (the analysis rate, the duration cap). The
version a process writes and reads is derived from both, so two workers with different
settings can never write records under the same version:

- settings equal to :data:`BASE_COMPUTATION` → the bare layout version (``pv8``), which is
  what every record written before versions were derived is;
- any other values → ``pv8-<10 hex of sha256(the computation)>``.

Each record stores its computation beside the version, and the store keeps one
``versions/<version>.json`` per version (:func:`register`): the first worker to claim a
version writes it, and a worker whose computation disagrees with it refuses to start (a
release that changed what a version computes without a new layout version, a pinned
``PREVIEWVEC_FEATURE_VERSION`` that these settings do not compute).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

from contract.errors import ConfigError
from contract.layout import FEATURE_VERSION, VECTOR_DIM, names_hash

if TYPE_CHECKING:
    from contract.settings import Settings
    from contract.store import FeatureStore

# Every setting that changes a vector's values. A new setting must be classified here or
# in NEUTRAL_SETTINGS (tests/unit/contract/test_versions.py fails otherwise).
VALUE_SETTINGS: tuple[str, ...] = ("analysis_sr", "max_duration_s")
# Settings that never change a stored value (they decide whether, where or how fast a
# clip is analysed, not what its vector is).
NEUTRAL_SETTINGS: frozenset[str] = frozenset({
    "min_duration_s", "max_input_bytes", "cache_dir", "feature_version",
    "broker_url", "store", "index", "allowed_audio_hosts", "private_audio_hosts",
    "fetch_connect_timeout_s", "fetch_read_timeout_s", "fetch_total_timeout_s",
    "fetch_max_bytes", "fetch_max_redirects", "fetch_retries",
    "vectorize_account_id", "vectorize_api_token", "vectorize_base_url",
    "reduce_batch_size", "run_ttl_s", "visibility_timeout_s", "malloc_trim_every",
    "malloc_arenas",
    "max_crash_redeliveries", "mb_contact", "musicbrainz_url", "itunes_url",
    "itunes_country", "mb_rate_per_s", "itunes_rate_per_min", "match_threshold",
    "queue_high_water", "api_tokens", "api_max_body_bytes",
    "normalizer_sample", "normalizer_refit_growth",
    "prefetch_multiplier", "prefetch_fetches", "write_behind",
    "sources", "deezer_url", "deezer_rate_per_s",
})
# What FEATURE_VERSION computes. Part of the layout: changing a value here (or a default
# in Settings, which tests hold equal to this) needs a new FEATURE_VERSION.
BASE_COMPUTATION: dict[str, Any] = {"analysis_sr": 22_050, "max_duration_s": 30.0}
REGISTRY_PREFIX = "versions/"
HASH_CHARS = 10


class VersionMismatch(ConfigError):
    """These settings do not compute the version this process would claim."""

    code = "version_mismatch"


def computation(settings: Settings) -> dict[str, Any]:
    """The value-changing settings, as JSON-ready numbers (floats and ints kept apart so
    ``30`` and ``30.0`` hash alike)."""
    out: dict[str, Any] = {}
    for name in VALUE_SETTINGS:
        value = getattr(settings, name)
        out[name] = float(value) if isinstance(value, float) else value
    return out


def computation_hash(comp: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a computation and the layout it applies to."""
    doc = {"layout": FEATURE_VERSION, "names_hash": names_hash(), **comp}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def derived_version(settings: Settings) -> str:
    """The version these settings compute (see the module docstring)."""
    comp = computation(settings)
    if comp == BASE_COMPUTATION:
        return FEATURE_VERSION
    return f"{FEATURE_VERSION}-{computation_hash(comp)[:HASH_CHARS]}"


def current_version(settings: Settings) -> str:
    """The version this process writes and reads: ``PREVIEWVEC_FEATURE_VERSION`` when
    pinned (readers need not know the analysis settings), else :func:`derived_version`."""
    return settings.feature_version or derived_version(settings)


_VERSION_NAME = re.compile(rf"pv\d+(-[0-9a-f]{{{HASH_CHARS}}})?")


def is_version_name(text: str) -> bool:
    """Whether ``text`` has the shape of a feature version (``pv8``, ``pv8-<10 hex>``);
    "../x", "pv8/13" or a typo would read as a version with no records."""
    return bool(_VERSION_NAME.fullmatch(text))


def is_our_layout(version: str) -> bool:
    """Whether ``version`` is this layout's (bare, or with a computation hash)."""
    return version == FEATURE_VERSION or version.startswith(FEATURE_VERSION + "-")


def check_claim(settings: Settings) -> str:
    """The version a worker with ``settings`` writes; :class:`VersionMismatch` when a
    pinned ``PREVIEWVEC_FEATURE_VERSION`` is not what these settings compute."""
    derived = derived_version(settings)
    if settings.feature_version and settings.feature_version != derived:
        raise VersionMismatch(
            f"PREVIEWVEC_FEATURE_VERSION={settings.feature_version} but these settings "
            f"({_describe(computation(settings))}) compute {derived}: a worker refuses to "
            "write records under a version whose computation it does not run")
    return derived


def registry_key(version: str) -> str:
    """Where the store describes ``version``."""
    if not version or "/" in version:
        raise ValueError(f"bad feature version {version!r}")
    return f"{REGISTRY_PREFIX}{version}.json"


def describe(settings: Settings) -> dict[str, Any]:
    """The registry entry of the version ``settings`` compute."""
    comp = computation(settings)
    return {"feature_version": derived_version(settings), "layout": FEATURE_VERSION,
            "names_hash": names_hash(), "dim": VECTOR_DIM, "computation": comp,
            "computation_hash": computation_hash(comp)}


def register(store: FeatureStore, settings: Settings) -> str:
    """Claim this worker's version in the store; returns it.

    The first claim writes ``versions/<version>.json``; later ones must agree with it
    (same computation, same layout), else :class:`VersionMismatch`. Concurrent first
    claims write identical bytes, so the race is harmless.
    """
    version = check_claim(settings)
    mine = describe(settings)
    key = registry_key(version)
    try:
        stored = json.loads(store.get(key))
    except FileNotFoundError:
        store.put(key, json.dumps(mine, sort_keys=True).encode())
        return version
    except ValueError:
        raise VersionMismatch(f"the store's {key} is not valid JSON: fix or delete it") from None
    theirs = {k: stored.get(k) for k in ("computation", "names_hash", "dim")}
    if theirs != {k: mine[k] for k in theirs}:
        raise VersionMismatch(
            f"version {version} is registered in the store ({key}) as "
            f"{_describe(stored.get('computation') or {})}, but this worker computes "
            f"{_describe(mine['computation'])}: refusing to write it")
    return version


def registered(store: FeatureStore, version: str) -> dict[str, Any] | None:
    """The registry entry of ``version``, if the store has one (the bare layout version
    of records written before the registry existed may have none)."""
    try:
        return json.loads(store.get(registry_key(version)))
    except (FileNotFoundError, ValueError):
        return None


def _describe(comp: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(comp.items())) or "unknown settings"
