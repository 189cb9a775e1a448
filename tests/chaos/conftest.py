"""The seed of the chaos tests."""

from __future__ import annotations

import pytest

from ._support import FIXED_SEED


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """pytest-randomly's seed for this run if it is active, else a fixed one."""
    value = request.config.getoption("randomly_seed", default=None)
    return value if isinstance(value, int) else FIXED_SEED
