"""Supervisor: starts children in order, restarts them by strategy, stops them in reverse."""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Hashable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from snakepit.errors import (
    ChildNotFound,
    ChildStartError,
    ConfigError,
    DuplicateChild,
    MaxChildrenReached,
    ReachedMaxRestartIntensity,
    ServerExited,
    WaitTimeout,
)

from ._broadcast import Broadcast
from ._events import (
    ChildExited,
    ChildStarted,
    ChildStartFailed,
    ChildTerminated,
    RestartIntensityReached,
    SupervisorEvent,
)
from ._lowlevel import Failure
from ._messages import Stop
from ._reasons import ExitReason, Shutdown, is_abnormal
from ._ref import DEFAULT_TIMEOUT, ServerRef, check_timeout
from ._registry import Registry
from ._server import GenServer, start_server
from ._spec import ChildSpec, ChildType, Restart, Strategy, SupervisorSpec, _check_intensity
from ._task_group import unwrapped_task_group

__all__ = ("ChildCounts", "ChildInfo", "Supervisor", "SupervisorRef")

logger = logging.getLogger("snakepit.otp")


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


@dataclass(frozen=True, slots=True)
class _ChildExit:
    ref: ServerRef[Any, Any]
    reason: ExitReason


class _Child:
    __slots__ = ("generation", "last_exit", "ref", "spec")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.ref: ServerRef[Any, Any] | None = None
        self.generation = 0  # the generation the next start gets
        self.last_exit: ExitReason | None = None

    @property
    def id(self) -> Hashable:
        return self.spec.id


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
        server = self._server
        assert isinstance(server, Supervisor)
        return server

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


