"""Markers for the integration tests (registered here so they need no pyproject entry)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: starts real services and Celery workers (minutes, not seconds)")
