"""previewvec: audio-feature vectors from lawful preview clips, at catalog scale.

The entry points (command line, demo, HTTP API) live here; the layers below are
``contract`` (shared by every stage), ``producers``, ``workers`` and ``reducer``.
"""

from contract import __version__

__all__ = ["__version__"]
