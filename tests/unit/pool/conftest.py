"""Fixtures of the pool's unit tests: in-process pools and a per-test adapter class.

The in-process ``launcher`` fixture is in tests/unit/conftest.py (the testing helpers use it too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from snakepit.pool import InProcessLauncher, Pool, PoolEvent

from ._adapters import Control, forget, fresh_controlled

MakePool = Callable[..., Pool]
Subscribe = Callable[[Pool], MemoryObjectReceiveStream[PoolEvent]]


@pytest.fixture
def controlled() -> Iterator[tuple[str, Control]]:
    """This test's own adapter class (a :class:`Controlled`): its path and its Control."""
    control = Control()
    path, cls = fresh_controlled(control)
    yield path, control
    control.unstuck.set()
    forget(cls)


@pytest.fixture
def control(controlled: tuple[str, Control]) -> Control:
    """The :class:`Control` of this test's adapter class."""
    return controlled[1]


@pytest.fixture
def make_pool(launcher: InProcessLauncher, controlled: tuple[str, Control]) -> MakePool:
    """``make_pool(**options)``: an in-process pool of this test's adapter, 2 workers by default."""

    def make(adapter: str = controlled[0], **options: Any) -> Pool:
        options.setdefault("size", 2)
        return Pool(adapter, launcher=launcher, **options)

    return make


@pytest.fixture
def subscribe() -> Iterator[Subscribe]:
    """``subscribe(pool)``: ``pool.subscribe()``, the stream closed after the test."""
    streams: list[MemoryObjectReceiveStream[PoolEvent]] = []

    def subscribe(pool: Pool) -> MemoryObjectReceiveStream[PoolEvent]:
        stream = pool.subscribe()
        streams.append(stream)
        return stream

    yield subscribe
    for stream in streams:
        stream.close()
