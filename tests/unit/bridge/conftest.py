"""Fixtures of the session store's (and later the bridge's) tests."""

from __future__ import annotations

import pytest

from snakepit.session import MemoryBackend, SessionBackend

#: Every SessionBackend the store contract runs against.
BACKENDS = ("memory", "redis")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> SessionBackend:
    """A fresh, empty SessionBackend of each kind (the same contract holds for all).

    ``"redis"`` comes from the ``redis_session_backend`` fixture (tests/conftest.py);
    without it (or without a redis-server) that param is skipped.
    """
    if request.param == "memory":
        return MemoryBackend()
    try:
        made: SessionBackend = request.getfixturevalue("redis_session_backend")
    except pytest.FixtureLookupError:
        pytest.skip("no redis_session_backend fixture (the Redis backend is not built yet)")
    return made


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out ``backend``'s Redis param on event loops other than asyncio (redis.asyncio's).

    Rather than a skip of each: those runs cannot happen.
    """
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params: dict[str, object] = {} if callspec is None else callspec.params
        loop = params.get("anyio_backend", "asyncio")
        if params.get("backend") == "redis" and loop != "asyncio":
            dropped.append(item)
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
