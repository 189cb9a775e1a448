"""A worker's client of its pool's bridge: what ``ctx.call_host`` and a tool's variables use.

Made by the worker's main when it was started with ``--bridge ADDRESS`` and
its token on stdin (after its secret). Unary calls go on the bridge's framed
lane (length-prefixed ``BridgeRequest`` / ``BridgeReply`` frames on the unix
socket next to the gRPC one, at :func:`~snakepit._wire._address.frames_path`
of its path: a fraction of a gRPC call's cost), opened on first use with a
``BridgeHello`` naming the worker and carrying its token; calls share it, each
waiting for the reply of its id. Watches (server streaming) go over gRPC, on
a grpc.aio channel opened on first use.

Transport trouble (the host gone, a refused connection, no answer in time,
the worker stopping, a message over the limit) is
:class:`~snakepit.errors.BridgeUnavailable`; a dropped connection fails every
call waiting on it, and the next call connects again (the host's bridge may
have been restarted). No host import: the wire forms are ``snakepit._wire``'s.
"""

from __future__ import annotations

# First: grpc is imported with its logging quieted (before any module below imports it).
from snakepit._wire import _grpc_logging  # noqa: F401  # isort: skip

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import grpc

from snakepit._wire._address import frames_path, unix_path
from snakepit._wire._bridge import AUTH_KEY, DEFAULT_MAX_MESSAGE, SOURCE_KEY, message_limits
from snakepit._wire._frames import FrameError, FrameProtocol, FrameSplitter
from snakepit._wire._proto.snakepit.v1 import bridge_pb2, bridge_pb2_grpc
from snakepit.errors import (
    ArgumentTypeError,
    BridgeError,
    BridgeUnavailable,
    HostToolFailed,
    HostToolNotFound,
)

from ._tool_variables import _VariableCache

__all__ = ("HostBridge",)

Kind = bridge_pb2.BridgeFailure.Kind

#: What a call waiting when the worker stops is told.
_STOPPED: Final = "the worker stopped during the call to the host"


