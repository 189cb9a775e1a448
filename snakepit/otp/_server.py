"""GenServer: a task with a mailbox, typed callbacks and an identity."""

from __future__ import annotations

import itertools
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeAlias, TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus

from snakepit.errors import CallTimeout, ConfigError, ServerExited

from ._lowlevel import TIMED_OUT, Backend, Failure, Slot, current_backend
from ._reasons import ExitReason, is_abnormal

if TYPE_CHECKING:
    from ._monitor import Monitor
    from ._registry import Registry

__all__ = (
    "DEFAULT_TIMEOUT",
    "GenServer",
    "MailboxStats",
    "MessageKind",
    "MessageTracer",
    "ServerRef",
    "Stop",
)

logger = logging.getLogger("snakepit.otp")

Request = TypeVar("Request")
Reply = TypeVar("Reply")
State = TypeVar("State")

#: The default ``timeout`` of :meth:`ServerRef.call`, in seconds (OTP's 5 s).
DEFAULT_TIMEOUT: Final = 5.0

# Mailbox message tags. A message is a tuple (tag, payload, slot-or-None).
_CALL: Final = 0
_CAST: Final = 1
_INFO: Final = 2
_SYNC: Final = 3
_STATE: Final = 4
# Handle this many messages in a row before yielding to other tasks.
_BURST: Final = 64

_ids = itertools.count(1)

#: Called with (ref, reason) when a server exits, before monitors fire.
ExitCallback = Callable[["ServerRef[Any, Any]", ExitReason], None]

#: Which callback a traced message is for: ``handle_call``, ``handle_cast``, ``handle_info``.
MessageKind: TypeAlias = Literal["call", "cast", "info"]
#: Called with ``(kind, message)`` for each message queued to a traced server
#: (see :meth:`ServerRef.add_tracer`).
MessageTracer: TypeAlias = Callable[[MessageKind, Any], None]
_KINDS: Final[tuple[MessageKind, ...]] = ("call", "cast", "info")  # by tag


def check_timeout(timeout: float | None, field: str = "timeout") -> None:
    """Raise :class:`ConfigError` unless ``timeout`` is None or a number >= 0."""
    if timeout is not None and not timeout >= 0:  # also rejects NaN
        raise ConfigError(field, f"must be None or >= 0, got {timeout!r}")


@dataclass(frozen=True, slots=True)
class MailboxStats:
    """A snapshot of a server's mailbox, exact (counted on every enqueue)."""

    #: Messages waiting now.
    queued: int
    #: The most messages ever waiting at once.
    high_water: int
    #: Messages enqueued since the server started.
    received: int


class Stop(Exception):
    """Raise from a handler to stop the server with ``reason``.

    ``terminate(reason, state)`` runs next. From ``handle_call``, ``reply`` is
    sent to the caller first; ``state`` (when given) replaces the current state.
    """

    _UNSET: Final = object()

    def __init__(
        self, reason: ExitReason = "normal", *, reply: Any = None, state: Any = _UNSET
    ) -> None:
        super().__init__(reason)
        #: The exit reason.
        self.reason: ExitReason = reason
        #: What ``handle_call`` replies before stopping.
        self.reply = reply
        #: The state handed to ``terminate`` (the current one if unset).
        self.state = state


