"""Shared fixtures.

Every ``@pytest.mark.anyio`` test runs on asyncio and on trio, except a test
that asks for ``mock_clock``: it runs on trio only, with a ``MockClock`` that
jumps ahead whenever every task is blocked, so timers and restart windows run
in virtual time. A module can narrow the backends with a module-level
``anyio_backends = ("asyncio",)`` (grpc.aio runs on asyncio only). A test that
parametrizes ``anyio_backend`` itself is left alone.

``redis_session_backend`` is a fresh RedisBackend on a real redis-server (one
per xdist worker, started on first use); the redis client is asyncio's, so a
test that asks for it runs on asyncio only.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from snakepit.testing._leaks import child_pids, describe_process
from tests._redis import SERVER_PIDS, RedisServer, redis_server

if TYPE_CHECKING:
    from trio.testing import MockClock

    from snakepit.session import RedisBackend

BACKENDS = ("asyncio", "trio")


def _drop_grpc_completions_for_closed_loops() -> None:
    """Drop grpc's completion of an operation whose test's event loop is closed.

    grpc.aio has one completion queue per process, polled by a thread; each
    completion is handed to the loop its operation began in. An operation
    that a test's grpc object left pending when the test ended (a call
    cancelled under a closed channel, a server's last read) completes after
    anyio closed that test's loop, and grpc, handing it over from the *next*
    test's loop, raises "Event loop is closed" there: a failure of an
    unrelated test (about 1 suite run in 10 here). The operation's future
    was cancelled with its loop; nobody waits for it. Only that callback,
    only for a closed loop, is dropped; everything else is as asyncio does
    it. (The pool's own known cause, a Multiplexer closed by cancelling its
    stream, is fixed in the product: see test_owned_tasks.py.)
    """
    original = asyncio.BaseEventLoop.call_soon_threadsafe

    def call_soon_threadsafe(
        self: asyncio.BaseEventLoop, callback: Any, *args: Any, context: Any = None
    ) -> Any:
        if self.is_closed() and getattr(callback, "__name__", "") == "_handle_callback_wrapper":
            return None
        return original(self, callback, *args, context=context)

    asyncio.BaseEventLoop.call_soon_threadsafe = call_soon_threadsafe  # type: ignore[method-assign,assignment]


_drop_grpc_completions_for_closed_loops()


def pytest_configure(config: pytest.Config) -> None:
    """Import hypothesis before any test runs, in a process that runs tests.

    Here, before collection: trio's hypothesis plugin registers its PRNG when
    hypothesis is first imported, and a first import inside a test (a test
    that imports snakepit.testing._scenario, run alone) turned the
    HypothesisWarning it then gives into an error. Not in the controller of
    ``pytest -n N``, which runs no test: what this module imports at its top
    delays the start of the workers (hypothesis, and snakepit.pool with grpc,
    are imported where they are used instead).
    """
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        import hypothesis  # noqa: F401


def _parametrizes_backend(metafunc: pytest.Metafunc) -> bool:
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", "")
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        if "anyio_backend" in names:
            return True
    return False


def pytest_collection_finish(session: pytest.Session) -> None:
    """Put what collection leaves in gc's permanent generation, out of every later collection.

    That is the imported modules and the test items (each xdist process has
    them all): alive until the end of the run, and most of the heap. Every
    automatic full collection walked all of it again (~0.13 s each, ~15 per
    xdist process in a run). Garbage is collected first, so nothing is frozen
    that could still be freed or warn; what the tests allocate is collected
    as before. :func:`pytest_sessionfinish` puts it back before pytest's last
    collection, which reports whatever of it became garbage with a finalizer
    that complains (a ResourceWarning fails the run there, as it did).
    """
    gc.collect()
    gc.freeze()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Unfreeze the heap (see :func:`pytest_collection_finish`) for pytest's collection at exit.

    Not in an xdist worker: what that collection would report comes after the
    worker sent its results, and xdist drops it (see :func:`pytest_unconfigure`);
    it would only walk the whole heap again, at the very end of the run.
    """
    if not hasattr(session.config, "workerinput"):
        gc.unfreeze()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End an xdist worker process here, once pytest is done with it, without finalizing.

    Its results went to the controller before (``workerfinished``, sent at
    the end of its session), and pytest's checks at exit have run (what they
    raise this late xdist drops anyway: the controller has marked the worker
    done). What is left is the interpreter's finalization, which frees the
    whole heap object by object: 0.3-1.5 s at the very end of the run, while
    the controller waits for every worker to exit.
    """
    if hasattr(config, "workerinput"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    fixtures = metafunc.fixturenames
    if "anyio_backend" not in fixtures or _parametrizes_backend(metafunc):
        return
    if "mock_clock" in fixtures:
        metafunc.parametrize("anyio_backend", ["trio-mockclock"], indirect=True)
    else:
        backends = getattr(metafunc.module, "anyio_backends", BACKENDS)
        if "redis_session_backend" in fixtures:  # redis.asyncio: asyncio only
            backends = tuple(b for b in backends if b == "asyncio")
        metafunc.parametrize("anyio_backend", backends, indirect=True)


@pytest.fixture
def mock_clock() -> MockClock:
    """A trio MockClock with ``autojump_threshold=0``; the test runs on trio only."""
    from trio.testing import MockClock

    return MockClock(autojump_threshold=0)


@pytest.fixture
def trio_mock_backend(mock_clock: MockClock) -> Any:
    """An ``anyio_backend`` value running trio on :func:`mock_clock`."""
    return ("trio", {"clock": mock_clock})


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """The backend of this test run (see the module docstring)."""
    param = getattr(request, "param", "asyncio")
    if param == "trio-mockclock":
        return request.getfixturevalue("trio_mock_backend")
    return param


@pytest.fixture(autouse=True)
def _no_process_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a child process behind, running or unreaped (Linux).

    Every process a test starts must be stopped and reaped by the end of the
    test: one that is not is found here, at its source, rather than as a
    ResourceWarning in whichever later test the garbage collector runs in.
    """
    before = child_pids()
    yield
    if before is None:
        return  # no /proc here
    from snakepit.pool import default_fork_servers

    # Session-scoped: redis, and the fork servers shared by this process's pools.
    shared = default_fork_servers()
    left = sorted(
        (child_pids() or set()) - before - SERVER_PIDS - (shared.pids if shared else set())
    )
    if left:
        listing = "\n".join(f"  {describe_process(pid)}" for pid in left)
        pytest.fail(f"{request.node.nodeid} left child processes:\n{listing}", pytrace=False)


