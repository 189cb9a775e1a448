"""Shared fixtures: every async test runs on asyncio and on trio unless it says otherwise."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Run each ``@pytest.mark.anyio`` test on both backends."""
    return request.param
