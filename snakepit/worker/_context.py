"""Context: what a tool knows about the call it serves; Session: the session it is part of."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
import types
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from snakepit._wire._session import decode_metadata, encode_metadata
from snakepit.errors import BridgeUnavailable

from ._tool_variables import Variables

__all__ = ("Context", "Session")

#: Seconds between a sync tool's looks at its cancellation while the host answers.
_CANCEL_POLL = 0.1


class Session:
    """The session a call belongs to, as its tool sees it: ``ctx.session``.

    Read-only here: :attr:`session_id` and :attr:`metadata`, what the caller
    gave when it created the session. Per-session state the adapter keeps
    belongs in the adapter (``self.state[ctx.session_id]``), freed by
    :meth:`Adapter.on_session_end <snakepit.worker.Adapter.on_session_end>`.

    :param session_id: the session's id.
    :param metadata: its metadata: a mapping (copied through JSON, as the
        worker would receive it) or the wire form (compact JSON bytes, decoded
        on the first read of :attr:`metadata`).
    """

    __slots__ = ("_ctx", "_metadata", "_raw", "_session_id", "_variables")

    def __init__(self, session_id: str, metadata: Mapping[str, Any] | bytes = b"") -> None:
        self._session_id = session_id
        self._raw = metadata if isinstance(metadata, bytes) else encode_metadata(metadata)
        self._metadata: Mapping[str, Any] | None = None
        self._ctx: Context | None = None  # the call's (set by its Context)
        self._variables: Variables | None = None

    @property
    def variables(self) -> Variables:
        """The session's typed variables, through the worker's bridge (see :class:`Variables`).

        :raises BridgeUnavailable: this session is not a call's (made by hand),
            or (on use) the worker has no bridge.
        """
        variables = self._variables
        if variables is None:
            if self._ctx is None:
                raise BridgeUnavailable("this Session belongs to no call: it has no variables")
            variables = self._variables = Variables(self._ctx)
        return variables

    @property
    def session_id(self) -> str:
        """The session's id."""
        return self._session_id

    @property
    def metadata(self) -> Mapping[str, Any]:
        """The session's metadata, read-only (empty if it has none).

        Decoded from the request on first read (a tool that never looks pays
        nothing). Nested values are this call's own copies: changing them
        changes nothing in the session.

        :raises snakepit._wire._session.MetadataError: the request's metadata
            is not a JSON object (only a broken client sends that); a call
            that lets it propagate is answered with an INVALID_ARGUMENTS error
            naming ``session_metadata``.
        """
        metadata = self._metadata
        if metadata is None:
            metadata = self._metadata = types.MappingProxyType(decode_metadata(self._raw))
        return metadata

    def __repr__(self) -> str:
        return f"Session({self._session_id!r})"


class _CallEvent(threading.Event):
    """A ``threading.Event`` whose condition is made on first use, not per call.

    A call's :attr:`Context.cancel_event` is made for every call and set or
    waited on by few: the lock and condition an Event makes at once are most
    of the cost of starting a call.
    """

    _make_lock = threading.Lock()

    def __init__(self) -> None:  # (not Event's: no condition yet)
        self._flag = False
        self._made: threading.Condition | None = None

    @property
    def _cond(self) -> threading.Condition:
        made = self._made
        if made is None:
            with _CallEvent._make_lock:
                made = self._made
                if made is None:
                    made = self._made = threading.Condition(threading.Lock())
        return made

    def _at_fork_reinit(self) -> None:
        if self._made is not None:
            self._made._at_fork_reinit()  # type: ignore[attr-defined]


def cancel_event() -> threading.Event:
    """A new, clear ``threading.Event`` for :attr:`Context.cancel_event` (cheap to make)."""
    return _CallEvent()


