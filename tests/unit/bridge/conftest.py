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
