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
A connection is an ``asyncio.Protocol``: its frames are cut out as they
arrive and their calls' tasks started there, without a reader task between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from snakepit._wire._bridge import SOURCE_KEY
from snakepit._wire._frames import FrameError, FrameProtocol, FrameSplitter
from snakepit._wire._proto.snakepit.v1 import bridge_pb2

logger = logging.getLogger("snakepit.bridge")

#: A call's handler: the gRPC service's method (its request, a context) -> its reply.
Handler = Callable[[Any, Any], Awaitable[Any]]

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
        self._listening: socket.socket | None = None
        self._accepting: set[asyncio.Task[None]] = set()  # sockets becoming connections
        self._connections: set[_Connection] = set()
        self._loop = asyncio.get_running_loop()

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
        # Accepted by hand, not by an asyncio.Server: closing one (3.11) while a
        # socket it accepted is still becoming a transport leaves that socket
        # open and unanswered (the transport's creation fails, silently).
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listening.bind(path)
            listening.listen(128)
            listening.setblocking(False)
        except BaseException:
            listening.close()
            raise
        lane._listening = listening
        lane._loop.add_reader(listening.fileno(), lane._accept)
        return lane

    def _accept(self) -> None:
        listening = self._listening
        while listening is not None:
            try:
                conn, _ = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, say: the next ones may pass
                logger.warning("the bridge lane could not accept a connection: %s", exc)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._connect(conn))
            self._accepting.add(task)
            task.add_done_callback(self._accepting.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(lambda: _Connection(self), conn)
        except Exception as exc:  # pragma: no cover - the socket broke at once
            conn.close()
            logger.warning("the bridge lane could not open a connection: %s", exc)

    @property
    def connections(self) -> int:
        """How many connections are open."""
        return len(self._connections)

    async def aclose(self) -> None:
        """Stop serving: no new connections, the open ones closed, their calls cancelled."""
        listening, self._listening = self._listening, None
        if listening is None:
            return
        self._loop.remove_reader(listening.fileno())
        listening.close()
        if self._accepting:  # each ends as soon as its connection is made
            await asyncio.gather(*self._accepting, return_exceptions=True)
        waits: list[asyncio.Future[None]] = []
        for connection in list(self._connections):
            waits += connection.close(abort=True)
            waits.append(connection.lost)
        if waits:
            await asyncio.gather(*waits, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


#: Seconds a lane connection may stay open before its hello.
HELLO_TIMEOUT = 10.0


class _Connection(FrameProtocol):
    """One worker's connection: its hello, then its calls, each in a task."""

    def __init__(self, lane: LaneServer) -> None:
        super().__init__()
        self._lane = lane
        self._frames = FrameSplitter(bridge_pb2.BridgeRequest, lane._limit)
        self._context: LaneContext | None = None  # set by a good hello
        self._calls: dict[int, asyncio.Task[None]] = {}  # by request id
        self._loop = asyncio.get_running_loop()
        #: Done once the socket is closed.
        self.lost: asyncio.Future[None] = self._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count it among the lane's (a lane that stops closes them all); await its hello."""
        super().connection_made(transport)
        self._lane._connections.add(self)
        # A connection that says nothing is closed: it holds no descriptor for long.
        self._no_hello = self._loop.call_later(HELLO_TIMEOUT, self._hello_late)

    def _hello_late(self) -> None:
        if self._context is None:
            logger.warning("closed a bridge lane connection: no hello in %gs", HELLO_TIMEOUT)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """Its calls are no one's now: cancelled."""
        super().connection_lost(exc)
        self.close()
        if not self.lost.done():
            self.lost.set_result(None)

    def close(self, *, abort: bool = False) -> list[asyncio.Task[None]]:
        """Close the socket and cancel the calls running; those calls' tasks.

        With ``abort``, what is still to send is dropped (the lane stops).
        """
        self._lane._connections.discard(self)
        no_hello = getattr(self, "_no_hello", None)
        if no_hello is not None:
            no_hello.cancel()
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        calls = list(self._calls.values())
        self._calls.clear()
        for call in calls:
            call.cancel()
        return calls

    def data_received(self, data: bytes) -> None:
        """Start the calls of the frames ``data`` completes."""
        try:
            requests = self._frames.feed(data)
        except FrameError as exc:
            logger.warning("closed a bridge lane connection: %s", exc)
            self.close()
            return
        for request in requests:
            if self._context is None:
                if not self._hello(request):
                    return
            else:
                self._start(request)

    def eof_received(self) -> bool:
        """The worker closed its side: so does the host (its calls are cancelled)."""
        return False

    def _hello(self, request: bridge_pb2.BridgeRequest) -> bool:
        """Take the first frame: True if it is a hello of a worker with its token."""
        if request.WhichOneof("call") == "hello":
            hello = request.hello
            if self._lane._authorize(hello.worker_id, hello.token):
                self._context = LaneContext(hello.worker_id)
                self._no_hello.cancel()
                return True
            why = f"a wrong token for worker {hello.worker_id!r}"
        else:
            why = "no hello"
        logger.warning("refused a bridge lane connection: %s", why)
        self.send(
            _refused(request.id, PERMISSION_DENIED, f"a worker's bridge token is needed ({why})")
        )
        self.close()
        return False

    def _start(self, request: bridge_pb2.BridgeRequest) -> None:
        rid = request.id
        kind = request.WhichOneof("call")
        if kind == "cancel":
            call = self._calls.pop(rid, None)
            if call is not None:
                call.cancel()
            return
        handler = self._lane._handlers.get(kind) if kind is not None else None
        if handler is None or rid in self._calls:
            why = f"no call of kind {kind!r}" if handler is None else f"id {rid} is taken"
            self.send(_refused(rid, INVALID_ARGUMENT, why))
            return
        assert kind is not None
        assert self._context is not None
        task = self._loop.create_task(self._run(rid, kind, handler, request, self._context))
        self._calls[rid] = task
        task.add_done_callback(_forget(self._calls, rid))

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
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # the worker withdrew the call, or the lane closes
            # A CancelledError of a handler's own (not this task's): still an answer.
            logger.error("a bridge lane call (%s) failed: %r", kind, exc)
            reply = _refused(rid, INTERNAL, "the bridge failed on the call: CancelledError")
        except Exception as exc:  # a handler's bug: the call fails, the connection goes on
            logger.exception("a bridge lane call (%s) failed", kind)
            reply = _refused(rid, INTERNAL, f"the bridge failed on the call: {type(exc).__name__}")
        if self._calls.get(rid) is not asyncio.current_task():
            return  # cancelled by the worker meanwhile: it waits for no reply
        if not self.send(reply):
            await self.drain()


def _forget(calls: dict[int, asyncio.Task[None]], rid: int) -> Callable[[asyncio.Task[None]], None]:
    """A done callback that forgets the call ``rid`` (if it is still that task)."""

    def done(task: asyncio.Task[None]) -> None:
        if calls.get(rid) is task:
            del calls[rid]

    return done
