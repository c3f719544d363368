"""One typed settings object, parsed from the environment in exactly one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

ENV_PREFIX = "PREVIEWVEC_"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "previewvec"


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Build with :meth:`from_env`; pass it down, never re-read env."""

    analysis_sr: int = 22_050
    max_duration_s: float = 30.0
    min_duration_s: float = 5.0
    max_input_bytes: int = 20_000_000
    cache_dir: Path = _default_cache_dir()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read ``PREVIEWVEC_<FIELD>`` variables (upper-case field names) over the defaults."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = env.get(ENV_PREFIX + field.name.upper())
            if raw is None or raw == "":
                continue
            default = getattr(cls, field.name)
            try:
                values[field.name] = type(default)(raw) if not isinstance(default, Path) else Path(raw)
            except ValueError as exc:
                raise ValueError(f"{ENV_PREFIX}{field.name.upper()}={raw!r}: {exc}") from None
        return cls(**values)  # type: ignore[arg-type]

    @property
    def numba_cache_dir(self) -> Path:
        return self.cache_dir / "numba"
