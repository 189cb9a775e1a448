"""Fixtures for the OTP core tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from trio.testing import MockClock


@pytest.fixture
def mock_clock() -> Iterator[MockClock]:
    """A trio MockClock that jumps ahead whenever every task is blocked.

    Use it with ``anyio_backend`` overridden to ``("trio", {"clock": mock_clock})``
    (see ``trio_mock_backend``) to run timers and restart windows in virtual time.
    """
    yield MockClock(autojump_threshold=0)


@pytest.fixture
def trio_mock_backend(mock_clock: MockClock) -> Any:
    """An ``anyio_backend`` value running trio on :func:`mock_clock`."""
    return ("trio", {"clock": mock_clock})
