"""Recycling (requests, age, memory) and scaling: capacity never drops."""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from snakepit.errors import ConfigError
from snakepit.pool import Pool, WorkerRecycled
from tests._procs import wait_exit

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

ROOT = str(Path(__file__).resolve().parents[2])
ADAPTER = "tests.unit.grpc._adapters:All"


async def pid_of_call(pool: Pool) -> int:
    info: dict[str, Any] = await pool.execute("info")
    return int(info["pid"])


async def test_recycled_after_max_requests_replacement_first() -> None:
    async with Pool(ADAPTER, size=1, cwd=ROOT, max_requests_per_worker=3) as pool:
        first = await pid_of_call(pool)
        assert await pid_of_call(pool) == first
        assert await pid_of_call(pool) == first  # the 3rd call: recycling starts
        await wait_exit(first)
        assert pool.stats().ready == 1  # the replacement was ready before the stop
        second = await pid_of_call(pool)
        assert second != first
        assert pool.stats().recycled == 1


async def test_recycled_after_worker_ttl() -> None:
    async with Pool(ADAPTER, size=1, cwd=ROOT, worker_ttl=0.2) as pool:
        first = await pid_of_call(pool)
        await wait_exit(first)
        assert await pid_of_call(pool) != first


async def test_recycled_over_the_memory_limit() -> None:
    # RSS is read by the pool's periodic check (every health_interval), not per call.
    options: dict[str, Any] = {"max_worker_memory_mb": 1, "health_interval": 0.05}
    async with Pool(ADAPTER, size=1, cwd=ROOT, worker_ttl=None, **options) as pool:
        first = await pid_of_call(pool)  # any Python process is over 1 MiB
        await wait_exit(first)
        assert await pid_of_call(pool) != first


async def test_scale_up_and_down() -> None:
    async with Pool(ADAPTER, size=1, cwd=ROOT) as pool:
        await pool.scale(3)
        assert pool.stats().size == 3
        assert pool.stats().ready == 3
        assert len(pool.workers()) == 3
        pids = {w.pid for w in pool.workers()}
        await pool.scale(1)
        assert len(pool.workers()) == 1
        for pid in pids - {w.pid for w in pool.workers()}:
            assert pid is not None
            await wait_exit(pid)
        assert await pool.execute("ping") == {"status": "pong"}
        with pytest.raises(ConfigError):
            await pool.scale(0)


async def test_shrinking_lets_calls_in_flight_finish(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    async with Pool(ADAPTER, size=2, cwd=ROOT) as pool:
        results: list[Any] = []
        async with anyio.create_task_group() as tg:

            async def gated() -> None:
                results.append(await pool.execute("wait_gate", {"path": str(gate)}))

            tg.start_soon(gated)
            writer = await anyio.to_thread.run_sync(open, gate, "wb")  # the call runs
            busy = next(w for w in pool.workers() if w.in_flight)
            tg.start_soon(pool.scale, 1)
            await anyio.wait_all_tasks_blocked()
            writer.close()
        assert results == ["opened"]
        assert pool.stats().size == 1
        assert busy.pid is not None


async def test_a_large_request_limit_starts_the_replacement_before_the_last_call() -> None:
    # max_requests_per_worker >= EARLY_FROM: the replacement starts at nine
    # tenths of the calls and the worker serves on meanwhile, so a pool of
    # one never waits for a worker; none runs more than its limit.
    limit = 40
    async with Pool(ADAPTER, size=1, cwd=ROOT, max_requests_per_worker=limit) as pool:
        events = pool.subscribe()
        pids = [await pid_of_call(pool) for _ in range(2 * limit)]
        recycled = []
        with contextlib.suppress(anyio.WouldBlock):
            while True:  # what was published meanwhile
                event = events.receive_nowait()
                if isinstance(event, WorkerRecycled):
                    recycled.append(event)
        events.close()
    runs = [len(list(group)) for _, group in itertools.groupby(pids)]
    assert len(runs) >= 2
    assert all(n <= limit for n in runs)
    assert runs[0] >= limit - limit // 10  # it served until its replacement was ready
    assert "its replacement starts before the last" in recycled[0].reason
