"""What travels through a server's mailbox, and what its handlers answer with.

The mailbox tags that :class:`ServerRef` posts and :class:`GenServer`'s loop
dispatches on; the markers a handler returns or raises (:class:`Stop`,
:class:`NoReply`, :class:`Continue`, :class:`Ignore`); and the
:class:`ReplyHandle` that answers a :class:`NoReply` call later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeAlias, TypeVar

from ._lowlevel import NoPublicConstructor, Slot
from ._reasons import ExitReason

if TYPE_CHECKING:
    from ._ref import ServerRef

__all__ = (
    "Continue",
    "Ignore",
    "MessageKind",
    "MessageTracer",
    "NoReply",
    "ReplyHandle",
    "Stop",
)

Reply = TypeVar("Reply")
State = TypeVar("State")

# Mailbox message tags. A message is a tuple (tag, payload, slot-or-None).
_CALL: Final = 0
_CAST: Final = 1
_INFO: Final = 2
_SYNC: Final = 3
_STATE: Final = 4
_STOP: Final = 5  # a stop request, handled in mailbox order (payload: the reason)

#: Which callback a traced message is for: ``handle_call``, ``handle_cast``, ``handle_info``.
MessageKind: TypeAlias = Literal["call", "cast", "info"]
#: Called with ``(kind, message)`` for each message queued to a traced server
#: (see :meth:`ServerRef.add_tracer`).
MessageTracer: TypeAlias = Callable[[MessageKind, Any], None]
_KINDS: Final[tuple[MessageKind, ...]] = ("call", "cast", "info")  # by tag


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
