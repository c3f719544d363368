"""One typed settings object, parsed from the environment in exactly one place."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

ENV_PREFIX = "PREVIEWVEC_"


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
                values[spec.name] = _PARSERS[str(spec.type)](raw)
            except ValueError as exc:
                raise ValueError(f"{name}={raw!r}: {exc}") from None
        return cls(**values)  # type: ignore[arg-type]

    @property
    def numba_cache_dir(self) -> Path:
        return self.cache_dir / "numba"