class _Lane(FrameProtocol):
    """One connection of the framed lane: the calls waiting on it, their replies as they come.

    An ``asyncio.Protocol``: a reply is matched to its call where its bytes
    arrive (the call's future resolved there), without a reader task between.
    """

    def __init__(self, limit: int, address: str) -> None:
        super().__init__()
        self._frames = FrameSplitter(bridge_pb2.BridgeReply, limit)
        self._address = address
        self.pending: dict[int, asyncio.Future[bridge_pb2.BridgeReply]] = {}
        #: Why it ended (None while it is up).
        self.lost: str | None = None
        #: Done once the socket is closed.
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._refused: str | None = None

    @property
    def up(self) -> bool:
        """True until the connection ends."""
        return self.lost is None

    def data_received(self, data: bytes) -> None:
        """Hand the replies ``data`` completes to their calls."""
        try:
            replies = self._frames.feed(data)
        except FrameError as exc:
            self.end(f"the connection to the bridge at {self._address} broke: {exc}")
            return
        pending = self.pending
        for reply in replies:
            future = pending.pop(reply.id, None)
            if reply.WhichOneof("reply") == "refused":
                refused = reply.refused
                if refused.error_type == "PERMISSION_DENIED":
                    self._refused = refused.message
            if future is not None and not future.done():
                future.set_result(reply)

    def eof_received(self) -> bool:
        """The host closed its side: so does the worker."""
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail the calls still waiting."""
        super().connection_lost(exc)
        if self._refused is not None:
            why = f"the bridge at {self._address} refused this worker: {self._refused}"
        elif exc is not None:
            why = f"the connection to the bridge at {self._address} broke: {exc}"
        else:
            why = (
                f"the bridge at {self._address} closed the connection"
                " (the host is gone or stopping)"
            )
        self.end(why)
        if not self.closed.done():
            self.closed.set_result(None)

    def end(self, why: str) -> None:
        """Close the connection; every call waiting on it fails with BridgeUnavailable(why)."""
        if self.lost is None:
            self.lost = why
        if self.transport is not None:
            self.transport.abort()
        pending = list(self.pending.values())
        self.pending.clear()
        for future in pending:
            if not future.done():
                future.set_exception(BridgeUnavailable(self.lost))

    async def aclose(self, why: str) -> None:
        """End it (see :meth:`end`) and wait until its socket is closed."""
        self.end(why)
        if self.transport is not None:
            await self.closed


class HostBridge:
    """The worker's end of its pool's bridge (see the module's docstring).

    :param address: the bridge's gRPC address (``unix:PATH``); the lane is at
        ``frames_path(PATH)``, next to it.
    :param token: this worker's token (``worker_token`` of the pool's secret).
    :param worker_id: this worker's id (what its token was made for).
    :param max_message_bytes: the largest request or reply (the pool's).
    """

    def __init__(
        self,
        address: str,
        token: str,
        worker_id: str,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        #: The bridge's gRPC address.
        self.address = address
        path = unix_path(address)
        #: Where the framed lane is (``unix:PATH.frames``), or None (not a unix address).
        self.lane_address = None if path is None else f"unix:{frames_path(path)}"
        self._limits = message_limits(max_message_bytes)
        self._max = max_message_bytes
        self._metadata = ((AUTH_KEY, token), (SOURCE_KEY, worker_id))
        self._hello = bridge_pb2.BridgeRequest(
            id=0, hello=bridge_pb2.BridgeHello(worker_id=worker_id, token=token)
        )
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._lane: _Lane | None = None
        self._connecting: asyncio.Lock | None = None
        self._next_id = 1
        self._closed = False
        #: The worker's cache of its tools' variable reads (``ctx.session.variables``).
        self.cache = _VariableCache(address)

    def __repr__(self) -> str:
        return f"<HostBridge {self.address}>"

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called (the worker is stopping)."""
        return self._closed

    # -- the framed lane ------------------------------------------------------------------

    async def _open(self) -> _Lane:
        """The lane's connection: the current one, or a new one (one attempt)."""
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            lane = self._lane
            if lane is not None and lane.lost is None:
                return lane  # another call connected meanwhile
            if self._closed:
                raise BridgeUnavailable("the worker is stopping: its bridge is closed")
            path = None if self.lane_address is None else unix_path(self.lane_address)
            if path is None:
                raise BridgeUnavailable(f"the bridge at {self.address} is not a unix socket")
            lane = _Lane(self._max, self.lane_address or "")
            try:
                await asyncio.get_running_loop().create_unix_connection(lambda: lane, path)
            except OSError as exc:
                raise BridgeUnavailable(
                    f"cannot reach the bridge at {self.lane_address}: {exc}"
                ) from exc
            if self.closed:  # aclose() ran while it connected
                await lane.aclose(_STOPPED)
                raise BridgeUnavailable(_STOPPED)
            lane.send(self._hello)  # the calls that follow go right behind it
            self._lane = lane
            return lane

    async def _call(self, kind: str, request: Any, timeout: float | None, what: str) -> Any:
        """Send ``request`` as the lane's ``kind``; the reply's ``kind`` field.

        :raises BridgeUnavailable: see the module's docstring.
        """
        if self._closed:
            raise BridgeUnavailable("the worker is stopping: its bridge is closed")
        size = request.ByteSize()
        if size > self._max:
            raise BridgeUnavailable(
                f"{what}: the request of {size} bytes is larger than the bridge takes"
                f" ({self._max} bytes)"
            )
        try:
            async with asyncio.timeout(timeout):
                lane = self._lane
                if lane is None or lane.lost is not None:
                    lane = await self._open()
                if not lane.up:  # it broke at once
                    raise BridgeUnavailable(lane.lost)
                rid = self._next_id
                self._next_id += 1
                future: asyncio.Future[bridge_pb2.BridgeReply] = (
                    asyncio.get_running_loop().create_future()
                )
                lane.pending[rid] = future
                try:
                    if not lane.send(bridge_pb2.BridgeRequest(id=rid, **{kind: request})):
                        await lane.drain()
                    reply = await future
                finally:
                    if lane.pending.pop(rid, None) is not None and lane.lost is None:
                        # Given up (a timeout, or the caller cancelled): the host stops it.
                        lane.send(
                            bridge_pb2.BridgeRequest(id=rid, cancel=bridge_pb2.BridgeCancel())
                        )
                    elif future.done() and not future.cancelled():
                        future.exception()  # seen (a cancel may have raced the failure)
        except TimeoutError:
            raise BridgeUnavailable(f"{what}: no answer within the call's {timeout:g}s") from None
        got = reply.WhichOneof("reply")
        if got == kind:
            return getattr(reply, kind)
        if got == "refused":
            refused = reply.refused
            if refused.error_type == "RESOURCE_EXHAUSTED":
                raise BridgeUnavailable(
                    f"{what}: its reply is larger than the bridge takes ({refused.message})"
                )
            raise BridgeUnavailable(f"{what}: the bridge refused the call: {refused.message}")
        raise BridgeUnavailable(f"{what}: the bridge answered {got!r}")  # pragma: no cover

    async def _request(self, kind: str, request: Any, timeout: float | None = None) -> Any:
        """Send one unary call of ``kind``; its reply (a ``failure`` in it is the caller's to map).

        ``kind`` is the lane's name of it: ``get_variables``, ``set_variables``,
        ``register_variable`` or ``delete_variable`` (``ctx.session.variables`` maps failures).

        :raises BridgeUnavailable: the bridge cannot be reached, did not answer
            within ``timeout`` seconds, the request is too large, or the worker
            is stopping.
        """
        return await self._call(kind, request, timeout, kind)

    async def call_host(
        self,
        name: str,
        args: Mapping[str, Any] | None,
        session_id: str,
        timeout: float | None = None,
    ) -> Any:
        """Run the host tool ``name`` with ``args``; what it returned.

        :param timeout: seconds to wait for the answer (the tool's call's
            deadline), or None.
        :raises ArgumentTypeError: ``name`` is not a str, or ``args`` not a
            mapping of JSON-able values.
        :raises HostToolNotFound: the host has no such tool.
        :raises HostToolFailed: it raised (``error_type`` names what).
        :raises BridgeUnavailable: the bridge cannot be reached (the host is
            gone), did not answer within ``timeout``, the arguments or the
            result are larger than the bridge takes, or the worker is stopping.
        """
        if not isinstance(name, str):
            raise ArgumentTypeError("name", f"a host tool's name is a str, got {name!r}")
        if args is not None and not isinstance(args, Mapping):
            raise ArgumentTypeError("args", f"must be a mapping, got {type(args).__name__}")
        try:
            encoded = json.dumps(dict(args or {}), allow_nan=False).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise ArgumentTypeError("args", f"must be JSON-able: {exc}") from exc
        request = bridge_pb2.CallHostToolRequest(
            session_id=session_id, name=name, args_json=encoded
        )
        reply: bridge_pb2.CallHostToolReply = await self._call(
            "call_host_tool", request, timeout, f"host tool {name!r}"
        )
        if reply.HasField("failure"):
            raise _error(reply.failure)
        return json.loads(reply.result_json)

    # -- watches, over gRPC ---------------------------------------------------------------

    def _connect(self) -> Any:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self.address, options=self._limits)
            self._stub = bridge_pb2_grpc.BridgeServiceStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

    @contextlib.asynccontextmanager
    async def _watch_variables(
        self, request: bridge_pb2.WatchVariablesRequest
    ) -> AsyncIterator[AsyncIterator[bridge_pb2.VariableChangeEvent]]:
        """Watch a session's variables (over gRPC): ``async with`` it for its events.

        The events are the server's: ``started`` first, then one per change
        (a ``failure`` one ends it); they end when the watch does. Leaving the
        block ends the watch.

        :raises BridgeUnavailable: the worker is stopping, or (from the
            iterator) the stream broke: the host is gone, or refused it.
        """
        if self._closed:
            raise BridgeUnavailable("the worker is stopping: its bridge is closed")
        call = self._connect().WatchVariables(request, metadata=self._metadata)
        try:
            yield _Watch(call, self.address)
        finally:
            call.cancel()

    async def aclose(self) -> None:
        """Close the lane and the channel (if opened); later calls raise BridgeUnavailable.

        Calls waiting on the lane fail with BridgeUnavailable.
        """
        self._closed = True
        self.cache.close()
        lane, self._lane = self._lane, None
        if lane is not None:
            await lane.aclose(_STOPPED)
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()


