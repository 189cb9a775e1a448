"""GenServer: a task with a mailbox, typed callbacks and an identity."""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeAlias, TypeVar, cast

import anyio
from anyio.abc import TaskGroup, TaskStatus

from snakepit.errors import CallTimeout, ConfigError, ServerExited

from ._lowlevel import TIMED_OUT, Backend, Failure, NoPublicConstructor, Slot, current_backend
from ._reasons import ExitReason, Shutdown, is_abnormal

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = (
    "DEFAULT_TIMEOUT",
    "Continue",
    "GenServer",
    "Ignore",
    "MailboxStats",
    "MessageKind",
    "MessageTracer",
    "NoReply",
    "ReplyHandle",
    "ServerRef",
    "Stop",
    "unwrapped_task_group",
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
_STOP: Final = 5  # a stop request, handled in mailbox order (payload: the reason)
# Handle this many messages in a row before yielding to other tasks.
_BURST: Final = 64

_ids = itertools.count(1)
# No handle_continue pending.
_NO_CONTINUE: Final = object()
# Prune the answered slots of deferred calls when this many are kept.
_DEFERRED_PRUNE_AT: Final = 64

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


@dataclass(frozen=True, slots=True)
class NoReply(Generic[State]):
    """Return from ``handle_call`` to answer the call later (OTP's ``{noreply, State}``).

    Take the call's :class:`ReplyHandle` with :meth:`GenServer.reply_handle`
    first, keep it (in the state, in a task), and answer with
    :meth:`ReplyHandle.reply`, from the server or any other task of its event
    loop. Meanwhile the server handles its next messages. The caller still
    gets :class:`~snakepit.errors.CallTimeout` after its timeout, and
    :class:`~snakepit.errors.ServerExited` at once if the server exits
    before answering. ``state`` may be a :class:`Continue`.
    """

    #: The new state.
    state: State | Continue[State]


@dataclass(frozen=True, slots=True)
class Continue(Generic[State]):
    """A new state, plus work to do at once (OTP's ``{continue, Term}``).

    Return it wherever a new state is returned (from ``init``, ``handle_cast``,
    ``handle_info``, ``handle_continue``, as the state of ``handle_call``'s
    ``(reply, state)`` or of a :class:`NoReply`): ``handle_continue(arg, state)``
    runs next, before any other message, including a stop request. From
    ``init``, :meth:`GenServer.start` returns first; from ``handle_call``,
    the reply is sent first.
    """

    #: The new state.
    state: State
    #: Passed to ``handle_continue``.
    arg: Any


class Ignore:
    """Return from ``init`` to not start after all (OTP's ``ignore``).

    :meth:`GenServer.start` then returns a ref that is not alive
    (:attr:`ServerRef.ignored` is True, the exit reason ``"normal"``, links and
    monitors told as for a normal exit; ``terminate`` is not called). A
    supervisor keeps such a child as not running, without an error and without
    a restart (a temporary child, or any child of a DynamicSupervisor, is
    dropped); :meth:`SupervisorRef.restart_child` may start it later.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "Ignore()"


class ReplyHandle(Generic[Reply], metaclass=NoPublicConstructor):
    """The way to answer one call later (OTP's ``From``); see :class:`NoReply`.

    Usable from any task of the server's event loop (not from another thread).
    Harmless when it cannot deliver: a second :meth:`reply`, a reply after the
    caller timed out or was cancelled, or after the server exited (its caller
    already got ServerExited) is dropped silently; nothing reaches another call.
    """

    __slots__ = ("_ref", "_slot")

    def __init__(self, ref: ServerRef[Any, Reply], slot: Slot) -> None:
        self._ref = ref
        self._slot: Slot | None = slot

    def __repr__(self) -> str:
        return f"<ReplyHandle to {self._ref!r}{' done' if self.done else ''}>"

    @property
    def done(self) -> bool:
        """True once the call needs no reply: answered, timed out, abandoned or failed."""
        return self._slot is None or self._slot.done()

    def reply(self, value: Reply) -> None:
        """Send ``value`` to the caller (dropped if it is not waiting any more)."""
        slot, self._slot = self._slot, None
        if slot is None:
            return
        slot.set(value)
        deferred = self._ref._deferred
        if deferred is not None:
            deferred.discard(slot)


@dataclass(frozen=True, slots=True)
class MailboxStats:
    """A snapshot of a server's mailbox, exact (counted on every enqueue)."""

    #: Messages waiting now.
    queued: int
    #: The most messages ever waiting at once.
    high_water: int
    #: Messages enqueued since the server started.
    received: int


class ServerRef(Generic[Request, Reply], metaclass=NoPublicConstructor):
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
        "_deferred",
        "_deferred_limit",
        "_done",
        "_exit_reason",
        "_exiting",
        "_high_water",
        "_idle",
        "_ignored",
        "_killed",
        "_links",
        "_mailbox",
        "_parker",
        "_received",
        "_scope",
        "_server",
        "_started",
        "_stopping",
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
        self._ignored = False  # init returned Ignore()
        self._exit_reason: ExitReason | None = None
        self._stopping = False  # a stop request is in the mailbox
        self._current: Slot | None = None
        self._deferred: set[Slot] | None = None  # calls answered later (NoReply)
        self._deferred_limit = _DEFERRED_PRUNE_AT
        self._links: list[ExitCallback] = []
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
        """True once the server is on its way out (stop requested, crashed, killed) or dead."""
        return self._exiting or self._stopping or self._killed or not self._alive

    @property
    def ignored(self) -> bool:
        """True if its ``init`` returned :class:`Ignore`: it never ran (and is not alive)."""
        return self._ignored

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
            raise CallTimeout(
                f"{self!r} did not reply within {timeout:g}s", server=self, timeout=timeout
            )
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

        Runs synchronously in the exiting server's task, in the order the
        callbacks were linked (a :class:`Monitor` is one): keep it short and
        non-blocking (set a flag, queue a message). An exception from it is
        logged, never raised into the exit.
        """
        if self._alive:
            self._links.append(callback)
        else:
            assert self._exit_reason is not None
            callback(self, self._exit_reason)

    def unlink(self, callback: ExitCallback) -> None:
        """Stop calling ``callback`` (added by :meth:`link`) at the exit; nothing if absent.

        Callbacks compare with ``==``: the same bound method of the same
        object is found again.
        """
        with contextlib.suppress(ValueError):
            self._links.remove(callback)

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

        As OTP's ``gen_server:stop``, the request is a message, taken in mailbox
        order: the server first handles every message queued before it (casts
        are handled, calls answered), then runs ``terminate(reason, state)`` and
        exits. Messages queued after the request are never handled (their
        callers get :class:`ServerExited`). If all that takes longer than
        ``timeout`` seconds, the server is killed (as :meth:`kill`: no
        ``terminate``, reason ``"killed"``, the callers still queued get
        ServerExited). The first stop's reason wins; a later stop just waits.
        Stopping a dead server does nothing. If the caller is cancelled, the
        request stays queued (the server still stops) but nothing kills it.

        :raises ConfigError: called from the server's own task (raise
            :class:`Stop` in a handler instead), or ``timeout`` is negative.
        """
        check_timeout(timeout)
        if not self._alive:
            return
        self._check_not_self("stop")
        if not self._stopping:
            self._stopping = True
            self._post(_STOP, reason, None)
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
        if isinstance(reason, Shutdown) and isinstance(reason.detail, BaseException):
            err.__cause__ = reason.detail
        elif isinstance(reason, BaseException):
            err.__cause__ = reason
        return err

    def _defer(self, slot: Slot) -> None:
        """Keep the slot of a call answered later, to fail it if the server exits first."""
        if slot.done():
            return
        deferred = self._deferred
        if deferred is None:
            deferred = self._deferred = set()
        elif len(deferred) >= self._deferred_limit:
            # Handles that are never used after their caller timed out pin their
            # slots: drop the answered ones now and then (amortized O(1)).
            deferred = self._deferred = {s for s in deferred if not s.done()}
            self._deferred_limit = max(_DEFERRED_PRUNE_AT, 2 * len(deferred))
        deferred.add(slot)

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
        deferred, self._deferred = self._deferred, None
        for slot in deferred or ():
            if not slot.done():
                slot.set(Failure(self._exited()))
        try:
            for link in list(self._links):  # a copy: a callback may unlink itself
                try:
                    link(self, reason)
                except Exception:  # a broken callback must not break the exit
                    logger.exception("%r: a link callback raised", self)
            self._links.clear()  # each is called once; a later link() is called at once
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

    Also as in OTP: a call may be answered later (return :class:`NoReply`,
    answer through :meth:`reply_handle`), a handler may return
    :class:`Continue` to have :meth:`handle_continue` run before the next
    message, and ``init`` may return :class:`Ignore` to not start at all.
    """

    #: Seconds ``terminate`` may take when the server is cancelled from outside.
    terminate_timeout: float = 5.0

    ref: ServerRef[Request, Reply]
    """This instance's ref, set before ``init`` runs."""

    _ref_class: type[ServerRef[Any, Any]] = ServerRef

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
        never the task group the server was started in. An exception from
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


@asynccontextmanager
async def unwrapped_task_group() -> AsyncIterator[TaskGroup]:
    """Return a task group whose one exception comes out as itself, not in an ExceptionGroup.

    For groups whose tasks do not raise (servers catch their own errors), or
    of which at most one fails: the one exception that leaves is raised
    plain, so ``except Exception`` sees it (the ``Cancelled`` that trio adds
    for the other tasks is dropped). Several errors still leave as an
    ExceptionGroup. Use it in :meth:`GenServer.lifespan` for a server's
    helper tasks, and to own servers that ``start()`` promises to raise
    plain errors from. Callers of ``running()`` and ``start()`` rely on it.
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
    ref: ServerRef[Request, Reply] = server._ref_class._create(
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
