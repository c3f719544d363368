"""One typed settings object, parsed from the environment in exactly one place."""

from __future__ import annotations

import difflib
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from kombu.utils.url import maybe_sanitize_url

from contract.sources import audio_hosts, check_sources

ENV_PREFIX = "PREVIEWVEC_"
# Variables under the prefix that are not settings: the test harness's, CI's, and the
# benchmarks' soundfont. Any other unknown name is most likely a typo, and is warned about.
_NOT_SETTINGS = ("PREVIEWVEC_TEST_", "PREVIEWVEC_CI_", "PREVIEWVEC_SOUNDFONT")

log = logging.getLogger(__name__)
_warned_unknown: set[str] = set()  # once per process, however often settings are read


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "previewvec"


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true/false")


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _masked(value: object) -> object:
    """``value`` with any password in a URL replaced by ``**``."""
    if isinstance(value, str) and "://" in value and "@" in value:  # only with credentials
        return maybe_sanitize_url(value)
    return value


# Numeric settings that 0 breaks (a rate limiter divides by its rate, a sample rate, a
# time limit or a body cap of 0 refuses everything); every numeric setting is finite and
# non-negative (0 means "off" for some).
_POSITIVE = frozenset({
    "analysis_sr", "max_duration_s", "fetch_connect_timeout_s", "fetch_read_timeout_s",
    "fetch_total_timeout_s", "mb_rate_per_s", "itunes_rate_per_min", "deezer_rate_per_s",
    "api_max_body_bytes",
    # 0 made every task's time limits a fraction of a second (workers/app.py).
    "visibility_timeout_s",
})


def _check_broker_url(value: object) -> object:
    """A Redis URL (``redis://``, ``rediss://``, ``unix://``): any other scheme parsed, and
    then the worker, the reducer and the API each failed with their own traceback."""
    if isinstance(value, str) and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("not a Redis URL: expected redis://HOST:PORT/DB, rediss:// (TLS) "
                         "or unix://PATH")
    return value


# Checks of one setting's value beyond its type.
_FIELD_CHECKS: dict[str, Callable[[object], object]] = {"broker_url": _check_broker_url}


