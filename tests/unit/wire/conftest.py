"""Fixtures of the codec's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._engines import ENGINES, engine


@pytest.fixture(params=ENGINES)
def json_engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each JSON engine in turn (the test runs once per engine)."""
    name: str = request.param
    with engine(name):
        yield name