class Supervisor(GenServer[Any, Any, None]):
    """Starts children in order, restarts them by strategy, stops them in reverse.

    Start one with ``await Supervisor.start(tg, SupervisorSpec(children=[...]))``,
    or ``async with Supervisor.running(spec) as sup:``; as a child of another
    supervisor, use ``ChildSpec(id, Supervisor, arg=SupervisorSpec(...))``.

    The children run in the supervisor's own task group. A child's exception
    never reaches that task group: the child exits, the supervisor is told and
    applies its strategy (``one_for_one``: restart that child; ``one_for_all``:
    stop the others in reverse order, restart all in order; ``rest_for_one``:
    the same for the children started after it). Every restart counts against
    the restart intensity; when it is exceeded the supervisor stops all
    children and exits with ``Shutdown(ReachedMaxRestartIntensity(...))``
    (OTP: ``shutdown``): a normal exit, so a ``transient`` parent does not
    restart it, with the :class:`~snakepit.errors.ReachedMaxRestartIntensity`
    as its :attr:`~snakepit.otp.Shutdown.detail` (logged as an error).
    A restart whose ``init`` raises counts as one more restart and is retried.
    A child whose ``init`` returns :class:`~snakepit.otp.Ignore` is kept as
    not running (a temporary one is dropped), without error or restart.
    """

    _child_type: Final = "supervisor"
    _ref_class = SupervisorRef
    ref: SupervisorRef
    #: No limit: ``terminate`` stops the children in reverse order, each within
    #: its own ``shutdown``, also when the supervisor is cancelled from outside.
    terminate_timeout: float = math.inf

    def __init__(self) -> None:
        self._children: list[_Child] = []
        self._restarts: deque[float] = deque()
        self._events: Broadcast[SupervisorEvent] = Broadcast()
        self._tg: TaskGroup | None = None
        self._spawned: set[ServerRef[Any, Any]] = set()  # child tasks still running
        self._strategy: Strategy = "one_for_one"
        self._max_restarts = 3
        self._max_seconds = 5.0
        self._registry: Registry | None = None

    @classmethod
    async def start(
        cls,
        tg: TaskGroup,
        arg: Any = None,
        *,
        name: str | None = None,
        registry: Registry | None = None,
    ) -> SupervisorRef:
        """Start a supervisor in ``tg``; return once all its children are started.

        :param arg: its :class:`SupervisorSpec` (a DynamicSupervisorSpec for a
            DynamicSupervisor); None for the defaults and no children.
        :raises ChildStartError: a child's ``init`` raised; the children
            started before it are stopped again.
        """
        ref = await start_server(cls(), tg, arg, name=name, registry=registry)
        assert isinstance(ref, SupervisorRef)
        return ref

    @classmethod
    @asynccontextmanager
    async def running(
        cls,
        arg: Any = None,
        *,
        name: str | None = None,
        registry: Registry | None = None,
    ) -> AsyncIterator[SupervisorRef]:
        """Run a supervisor for an ``async with`` block; its tree is stopped on exit."""
        async with unwrapped_task_group() as tg:
            ref = await cls.start(tg, arg, name=name, registry=registry)
            try:
                yield ref
            finally:
                with anyio.CancelScope(shield=True):
                    await ref.stop("shutdown", timeout=None)

    # -- GenServer callbacks --------------------------------------------------------

    def lifespan(self) -> AbstractAsyncContextManager[object]:
        """Hold the task group the children run in; stop what is left of them at the exit."""
        return self._children_group()

    @asynccontextmanager
    async def _children_group(self) -> AsyncIterator[None]:
        # Children never raise into this group (they catch their own errors), so
        # what leaves it is the supervisor's own exception, unwrapped.
        try:
            async with unwrapped_task_group() as self._tg:
                try:
                    yield
                finally:
                    await self._stop_left_children()
        finally:
            self._events.close()

    async def _stop_left_children(self) -> None:
        # The children do not see our cancellation (see _start): stop those
        # still running (init was cancelled) in order, unless we were killed;
        # then kill whatever is left.
        if not self.ref._killed:
            with anyio.CancelScope(shield=True):
                await self._stop_all()
        for ref in list(self._spawned):
            ref._kill_nowait()

    async def init(self, arg: Any) -> None:
        """Validate the spec and start the children in order."""
        spec = SupervisorSpec() if arg is None else arg
        if not isinstance(spec, SupervisorSpec):
            raise ConfigError("arg", f"a Supervisor takes a SupervisorSpec, got {arg!r}")
        self._configure(spec.strategy, spec.max_restarts, spec.max_seconds, spec.registry)
        self._children = [_Child(c) for c in spec.children]
        for child in list(self._children):
            try:
                ref = await self._start(child)
            except ChildStartError:
                await self._stop_all()
                raise
            if ref.ignored and not self._keeps_stopped(child):
                self._children.remove(child)

    def _configure(
        self, strategy: Strategy, max_restarts: int, max_seconds: float, registry: Registry | None
    ) -> None:
        self._strategy = strategy
        self._max_restarts = max_restarts
        self._max_seconds = max_seconds
        self._registry = registry

    async def handle_call(self, request: Any, state: None) -> tuple[Any, None]:
        """Serve the :class:`SupervisorRef` API; errors go back to the caller."""
        op, arg = request
        try:
            if op == _START:
                return await self._start_new(arg), None
            if op == _TERMINATE:
                await self._terminate_child(arg)
                return None, None
            if op == _SET_MAX_RESTARTS:
                self._max_restarts = arg
                return None, None
            child = self._find(arg)
            if child.ref is not None and child.ref.alive:
                raise ConfigError("child_id", f"{arg!r} is running; terminate_child first")
            if op == _RESTART:
                return await self._start(child), None
            if op == _DELETE:
                self._children.remove(child)
                return None, None
            raise ConfigError("request", f"unknown supervisor request {request!r}")
        except (
            ChildNotFound,
            ChildStartError,
            ConfigError,
            DuplicateChild,
            MaxChildrenReached,
        ) as exc:
            return Failure(exc), None

    async def handle_info(self, message: Any, state: None) -> None:
        """Handle child exits; other messages are logged and ignored."""
        if isinstance(message, _ChildExit):
            await self._child_exited(message.ref, message.reason)
            return None
        await super().handle_info(message, state)
        return None

    async def terminate(self, reason: ExitReason, state: None) -> None:
        """Stop every child, in reverse start order."""
        await self._stop_all()

    # -- internals --------------------------------------------------------------------

    def _emit(self, event: SupervisorEvent) -> None:
        self._events.publish(event)

    def _find(self, key: Hashable | ServerRef[Any, Any]) -> _Child:
        if isinstance(key, ServerRef):
            for child in self._children:
                if child.ref is key:
                    return child
        else:
            for child in self._children:
                if child.id == key:
                    return child
        raise ChildNotFound(key)

    def _on_child_exit(self, ref: ServerRef[Any, Any], reason: ExitReason) -> None:
        # Runs in the dying child's task: only enqueue, the supervisor's task acts.
        self._spawned.discard(ref)
        self.ref.send(_ChildExit(ref, reason))

    async def _start(self, child: _Child) -> ServerRef[Any, Any]:
        spec = child.spec
        generation = child.generation
        child.generation += 1
        assert self._tg is not None
        try:
            ref = await start_server(
                spec.start(),
                self._tg,
                spec.arg,
                name=spec.name,
                registry=self._registry,
                generation=generation,
                link=self._on_child_exit,
            )
        except Exception as exc:
            self._emit(ChildStartFailed(self.ref, spec.id, generation, exc, anyio.current_time()))
            raise ChildStartError(spec.id, exc) from exc
        if ref.ignored:  # OTP: {ok, undefined}, not running, no error
            child.ref = None
            return ref
        child.ref = ref
        if ref.alive and ref._scope is not None:
            # From now on only we stop it (in order, per its shutdown), never a
            # cancellation of our task group. Not before: tg.start() cancels a
            # child that is not started yet and waits for it.
            ref._scope.shield = True
            self._spawned.add(ref)
        self._emit(ChildStarted(self.ref, spec.id, ref, generation, anyio.current_time()))
        return ref

    def _admit(self, spec: ChildSpec) -> None:
        """Raise if ``spec`` may not be added (DynamicSupervisor checks its limit instead)."""
        if any(c.id == spec.id for c in self._children):
            raise DuplicateChild(spec.id)

    def _keeps_stopped(self, child: _Child) -> bool:
        """Whether a child that stopped for good keeps its spec (OTP: all but temporary ones).

        Asked after ``terminate_child`` and after an exit that is not restarted.
        """
        return child.spec.restart != "temporary"

    async def _start_new(self, spec: ChildSpec) -> ServerRef[Any, Any]:
        self._admit(spec)
        if spec.name is not None and self._registry is None:
            raise ConfigError("registry", f"child {spec.id!r} has a name but no registry")
        child = _Child(spec)
        self._children.append(child)
        try:
            ref = await self._start(child)
        except ChildStartError:
            self._children.remove(child)
            raise
        if ref.ignored and not self._keeps_stopped(child):
            self._children.remove(child)
        return ref

    async def _terminate_child(self, key: Hashable | ServerRef[Any, Any]) -> None:
        child = self._find(key)
        await self._stop(child)
        if not self._keeps_stopped(child):
            self._children.remove(child)

    async def _stop(self, child: _Child) -> None:
        ref, child.ref = child.ref, None  # its EXIT, when it comes, is stale
        if ref is None:
            return
        if not ref.alive:  # it died on its own meanwhile: report it with its real reason
            assert ref.exit_reason is not None
            child.last_exit = ref.exit_reason
            self._emit(
                ChildTerminated(self.ref, child.id, ref, ref.exit_reason, anyio.current_time())
            )
            return
        shutdown = child.spec.shutdown
        if shutdown == "brutal_kill":
            await ref.kill()
        else:
            timeout = None if shutdown == "infinity" else shutdown
            assert not isinstance(timeout, str)
            await ref.stop("shutdown", timeout=timeout)
        assert ref.exit_reason is not None
        child.last_exit = ref.exit_reason
        self._emit(ChildTerminated(self.ref, child.id, ref, ref.exit_reason, anyio.current_time()))

    async def _stop_all(self) -> None:
        for child in reversed(self._children):
            await self._stop(child)

    def _add_restart(self) -> bool:
        """Record a restart; False if that exceeds the intensity (OTP's add_restart)."""
        now = anyio.current_time()
        restarts = self._restarts
        restarts.append(now)
        while restarts and restarts[0] < now - self._max_seconds:  # OTP keeps R >= Now - Period
            restarts.popleft()
        return len(restarts) <= self._max_restarts

    def _give_up(self) -> Stop:
        """The Stop that ends the supervisor: ``Shutdown(ReachedMaxRestartIntensity)``."""
        self._emit(
            RestartIntensityReached(
                self.ref, self._max_restarts, self._max_seconds, anyio.current_time()
            )
        )
        error = ReachedMaxRestartIntensity(self.ref, self._max_restarts, self._max_seconds)
        self.log_gave_up(error)
        return Stop(Shutdown(error))

    def restart_counts(self, ref: ServerRef[Any, Any], reason: ExitReason) -> bool:
        """Whether restarting a child that exited with ``reason`` counts towards the intensity.

        Asked when a child exits and its restart type wants it restarted
        (default: True, as in OTP). An uncounted restart is still made, and
        only that one start goes free: if its ``init`` fails, each retry
        counts as usual. Override for exits that are the owner's decision
        rather than a failure (a pool that kills a stuck worker itself).

        :param ref: the instance that exited.
        """
        return True

    def log_gave_up(self, error: ReachedMaxRestartIntensity) -> None:
        """Report that this supervisor reached its restart intensity (default: one ERROR line).

        Override where the owner reports it in its own words (a pool does).
        """
        logger.error("%s; shutting down", error)

    async def _child_exited(self, ref: ServerRef[Any, Any], reason: ExitReason) -> None:
        try:
            child = self._find(ref)
        except ChildNotFound:
            return  # an instance we already stopped or replaced
        child.ref = None
        child.last_exit = reason
        restart = child.spec.restart
        wanted = restart == "permanent" or (restart == "transient" and is_abnormal(reason))
        exceeded = wanted and self.restart_counts(ref, reason) and not self._add_restart()
        restarting = wanted and not exceeded
        self._emit(ChildExited(self.ref, child.id, ref, reason, restarting, anyio.current_time()))
        if exceeded:
            raise self._give_up()
        if not restarting:
            if not self._keeps_stopped(child):
                self._children.remove(child)
            return
        index = self._children.index(child)
        if self._strategy == "one_for_one":
            group = [child]
        elif self._strategy == "one_for_all":
            group = list(self._children)
        else:
            group = self._children[index:]
        for other in reversed(group):
            if other is not child:
                await self._stop(other)
        for other in group:
            if other is not child and other.spec.restart == "temporary":
                self._children.remove(other)
                continue
            await self._restart(other)

    async def _restart(self, child: _Child) -> None:
        while True:
            try:
                await self._start(child)
                if child.ref is None and not self._keeps_stopped(child):  # init said Ignore
                    self._children.remove(child)
                return
            except ChildStartError:
                if not self._add_restart():
                    raise self._give_up() from None