class _Watch:
    """A watch's events, as an async iterator; gRPC's errors as BridgeUnavailable."""

    def __init__(self, call: Any, address: str) -> None:
        self._call = call
        self._address = address

    def __aiter__(self) -> _Watch:
        return self

    async def __anext__(self) -> bridge_pb2.VariableChangeEvent:
        try:
            event = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise BridgeUnavailable(
                f"the watch on the bridge at {self._address} broke:"
                f" {exc.code().name}: {exc.details()}"
            ) from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the reader's own cancellation
            # grpc's: the channel was closed under it (the worker stops).
            raise BridgeUnavailable(_STOPPED) from None
        except (grpc.RpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            raise BridgeUnavailable(
                f"the watch on the bridge at {self._address} broke: {exc}"
            ) from exc
        if event is grpc.aio.EOF:
            raise StopAsyncIteration
        result: bridge_pb2.VariableChangeEvent = event
        return result


def _error(failure: bridge_pb2.BridgeFailure) -> BridgeError:
    if failure.kind == Kind.HOST_TOOL_NOT_FOUND:
        return HostToolNotFound(failure.message)
    if failure.kind == Kind.HOST_TOOL_FAILED:
        return HostToolFailed(failure.message, failure.error_type)
    return BridgeError(failure.message)
