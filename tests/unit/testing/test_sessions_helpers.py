"""cleanup_sessions, assert_no_sessions, the Sessions adapter, and snakepit_pool's teardown.

In-process pools (InProcessLauncher): the adapters run in the test's process,
so :class:`Recording` tells the test, through an event, when a worker ran
``on_session_end``. Session ids are unique per test (uuid), so the
module-level record is never shared between tests. Every wait is on an event.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from snakepit.errors import PoolDegraded, RemoteError
from snakepit.otp import SupervisorRef
from snakepit.pool import InProcessLauncher, Pool, PoolGaveUp
from snakepit.session import RedisBackend, SessionRecord, SessionStoreConfig
from snakepit.testing import assert_no_sessions, cleanup_sessions
from snakepit.testing.adapters import Sessions

pytestmark = pytest.mark.anyio
pytest_plugins = ["pytester"]
anyio_backends = ("asyncio",)  # pools: grpc.aio

#: Bounds a wait that should end at once (it only guards against a hang).
WAIT = 10.0

#: Session id -> set once a worker's on_session_end ran for it.
ENDED: dict[str, anyio.Event] = {}
#: Session id -> what that worker still kept for it after its hook ran.
LEFT: dict[str, bool] = {}


def _ended(session_id: str) -> anyio.Event:
    return ENDED.setdefault(session_id, anyio.Event())


class Recording(Sessions):
    """Sessions whose ``on_session_end`` tells the test (after freeing the state)."""

    #: While True, setup() fails (a test that degrades its pool sets it, and resets it).
    fail_setup = False

    def setup(self) -> None:
        """Fail while :attr:`fail_setup` is set."""
        if type(self).fail_setup:
            raise RuntimeError("setup fails on purpose")

    def on_session_end(self, session_id: str) -> None:
        """Free the state, then record that it ran and what was left."""
        super().on_session_end(session_id)
        LEFT[session_id] = session_id in self.state
        _ended(session_id).set()


RECORDING = f"{__name__}:Recording"
ECHO = "snakepit.testing.adapters:Echo"


async def wait_ended(session_id: str) -> None:
    with anyio.fail_after(WAIT):
        await _ended(session_id).wait()
    assert LEFT.pop(session_id) is False  # the worker freed its state first
    del ENDED[session_id]


def sid() -> str:
    return f"s-{uuid.uuid4().hex}"


@asynccontextmanager
async def running(
    launcher: InProcessLauncher, adapter: str = RECORDING, **options: Any
) -> AsyncIterator[Pool]:
    options.setdefault("size", 2)
    async with Pool(adapter, launcher=launcher, health_interval=None, **options) as pool:
        yield pool


class TestAssertNoSessions:
    async def test_it_passes_when_every_session_block_ended(
        self, launcher: InProcessLauncher
    ) -> None:
        async with running(launcher, ECHO) as pool:
            await assert_no_sessions(pool)
            async with pool.session() as s:
                await s.execute("ping")
            await assert_no_sessions(pool)

    async def test_it_lists_the_sessions_left(self, launcher: InProcessLauncher) -> None:
        async with running(launcher, ECHO) as pool:
            pinned = await pool.sessions.create("left-1", affinity="strict_queue")
            await pool.execute("ping", session_id=pinned.session_id)
            await pool.sessions.create("left-2")
            with pytest.raises(AssertionError) as info:
                await assert_no_sessions(pool)
            message = str(info.value)
            pin = (await pool.sessions.get("left-1")).worker_id
            assert "found 2: 'left-1' (strict_queue, pinned to " in message
            assert f"pinned to {pin})" in message
            assert "'left-2' (hint, not pinned)" in message
            assert "more" not in message
            assert "cleanup_sessions(pool)" in message
            assert await cleanup_sessions(pool) == 2

    async def test_it_names_ten_then_says_how_many_more(self, launcher: InProcessLauncher) -> None:
        async with running(launcher, ECHO) as pool:
            for i in range(13):
                await pool.sessions.create(f"many-{i:02d}")
            with pytest.raises(AssertionError, match="found 13: ") as info:
                await assert_no_sessions(pool)
            message = str(info.value)
            assert [f"'many-{i:02d}'" in message for i in range(13)] == [True] * 10 + [False] * 3
            assert ", and 3 more " in message
            await cleanup_sessions(pool)

    async def test_expired_sessions_do_not_count(self, launcher: InProcessLauncher) -> None:
        ended = anyio.Event()

        def on_end(record: SessionRecord, why: str) -> None:
            ended.set()

        config = SessionStoreConfig(on_end=on_end)
        async with running(launcher, ECHO, sessions=config) as pool:
            await pool.sessions.create(ttl=0.01)
            with anyio.fail_after(WAIT):
                await ended.wait()  # the sweep removed it
            await assert_no_sessions(pool)


class TestCleanupSessions:
    async def test_it_deletes_every_session_returns_the_count_and_runs_the_hook(
        self, launcher: InProcessLauncher
    ) -> None:
        ids = [sid() for _ in range(3)]
        async with running(launcher, size=2) as pool:
            for session_id in ids:
                async with pool.session(session_id, keep=True) as s:
                    await s.execute("remember", {"value": session_id})
                    assert await s.execute("recall") == session_id
            await pool.sessions.create(sid())  # never used: pinned to no worker
            assert pool.stats().sessions == 4
            assert await cleanup_sessions(pool) == 4
            await assert_no_sessions(pool)
            assert pool.stats().sessions == 0
            for session_id in ids:  # each pinned worker ran its hook and freed the state
                await wait_ended(session_id)
            assert await cleanup_sessions(pool) == 0  # nothing left: no error

    async def test_the_stores_on_end_sees_each_deletion(self, launcher: InProcessLauncher) -> None:
        seen: list[tuple[str, str]] = []
        both = anyio.Event()

        def on_end(record: SessionRecord, why: str) -> None:
            seen.append((record.session_id, why))
            if len(seen) == 2:
                both.set()

        async with running(launcher, ECHO, sessions=SessionStoreConfig(on_end=on_end)) as pool:
            await pool.sessions.create("a")
            await pool.sessions.create("b")
            assert await cleanup_sessions(pool) == 2
            with anyio.fail_after(WAIT):
                await both.wait()
        assert sorted(seen) == [("a", "deleted"), ("b", "deleted")]

    async def test_a_pool_that_is_not_running_has_none(self, launcher: InProcessLauncher) -> None:
        pool = Pool(ECHO, launcher=launcher, size=1, health_interval=None)
        assert await cleanup_sessions(pool) == 0  # never entered
        await assert_no_sessions(pool)
        async with pool:
            await pool.sessions.create("kept")
        assert await cleanup_sessions(pool) == 0  # closed: its sessions went with it
        await assert_no_sessions(pool)

    async def test_a_degraded_pools_store_is_cleaned_up_too(
        self, launcher: InProcessLauncher
    ) -> None:
        async with running(launcher, size=1, max_restarts=1, max_seconds=600) as pool:
            async with pool.session(keep=True) as s:
                await s.execute("ping")
            events = pool.subscribe()
            Recording.fail_setup = True
            try:
                workers = pool.supervisor.child("workers")
                assert isinstance(workers, SupervisorRef)
                (child,) = workers.which_children()
                assert child.ref is not None
                await child.ref.kill()
                with anyio.fail_after(WAIT):
                    async with events:
                        async for event in events:
                            if isinstance(event, PoolGaveUp):
                                break
            finally:
                Recording.fail_setup = False
            # Its store still runs: its sessions can be listed (and deleted),
            # but neither a new session nor a session's call can be served.
            assert [r.session_id for r in await pool.sessions.list()] == [s.session_id]
            with pytest.raises(PoolDegraded):
                async with pool.session():
                    pass
            with pytest.raises(PoolDegraded):
                await s.execute("ping")
            with pytest.raises(AssertionError, match=s.session_id):
                await assert_no_sessions(pool)
            assert await cleanup_sessions(pool) == 1
            await assert_no_sessions(pool)

    async def test_a_redis_backed_pool(
        self, launcher: InProcessLauncher, redis_session_backend: RedisBackend
    ) -> None:
        session_id = sid()
        config = SessionStoreConfig(backend=redis_session_backend)
        async with running(launcher, size=1, sessions=config) as pool:
            async with pool.session(session_id, keep=True) as s:
                await s.execute("remember", {"value": 1})
            await pool.sessions.create(sid())
            with pytest.raises(AssertionError, match="found 2: "):
                await assert_no_sessions(pool)
            assert await cleanup_sessions(pool) == 2
            await wait_ended(session_id)
            await assert_no_sessions(pool)
        assert await redis_session_backend.count() == 0


class TestSessionsAdapter:
    async def test_state_is_kept_per_session_in_the_worker(
        self, launcher: InProcessLauncher
    ) -> None:
        async with running(launcher, "snakepit.testing.adapters:Sessions", size=1) as pool:
            async with pool.session(metadata={"user": "ada"}) as a, pool.session() as b:
                await a.execute("remember", {"value": [1, 2]})
                await b.execute("remember", {"value": "b's"})
                assert await a.execute("recall") == [1, 2]
                assert await b.execute("recall") == "b's"
                assert await a.execute("held_sessions") == sorted([a.session_id, b.session_id])
                info = await a.execute("session_info")
                assert info["session_id"] == a.session_id
                assert info["metadata"] == {"user": "ada"}
                assert isinstance(info["pid"], int)
                async with pool.session() as fresh:
                    assert await fresh.execute("recall") is None
            outside = await pool.execute("session_info")
            assert (outside["session_id"], outside["metadata"]) == ("", None)
            for tool in ("remember", "recall"):
                with pytest.raises(RemoteError, match="call it in a session"):
                    await pool.execute(tool)

    async def test_on_session_end_frees_the_state(self, launcher: InProcessLauncher) -> None:
        session_id = sid()
        async with running(launcher, size=1) as pool:
            async with pool.session(session_id) as s:
                await s.execute("remember", {"value": 1})
                assert await pool.execute("held_sessions") == [session_id]
            await wait_ended(session_id)  # deleted at the end of the block
            assert await pool.execute("held_sessions") == []


async def test_a_test_may_leave_sessions_to_snakepit_pool(
    snakepit_pool: Callable[..., Awaitable[Pool]],
) -> None:
    # The fixture deletes it at teardown (the pytester test below shows it).
    pool = await snakepit_pool(RECORDING, size=1)
    await pool.sessions.create("left")
    with pytest.raises(AssertionError, match="'left'"):
        await assert_no_sessions(pool)


INNER = """
import anyio
import pytest

