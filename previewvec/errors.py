"""Typed failures with stable codes.

Every failure that can reach a user or a run record is a :class:`PreviewvecError` whose
``code`` is a stable, documented string; messages are for people and may change.
"""

from __future__ import annotations


class PreviewvecError(Exception):
    """Base class: a failure with a stable machine-readable ``code``."""

    code: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class EmptyInput(PreviewvecError):
    """The input had no bytes at all."""

    code = "empty_input"


class Undecodable(PreviewvecError):
    """The bytes are not a container/codec we can decode (or are corrupt)."""

    code = "undecodable"


class NoAudioStream(PreviewvecError):
    """The container decoded but holds no audio stream."""

    code = "no_audio_stream"


class TooShort(PreviewvecError):
    """Less decoded audio than the minimum analysis length."""

    code = "too_short"


class Silent(PreviewvecError):
    """The audio is (digitally) silent or has no usable signal."""

    code = "silent"


class TooLarge(PreviewvecError):
    """The input exceeds the configured byte limit."""

    code = "too_large"


class InvalidSignal(PreviewvecError):
    """Degenerate signal the extractor refuses rather than emit NaN/inf."""

    code = "invalid_signal"


ERROR_CODES: tuple[str, ...] = (
    EmptyInput.code,
    Undecodable.code,
    NoAudioStream.code,
    TooShort.code,
    Silent.code,
    TooLarge.code,
    InvalidSignal.code,
)
