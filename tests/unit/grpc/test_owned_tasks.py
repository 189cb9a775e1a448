"""Every task the host side starts has an owner, and is over when its owner is closed.

For each owner: after its close (or the call that started the task returns),
no task it started is still pending, and the close does not hang.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from snakepit.errors import WorkerUnavailable
from snakepit.pool import InProcessLauncher, PoolConfig
from snakepit.pool._connection import open_frames_multiplexer
from snakepit.pool._worker_connection import WorkerConnection

from .conftest import Served, Spawn, serve_all

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

Echo = tuple[Served, WorkerConnection]


def started_since(before: set[asyncio.Task[object]]) -> set[asyncio.Task[object]]:
    """The tasks started since ``before`` was taken that have not ended."""
    return {task for task in asyncio.all_tasks() - before if not task.done()}


def grpc_call_tasks(before: set[asyncio.Task[object]]) -> set[asyncio.Task[object]]:
    """grpc's tasks for the client calls started since ``before`` (each waits for an operation).

    (The server's own tasks are left out: it runs in this loop too.)
    """
    return {
        task
        for task in started_since(before)
        if getattr(task.get_coro(), "__qualname__", "").startswith(
            ("_AioCall.", "StreamStreamCall.")
        )
    }


def channel_tasks(before: set[asyncio.Task[object]]) -> set[asyncio.Task[object]]:
    """The Multiplexer's own tasks (the worker's server runs in this loop too)."""
    return {t for t in started_since(before) if t.get_name().startswith("snakepit channel ")}


class TestMultiplexer:
    async def test_its_tasks_end_with_it_on_the_channel_rpc(self, echo: Echo) -> None:
        _, client = echo
        before = asyncio.all_tasks()
        mux = client.multiplexer()
        assert await mux.execute("echo", {"value": 1}) == 1
        assert len(channel_tasks(before)) == 2  # its reader and writer
        with anyio.fail_after(5):
            await mux.aclose()
        assert channel_tasks(before) == set()

    async def test_its_tasks_end_with_it_on_the_frames_socket(self, echo: Echo) -> None:
        served, _ = echo
        assert served.frames_address is not None
        before = asyncio.all_tasks()
        with anyio.fail_after(5):
            async with await open_frames_multiplexer(
                served.frames_address, secret=served.secret
            ) as mux:
                assert await mux.execute("echo", {"value": 1}) == 1
        assert channel_tasks(before) == set()

    @pytest.mark.parametrize("server", ["serving", "running a call", "aborted"])
    async def test_no_grpc_operation_of_its_stream_is_left_pending(
        self, sock_dir: Path, server: str
    ) -> None:
        # Before: aclose cancelled the stream and returned while grpc still
        # waited for the stream's status (and its last read). Those completed
        # later, after the loop was closed: the next loop of the process got
        # "RuntimeError: Event loop is closed" (a test after this one failed).
        async with serve_all(sock_dir, "pending") as (served, client):
            before = asyncio.all_tasks()
            mux = client.multiplexer()
            assert await mux.execute("echo", {"value": 1}) == 1
            assert grpc_call_tasks(before)  # the stream's status is awaited from the start
            if server == "running a call":
                call = asyncio.ensure_future(mux.execute("hang"))
                await anyio.wait_all_tasks_blocked()
            elif server == "aborted":
                assert served.server is not None
                await served.server.abort()
            with anyio.fail_after(5):
                await mux.aclose()
            assert grpc_call_tasks(before) == set()
            if server == "running a call":
                with pytest.raises(WorkerUnavailable):
                    await call

    async def test_a_second_close_waits_for_its_tasks_too(self, echo: Echo) -> None:
        _, client = echo
        before = asyncio.all_tasks()
        mux = client.multiplexer()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await mux.aclose()  # cancelled while it waited for its tasks
        with anyio.fail_after(5):
            await mux.aclose()
        assert channel_tasks(before) == set()


class TestSpawnWorker:
    async def test_no_task_outlives_the_start(self, spawn: Spawn) -> None:
        before = asyncio.all_tasks()
        worker = await spawn()
        # The wait for an early exit is over; what is left is the worker's
        # reaper, its own (WorkerProcess.aclose ends it).
        assert started_since(before) <= {getattr(worker._child, "_watcher", None)}
        with anyio.fail_after(5):
            await worker.aclose()
        assert started_since(before) == set()

    async def test_a_worker_that_exits_before_ready_leaves_no_task(self, spawn: Spawn) -> None:
        from snakepit.errors import WorkerStartError

        before = asyncio.all_tasks()
        with pytest.raises(WorkerStartError), anyio.fail_after(10):
            await spawn("no.such.module:Adapter")
        assert started_since(before) == set()


@pytest.fixture
async def in_process() -> AsyncIterator[InProcessLauncher]:
    launcher = InProcessLauncher()
    try:
        yield launcher
    finally:
        await launcher.aclose()


class TestInProcessHandle:
    async def test_a_kill_is_over_when_wait_returns(self, in_process: InProcessLauncher) -> None:
        config = PoolConfig(adapter="snakepit.testing.adapters:Echo")
        handle = await in_process.start(config, "w0", "run")
        before = asyncio.all_tasks()
        handle.kill()
        with anyio.fail_after(5):
            assert await handle.wait() == -signal.SIGKILL
        assert started_since(before) == set()

    async def test_a_close_is_over_when_it_returns(self, in_process: InProcessLauncher) -> None:
        config = PoolConfig(adapter="snakepit.testing.adapters:Echo")
        handle = await in_process.start(config, "w0", "run")
        before = asyncio.all_tasks()
        with anyio.fail_after(5):
            assert await handle.aclose() == 0
        assert started_since(before) == set()