class ServerRef(Generic[Request, Reply]):
    """The identity of one started server instance, and the way to talk to it.

    A restarted child gets a new ref with a higher :attr:`generation`; the old
    ref stays dead, so "the same child" and "its replacement" never compare
    equal. Refs compare by identity.

    Every method must be called from the event loop that runs the server.
    """

    __slots__ = (
        "_alive",
        "_backend",
        "_current",
        "_done",
        "_exit_reason",
        "_exiting",
        "_high_water",
        "_idle",
        "_killed",
        "_links",
        "_mailbox",
        "_monitors",
        "_parker",
        "_received",
        "_scope",
        "_server",
        "_started",
        "_stop_reason",
        "_task",
        "_tracers",
        "generation",
        "id",
        "name",
    )

    def __init__(
        self,
        server: GenServer[Request, Reply, Any],
        backend: Backend,
        *,
        name: str | None = None,
        generation: int = 0,
    ) -> None:
        #: A number unique to this instance in this interpreter.
        self.id: int = next(_ids)
        #: The registered name (or label), if any.
        self.name = name
        #: 0 for a first start, +1 for each restart of the same child.
        self.generation = generation
        self._server = server
        self._backend = backend
        self._mailbox: deque[tuple[int, Any, Slot | None]] = deque()
        self._parker = backend.new_parker()
        self._high_water = 0
        self._received = 0
        self._alive = True
        self._started = False
        self._killed = False
        self._exiting = False  # left its loop: terminate runs, the exit follows
        self._idle = False  # parked on an empty mailbox
        self._exit_reason: ExitReason | None = None
        self._stop_reason: ExitReason | None = None
        self._current: Slot | None = None
        self._links: list[ExitCallback] = []
        self._monitors: list[Monitor] = []
        self._done = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self._task: object = None  # the server's task, once it runs
        self._tracers: list[MessageTracer] | None = None

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name is not None else ""
        state = "alive" if self._alive else f"dead: {self._exit_reason!r}"
        return f"<{type(self._server).__name__}#{self.id}{label} gen={self.generation} {state}>"

    # -- identity -------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """True from a successful start until the server exits."""
        return self._alive

    @property
    def exit_reason(self) -> ExitReason | None:
        """Why the server exited, or None while it is alive."""
        return self._exit_reason

    @property
    def exiting(self) -> bool:
        """True once the server is on its way out (stopping, crashed, killed) or dead."""
        return self._exiting or self._killed or not self._alive

    @property
    def idle(self) -> bool:
        """True while the server waits on an empty mailbox (handles nothing)."""
        return self._idle and self._alive and not self._mailbox

    @property
    def server(self) -> GenServer[Request, Reply, Any]:
        """The :class:`GenServer` instance this ref runs (for introspection)."""
        return self._server

    # -- messages ---------------------------------------------------------------

    def _post(self, tag: int, payload: Any, slot: Slot | None) -> None:
        mailbox = self._mailbox
        mailbox.append((tag, payload, slot))
        self._received += 1
        n = len(mailbox)
        if n > self._high_water:
            self._high_water = n
        if n == 1:
            self._parker.unpark()
        if self._tracers is not None and tag <= _INFO:
            self._trace(_KINDS[tag], payload)

    def _trace(self, kind: MessageKind, message: Any) -> None:
        for tracer in list(self._tracers or ()):  # a copy: a tracer may remove itself
            try:
                tracer(kind, message)
            except Exception:  # a broken tracer must not break the sender
                logger.exception("%r: a message tracer raised", self)

    async def _request(self, tag: int, payload: Any, timeout: float | None) -> Any:
        if not self._alive:
            raise self._exited()
        if self._backend.current_task() is self._task:
            # It would wait on its own mailbox forever (OTP: calling_self).
            raise ConfigError("server", f"{self!r} cannot call itself from its own task")
        if timeout is not None and not timeout >= 0:
            check_timeout(timeout)
        slot = self._backend.new_slot()
        self._post(tag, payload, slot)
        result = await slot.wait(timeout)
        if type(result) is Failure:
            raise result.exc
        if result is TIMED_OUT:
            raise CallTimeout(f"{self!r} did not reply within {timeout:g}s")
        return result

    async def call(self, request: Request, *, timeout: float | None = DEFAULT_TIMEOUT) -> Reply:
        """Send ``request`` to ``handle_call`` and wait for the reply.

        :param timeout: seconds to wait (None waits forever). A reply that comes
            later is dropped; it never reaches another call.
        :raises CallTimeout: no reply within ``timeout``.
        :raises ServerExited: the server was dead, or died before replying
            (the caller is woken at once with the exit reason).
        :raises ConfigError: ``timeout`` is negative.
        """
        result: Reply = await self._request(_CALL, request, timeout)
        return result

    def cast(self, message: Any) -> None:
        """Queue ``message`` for ``handle_cast`` and return at once.

        Never blocks and never waits for the server's work. As in OTP, a cast to
        a dead server is dropped silently.
        """
        if self._alive:
            self._post(_CAST, message, None)

    def send(self, message: Any) -> None:
        """Queue ``message`` for ``handle_info`` (OTP's plain send); dropped if dead."""
        if self._alive:
            self._post(_INFO, message, None)

    async def sync(self, *, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Return once every message queued before this one has been handled.

        The building block of deterministic tests: ``ref.cast(m); await ref.sync()``.

        :raises CallTimeout, ServerExited: as :meth:`call`.
        """
        await self._request(_SYNC, None, timeout)

    async def get_state(self, *, timeout: float | None = DEFAULT_TIMEOUT) -> Any:
        """Return the server's state, read in mailbox order (after earlier messages).

        :raises CallTimeout, ServerExited: as :meth:`call`.
        """
        return await self._request(_STATE, None, timeout)

    def link(self, callback: ExitCallback) -> None:
        """Call ``callback(ref, reason)`` when the server exits (at once if it has).

        Runs synchronously in the exiting server's task, before monitors fire:
        keep it short and non-blocking (set a flag, queue a message).
        """
        if self._alive:
            self._links.append(callback)
        else:
            assert self._exit_reason is not None
            callback(self, self._exit_reason)

    def add_tracer(self, tracer: MessageTracer) -> None:
        """Call ``tracer(kind, message)`` for each message queued to the server from now on.

        ``kind`` is ``"call"``, ``"cast"`` or ``"info"`` (a :meth:`send`, a
        child exit told to a supervisor...). The tracer runs synchronously in
        the sender's task as the message is queued, before the server handles
        it, so the trace is in mailbox order; it must not block. :meth:`sync`
        and :meth:`get_state` reach no callback of the server and are not
        traced, nor is a message to a dead server (dropped). An exception
        from a tracer is logged, never raised to the sender. For tests
        (``snakepit.testing.trace_messages``) and debugging.
        """
        if self._tracers is None:
            self._tracers = []
        self._tracers.append(tracer)

    def remove_tracer(self, tracer: MessageTracer) -> None:
        """Stop calling ``tracer`` (added by :meth:`add_tracer`); nothing if it is not there."""
        tracers = self._tracers
        if tracers is not None and tracer in tracers:
            tracers.remove(tracer)
            if not tracers:
                self._tracers = None  # back to the untraced fast path

    def mailbox_stats(self) -> MailboxStats:
        """Return exact mailbox counters (queued now, high-water mark, received)."""
        return MailboxStats(len(self._mailbox), self._high_water, self._received)

    # -- lifecycle --------------------------------------------------------------

    async def stop(
        self, reason: ExitReason = "normal", *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> None:
        """Stop the server gracefully and wait until it has exited.

        The server finishes the message it is handling, skips the rest of its
        mailbox (pending callers get :class:`ServerExited`), runs
        ``terminate(reason, state)`` and exits. If that takes longer than
        ``timeout`` seconds, it is killed. Stopping a dead server does nothing.

        :raises ConfigError: called from the server's own task (raise
            :class:`Stop` in a handler instead), or ``timeout`` is negative.
        """
        check_timeout(timeout)
        if not self._alive:
            return
        self._check_not_self("stop")
        if self._stop_reason is None:
            self._stop_reason = reason
            self._parker.unpark()
        with anyio.move_on_after(timeout if timeout is not None else float("inf")):
            await self._done.wait()
        if self._alive:
            await self.kill()

    async def kill(self) -> None:
        """Kill the server now: no ``terminate``, exit reason ``"killed"``.

        When this returns the server is dead, its pending callers have
        :class:`ServerExited`, and links and monitors have been notified.
        Called from the server's own task, it takes effect at the next checkpoint.
        """
        if not self._alive:
            return
        was_cancelled = anyio.current_effective_deadline() == -math.inf
        self._kill_nowait()
        if self._backend.current_task() is self._task:
            return
        if not was_cancelled and anyio.current_effective_deadline() == -math.inf:
            # The kill cancelled us too: we run inside the server (a helper task it
            # waits for), so it can only finish after we return. Don't wait for it.
            return
        with anyio.CancelScope(shield=True):
            await self._done.wait()

    async def wait(self) -> ExitReason:
        """Wait until the server has exited and return its exit reason."""
        await self._done.wait()
        assert self._exit_reason is not None
        return self._exit_reason

    def _kill_nowait(self) -> None:
        self._killed = True
        if self._scope is not None:
            self._scope.cancel()  # not yet running: _run cancels it on entry

    def _check_not_self(self, what: str) -> None:
        if self._backend.current_task() is self._task:
            raise ConfigError(
                what, f"{self!r} cannot {what} itself this way; raise Stop(...) in a handler"
            )

    def _exited(self) -> ServerExited:
        reason = self._exit_reason if self._exit_reason is not None else "normal"
        err = ServerExited(self, reason)
        if isinstance(reason, BaseException):
            err.__cause__ = reason
        return err

    def _exit(self, reason: ExitReason) -> None:
        """Mark the server dead and tell everyone waiting on it (in this order)."""
        if not self._alive:
            return
        self._alive = False
        self._exit_reason = reason
        # One ServerExited per caller: raising a shared instance in many tasks
        # would pile every caller's frames onto its __traceback__.
        if self._current is not None:
            self._current.set(Failure(self._exited()))
            self._current = None
        mailbox = self._mailbox
        while mailbox:
            slot = mailbox.popleft()[2]
            if slot is not None:
                slot.set(Failure(self._exited()))
        try:
            for link in self._links:
                try:
                    link(self, reason)
                except Exception:  # a broken callback must not break the exit
                    logger.exception("%r: a link callback raised", self)
            for mon in self._monitors:
                mon._fire(reason)
            self._monitors.clear()
        finally:
            self._done.set()


class GenServer(Generic[Request, Reply, State]):
    """A server: one task that handles its mailbox's messages one at a time.

    Subclass it and override the callbacks you need::

        class Counter(GenServer[str, int, int]):
            async def init(self, start: int) -> int:
                return start

            async def handle_call(self, request: str, state: int) -> tuple[int, int]:
                return state, state  # (reply, new state)

            async def handle_cast(self, message: Any, state: int) -> int:
                return state + 1

        async with anyio.create_task_group() as tg:
            ref = await Counter.start(tg, 0)
            ref.cast("incr")
            assert await ref.call("get") == 1

    Semantics (OTP's): ``init`` finishes before :meth:`start` returns, and its
    exception is raised by :meth:`start`. A handler's exception ends the server
    with that exception as exit reason (logged, ``terminate`` called); it never
    reaches the task group, so siblings are not cancelled. Cancellation from
    outside (the owner's task group is cancelled) is a ``"shutdown"``:
    ``terminate`` runs shielded, for at most :attr:`terminate_timeout` seconds.
    """

    #: Seconds ``terminate`` may take when the server is cancelled from outside.
    terminate_timeout: float = 5.0

    ref: ServerRef[Request, Reply]
    """This instance's ref, set before ``init`` runs."""

    _ref_class: type[ServerRef[Any, Any]] = ServerRef

    # -- callbacks ----------------------------------------------------------------

    async def init(self, arg: Any) -> State:
        """Return the initial state; runs before :meth:`start` returns."""
        return arg  # type: ignore[no-any-return]

    async def handle_call(self, request: Request, state: State) -> tuple[Reply, State]:
        """Handle a :meth:`ServerRef.call`; return ``(reply, new_state)``."""
        raise NotImplementedError(f"{type(self).__name__} does not handle calls ({request!r})")

    async def handle_cast(self, message: Any, state: State) -> State:
        """Handle a :meth:`ServerRef.cast`; return the new state."""
        raise NotImplementedError(f"{type(self).__name__} does not handle casts ({message!r})")

    async def handle_info(self, message: Any, state: State) -> State:
        """Handle a :meth:`ServerRef.send`; return the new state (default: log and ignore)."""
        logger.warning("%r ignored an unexpected message: %r", self.ref, message)
        return state

    async def terminate(self, reason: ExitReason, state: State) -> None:
        """Clean up before exit; not called after :meth:`ServerRef.kill`."""

    def log_crash(self, reason: ExitReason) -> None:
        """Report an abnormal exit (default: an ERROR record with the traceback).

        Override to report an expected kind of exit more quietly.
        """
        logger.error("%r crashed", self.ref, exc_info=_exc_info(reason))

    # -- starting -------------------------------------------------------------------

    @classmethod
    async def start(
        cls: type[GenServer[Request, Reply, State]],
        tg: TaskGroup,
        arg: Any = None,
        *,
        name: str | None = None,
        registry: Registry | None = None,
    ) -> ServerRef[Request, Reply]:
        """Start a server in ``tg``; return its ref once ``init`` has finished.

        :param arg: passed to ``init``.
        :param name: a label shown in the ref; registered in ``registry`` when given.
        :raises NameTaken: ``name`` is held by a live server in ``registry``.
        :raises Exception: whatever ``init`` raised.
        """
        return await start_server(cls(), tg, arg, name=name, registry=registry)

    @classmethod
    @asynccontextmanager
    async def running(
        cls: type[GenServer[Request, Reply, State]],
        arg: Any = None,
        *,
        name: str | None = None,
        registry: Registry | None = None,
    ) -> AsyncIterator[ServerRef[Request, Reply]]:
        """Run a server for the duration of an ``async with`` block (own task group).

        On exit the server is stopped with reason ``"shutdown"``.
        """
        async with unwrapped_task_group() as tg:
            ref = await start_server(cls(), tg, arg, name=name, registry=registry)
            try:
                yield ref
            finally:
                with anyio.CancelScope(shield=True):
                    await ref.stop("shutdown")

    # -- the task -------------------------------------------------------------------

    def _lifespan(self) -> AbstractAsyncContextManager[object]:
        """What wraps ``init``, the loop and ``terminate`` (a supervisor's task group)."""
        return nullcontext()

    async def _run(
        self,
        ref: ServerRef[Request, Reply],
        arg: Any,
        *,
        task_status: TaskStatus[ServerRef[Request, Reply]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        cancelled = anyio.get_cancelled_exc_class()
        reason: ExitReason = "killed"
        started = False
        ref._task = ref._backend.current_task()
        try:
            with anyio.CancelScope() as scope:
                ref._scope = scope
                if ref._killed:  # kill() came before this task ran
                    scope.cancel()
                async with self._lifespan():
                    state = await self.init(arg)
                    task_status.started(ref)
                    started = True
                    reason = await self._loop(ref, state, cancelled)
        except cancelled:
            reason = "killed" if ref._killed else "shutdown"
            raise
        except Exception as exc:
            reason = exc
            if not started:
                raise  # init's error: start() raises it
            # A helper task of the server failed (its _lifespan group): that ends
            # the server, as a handler's error does, never its owner's task group.
            self.log_crash(exc)
        except BaseException as exc:
            reason = exc
            raise
        finally:
            ref._exit(reason)

    async def _loop(
        self, ref: ServerRef[Request, Reply], state: State, cancelled: type[BaseException]
    ) -> ExitReason:
        mailbox = ref._mailbox
        popleft = mailbox.popleft
        park = ref._parker.park
        handle_call = self.handle_call
        handle_cast = self.handle_cast
        burst = 0
        reason: ExitReason
        try:
            while True:
                if ref._stop_reason is not None:
                    reason = ref._stop_reason
                    break
                if not mailbox:
                    burst = 0
                    ref._idle = True
                    await park()
                    ref._idle = False
                    continue
                tag, payload, slot = popleft()
                try:
                    if tag == _CALL:
                        assert slot is not None
                        ref._current = slot
                        reply, state = await handle_call(payload, state)
                        ref._current = None
                        slot.set(reply)
                    elif tag == _CAST:
                        state = await handle_cast(payload, state)
                    elif tag == _SYNC:
                        assert slot is not None
                        slot.set(None)
                    elif tag == _STATE:
                        assert slot is not None
                        slot.set(state)
                    else:
                        state = await self.handle_info(payload, state)
                except Stop as stop:
                    if ref._current is not None:
                        ref._current.set(stop.reply)
                        ref._current = None
                    if stop.state is not Stop._UNSET:
                        state = stop.state
                    reason = stop.reason
                    break
                except Exception as exc:
                    reason = exc
                    break
                burst += 1
                if burst >= _BURST:
                    burst = 0
                    await anyio.lowlevel.checkpoint()
        except cancelled:
            ref._exiting = True
            ref._idle = False
            if not ref._killed:
                with anyio.CancelScope(shield=True), anyio.move_on_after(self.terminate_timeout):
                    await self._terminate(ref, "shutdown", state)
            raise
        ref._exiting = True
        await self._terminate(ref, reason, state)
        return reason

    async def _terminate(
        self, ref: ServerRef[Request, Reply], reason: ExitReason, state: State
    ) -> None:
        if is_abnormal(reason):
            self.log_crash(reason)
        try:
            await self.terminate(reason, state)
        except Exception:
            logger.exception("%r: terminate() raised", ref)


@asynccontextmanager
async def unwrapped_task_group() -> AsyncIterator[TaskGroup]:
    """A task group whose one exception comes out as itself, not in an ExceptionGroup.

    For groups whose tasks never raise (servers catch their own errors): the
    only exception that can leave is the body's, and callers of ``running()``
    and ``start()`` are promised that exception, plain.
    """
    own: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg:
            yield tg
    except BaseExceptionGroup as group:
        # trio reports the Cancelled of children that died in a cancellation next
        # to the body's own error; the error is what leaves (anyio drops those
        # Cancelled on asyncio). Kept, they make a BaseExceptionGroup that no
        # `except Exception` catches and that crosses supervisors.
        _, errors = group.split(anyio.get_cancelled_exc_class())
        if errors is None or len(errors.exceptions) != 1:
            raise
        own = errors.exceptions[0]
    if own is not None:
        raise own


def _exc_info(reason: ExitReason) -> BaseException | None:
    return reason if isinstance(reason, BaseException) else None


async def start_server(
    server: GenServer[Request, Reply, Any],
    tg: TaskGroup,
    arg: Any,
    *,
    name: str | None = None,
    registry: Registry | None = None,
    generation: int = 0,
    link: ExitCallback | None = None,
) -> ServerRef[Request, Reply]:
    """Start ``server`` in ``tg`` (the one place every start goes through)."""
    ref: ServerRef[Request, Reply] = server._ref_class(
        server, current_backend(), name=name, generation=generation
    )
    server.ref = ref
    if registry is not None and name is not None:
        registry.register(name, ref)
    if link is not None:
        ref._links.append(link)
    try:
        started: ServerRef[Request, Reply] = await tg.start(server._run, ref, arg)
    except BaseException as exc:
        if ref.alive:  # it never ran (an inactive task group): release its name
            ref._exit(exc)
            raise
        if ref.exit_reason is exc:  # init raised it: the caller gets it as is
            raise
        if isinstance(exc, RuntimeError):
            # "exited without calling task_status.started()": killed or stopped in init
            raise ref._exited() from None
        raise
    ref._started = True  # only now has the starter got the ref
    if registry is not None and name is not None and ref.alive:
        registry._announce(name)
    return started
