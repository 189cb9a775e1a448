"""Saturation: a full queue refuses, every accepted call completes; a generous throughput bound.

The bounds here only catch a pool that stalls or crawls; the real numbers
live in ``benchmarks/``. Slots are held by FIFO gates (the ``wait_gate`` tool
runs until the test closes the write end) or by ``hang`` calls cancelled by
the test, never by a timer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from snakepit.errors import QueueFull
from snakepit.pool import InProcessLauncher, Pool
from tests._fifo import open_gate

from ._load import run_calls

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

ADAPTER = "tests.unit.grpc._adapters:All"
ROOT = str(Path(__file__).resolve().parents[2])

SIZE = 2
MAX_QUEUE = 8
#: Deadline of any one wait in these tests.
DEADLINE = 15.0
#: The throughput bound: CALLS echo calls, IN_FLIGHT at a time, within BOUND seconds.
CALLS = 500
IN_FLIGHT = 32
BOUND = 20.0


def make_pool(*, process: bool = False, **options: Any) -> Pool:
    """A pool of Gated workers: processes, or served in-process (the queue is the host's)."""
    options.setdefault("size", SIZE)
    options.setdefault("prefetch", 0)  # the queue under test is the host's
    if not process:
        options.setdefault("launcher", InProcessLauncher())
    return Pool(ADAPTER, cwd=ROOT, **options)


class TestSaturation:
    async def test_queue_fills_then_refuses_and_every_accepted_call_completes(
        self, tmp_path: Path
    ) -> None:
        gates = [tmp_path / f"gate{i}" for i in range(SIZE)]
        for gate in gates:
            os.mkfifo(gate)
        held: list[Any] = []
        done: dict[int, Any] = {}
        async with make_pool(max_queue=MAX_QUEUE) as pool:
            with anyio.fail_after(DEADLINE):
                async with anyio.create_task_group() as tg:

                    async def hold(gate: Path) -> None:
                        held.append(await pool.execute("wait_gate", {"path": str(gate)}))

                    async def queued(i: int) -> None:
                        done[i] = await pool.execute("echo", {"value": i})

                    writers = []
                    try:
                        for gate in gates:
                            tg.start_soon(hold, gate)
                            writers.append(await open_gate(gate, DEADLINE))  # its tool is running
                        assert pool.stats().idle == 0  # every slot is held

                        for i in range(MAX_QUEUE):
                            tg.start_soon(queued, i)
                        await anyio.wait_all_tasks_blocked()
                        assert pool.stats().queued == MAX_QUEUE

                        for _ in range(3):  # refused at once, and the queue is unchanged
                            with pytest.raises(QueueFull, match=f"{MAX_QUEUE} calls"):
                                await pool.execute("echo", {"value": "one too many"})
                        assert pool.stats().queued == MAX_QUEUE
                        assert done == {}
                    finally:
                        for writer in writers:
                            writer.close()  # the gates open: the queue drains
            assert held == ["opened"] * SIZE
            assert done == {i: i for i in range(MAX_QUEUE)}
            stats = pool.stats()
            assert (stats.queued, stats.idle, stats.ready) == (0, SIZE, SIZE), stats
            assert (stats.requests, stats.errors) == (SIZE + MAX_QUEUE, 0), stats  # refused: none

    async def test_queue_is_served_in_order(self, tmp_path: Path) -> None:
        gate = tmp_path / "gate"
        os.mkfifo(gate)
        order: list[int] = []
        async with make_pool(size=1, max_queue=MAX_QUEUE) as pool:
            with anyio.fail_after(DEADLINE):
                async with anyio.create_task_group() as tg:

                    async def queued(i: int) -> None:
                        order.append(await pool.execute("echo", {"value": i}))

                    tg.start_soon(pool.execute, "wait_gate", {"path": str(gate)})
                    writer = await open_gate(gate, DEADLINE)
                    try:
                        for i in range(MAX_QUEUE):
                            tg.start_soon(queued, i)
                        await anyio.wait_all_tasks_blocked()
                        assert pool.stats().queued == MAX_QUEUE
                    finally:
                        writer.close()
        assert order == list(range(MAX_QUEUE))  # FIFO: one slot, handed on in order

    async def test_cancelled_waiters_make_room(self) -> None:
        results: list[Any] = []
        async with make_pool(size=1, max_queue=MAX_QUEUE) as pool:
            with anyio.fail_after(DEADLINE):
                async with anyio.create_task_group() as tg:
                    hang = anyio.CancelScope()

                    async def hold() -> None:
                        with hang:
                            await pool.execute("hang")

                    async def accepted() -> None:
                        results.append(await pool.execute("ping"))

                    tg.start_soon(hold)  # holds the only slot
                    await anyio.wait_all_tasks_blocked()
                    assert pool.stats().idle == 0

                    async with anyio.create_task_group() as waiters:
                        for _ in range(MAX_QUEUE):
                            waiters.start_soon(pool.execute, "ping")
                        await anyio.wait_all_tasks_blocked()
                        assert pool.stats().queued == MAX_QUEUE
                        with pytest.raises(QueueFull):
                            await pool.execute("ping")
                        waiters.cancel_scope.cancel()
                    assert pool.stats().queued == 0  # the cancelled waiters left

                    for _ in range(MAX_QUEUE):
                        tg.start_soon(accepted)
                    await anyio.wait_all_tasks_blocked()
                    assert pool.stats().queued == MAX_QUEUE  # room again
                    hang.cancel()  # the hang call ends: its slot comes back
            assert results == [{"status": "pong"}] * MAX_QUEUE
            stats = pool.stats()
            assert (stats.queued, stats.idle, stats.ready) == (0, 1, 1), stats


class TestThroughput:
    @pytest.mark.parametrize("max_concurrency", [1, 16])
    async def test_echo_calls_complete_within_a_generous_bound(self, max_concurrency: int) -> None:
        async with make_pool(
            process=True, max_concurrency=max_concurrency, max_queue=IN_FLIGHT
        ) as pool:
            results, elapsed = await run_calls(
                lambda i: pool.execute("echo", {"value": i}),
                calls=CALLS,
                in_flight=IN_FLIGHT,
                bound=BOUND,
            )
            assert results == {i: i for i in range(CALLS)}
            stats = pool.stats()
            assert (stats.requests, stats.errors, stats.crashes) == (CALLS, 0, 0), stats
            assert (stats.queued, stats.idle) == (0, SIZE * max_concurrency), stats
            print(f"{CALLS} echo calls, {IN_FLIGHT} in flight: {CALLS / elapsed:.0f}/s")
