"""The bridge's framed lane: its unary calls as length-prefixed frames on a unix socket.

A gRPC unary call costs a worker's tool about a millisecond; the same call as
a ``BridgeRequest`` frame (``snakepit._wire._frames``) on a unix socket costs
a fraction of it. :class:`LaneServer` serves the lane next to the bridge's
gRPC socket (at :func:`~snakepit._wire._address.frames_path` of its path) and
runs every call through the handlers the gRPC service uses (the same methods,
given a context whose metadata names the worker), so both ways behave alike;
watches (server streaming) stay on gRPC.

A connection starts with a ``BridgeHello`` (the worker's id and token): no
hello, or a token that is not that worker's, is answered ``refused``
(``PERMISSION_DENIED``) and closed. Then each request runs in a task of its
own (a slow host tool does not hold up a read), and its reply goes back with
the request's id whenever it is ready; a ``cancel`` stops the call it names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from google.protobuf.message import DecodeError

from snakepit._wire._bridge import SOURCE_KEY
from snakepit._wire._frames import FrameError, read_frame, write_nowait
from snakepit._wire._proto.snakepit.v1 import bridge_pb2

__all__ = ("LaneContext", "LaneServer")

logger = logging.getLogger("snakepit.bridge")

#: A call's handler: the gRPC service's method (its request, a context) -> its reply.
Handler = Callable[[Any, Any], Awaitable[Any]]

#: Bytes a connection's reader buffers before it waits (a larger frame is still read whole).
READ_BUFFER: Final = 1024 * 1024

# The gRPC status names a `refused` reply's error_type carries.
PERMISSION_DENIED: Final = "PERMISSION_DENIED"
RESOURCE_EXHAUSTED: Final = "RESOURCE_EXHAUSTED"
INVALID_ARGUMENT: Final = "INVALID_ARGUMENT"
INTERNAL: Final = "INTERNAL"


class LaneContext:
    """What a handler gets as its context on the lane: the worker its hello named.

    Its :meth:`invocation_metadata` is what the handlers read the caller's
    worker id from (as on gRPC, where the interceptor checked the token).
    """

    __slots__ = ("_metadata",)

    def __init__(self, worker_id: str) -> None:
        self._metadata = ((SOURCE_KEY, worker_id),)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        """``((SOURCE_KEY, worker_id),)``."""
        return self._metadata


def _refused(rid: int, error_type: str, message: str) -> bridge_pb2.BridgeReply:
    return bridge_pb2.BridgeReply(
        id=rid, refused=bridge_pb2.BridgeFailure(message=message, error_type=error_type)
    )


class LaneServer:
    """Serves the lane on one unix socket (see the module's docstring).

    Start with :meth:`start`; :meth:`aclose` closes the socket and every
    connection, cancels the calls running, and removes the socket's file.
    """

    def __init__(
        self,
        path: str,
        handlers: Mapping[str, Handler],
        authorize: Callable[[str, str], bool],
        max_message_bytes: int,
    ) -> None:
        #: The socket's path.
        self.path = path
        self._handlers = dict(handlers)
        self._authorize = authorize
        self._limit = max_message_bytes
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._closing = False

    @classmethod
    async def start(
        cls,
        path: str,
        handlers: Mapping[str, Handler],
        *,
        authorize: Callable[[str, str], bool],
        max_message_bytes: int,
    ) -> LaneServer:
        """Listen on the unix socket ``path``.

        :param handlers: by the ``BridgeRequest`` field a call comes in
            (``"get_variables"``...), what answers it; the reply goes in the
            ``BridgeReply`` field of the same name.
        :param authorize: whether a hello's (worker id, token) may call.
        :param max_message_bytes: the largest request or reply.
        :raises OSError: the socket cannot be bound.
        """
        lane = cls(path, handlers, authorize, max_message_bytes)
        lane._server = await asyncio.start_unix_server(lane._accept, path=path, limit=READ_BUFFER)
        return lane

    async def aclose(self) -> None:
        """Stop serving: no new connections, the open ones closed, their calls cancelled."""
        self._closing = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        connections = list(self._connections)
        for task in connections:
            task.cancel()
        if connections:
            await asyncio.gather(*connections, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closing:
            writer.close()
            return
        self._connections.add(task)
        try:
            await _Connection(self, reader, writer).serve()
        except asyncio.CancelledError:
            # aclose() ended it (or the loop is ending): its calls were cancelled and its
            # socket closed. Not re-raised: asyncio 3.11's done callback of a connection's
            # task calls task.exception(), which raises (and is logged) for a cancelled one.
            pass
        finally:
            self._connections.discard(task)


class _Connection:
    """One worker's connection: its hello, then its calls, each in a task."""

    def __init__(
        self, lane: LaneServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._lane = lane
        self._reader = reader
        self._writer = writer
        self._calls: dict[int, asyncio.Task[None]] = {}  # by request id

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        handlers, limit = self._lane._handlers, self._lane._limit
        try:
            context = await self._hello()
            if context is None:
                return
            while True:
                request = await read_frame(self._reader, bridge_pb2.BridgeRequest, limit)
                if request is None:
                    return  # the worker closed its side: its calls are no one's now
                rid = request.id
                kind = request.WhichOneof("call")
                if kind == "cancel":
                    call = self._calls.pop(rid, None)
                    if call is not None:
                        call.cancel()
                    continue
                handler = handlers.get(kind) if kind is not None else None
                if handler is None or rid in self._calls:
                    why = f"no call of kind {kind!r}" if handler is None else f"id {rid} is taken"
                    self._send(_refused(rid, INVALID_ARGUMENT, why))
                    continue
                task = loop.create_task(self._run(rid, kind, handler, request, context))
                self._calls[rid] = task
                task.add_done_callback(_forget(self._calls, rid))
        except (FrameError, DecodeError, OSError) as exc:
            logger.warning("closed a bridge lane connection: %s", exc)
        finally:
            calls = list(self._calls.values())
            self._calls.clear()
            for call in calls:
                call.cancel()
            self._writer.close()
            if calls:
                await asyncio.gather(*calls, return_exceptions=True)
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    async def _hello(self) -> LaneContext | None:
        """The context of the worker the first frame names; None once it is refused."""
        request = await read_frame(self._reader, bridge_pb2.BridgeRequest, self._lane._limit)
        if request is None:
            return None
        if request.WhichOneof("call") == "hello":
            hello = request.hello
            if self._lane._authorize(hello.worker_id, hello.token):
                return LaneContext(hello.worker_id)
            why = f"a wrong token for worker {hello.worker_id!r}"
        else:
            why = "no hello"
        logger.warning("refused a bridge lane connection: %s", why)
        self._send(
            _refused(request.id, PERMISSION_DENIED, f"a worker's bridge token is needed ({why})")
        )
        return None

    async def _run(
        self,
        rid: int,
        kind: str,
        handler: Handler,
        request: bridge_pb2.BridgeRequest,
        context: LaneContext,
    ) -> None:
        try:
            result = await handler(getattr(request, kind), context)
            reply = bridge_pb2.BridgeReply(id=rid, **{kind: result})
            size = reply.ByteSize()
            if size > self._lane._limit:
                reply = _refused(
                    rid,
                    RESOURCE_EXHAUSTED,
                    f"the reply of {size} bytes is larger than the bridge's limit of"
                    f" {self._lane._limit}",
                )
        except Exception as exc:  # a handler's bug: the call fails, the connection goes on
            logger.exception("a bridge lane call (%s) failed", kind)
            reply = _refused(rid, INTERNAL, f"the bridge failed on the call: {type(exc).__name__}")
        if self._calls.get(rid) is not asyncio.current_task():
            return  # cancelled by the worker meanwhile: it waits for no reply
        if not self._send(reply):
            with contextlib.suppress(OSError):  # the connection broke: the reader ends
                await self._writer.drain()

    def _send(self, reply: bridge_pb2.BridgeReply) -> bool:
        """Buffer ``reply``; False once over the high-water mark (the caller drains)."""
        if self._writer.is_closing():
            return True
        return write_nowait(self._writer, reply)


def _forget(calls: dict[int, asyncio.Task[None]], rid: int) -> Callable[[asyncio.Task[None]], None]:
    """A done callback that forgets the call ``rid`` (if it is still that task)."""

    def done(task: asyncio.Task[None]) -> None:
        if calls.get(rid) is task:
            del calls[rid]

    return done
