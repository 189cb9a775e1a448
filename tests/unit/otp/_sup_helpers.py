"""Small GenServers and helpers shared by the Supervisor and DynamicSupervisor tests."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from snakepit.errors import ReachedMaxRestartIntensity
from snakepit.otp import (
    ChildExited,
    ChildSpec,
    ChildStarted,
    ChildStartFailed,
    ChildTerminated,
    ExitReason,
    GenServer,
    RestartIntensityReached,
    ServerRef,
    Shutdown,
    Stop,
    SupervisorEvent,
    SupervisorRef,
    monitor,
)


class Boom(Exception):
    """A deliberate crash of a test server."""


@dataclass
class Journal:
    """What the workers of one test did, in order: (what, label, generation)."""

    entries: list[tuple[str, Hashable, int]] = field(default_factory=list)

    def of(self, what: str) -> list[Hashable]:
        return [label for kind, label, _ in self.entries if kind == what]


@dataclass(frozen=True)
class Opts:
    """The ``arg`` of a :class:`Worker`."""

    label: Hashable = "w"
    journal: Journal | None = None
    #: Generations whose ``init`` raises :class:`Boom`.
    fail_init: frozenset[int] = frozenset()
    #: ``terminate`` waits on an event nobody sets (only a kill ends it).
    block_terminate: bool = False
    #: ``terminate`` waits until the test sets this event.
    terminate_gate: anyio.Event | None = None


class Worker(GenServer[str, Any, Opts]):
    """A worker that records init/terminate and crashes or stops on request."""

    async def init(self, arg: Opts | None) -> Opts:
        opts = Opts() if arg is None else arg
        generation = self.ref.generation
        if opts.journal is not None:
            opts.journal.entries.append(("init", opts.label, generation))
        if generation in opts.fail_init:
            raise Boom(f"init of {opts.label!r} generation {generation} failed")
        return opts

    async def handle_call(self, request: str, state: Opts) -> tuple[Any, Opts]:
        if request == "ping":
            return "pong", state
        if request == "stop_normal":
            raise Stop("normal", reply="bye")
        raise Boom(f"bad call {request!r}")

    async def handle_cast(self, message: str, state: Opts) -> Opts:
        if message == "crash":
            raise Boom("crash")
        if message == "stop_normal":
            raise Stop("normal")
        if message == "stop_shutdown":
            raise Stop("shutdown")
        return state

    async def terminate(self, reason: ExitReason, state: Opts) -> None:
        if state.journal is not None:
            state.journal.entries.append(("terminate", state.label, self.ref.generation))
        if state.terminate_gate is not None:
            await state.terminate_gate.wait()
        if state.block_terminate:
            await anyio.Event().wait()


def workers(*labels: str, journal: Journal | None = None, **kwargs: Any) -> list[ChildSpec]:
    """One :class:`Worker` child spec per label (``kwargs`` go to each ChildSpec)."""
    return [ChildSpec(label, Worker, arg=Opts(label, journal), **kwargs) for label in labels]


def child_ref(sup: SupervisorRef, child_id: Hashable) -> ServerRef[Any, Any]:
    """The running instance of ``child_id`` (asserted to exist)."""
    ref = sup.child(child_id)
    assert ref is not None, f"{child_id!r} is not running in {sup!r}"
    return ref


def child_sup(sup: SupervisorRef, child_id: Hashable) -> SupervisorRef:
    """The running supervisor child ``child_id``."""
    ref = child_ref(sup, child_id)
    assert isinstance(ref, SupervisorRef)
    return ref


def refs(sup: SupervisorRef) -> dict[Hashable, ServerRef[Any, Any] | None]:
    """Each child id and its current ref (None while not running)."""
    return {info.id: info.ref for info in sup.which_children()}


async def kill_and_wait(ref: ServerRef[Any, Any]) -> ExitReason:
    """Kill ``ref`` and return the reason its DOWN notice carries."""
    async with monitor(ref) as mon:
        await ref.kill()
        return await mon.down()


async def cast_and_wait(ref: ServerRef[Any, Any], message: str = "crash") -> ExitReason:
    """Cast ``message`` (which makes a :class:`Worker` exit) and wait for its DOWN."""
    async with monitor(ref) as mon:
        ref.cast(message)
        return await mon.down()


def drain(
    stream: MemoryObjectReceiveStream[SupervisorEvent],
) -> tuple[list[SupervisorEvent], bool]:
    """Everything buffered in ``stream`` now, and whether the stream has ended."""
    events: list[SupervisorEvent] = []
    while True:
        try:
            events.append(stream.receive_nowait())
        except anyio.WouldBlock:
            return events, False
        except anyio.EndOfStream:
            return events, True


def summary(events: list[SupervisorEvent]) -> list[tuple[Any, ...]]:
    """Events as short tuples, for asserting on their order."""
    out: list[tuple[Any, ...]] = []
    for event in events:
        if isinstance(event, ChildStarted):
            out.append(("started", event.child_id, event.generation))
        elif isinstance(event, ChildExited):
            out.append(("exited", event.child_id, event.restarting))
        elif isinstance(event, ChildTerminated):
            out.append(("terminated", event.child_id))
        elif isinstance(event, ChildStartFailed):
            out.append(("start_failed", event.child_id, event.generation))
        elif isinstance(event, RestartIntensityReached):
            out.append(("intensity", event.max_restarts, event.max_seconds))
    return out


def task_count() -> int:
    """The number of tasks alive in this event loop (the whole trio task tree)."""
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_task():
        count = 0
        stack = [trio.lowlevel.current_root_task()]
        while stack:
            task = stack.pop()
            if task is None:
                continue
            count += 1
            for nursery in task.child_nurseries:
                stack.extend(nursery.child_tasks)
        return count
    return len(asyncio.all_tasks())


def live_threads() -> set[threading.Thread]:
    """Threads alive, minus trio's idle thread-cache workers (guest-mode I/O waits).

    Compare sets, not counts: a thread an earlier test left to end on its own
    may end meanwhile (the count drops with nothing leaked).
    """
    return {t for t in threading.enumerate() if not t.name.startswith("Trio thread")}


def single_leaf(exc: BaseException) -> BaseException:
    """``exc`` itself, or the one exception inside (nested) single-item exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        assert len(exc.exceptions) == 1, f"expected one exception, got {exc!r}"
        exc = exc.exceptions[0]
    return exc


class Subscriptions:
    """Subscribes to supervisors and closes every stream at the end of the test.

    The streams stay open until the supervisors have exited, so the tests read
    every event (test_a_subscriber_may_leave_early covers a reader that leaves).
    """

    def __init__(self) -> None:
        self._streams: list[MemoryObjectReceiveStream[SupervisorEvent]] = []

    def __call__(self, sup: SupervisorRef) -> MemoryObjectReceiveStream[SupervisorEvent]:
        stream = sup.subscribe()
        self._streams.append(stream)
        return stream

    def close(self) -> None:
        for stream in self._streams:
            stream.close()


def gave_up(reason: object) -> bool:
    """True for the exit reason of a supervisor that reached its restart intensity."""
    return isinstance(reason, Shutdown) and isinstance(reason.detail, ReachedMaxRestartIntensity)


def intensity_error(reason: object) -> ReachedMaxRestartIntensity:
    """The ReachedMaxRestartIntensity inside a gave-up supervisor's exit reason."""
    assert isinstance(reason, Shutdown), reason
    assert isinstance(reason.detail, ReachedMaxRestartIntensity), reason
    return reason.detail
