"""Tracing: trace_supervision (a supervisor's events) and trace_messages (a server's mailbox).

Each records, for an ``async with`` block, what happened in order, and waits
for what is yet to happen by event (a new event or message), never by polling.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from snakepit.otp import (
    DEFAULT_TIMEOUT,
    ChildExited,
    ChildStarted,
    ChildStartFailed,
    ChildTerminated,
    MessageKind,
    RestartIntensityReached,
    ServerRef,
    SupervisorEvent,
    SupervisorRef,
)

from ._common import _deadline, _is_predicate, _name_of, _reason, _sup_label

__all__ = (
    "MessageLog",
    "SupervisionLog",
    "TracedMessage",
    "trace_messages",
    "trace_supervision",
)


#: The kinds of event a :class:`SupervisionLog` query or wait is for.
E = TypeVar("E", ChildStarted, ChildExited, ChildTerminated, ChildStartFailed)


def _short(event: SupervisorEvent) -> tuple[Any, ...]:
    if isinstance(event, ChildStarted):
        return ("started", event.child_id, event.generation)
    if isinstance(event, ChildExited):
        return ("exited", event.child_id, _reason(event.reason), event.restarting)
    if isinstance(event, ChildTerminated):
        return ("terminated", event.child_id, _reason(event.reason))
    if isinstance(event, ChildStartFailed):
        return ("start_failed", event.child_id, event.generation, repr(event.error))
    return ("intensity", event.max_restarts, event.max_seconds)


class SupervisionLog:
    """The events one supervisor published during a :func:`trace_supervision` block.

    Only this supervisor's own events (not those of supervisors below it). The
    queries read every event published so far::

        async with trace_supervision(sup) as log:
            await sup.child("b").kill()
            await log.wait_for(ChildStarted, "b")
        assert log.summary() == [("exited", "b", "killed", True), ("started", "b", 1)]
    """

    def __init__(
        self, sup: SupervisorRef, events: MemoryObjectReceiveStream[SupervisorEvent]
    ) -> None:
        #: The traced supervisor.
        self.supervisor = sup
        self._stream = events
        self._events: list[SupervisorEvent] = []
        self._ended = False

    def __repr__(self) -> str:
        return f"<SupervisionLog of {self.supervisor!r}: {len(self.events)} events>"

    def _drain(self) -> None:
        while not self._ended:
            try:
                self._events.append(self._stream.receive_nowait())
            except anyio.WouldBlock:
                return
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                self._ended = True

    def _close(self) -> None:
        self._drain()
        self._ended = True
        self._stream.close()

    @property
    def events(self) -> list[SupervisorEvent]:
        """Every event so far, in order."""
        self._drain()
        return list(self._events)

    def _of(self, kind: type[E], child_id: Hashable | None) -> list[E]:
        return [
            e
            for e in self.events
            if isinstance(e, kind) and (child_id is None or e.child_id == child_id)
        ]

    def restarts(self, child_id: Hashable | None = None) -> list[ChildStarted]:
        """The restarts (starts with a generation above 0), of one child or all."""
        return [e for e in self._of(ChildStarted, child_id) if e.generation > 0]

    def exits(self, child_id: Hashable | None = None) -> list[ChildExited]:
        """The exits children made on their own (with reasons), of one child or all."""
        return self._of(ChildExited, child_id)

    def terminations(self, child_id: Hashable | None = None) -> list[ChildTerminated]:
        """The children the supervisor stopped (strategy, terminate_child, shutdown)."""
        return self._of(ChildTerminated, child_id)

    def start_failures(self, child_id: Hashable | None = None) -> list[ChildStartFailed]:
        """The (re)starts whose ``init`` raised."""
        return self._of(ChildStartFailed, child_id)

    @property
    def intensity_reached(self) -> RestartIntensityReached | None:
        """The event of the supervisor giving up on restarts, if it did."""
        found = [e for e in self.events if isinstance(e, RestartIntensityReached)]
        return found[0] if found else None

    def summary(self) -> list[tuple[Any, ...]]:
        """The events as short tuples, reasons as text, for ``==`` assertions.

        ``("started", id, gen)``, ``("exited", id, reason, restarting)``,
        ``("terminated", id, reason)``, ``("start_failed", id, gen, error)``,
        ``("intensity", max_restarts, max_seconds)``.
        """
        return [_short(e) for e in self.events]

    async def wait_for(
        self,
        kind: type[E],
        child_id: Hashable | None = None,
        *,
        count: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> E:
        """Wait for ``count`` events of ``kind`` (for ``child_id``); return the last of them.

        Counts the events logged before the call too::

            exit = await log.wait_for(ChildExited, "b")

        :raises AssertionError: not within ``timeout``, or the supervisor exited first.
        """

        def missing(why: str) -> str:
            return (
                f"expected {count} {kind.__name__} event(s) for "
                f"{'any child' if child_id is None else repr(child_id)} from "
                f"{_sup_label(self.supervisor)}; {why}; log: {self.summary()!r}"
            )

        with _deadline(timeout, lambda: missing(f"none within {timeout}s")):
            while True:
                found = self._of(kind, child_id)
                if len(found) >= count:
                    return found[count - 1]
                if self._ended:
                    raise AssertionError(missing(f"the log ended with {len(found)}"))
                try:
                    self._events.append(await self._stream.receive())
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    self._ended = True
        raise AssertionError("unreachable")  # _deadline raised


@asynccontextmanager
async def trace_supervision(sup: SupervisorRef) -> AsyncIterator[SupervisionLog]:
    """Record the supervisor's events (exits with reasons, restarts, intensity) in a block.

    The log keeps what was published until the block ends::

        async with trace_supervision(sup) as log:
            await check_crash_recovery(sup, "b")
        assert [e.generation for e in log.restarts("b")] == [1]
    """
    log = SupervisionLog(sup, sup.subscribe())
    try:
        yield log
    finally:
        log._close()


@dataclass(frozen=True, slots=True)
class TracedMessage:
    """One message a server received, recorded by :func:`trace_messages`.

    ``assert log.messages[0] == TracedMessage("cast", "incr", log.messages[0].at)``.
    """

    #: ``"call"``, ``"cast"`` or ``"info"``: the callback it is for.
    kind: MessageKind
    message: Any
    #: ``anyio.current_time()`` when it was queued.
    at: float


#: Matches any message (the default of :meth:`MessageLog.wait_for`).
_ANY: Any = object()


def _fits(traced: TracedMessage, kind: MessageKind | None, message: Any) -> bool:
    if kind is not None and traced.kind != kind:
        return False
    if message is _ANY:
        return True
    if _is_predicate(message):
        return bool(message(traced.message))
    return bool(traced.message == message)


class MessageLog:
    """The messages one server received during a :func:`trace_messages` block, in order.

    Calls, casts and infos, as they were queued (mailbox order), whether or
    not the server handled them yet; not ``sync()`` nor ``get_state()``::

        async with trace_messages(ref) as log:
            ref.cast("incr")
            await ref.call("get")
        assert log.summary() == [("cast", "incr"), ("call", "get")]
    """

    def __init__(self, ref: ServerRef[Any, Any]) -> None:
        #: The traced server.
        self.server = ref
        self._messages: list[TracedMessage] = []
        self._changed = anyio.Event()
        self._ended = False

    def __repr__(self) -> str:
        return f"<MessageLog of {self.server!r}: {len(self._messages)} messages>"

    def _record(self, kind: MessageKind, message: Any) -> None:
        self._messages.append(TracedMessage(kind, message, anyio.current_time()))
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    @property
    def messages(self) -> list[TracedMessage]:
        """Every message so far, in the order they were queued."""
        return list(self._messages)

    def of(self, kind: MessageKind) -> list[Any]:
        """The messages (payloads only) of one kind: ``log.of("cast") == ["incr"]``."""
        return [m.message for m in self._messages if m.kind == kind]

    def summary(self) -> list[tuple[MessageKind, Any]]:
        """``(kind, message)`` for each message, for ``==`` assertions."""
        return [(m.kind, m.message) for m in self._messages]

    async def wait_for(
        self,
        kind: MessageKind | None = None,
        message: Any = _ANY,
        *,
        count: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> TracedMessage:
        """Wait until ``count`` messages match; return the last of them.

        ``kind`` None matches any kind; ``message`` is compared with ``==``,
        or called when it is a predicate (a callable that is not a class), or
        left out to match any. Counts what was logged before the call too.
        Woken by each new message and by the server's exit::

            await log.wait_for("info", lambda m: m[0] == "tick", count=3)

        :raises AssertionError: not within ``timeout``, the server exited
            first, or the block has ended; the message lists the log.
        """
        what = f"{count} {kind or 'message'}(s)" + (
            "" if message is _ANY else f" matching {_name_of(message)}"
        )

        def missing(why: str) -> str:
            return f"expected {what} to {self.server!r}; {why}; log: {self.summary()!r}"

        with _deadline(timeout, lambda: missing(f"none within {timeout}s")):
            while True:
                found = [m for m in self._messages if _fits(m, kind, message)]
                if len(found) >= count:
                    return found[count - 1]
                if self._ended:
                    raise AssertionError(missing(f"the trace ended with {len(found)}"))
                if not self.server.alive:
                    reason = _reason(self.server.exit_reason)
                    raise AssertionError(missing(f"it exited ({reason}) with {len(found)}"))
                await self._next_change()
        raise AssertionError("unreachable")  # _deadline raised

    async def _next_change(self) -> None:
        """Wait for the next message, the end of the block, or the server's exit."""
        changed = self._changed
        async with anyio.create_task_group() as tg:

            async def on_exit() -> None:
                await self.server.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(on_exit)
            await changed.wait()
            tg.cancel_scope.cancel()


@asynccontextmanager
async def trace_messages(ref: ServerRef[Any, Any]) -> AsyncIterator[MessageLog]:
    """Record the calls, casts and infos the server receives in a block, in order.

    Each is recorded as it is queued (:meth:`ServerRef.add_tracer`), so the
    log is in mailbox order and complete as soon as a ``cast`` returns; a
    supervisor's log shows its children's exits as infos. The log stays
    readable after the block::

        async with trace_messages(ref) as log:
            ref.cast("incr")
            ref.send("tick")
            assert await ref.call("get") == 1
        assert log.summary() == [("cast", "incr"), ("info", "tick"), ("call", "get")]
    """
    log = MessageLog(ref)
    ref.add_tracer(log._record)
    try:
        yield log
    finally:
        ref.remove_tracer(log._record)
        log._ended = True
        log._wake()
