"""GenServer: a task with a mailbox, typed callbacks and an identity."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, cast

import anyio
from anyio.abc import TaskGroup, TaskStatus

from snakepit.errors import ConfigError

from ._lowlevel import current_backend
from ._messages import (
    _CALL,
    _CAST,
    _STATE,
    _STOP,
    _SYNC,
    Continue,
    Ignore,
    NoReply,
    ReplyHandle,
    Stop,
)
from ._reasons import ExitReason, is_abnormal
from ._ref import ExitCallback, ServerRef
from ._task_group import unwrapped_task_group

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = ("GenServer",)

logger = logging.getLogger("snakepit.otp")

Request = TypeVar("Request")
Reply = TypeVar("Reply")
State = TypeVar("State")

# Handle this many messages in a row before yielding to other tasks.
_BURST: Final = 64

# No handle_continue pending.
_NO_CONTINUE: Final = object()


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

    Also as in OTP: a call may be answered later (return :class:`NoReply`,
    answer through :meth:`reply_handle`), a handler may return
    :class:`Continue` to have :meth:`handle_continue` run before the next
    message, and ``init`` may return :class:`Ignore` to not start at all.
    """

    #: Seconds ``terminate`` may take when the server is cancelled from outside.
    terminate_timeout: float = 5.0

    ref: ServerRef[Request, Reply]
    """This instance's ref, set before ``init`` runs."""

    #: The class of the ref :meth:`start` returns: a subclass of
    #: :class:`ServerRef` that gives a server's users a typed API
    #: (:class:`Supervisor` names :class:`SupervisorRef`). Its constructor is
    #: snakepit's, not the subclass's: add methods, not state.
    ref_class: type[ServerRef[Any, Any]] = ServerRef

    # -- callbacks ----------------------------------------------------------------

    async def init(self, arg: Any) -> State | Continue[State] | Ignore:
        """Return the initial state; runs before :meth:`start` returns.

        Or a :class:`Continue` (``handle_continue`` runs first thing after the
        start), or :class:`Ignore` (the server does not start).
        """
        return arg  # type: ignore[no-any-return]

    async def handle_call(
        self, request: Request, state: State
    ) -> tuple[Reply, State | Continue[State]] | NoReply[State]:
        """Handle a :meth:`ServerRef.call`; return ``(reply, new_state)``.

        Or :class:`NoReply` to answer later through :meth:`reply_handle`.
        """
        raise NotImplementedError(f"{type(self).__name__} does not handle calls ({request!r})")

    async def handle_cast(self, message: Any, state: State) -> State | Continue[State]:
        """Handle a :meth:`ServerRef.cast`; return the new state (or a :class:`Continue`)."""
        raise NotImplementedError(f"{type(self).__name__} does not handle casts ({message!r})")

    async def handle_info(self, message: Any, state: State) -> State | Continue[State]:
        """Handle a :meth:`ServerRef.send`; return the new state (default: log and ignore)."""
        logger.warning("%r ignored an unexpected message: %r", self.ref, message)
        return state

    async def handle_continue(self, arg: Any, state: State) -> State | Continue[State]:
        """Do the work a :class:`Continue` asked for, before the next message.

        Return the new state (or another :class:`Continue`). Errors, and
        :class:`Stop`, end the server as from any handler.
        """
        raise NotImplementedError(f"{type(self).__name__} does not handle continues ({arg!r})")

    def reply_handle(self) -> ReplyHandle[Reply]:
        """Return the :class:`ReplyHandle` of the call ``handle_call`` is handling.

        Take it, return :class:`NoReply`, and answer with
        :meth:`ReplyHandle.reply` later. If ``handle_call`` returns a
        ``(reply, state)`` instead, that reply wins and the handle does nothing.

        :raises ConfigError: not called from ``handle_call`` in the server's task.
        """
        ref = self.ref
        slot = ref._current
        if slot is None or ref._backend.current_task() is not ref._task:
            raise ConfigError("reply_handle", "only handle_call, in the server's task, has one")
        return cast("ReplyHandle[Reply]", ReplyHandle._create(ref, slot))

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

    def lifespan(self) -> AbstractAsyncContextManager[object]:
        """Return what wraps the server's whole life: ``init``, its messages, ``terminate``.

        The hook for what a server owns for as long as it runs (default:
        nothing). Entered in the server's task before ``init``; left after
        ``terminate`` (or at once when the server is killed: cancelled, so
        shield what must finish). The usual content is a task group for the
        server's helper tasks, made with :func:`unwrapped_task_group`: a
        helper that raises ends the server with that exception as its exit
        reason (logged with :meth:`log_crash`), as a handler's error does, and
        never the task group the server was started in. Unlike a handler's
        error, ``terminate`` then gets ``"shutdown"`` (the exit reason, which
        monitors and the supervisor see, is still the helper's exception). An exception from
        ``lifespan`` itself before ``init`` ran is raised by :meth:`start`.
        :class:`Supervisor` uses it for the task group of its children: a
        subclass of a supervisor that overrides it must enter ``super().lifespan()``.
        """
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
                async with self.lifespan():
                    initial = await self.init(arg)
                    if isinstance(initial, Ignore):
                        # OTP: start returns ignore; the process exits normally.
                        reason = "normal"
                        ref._ignored = True
                        ref._exit(reason)  # dead before start() returns
                        task_status.started(ref)
                        started = True
                        return
                    pending: Any = _NO_CONTINUE
                    state: State
                    if isinstance(initial, Continue):
                        state, pending = initial.state, initial.arg
                    else:
                        state = initial
                    task_status.started(ref)
                    started = True
                    reason = await self._loop(ref, state, cancelled, pending)
        except cancelled:
            reason = "killed" if ref._killed else "shutdown"
            raise
        except Exception as exc:
            reason = exc
            if not started:
                raise  # init's error: start() raises it
            # A helper task of the server failed (its lifespan group): that ends
            # the server, as a handler's error does, never its owner's task group.
            self.log_crash(exc)
        except BaseException as exc:
            reason = exc
            raise
        finally:
            ref._exit(reason)

    async def _loop(
        self,
        ref: ServerRef[Request, Reply],
        state: State,
        cancelled: type[BaseException],
        pending: Any = _NO_CONTINUE,
    ) -> ExitReason:
        mailbox = ref._mailbox
        popleft = mailbox.popleft
        park = ref._parker.park
        handle_call = self.handle_call
        handle_cast = self.handle_cast
        burst = 0
        reason: ExitReason
        new: Any
        try:
            while True:
                try:
                    if pending is not _NO_CONTINUE:
                        arg, pending = pending, _NO_CONTINUE
                        new = await self.handle_continue(arg, state)
                    else:
                        if not mailbox:
                            burst = 0
                            ref._idle = True
                            await park()
                            ref._idle = False
                            continue
                        tag, payload, slot = popleft()
                        if tag == _CALL:
                            assert slot is not None
                            ref._current = slot
                            result = await handle_call(payload, state)
                            ref._current = None
                            if type(result) is not tuple and isinstance(result, NoReply):
                                ref._defer(slot)
                                new = result.state
                            else:
                                reply, new = result
                                slot.set(reply)
                        elif tag == _CAST:
                            new = await handle_cast(payload, state)
                        elif tag == _SYNC:
                            assert slot is not None
                            slot.set(None)
                            new = state
                        elif tag == _STATE:
                            assert slot is not None
                            slot.set(state)
                            new = state
                        elif tag == _STOP:
                            reason = payload
                            break
                        else:
                            new = await self.handle_info(payload, state)
                    if isinstance(new, Continue):
                        state, pending = new.state, new.arg
                    else:
                        state = new
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
    ref: ServerRef[Request, Reply] = server.ref_class._create(
        server, current_backend(), name=name, generation=generation
    )
    server.ref = ref
    if registry is not None and name is not None:
        registry.register(name, ref)
    if link is not None:
        ref.link(link)
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
