"""previewvec: audio-feature vectors from lawful preview clips, at catalog scale."""

__version__ = "0.1.0"
