"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from snakepit.pool import InProcessLauncher


@pytest.fixture
def launcher() -> Iterator[InProcessLauncher]:
    """An in-process launcher; its socket directory is removed after the test."""
    launcher = InProcessLauncher()
    yield launcher
    launcher.close()
