"""The supervision tree recovers from what health checks and the tree must notice.

A worker stopped with SIGSTOP (alive, silent) or whose socket was removed is
found by the health checks and replaced; a Worker server killed under the
pool is restarted by its supervisor; each time the pool is whole again and
serves. Waits follow the pool's telemetry, never a timer.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from snakepit.errors import WorkerCrashed
from snakepit.pool import Pool, PoolEvent, WorkerExited, WorkerReady

from ._support import ADAPTER, ROOT, live_workers, pid_of

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

DEADLINE = 30.0


@asynccontextmanager
async def watched_pool(
    **options: object,
) -> AsyncIterator[tuple[Pool, MemoryObjectReceiveStream[PoolEvent]]]:
    """A one-worker pool with fast health checks, and its event stream."""
    settings: dict[str, object] = {
        "size": 1,
        "cwd": ROOT,
        "health_interval": 0.05,
        "health_timeout": 0.2,
        "max_missed_pings": 2,
    }
    pool = Pool(ADAPTER, **{**settings, **options})  # type: ignore[arg-type]
    async with pool.subscribe() as events, pool:
        yield pool, events


async def next_of(events: MemoryObjectReceiveStream[PoolEvent], kind: type) -> object:
    async for event in events:
        if isinstance(event, kind):
            return event
    raise AssertionError(f"the pool's events ended before a {kind.__name__}")


async def test_a_stopped_worker_is_replaced() -> None:
    async with watched_pool() as (pool, events):
        (worker,) = live_workers(pool)
        pid = pid_of(worker)
        os.kill(pid, signal.SIGSTOP)
        with anyio.fail_after(DEADLINE):
            # A call in flight on the stopped worker fails, naming why.
            with pytest.raises(WorkerCrashed, match="missed 2 health checks"):
                await pool.execute("ping")
            exited = await next_of(events, WorkerExited)
            ready = await next_of(events, WorkerReady)
        assert isinstance(exited, WorkerExited)
        assert exited.crashed
        assert "missed 2 health checks" in exited.reason
        assert isinstance(ready, WorkerReady)
        assert ready.generation == 1
        assert await pool.execute("ping") == {"status": "pong"}


async def test_a_worker_whose_socket_was_removed_is_replaced() -> None:
    async with watched_pool() as (pool, events):
        (worker,) = live_workers(pool)
        assert worker.handle is not None
        os.unlink(worker.handle.address.removeprefix("unix:"))
        with anyio.fail_after(DEADLINE):
            exited = await next_of(events, WorkerExited)
            await next_of(events, WorkerReady)
        assert isinstance(exited, WorkerExited)
        assert "SOCKET REMOVED" in exited.reason
        assert await pool.execute("ping") == {"status": "pong"}


async def test_a_killed_worker_server_is_restarted_by_its_supervisor() -> None:
    async with watched_pool(health_interval=None) as (pool, events):
        (worker,) = live_workers(pool)
        pid = pid_of(worker)
        await worker.ref.kill()
        with anyio.fail_after(DEADLINE):
            exited = await next_of(events, WorkerExited)
            await next_of(events, WorkerReady)
        assert isinstance(exited, WorkerExited)
        assert exited.crashed
        assert exited.pid == pid
        (replacement,) = live_workers(pool)
        assert pid_of(replacement) != pid
        assert pool.supervisor.child("workers") is not None
        assert await pool.execute("ping") == {"status": "pong"}
