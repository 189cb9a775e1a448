"""The supervision tree recovers from what health checks and the tree must notice.

A worker stopped with SIGSTOP (alive, silent) or whose socket was removed is
found by the health checks and replaced; a WorkerServer killed under the
pool is restarted by its supervisor; each time the pool is whole again and
serves. Waits follow the pool's telemetry (the harness's ``pool_events``),
never a timer.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import anyio
import pytest

from snakepit.pool import Pool, WorkerExited, WorkerReady
from snakepit.testing import PoolEvents

from ._support import ADAPTER, ROOT, live_workers, pid_of

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

DEADLINE = 30.0


def watched_pool(pool_events: PoolEvents, **options: Any) -> Pool:
    """A one-worker pool with fast health checks, its events recorded."""
    settings: dict[str, Any] = {
        "size": 1,
        "cwd": ROOT,
        "health_interval": 0.05,
        "health_timeout": 0.2,
        "max_missed_pings": 2,
    }
    pool = Pool(ADAPTER, **{**settings, **options})
    pool_events.attach(pool)
    return pool


async def test_a_stopped_worker_is_replaced(pool_events: PoolEvents) -> None:
    async with watched_pool(pool_events) as pool:
        (worker,) = live_workers(pool)
        # A call first: the worker has read its connection's first frame and
        # mapped its started page (a worker stopped before that cannot say
        # what it started: its calls would count as started).
        assert await pool.execute("ping") == {"status": "pong"}
        os.kill(pid_of(worker), signal.SIGSTOP)
        with anyio.fail_after(DEADLINE):
            # A call sent to the stopped worker never started there (its
            # started page says so): it runs on the replacement.
            assert await pool.execute("ping") == {"status": "pong"}
        exited = await pool_events.wait_for(WorkerExited, timeout=DEADLINE, crashed=True)
        assert "missed 2 health checks" in exited.reason
        await pool_events.wait_for(WorkerReady, timeout=DEADLINE, generation=1)
        assert await pool.execute("ping") == {"status": "pong"}


async def test_a_worker_whose_socket_was_removed_is_replaced(pool_events: PoolEvents) -> None:
    async with watched_pool(pool_events) as pool:
        (worker,) = live_workers(pool)
        assert worker.handle is not None
        os.unlink(worker.handle.address.removeprefix("unix:"))
        exited = await pool_events.wait_for(WorkerExited, timeout=DEADLINE, crashed=True)
        assert "SOCKET REMOVED" in exited.reason
        await pool_events.wait_for(WorkerReady, timeout=DEADLINE, generation=1)
        assert await pool.execute("ping") == {"status": "pong"}


async def test_a_killed_worker_server_is_restarted_by_its_supervisor(
    pool_events: PoolEvents,
) -> None:
    async with watched_pool(pool_events, health_interval=None) as pool:
        (worker,) = live_workers(pool)
        pid = pid_of(worker)
        await worker.ref.kill()
        exited = await pool_events.wait_for(WorkerExited, timeout=DEADLINE, crashed=True)
        assert exited.pid == pid
        await pool_events.wait_for(WorkerReady, timeout=DEADLINE, generation=1)
        (replacement,) = live_workers(pool)
        assert pid_of(replacement) != pid
        assert pool.supervisor.child("workers") is not None
        assert await pool.execute("ping") == {"status": "pong"}
