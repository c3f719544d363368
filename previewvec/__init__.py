"""previewvec: audio-feature vectors from lawful preview clips, at catalog scale.

The entry points (command line, demo, HTTP API, and the Python API of
:mod:`previewvec.lib`) live here; the layers below are ``contract`` (shared by every
stage), ``producers``, ``workers`` and ``reducer``.

    import previewvec
    catalog = previewvec.open()            # PREVIEWVEC_STORE / PREVIEWVEC_INDEX
    features = previewvec.extract("song.m4a")
"""

from __future__ import annotations

from typing import Any

from contract import __version__

# The Python API, imported on first use: `previewvec.cli` must not pay for numpy.
_API = ("Catalog", "Extracted", "Neighbour", "extract", "open")
# The errors the API raises, to catch without knowing where they are defined.
_ERRORS = ("PreviewvecError", "InvalidQuery", "InputUnreadable", "NotFound", "NothingStored",
           "StoreFolderMissing")
__all__ = ["__version__", *_API, *_ERRORS, "ReadCounts", "VersionMismatch"]


def __getattr__(name: str) -> Any:
    if name in _API:
        from previewvec import lib

        return getattr(lib, name)
    if name in _ERRORS:
        from contract import errors

        return getattr(errors, name)
    if name == "ReadCounts":
        from previewvec.export import ReadCounts

        return ReadCounts
    if name == "VersionMismatch":
        from contract.versions import VersionMismatch

        return VersionMismatch
    raise AttributeError(f"module 'previewvec' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names too: a notebook's tab completion lists what dir() gives.
    return sorted({*globals(), *__all__})