def _check_number(name: str, value: object) -> object:
    """``value`` if it is no number or a usable one, else ValueError saying why: NaN,
    infinity or a negative number parse, and then hang (a queue mark of -1 is never
    reached) or fail deep inside a command."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    if value < 0 or (value == 0 and name in _POSITIVE):
        raise ValueError("must be above 0" if name in _POSITIVE else "must not be negative")
    return value


# Field annotations are strings under `from __future__ import annotations`.
_PARSERS: dict[str, Callable[[str], object]] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": _parse_bool,
    "Path": Path,
    "tuple[str, ...]": _parse_list,
}


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Build with :meth:`from_env`; pass it down, never re-read env."""

    analysis_sr: int = 22_050
    max_duration_s: float = 30.0
    min_duration_s: float = 5.0
    max_input_bytes: int = 20_000_000
    cache_dir: Path = field(default_factory=_default_cache_dir)
    # The feature version every process writes and reads; empty: derived from the
    # settings that change values (contract/versions.py). Workers refuse to start when
    # a pinned version is not what their settings compute.
    feature_version: str = ""

    # Pipeline: broker, store, index.
    broker_url: str = "redis://127.0.0.1:6379/0"
    store: str = "./data/store"  # a folder, or s3://bucket/prefix
    index: str = "./data/index"  # a folder (embedded LanceDB), or vectorize://<index-name>
    # Preview fetching: only these hosts (suffix match on a dot boundary); private,
    # loopback and link-local addresses are refused unless the host is an IP literal
    # listed here, ``localhost`` listed here (loopback only), or in private_audio_hosts.
    # Empty: the preview CDNs of the enabled ``sources`` (contract/sources.py), so a
    # source's CDN is allowed only while that source is.
    allowed_audio_hosts: tuple[str, ...] = ()
    # Allowed names (exact match) that may resolve to private addresses: a media server
    # inside the cluster or a compose network. Listing one here does not allow it.
    private_audio_hosts: tuple[str, ...] = ()
    fetch_connect_timeout_s: float = 5.0
    fetch_read_timeout_s: float = 10.0
    fetch_total_timeout_s: float = 15.0  # inside the task's 20 s soft time limit
    fetch_max_bytes: int = 10_000_000
    fetch_max_redirects: int = 3
    fetch_retries: int = 4
    # Cloudflare Vectorize (when index is vectorize://NAME).
    vectorize_account_id: str = ""
    vectorize_api_token: str = field(default="", repr=False)  # a secret: never logged
    vectorize_base_url: str = "https://api.cloudflare.com/client/v4"
    # Reducer.
    reduce_batch_size: int = 1000
    # The normaliser is fitted on a uniform (reservoir) sample of at most this many
    # stored records, and refitted once the index holds this factor more records than
    # the catalog it was fitted on (reducer/reduce.py).
    normalizer_sample: int = 20_000
    normalizer_refit_growth: float = 2.0
    # Runs: a finished run's keys (counts, meta, failures) expire this long after the
    # reducer closed it; 0 keeps them (runs are still compacted).
    run_ttl_s: int = 7 * 24 * 3600
    # Broker: seconds a delivery may go without its worker's heartbeat before any worker
    # puts it back on its queue (how long a hard-killed worker's job stays invisible).
    # Live workers refresh theirs every 5 s (workers/deliveries.py).
    visibility_timeout_s: int = 40
    # Worker memory: every N tasks a pool child hands freed heap back to the OS with
    # glibc's malloc_trim(0); 0 turns it off (measured in benchmarks/soak.py).
    malloc_trim_every: int = 0
    # glibc malloc arenas per worker process (and its pool children); 0 = glibc's default
    # (8 per core). The main process's fetch and write-behind threads otherwise each keep
    # freed previews in an arena of their own (workers/heap.py).
    malloc_arenas: int = 2
    # A job whose worker dies while running it (a signal, the OOM killer) is redelivered
    # at most this often; the next crash records it as a `worker_crashed` failure.
    max_crash_redeliveries: int = 3
    # Overlapping I/O with compute (workers/overlap.py). Each pool child reserves this
    # many jobs (Celery's prefetch multiplier); when it is above 1, the worker's main
    # process checks the store and fetches the previews of the reserved jobs ahead, at
    # most prefetch_fetches at once per pool child, and hands a job to a child only once
    # its preview is in memory (so previews held per process ≤ children × multiplier,
    # each ≤ fetch_max_bytes). 1 = plain Celery: one job per child, fetched by the child.
    prefetch_multiplier: int = 16
    prefetch_fetches: int = 16
    # Records the main process writes behind its pool children (stored, pushed and
    # accounted, then acknowledged), at most this many at once per child; 0: each child
    # writes its own.
    write_behind: int = 4

    # Producers: MusicBrainz and iTunes resolution.
    mb_contact: str = ""  # required for MusicBrainz: an email or URL for the User-Agent
    musicbrainz_url: str = "https://musicbrainz.org"
    itunes_url: str = "https://itunes.apple.com"
    itunes_country: str = "US"
    mb_rate_per_s: float = 1.0  # shared by every producer process (through Redis)
    itunes_rate_per_min: float = 20.0  # shared by every producer process (through Redis)
    # Preview sources in priority order (contract/sources.py names them).
    sources: tuple[str, ...] = ("itunes", "deezer")
    deezer_url: str = "https://api.deezer.com"
    deezer_rate_per_s: float = 10.0  # Deezer documents 50 requests / 5 s per client
    match_threshold: float = 0.75  # below this match confidence, no job
    queue_high_water: int = 10_000  # backpressure: producers wait above this queue depth
    # HTTP submission API.
    api_tokens: tuple[str, ...] = field(default=(), repr=False)  # secrets: never logged
    api_max_body_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", check_sources(self.sources))
        if not self.allowed_audio_hosts:  # frozen: the derived default goes in this way
            object.__setattr__(self, "allowed_audio_hosts", audio_hosts(self.sources))

    def __repr__(self) -> str:
        # Safe to log or show in a traceback: secret fields (repr=False) are left out and
        # passwords in URLs (PREVIEWVEC_BROKER_URL=redis://:pw@host) are masked.
        shown = ", ".join(f"{f.name}={_masked(getattr(self, f.name))!r}"
                          for f in fields(self) if f.repr)
        return f"{type(self).__name__}({shown})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read ``PREVIEWVEC_<FIELD>`` variables (upper-case field names) over the defaults."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for spec in fields(cls):
            name = ENV_PREFIX + spec.name.upper()
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            try:
                value = _check_number(spec.name, _PARSERS[str(spec.type)](raw))
                values[spec.name] = _FIELD_CHECKS.get(spec.name, lambda v: v)(value)
            except ValueError as exc:
                raise ValueError(f"{name}={raw!r}: {exc}") from None
        _warn_unknown(env, {ENV_PREFIX + spec.name.upper() for spec in fields(cls)})
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValueError as exc:  # a check across fields (__post_init__)
            raise ValueError(f"{ENV_PREFIX}SOURCES: {exc}") from None

    @property
    def numba_cache_dir(self) -> Path:
        return self.cache_dir / "numba"


def _warn_unknown(env: Mapping[str, str], known: set[str]) -> None:
    """Warn (once per name) about ``PREVIEWVEC_*`` variables that are no setting: a
    misspelt name (``PREVIEWVEC_MB_URL``) would otherwise be ignored without a word."""
    for name in sorted(env):
        if (not name.startswith(ENV_PREFIX) or name in known or name in _warned_unknown
                or name.startswith(_NOT_SETTINGS)):
            continue
        _warned_unknown.add(name)
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        log.warning("%s is not a previewvec setting and is ignored%s", name,
                    f" (did you mean {close[0]}?)" if close else "")