from snakepit.session import SessionStoreConfig
from {module} import ENDED, LEFT, RECORDING, _ended

pytestmark = pytest.mark.anyio
DELETED = []


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def check_after_pool(anyio_backend):
    # Set up before snakepit_pool (listed first), so torn down after it.
    yield
    assert sorted(DELETED) == [("teardown-1", "deleted"), ("teardown-2", "deleted")]
    with anyio.fail_after(10):
        await _ended("teardown-1").wait()  # the pinned worker ran its hook
    assert LEFT.pop("teardown-1") is False
    del ENDED["teardown-1"]
    print("checked after the pool's teardown")


async def test_leaves_sessions(check_after_pool, snakepit_pool):
    config = SessionStoreConfig(on_end=lambda record, why: DELETED.append((record.session_id, why)))
    pool = await snakepit_pool(RECORDING, size=1, sessions=config)
    async with pool.session("teardown-1", keep=True) as s:
        await s.execute("remember", {{"value": 1}})
    await pool.sessions.create("teardown-2")  # never used
"""


def test_snakepit_pool_cleans_up_sessions_before_closing_the_pool(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_inner=INNER.format(module=__name__))
    result = pytester.runpytest_inprocess("-p", "no:randomly", "-p", "no:xdist", "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*checked after the pool's teardown*"])
