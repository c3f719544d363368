"""The contract layer: what every stage shares. Imports no stage."""

__version__ = "0.1.0"  # the release; pyproject.toml reads it from here
