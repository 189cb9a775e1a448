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

from snakepit.errors import (
    ChildNotFound,
    ChildStartError,
    ConfigError,
    DuplicateChild,
    MaxChildrenReached,
    ReachedMaxRestartIntensity,
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
from ._ref import ServerRef
from ._registry import Registry
from ._server import GenServer, start_server
from ._spec import ChildSpec, Strategy, SupervisorSpec
from ._supervisor_ref import (
    _DELETE,
    _RESTART,
    _SET_MAX_RESTARTS,
    _START,
    _TERMINATE,
    SupervisorRef,
)
from ._task_group import unwrapped_task_group

__all__ = ("Supervisor",)

logger = logging.getLogger("snakepit.otp")


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
    ref_class = SupervisorRef
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