@dataclass(slots=True)
class Context:
    """The call a tool is serving; a tool receives it through a ``ctx`` parameter.

    Cancellation: an ``async`` tool is cancelled outright (its ``await`` raises
    ``CancelledError``); a sync tool cannot be interrupted, so it should look at
    :attr:`cancelled` (or wait on :attr:`cancel_event`) between steps of long work.
    Its worker slot stays taken until it returns (the host does not send it
    another call meanwhile); the host replaces a worker whose cancelled call
    has not ended within the pool's ``cancel_grace``.
    """

    #: The caller's id for this request.
    request_id: int
    #: The session the call belongs to ("" outside a session).
    session_id: str
    #: ``time.monotonic()`` by which the caller stops waiting, or None.
    deadline: float | None
    #: A logger named after the tool; records go to the worker's stderr.
    logger: logging.Logger
    #: Set when the call is cancelled or its deadline passes.
    cancel_event: threading.Event = field(default_factory=threading.Event)
    #: The worker's service (private: an introspection hook for snakepit's own tests).
    _service: Any = field(default=None, repr=False, compare=False)
    #: What :attr:`session` returns.
    _session: Session | None = field(default=None, repr=False, compare=False)
    #: The worker's bridge client (a ``HostBridge``), or None.
    _bridge: Any = field(default=None, repr=False, compare=False)
    #: The worker's event loop, where bridge calls run.
    _loop: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._session is not None:
            self._session._ctx = self

    @property
    def session(self) -> Session | None:
        """The session the call belongs to (its id and metadata), or None outside a session."""
        return self._session

    @property
    def cancelled(self) -> bool:
        """True once the caller cancelled the call or its deadline passed."""
        return self.cancel_event.is_set()

    def call_host(self, name: str, args: Mapping[str, Any] | None = None) -> Any:
        """Call the host tool ``name`` (``pool.register_host_tool``) with ``args``; its result.

        In an ``async`` tool, await it: ``await ctx.call_host("lookup", {"key": k})``.
        In a sync tool (it runs in a worker thread) it blocks and returns the
        result. The arguments and the result travel as JSON.

        :raises HostToolNotFound: the host registered no such tool.
        :raises HostToolFailed: the host tool raised (``error_type`` says what).
        :raises BridgeUnavailable: this worker has no bridge, or cannot reach it.
        :raises ArgumentTypeError: ``name`` is not a str, ``args`` not a mapping
            of JSON-able values.
        """
        bridge = self._bridge
        if bridge is None or self._loop is None:
            raise BridgeUnavailable("this worker has no bridge to its host (started without one)")
        return self._run(
            lambda: bridge.call_host(name, args, self.session_id, self.time_remaining())
        )

    def _run(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        # make() on the worker's loop: the coroutine itself from the loop (an async
        # tool awaits it); from a sync tool's thread, block for its result, giving
        # up when the call is cancelled.
        loop = self._loop
        if self._bridge is None or loop is None:
            raise BridgeUnavailable("this worker has no bridge to its host (started without one)")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return make()
        if running is not None:  # another loop, in a thread of the tool's: not ours to block
            raise BridgeUnavailable("a bridge call from another event loop than the worker's")
        work = make()
        try:
            future = asyncio.run_coroutine_threadsafe(work, loop)
        except RuntimeError:  # the worker's loop is closed: it has stopped
            work.close()
            raise BridgeUnavailable("the worker stopped: its bridge is closed") from None
        while True:  # a sync tool: wait, and give up when its call is cancelled
            try:
                return future.result(timeout=_CANCEL_POLL)
            except concurrent.futures.TimeoutError:
                if self.cancel_event.is_set():
                    future.cancel()
                    raise BridgeUnavailable(
                        "the call was cancelled while the host answered"
                    ) from None
            except concurrent.futures.CancelledError as exc:  # the worker is stopping
                raise BridgeUnavailable("the worker stopped during the call to the host") from exc

    def time_remaining(self) -> float | None:
        """Seconds until the deadline (never negative), or None without one."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())