@pytest.fixture(scope="session")
def redis_server_for_tests() -> Iterator[RedisServer]:
    """A redis-server on a unix socket for this (xdist worker) process, started on first use.

    Skipped when Redis is not installed (failed instead under ``SNAKEPIT_REQUIRE_REDIS=1``,
    as ``.ci/run`` sets); see tests/_redis.py.
    """
    with redis_server() as server:
        yield server


@pytest.fixture
async def redis_session_backend(
    redis_server_for_tests: RedisServer, anyio_backend: Any
) -> AsyncIterator[RedisBackend]:
    """A RedisBackend with a namespace of its own on the shared server; its keys deleted after.

    Asyncio only (the redis client's loop): on another backend the test is skipped.
    """
    name = anyio_backend if isinstance(anyio_backend, str) else anyio_backend[0]
    if name != "asyncio":
        pytest.skip(f"the Redis backend runs on asyncio only (redis.asyncio), not on {name}")
    import redis.asyncio

    from snakepit.session import RedisBackend

    backend = RedisBackend(redis_server_for_tests.url, namespace=f"test-{uuid.uuid4().hex}")
    try:
        yield backend
    finally:
        await backend.aclose()
        client = redis.asyncio.Redis(unix_socket_path=redis_server_for_tests.socket)
        try:
            # Its two keys, and a variables hash per session left (all of them "{NS}:...").
            left = [key async for key in client.scan_iter(match=f"{{{backend.namespace}}}:*")]
            await client.delete(*backend.keys, *left)
        finally:
            await client.aclose()
