"""SupervisorRef: the supervisor API a caller holds, and the rows it answers with."""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from snakepit.errors import ConfigError, ServerExited, WaitTimeout

from ._events import SupervisorEvent
from ._reasons import ExitReason
from ._ref import DEFAULT_TIMEOUT, ServerRef, check_timeout
from ._spec import ChildSpec, ChildType, Restart, Strategy, _check_intensity

if TYPE_CHECKING:
    from ._supervisor import Supervisor

__all__ = ("ChildCounts", "ChildInfo", "SupervisorRef")


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """One row of :meth:`SupervisorRef.which_children`."""

    id: Hashable
    #: The current instance, or None while not running.
    ref: ServerRef[Any, Any] | None
    type: ChildType
    restart: Restart
    #: Generation of the current (or last) instance; -1 if never started.
    generation: int
    #: Why the child's last instance to exit did (on its own, or stopped by the
    #: supervisor); None while none has. For a running child: its predecessor's.
    last_exit: ExitReason | None = None

    @property
    def alive(self) -> bool:
        """True if the child is running now."""
        return self.ref is not None and self.ref.alive


@dataclass(frozen=True, slots=True)
class ChildCounts:
    """:meth:`SupervisorRef.count_children`, as OTP counts them."""

    specs: int
    active: int
    supervisors: int
    workers: int


# Requests a SupervisorRef sends to its supervisor's handle_call.
_START: Final = "start_child"
_TERMINATE: Final = "terminate_child"
_RESTART: Final = "restart_child"
_DELETE: Final = "delete_child"
_SET_MAX_RESTARTS: Final = "set_max_restarts"


class SupervisorRef(ServerRef[Any, Any]):
    """The ref of a running :class:`Supervisor`, with the supervisor API.

    The read-only methods (:meth:`which_children`, :meth:`count_children`,
    :meth:`child`) read the supervisor's current view at once; the changing
    ones go through its mailbox, in order with the exits it is handling.
    """

    __slots__ = ()

    @property
    def _sup(self) -> Supervisor:
        # Only a Supervisor makes a SupervisorRef (its ref_class).
        return cast("Supervisor", self._server)

    @property
    def strategy(self) -> Strategy:
        """``"one_for_one"``, ``"one_for_all"`` or ``"rest_for_one"``."""
        return self._sup._strategy

    def which_children(self) -> list[ChildInfo]:
        """The children in start order, with their current refs and generations."""
        return [
            ChildInfo(
                c.id,
                c.ref if c.ref is not None and c.ref.alive else None,
                c.spec.type or "worker",
                c.spec.restart,
                c.generation - 1,
                c.last_exit,
            )
            for c in self._sup._children
        ]

    def count_children(self) -> ChildCounts:
        """Counts of specs, running children, supervisors and workers."""
        children = self._sup._children
        sups = sum(1 for c in children if c.spec.type == "supervisor")
        active = sum(1 for c in children if c.ref is not None and c.ref.alive)
        return ChildCounts(len(children), active, sups, len(children) - sups)

    def child(self, child_id: Hashable) -> ServerRef[Any, Any] | None:
        """The running instance of ``child_id``, or None.

        :raises ChildNotFound: no child has that id.
        """
        ref = self._sup._find(child_id).ref
        return ref if ref is not None and ref.alive else None

    async def start_child(
        self, spec: ChildSpec, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> ServerRef[Any, Any]:
        """Add ``spec`` as the last child and start it; return its ref.

        If its ``init`` returned :class:`~snakepit.otp.Ignore`, the returned
        ref is not alive (``ref.ignored``); the spec is kept as not running
        (not for a temporary child, nor in a DynamicSupervisor).

        :raises DuplicateChild: a child with that id exists (Supervisor).
        :raises MaxChildrenReached: the DynamicSupervisor is full.
        :raises ChildStartError: its ``init`` raised (the spec is not kept).
        """
        if not isinstance(spec, ChildSpec):
            raise ConfigError("spec", f"expected a ChildSpec, got {spec!r}")
        ref: ServerRef[Any, Any] = await self.call((_START, spec), timeout=timeout)
        return ref

    async def terminate_child(
        self, child: Hashable | ServerRef[Any, Any], *, timeout: float | None = None
    ) -> None:
        """Stop a child (by id or ref) per its ``shutdown``; it is not restarted.

        A temporary child, and every child of a DynamicSupervisor, is also removed.

        :raises ChildNotFound: no such child.
        """
        await self.call((_TERMINATE, child), timeout=timeout)

    async def restart_child(
        self, child_id: Hashable, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> ServerRef[Any, Any]:
        """Start a terminated child again (new generation) and return its ref.

        The ref is not alive if its ``init`` returned :class:`~snakepit.otp.Ignore`.

        :raises ChildNotFound: no such child.
        :raises ConfigError: the child is running.
        :raises ChildStartError: its ``init`` raised.
        """
        ref: ServerRef[Any, Any] = await self.call((_RESTART, child_id), timeout=timeout)
        return ref

    async def delete_child(
        self, child_id: Hashable, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> None:
        """Remove a terminated child's spec.

        :raises ChildNotFound: no such child.
        :raises ConfigError: the child is running.
        """
        await self.call((_DELETE, child_id), timeout=timeout)

    async def set_max_restarts(
        self, max_restarts: int, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> None:
        """Change the supervisor's ``max_restarts`` from now on (``max_seconds`` stays).

        Taken in mailbox order, after the exits queued before it. The
        restarts already made still count; if they are now more than
        ``max_restarts``, the next counted restart exceeds the intensity.

        :raises ConfigError: ``max_restarts`` is not an int >= 0.
        :raises CallTimeout, ServerExited: as :meth:`ServerRef.call`.
        """
        _check_intensity(max_restarts, 1.0)  # max_seconds: any valid value
        await self.call((_SET_MAX_RESTARTS, max_restarts), timeout=timeout)

    async def wait_stable(self, *, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Wait until this supervisor and every supervisor below it are stable.

        Stable means: the supervisor waits on an empty mailbox (every exit it
        was told of is handled, restarts done), no child is on its way out
        (crashed or stopping but not yet reported), and each child supervisor
        is stable too. Event-driven: each round waits on a :meth:`sync` through
        the mailbox or on a dying child's exit; nothing polls.

        :raises WaitTimeout: not stable after ``timeout`` seconds.
        :raises ServerExited: this supervisor exited (e.g. restart intensity).
        """
        check_timeout(timeout)
        with anyio.move_on_after(timeout if timeout is not None else math.inf):
            while not await self._settle():
                pass
            return
        raise WaitTimeout(f"{self!r} was not stable within {timeout}s", timeout=timeout)

    async def _settle(self) -> bool:
        """Do one round of :meth:`wait_stable`; True if nothing was pending."""
        await self.sync(timeout=None)
        for child in self._sup._children:
            ref = child.ref
            if ref is None:
                continue
            if ref.exiting:
                await ref.wait()  # its exit is posted to us before wait() returns
                return False
            if isinstance(ref, SupervisorRef):
                try:
                    if not await ref._settle():
                        return False
                except ServerExited:
                    return False
        return self.idle

    def subscribe(self) -> MemoryObjectReceiveStream[SupervisorEvent]:
        """Return a stream of this supervisor's events from now on.

        Unbounded, so the supervisor never waits for a slow reader; it ends
        when the supervisor exits. Close it (``async with``) when done.
        """
        if not self._alive:
            self._sup._events.close()  # exited (or never ran): an ended stream
        return self._sup._events.subscribe()
