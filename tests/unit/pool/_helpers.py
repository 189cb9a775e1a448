"""Helpers of the pool's unit tests: waiting on events, never on a timer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from snakepit.otp import DynamicSupervisor, ServerRef, SupervisorRef
from snakepit.pool import Pool, PoolEvent, RequestQueued, RequestStarted

from ._adapters import WAIT, Control

E = TypeVar("E")
Events = MemoryObjectReceiveStream[PoolEvent]


def _any(event: Any) -> bool:
    return True


async def next_event(
    stream: MemoryObjectReceiveStream[Any],
    kind: type[E],
    where: Callable[[E], bool] = _any,
) -> E:
    """Read ``stream`` until an event of ``kind`` that matches ``where``; return it.

    The events before it are consumed.
    """
    with anyio.fail_after(WAIT):
        async for event in stream:
            if isinstance(event, kind) and where(event):
                return event
    raise AssertionError(f"the stream ended before a {kind.__name__} came")


async def events_until(
    stream: MemoryObjectReceiveStream[Any],
    kind: type[E],
    where: Callable[[E], bool] = _any,
) -> list[Any]:
    """Read ``stream`` until an event of ``kind`` that matches ``where``; return all read."""
    read: list[Any] = []
    with anyio.fail_after(WAIT):
        async for event in stream:
            read.append(event)
            if isinstance(event, kind) and where(event):
                return read
    raise AssertionError(f"the stream ended before a {kind.__name__} came")


def pending(stream: MemoryObjectReceiveStream[Any]) -> list[Any]:
    """The events already in ``stream``, without waiting."""
    events = []
    while True:
        try:
            events.append(stream.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            return events


async def rest_of(stream: MemoryObjectReceiveStream[Any]) -> list[Any]:
    """The events left in ``stream`` until it ends (the pool stopped)."""
    with anyio.fail_after(WAIT):
        return [event async for event in stream]


async def hold_a_slot(
    tg: TaskGroup, pool: Pool, events: Events, control: Control
) -> tuple[anyio.CancelScope, RequestStarted]:
    """Start a ``block`` call in ``tg``; return once it runs in a worker.

    Returns its cancel scope (cancel it to end the call) and its RequestStarted.
    """
    scope = anyio.CancelScope()
    running = control.blocked

    async def block() -> None:
        with scope:
            await pool.execute("block")

    tg.start_soon(block)
    started = await next_event(events, RequestStarted, lambda e: e.tool == "block")
    await control.wait_blocked(running + 1)
    return scope, started


async def queue_a_call(
    tg: TaskGroup, pool: Pool, events: Events, value: Any, results: list[Any]
) -> tuple[anyio.CancelScope, RequestQueued]:
    """Start an ``echo`` call in ``tg``; return once it waits in the queue.

    The call appends its result to ``results``. Returns its cancel scope and
    its RequestQueued.
    """
    scope = anyio.CancelScope()

    async def call() -> None:
        with scope:
            results.append(await pool.execute("echo", {"value": value}))

    tg.start_soon(call)
    queued = await next_event(events, RequestQueued)
    return scope, queued


def workers_supervisor(pool: Pool) -> SupervisorRef:
    """The pool's DynamicSupervisor of Worker servers (its child ``"workers"``)."""
    workers = pool.supervisor.child("workers")
    assert isinstance(workers, SupervisorRef)
    assert isinstance(workers.server, DynamicSupervisor)
    return workers


def worker_ref(pool: Pool, worker_id: str) -> ServerRef[Any, Any]:
    """The running Worker server of ``worker_id``."""
    (child,) = [c for c in workers_supervisor(pool).which_children() if c.id == worker_id]
    assert child.ref is not None
    return child.ref
