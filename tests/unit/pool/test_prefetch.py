"""prefetch: calls sent ahead to busy workers, with the semantics they keep."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from snakepit import Pool
from snakepit.errors import ConfigError, ExecutionTimeout
from snakepit.pool import InProcessLauncher, PoolEvent, RequestStarted

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)

HANG = "snakepit.testing.adapters:Hang"


def pool(**options: Any) -> Pool:
    """A pool of in-process workers (milliseconds to start)."""
    options.setdefault("size", 1)
    return Pool(HANG, launcher=InProcessLauncher(), health_interval=None, **options)


async def test_a_call_sent_ahead_that_times_out_leaves_the_worker_alone() -> None:
    async with pool(prefetch=1) as p, anyio.create_task_group() as tg:
        tg.start_soon(p.execute, "hang")  # runs, holds the only running slot
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(ExecutionTimeout) as caught:
            await p.execute("ping", timeout=0.05)  # sent ahead, waits behind it
        assert caught.value.started is False
        assert [w.generation for w in p.workers()] == [0]  # not replaced
        assert p.stats().timeouts == 1
        tg.cancel_scope.cancel()


async def test_a_call_that_never_started_goes_to_the_replacement() -> None:
    async with pool(prefetch=1) as p:
        async with anyio.create_task_group() as tg:
            results: list[object] = []

            async def waiting() -> None:
                results.append(await p.execute("ping"))

            async def stuck() -> None:
                with pytest.raises(ExecutionTimeout) as caught:
                    await p.execute("hang", timeout=0.2)
                assert caught.value.started is True

            tg.start_soon(stuck)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(waiting)  # sent ahead behind the stuck call
        # The stuck call's timeout killed the worker; the waiting call never
        # ran there, so it ran on the replacement instead of failing.
        assert results == [{"status": "pong"}]
        assert [w.generation for w in p.workers()] == [1]
        assert p.stats().crashes == 0


async def test_a_free_worker_is_used_before_a_busy_one_is_sent_ahead() -> None:
    async with AsyncExitStack() as stack:
        p = pool(size=2, prefetch=2)
        events = stack.enter_context(p.subscribe())
        await stack.enter_async_context(p)
        tg = await stack.enter_async_context(anyio.create_task_group())
        tg.start_soon(p.execute, "hang")
        await anyio.wait_all_tasks_blocked()
        assert await p.execute("ping") == {"status": "pong"}
        started = [e async for e in _drain(events) if isinstance(e, RequestStarted)]
        assert len({e.worker_id for e in started}) == 2
        tg.cancel_scope.cancel()


async def _drain(events: MemoryObjectReceiveStream[PoolEvent]) -> AsyncIterator[PoolEvent]:
    """The events published so far."""
    while True:
        try:
            yield events.receive_nowait()
        except anyio.WouldBlock:
            return


async def test_throughput_calls_all_complete_in_order_per_caller() -> None:
    async with pool(size=2, prefetch=2) as p:
        results: dict[int, list[object]] = {}

        async def caller(i: int) -> None:
            results[i] = [await p.execute("echo", {"value": (i, n)}) for n in range(20)]

        async with anyio.create_task_group() as tg:
            for i in range(16):
                tg.start_soon(caller, i)
        assert results == {i: [[i, n] for n in range(20)] for i in range(16)}
        assert p.stats().idle == 2  # running slots only


def test_prefetch_must_be_a_non_negative_int() -> None:
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="prefetch"):
            pool(prefetch=bad)
