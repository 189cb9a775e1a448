"""Concurrency slots of a worker: max_concurrency across async and sync tools."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import anyio
import pytest

from snakepit.worker._slots import Slots, ToolRaised

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
        calls.append(slots.call(sync_tool, None).future if i % 2 else async_tool())
    await asyncio.gather(*calls)
    assert peak == 1
    slots.close()


async def test_results_and_exceptions_come_back() -> None:
    slots = Slots(2, asyncio.get_running_loop())

    def boom() -> None:
        raise ValueError("tool failed")

    assert await slots.call(lambda: 41 + 1, None).future == 42
    with pytest.raises(ValueError, match="tool failed"):
        await slots.call(boom, None).future
    slots.close()


async def test_a_cancelled_waiter_gives_its_turn_away() -> None:
    slots = Slots(1, asyncio.get_running_loop())
    gate = threading.Event()
    first = slots.call(gate.wait, None).future  # holds the only slot
    waiting = asyncio.ensure_future(slots.acquire())
    queued_sync = slots.call(lambda: "ran", threading.Event()).future
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
    holder = slots.call(gate.wait, None).future
    cancel = threading.Event()
    skipped = slots.call(lambda: ran.append("no"), cancel).future
    cancel.set()
    skipped.cancel()
    gate.set()
    await holder
    assert await slots.call(lambda: "after", None).future == "after"
    assert ran == []
    slots.close()


async def test_a_waiter_cancelled_after_the_handover_gives_the_slot_back() -> None:
    """Issue #11, defect 1: handed the slot, cancelled before it resumed: the slot came back."""
    slots = Slots(1, asyncio.get_running_loop())
    await slots.acquire()  # the only slot
    waiter = asyncio.ensure_future(slots.acquire())
    await anyio.lowlevel.checkpoint()  # it waits for the slot
    assert slots.waiting == 1
    slots.release()  # handed over: its wake-up is on its way
    await anyio.lowlevel.checkpoint()  # the wake-up ran: the waiter's future has the slot
    waiter.cancel()  # ... and the waiter is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (slots.free, slots.waiting) == (1, 0)
    with anyio.fail_after(5):
        await slots.acquire()
    slots.release()
    slots.close()


async def test_many_cancelled_waiters_leak_no_slot() -> None:
    slots = Slots(2, asyncio.get_running_loop())
    for round_ in range(200):
        await slots.acquire()
        await slots.acquire()
        waiters = [asyncio.ensure_future(slots.acquire()) for _ in range(3)]
        await anyio.lowlevel.checkpoint()
        slots.release()
        if round_ % 2:
            await anyio.lowlevel.checkpoint()
        for waiter in waiters:
            waiter.cancel()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        for result in results:
            if result is None:  # it got the slot before the cancel landed
                slots.release()
        slots.release()
        assert (slots.free, slots.waiting) == (2, 0), round_
    slots.close()


async def test_a_cancelled_sync_call_keeps_its_slot_until_its_thread_returns() -> None:
    slots = Slots(1, asyncio.get_running_loop())
    gate = threading.Event()
    cancel = threading.Event()
    job = slots.call(gate.wait, cancel)
    job.future.cancel()  # the caller gave up; the thread goes on
    await anyio.lowlevel.checkpoint()
    assert slots.free == 0
    ended = asyncio.ensure_future(slots.finished(job))
    await anyio.lowlevel.checkpoint()
    assert not ended.done()
    gate.set()
    with anyio.fail_after(5):
        await ended
    assert slots.free == 1
    await slots.finished(job)  # at once, once returned
    slots.close()


async def test_base_exceptions_of_a_tool_thread_arrive_wrapped() -> None:
    slots = Slots(1, asyncio.get_running_loop())

    class Custom(BaseException):
        pass

    for exc in (KeyboardInterrupt(), SystemExit(3), asyncio.CancelledError(), Custom("x")):

        def raise_it(exc: BaseException = exc) -> None:
            raise exc

        with pytest.raises(ToolRaised) as info:
            await slots.call(raise_it, None).future
        assert info.value.exception is exc
    assert slots.free == 1
    slots.close()


async def test_a_cancelled_sync_call_still_queued_is_withdrawn_at_once() -> None:
    slots = Slots(1, asyncio.get_running_loop())
    gate = threading.Event()
    holder = slots.call(gate.wait, None)
    ran: list[str] = []
    queued = slots.call(lambda: ran.append("no"), threading.Event())
    queued.future.cancel()
    with anyio.fail_after(5):
        await slots.finished(queued)  # does not wait for the holder's slot
    assert slots.waiting == 0
    gate.set()
    assert await holder.future is True
    assert await slots.call(lambda: "after", None).future == "after"
    assert ran == []
    assert slots.free == 1
    slots.close()


async def test_when_ended_calls_back_once_the_thread_is_done_with_the_job() -> None:
    slots = Slots(1, asyncio.get_running_loop(), name="t")
    ended: list[str] = []
    done = asyncio.Event()

    def note(what: str) -> None:
        ended.append(what)
        if len(ended) == 4:
            done.set()

    gate = threading.Event()
    running = slots.call(gate.wait, threading.Event())  # holds the only slot
    queued = slots.call(lambda: "never", threading.Event())
    returned = slots.run(lambda: threading.current_thread().name)
    running.future.cancel()  # its thread runs on
    slots.when_ended(running, lambda: note("running"))
    queued.future.cancel()
    slots.when_ended(queued, lambda: note("queued"))
    await slots.finished(queued)  # withdrawn: it never runs
    slots.when_ended(returned, lambda: note("returned"))
    await anyio.wait_all_tasks_blocked()
    assert ended == ["queued"]  # the others wait for the thread
    gate.set()
    assert await returned.future == "t-0"
    slots.when_ended(returned, lambda: note("at once"))
    with anyio.fail_after(5):
        await done.wait()
    assert sorted(ended) == ["at once", "queued", "returned", "running"]
    slots.close()
