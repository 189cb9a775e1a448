"""Concurrency slots of a worker: max_concurrency across async and sync tools."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import anyio
import pytest

from snakepit.worker._slots import Slots

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)


async def test_one_slot_runs_one_call_at_a_time_across_kinds() -> None:
    slots = Slots(1, asyncio.get_running_loop())
    running = 0
    peak = 0
    lock = threading.Lock()

    def sync_tool() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        with lock:
            running -= 1

    async def async_tool() -> None:
        nonlocal running, peak
        await slots.acquire()
        try:
            running += 1
            peak = max(peak, running)
            await anyio.lowlevel.checkpoint()
            running -= 1
        finally:
            slots.release()

    calls: list[Any] = []
    for i in range(50):
        calls.append(slots.call(sync_tool, None) if i % 2 else async_tool())
    await asyncio.gather(*calls)
    assert peak == 1
    slots.close()


async def test_results_and_exceptions_come_back() -> None:
    slots = Slots(2, asyncio.get_running_loop())

    def boom() -> None:
        raise ValueError("tool failed")

    assert await slots.call(lambda: 41 + 1, None) == 42
    with pytest.raises(ValueError, match="tool failed"):
        await slots.call(boom, None)
    slots.close()


async def test_a_cancelled_waiter_gives_its_turn_away() -> None:
    slots = Slots(1, asyncio.get_running_loop())
    gate = threading.Event()
    first = slots.call(gate.wait, None)  # holds the only slot
    waiting = asyncio.ensure_future(slots.acquire())
    queued_sync = slots.call(lambda: "ran", threading.Event())
    await anyio.lowlevel.checkpoint()  # the waiter task queues up (FIFO ready queue)
    waiting.cancel()
    gate.set()
    assert await first is True
    assert await queued_sync == "ran"  # the cancelled waiter did not keep the slot
    await slots.acquire()
    slots.release()
    slots.close()


async def test_a_sync_call_cancelled_before_it_starts_does_not_run() -> None:
    slots = Slots(1, asyncio.get_running_loop())
    gate = threading.Event()
    ran: list[str] = []
    holder = slots.call(gate.wait, None)
    cancel = threading.Event()
    skipped = slots.call(lambda: ran.append("no"), cancel)
    cancel.set()
    skipped.cancel()
    gate.set()
    await holder
    assert await slots.call(lambda: "after", None) == "after"
    assert ran == []
    slots.close()
