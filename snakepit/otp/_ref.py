"""ServerRef: one started server's identity, its mailbox, and the way to talk to it."""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import anyio

from snakepit.errors import ArgumentTypeError, CallTimeout, ConfigError, ServerExited, is_number

from ._lowlevel import TIMED_OUT, Backend, Failure, NoPublicConstructor, Slot
from ._messages import (
    _CALL,
    _CAST,
    _INFO,
    _KINDS,
    _STATE,
    _STOP,
    _SYNC,
    MessageKind,
    MessageTracer,
)
from ._reasons import ExitReason, Shutdown

if TYPE_CHECKING:
    from ._server import GenServer

__all__ = ("DEFAULT_TIMEOUT", "MailboxStats", "ServerRef")

logger = logging.getLogger("snakepit.otp")

Request = TypeVar("Request")
Reply = TypeVar("Reply")

#: The default ``timeout`` of :meth:`ServerRef.call`, in seconds (OTP's 5 s).
DEFAULT_TIMEOUT: Final = 5.0

_ids = itertools.count(1)
# Prune the answered slots of deferred calls when this many are kept.
_DEFERRED_PRUNE_AT: Final = 64

#: Called with (ref, reason) when a server exits, before monitors fire.
ExitCallback = Callable[["ServerRef[Any, Any]", ExitReason], None]


#: Timeout types taken without a closer look (a bool is an int subclass, not one of these).
_PLAIN_NUMBERS: Final = frozenset({int, float})


def check_timeout(timeout: float | None, field: str = "timeout") -> None:
    """Raise :class:`ConfigError` unless ``timeout`` is None or a number >= 0.

    :raises ArgumentTypeError: not a number (a bool, a str...).
    """
    if timeout is not None and not is_number(timeout):
        raise ArgumentTypeError(field, f"must be None or a number >= 0, got {timeout!r}")
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
        "_unlinks",
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
        self._unlinks = 0  # how many unlink() found their callback (the exit checks)
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
        if timeout is not None and (type(timeout) not in _PLAIN_NUMBERS or not timeout >= 0):
            check_timeout(timeout)  # the full check, off the common path
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
            self._unlinks += 1

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
            unlinks = self._unlinks
            for link in list(self._links):  # a copy: a callback may unlink itself
                if self._unlinks != unlinks and link not in self._links:
                    continue  # unlinked by an earlier callback (a monitor demonitored)
                try:
                    link(self, reason)
                except Exception:  # a broken callback must not break the exit
                    logger.exception("%r: a link callback raised", self)
            self._links.clear()  # each is called once; a later link() is called at once
        finally:
            self._done.set()
