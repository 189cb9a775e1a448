"""The host's connection to one worker: unary, streaming and multiplexed calls.

Every lower-layer failure is mapped here, in one place, to the most specific
public error: what a worker reports by :func:`error_from_info`, what grpc.aio
raises by :func:`grpc_errors` (around every gRPC call; :func:`error_from_grpc`
for the channel's own tasks). No bare ``grpc.RpcError`` reaches a user.
"""

from __future__ import annotations

# First: grpc is imported with its logging quieted (before any module below imports it).
from snakepit._wire import _grpc_logging  # noqa: F401  # isort: skip

import asyncio
import contextlib
import contextvars
import itertools
from collections.abc import AsyncGenerator, Iterator
from typing import Any, Final, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from snakepit._wire._address import grpc_target, unix_path
from snakepit._wire._auth import FRAMES_ACCEPTED, METADATA_KEY, frames_preface
from snakepit._wire._codec import JSON, PICKLE, CodecError, decode, encode_into, error_details
from snakepit._wire._frames import (
    ENVELOPE,
    ITEM_OVERHEAD,
    FrameBatcher,
    pack,
    read_frame,
    write_nowait,
)
from snakepit._wire._proto.snakepit.v1 import worker_pb2, worker_pb2_grpc
from snakepit.errors import (
    ConfigError,
    ExecutionTimeout,
    InvalidArguments,
    PayloadError,
    PayloadTooLarge,
    RemoteError,
    ToolNotFound,
    WorkerError,
    WorkerStopping,
    WorkerUnavailable,
)
from snakepit.pool._config import Codec
from snakepit.pool._description import WorkerDescription, from_message

__all__ = ("WorkerConnection",)

Kind = worker_pb2.ErrorInfo.Kind
DEFAULT_MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
_TIMED_OUT: Final = object()
_END: Final = object()


def error_from_info(info: worker_pb2.ErrorInfo, tool: str) -> WorkerError:
    """The public error for an ErrorInfo a worker sent back."""
    kind = info.kind
    if kind == Kind.REMOTE:
        return RemoteError(info.type, info.message, info.traceback)
    if kind == Kind.TOOL_NOT_FOUND:
        return ToolNotFound("ToolNotFound", info.message)
    if kind == Kind.INVALID_ARGUMENTS:
        return InvalidArguments("InvalidArguments", info.message)
    if kind == Kind.PAYLOAD_TOO_LARGE:
        return PayloadTooLarge(info.message)
    if kind == Kind.DEADLINE_EXCEEDED:
        return ExecutionTimeout(f"{tool}: the worker's deadline passed", tool=tool)
    if kind == Kind.UNAVAILABLE:
        return WorkerStopping(f"{tool}: {info.message}")
    if kind == Kind.CODEC:
        path, type_name = error_details(info.message)
        return PayloadError(f"{tool}: {info.message}", path=path, type_name=type_name)
    if kind == Kind.CANCELLED:
        return WorkerError(f"{tool}: the call was cancelled in the worker")
    return WorkerError(f"{tool}: {info.type or 'error'}: {info.message}")


def error_from_rpc(exc: grpc.RpcError, tool: str) -> WorkerError:
    """The public error for a failed gRPC call (the transport, not the tool), caused by ``exc``."""
    code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
    details = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        error: WorkerError = PayloadTooLarge(f"{tool}: {details}")
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        error = ExecutionTimeout(f"{tool}: no reply in time", tool=tool)
    elif code == grpc.StatusCode.UNAUTHENTICATED:
        error = WorkerUnavailable(
            f"{tool}: the worker refused the call: authentication failed"
            " (a missing or wrong secret)"
        )
    else:
        error = WorkerUnavailable(f"{tool}: the connection to the worker failed: {details}")
    error.__cause__ = exc
    return error


def error_from_grpc(exc: Exception, what: str) -> WorkerError | None:
    """The public error for what a grpc.aio call raised, caused by it; None if not grpc's.

    :param what: the call, to start the message (a tool's name, ``"Describe"``).
    """
    if isinstance(exc, grpc.RpcError):  # the call failed: its status code says how
        return error_from_rpc(exc, what)
    if isinstance(exc, grpc.aio.BaseError):  # UsageError: the channel is closed
        error = WorkerUnavailable(f"{what}: {exc}")
        error.__cause__ = exc
        return error
    return None


@contextlib.contextmanager
def grpc_errors(what: str) -> Iterator[None]:
    """Raise the public error (:func:`error_from_grpc`) for a grpc.aio error inside the block.

    Every gRPC call of a :class:`WorkerConnection` runs in one: no bare
    ``grpc.RpcError`` (or ``grpc.aio.UsageError``) reaches a user.

    :param what: the call, to start the message (a tool's name, ``"Describe"``).
    :raises WorkerError: the mapped error (``WorkerUnavailable``,
        ``ExecutionTimeout``, ``PayloadTooLarge``), chained to grpc's.
    """
    try:
        yield
    except (grpc.RpcError, grpc.aio.BaseError) as exc:
        error = error_from_grpc(exc, what)
        assert error is not None
        raise error from exc


async def _finish(call: Any) -> Any:
    """Await a unary grpc.aio call so that cancellation stays the caller's own.

    grpc.aio turns a cancelled await into a fresh ``CancelledError()`` of its
    own, which anyio's cancel scopes do not recognise as theirs (it escapes
    ``move_on_after``). Waiting on a future of ours keeps the caller's
    cancellation intact; the RPC is cancelled on the way out.
    """
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake(_call: object) -> None:
        if not done.done():
            done.set_result(None)

    call.add_done_callback(wake)
    try:
        await done
    except asyncio.CancelledError:
        call.cancel()
        raise
    if call.cancelled():  # the channel was closed under it: not our caller's cancellation
        raise WorkerUnavailable("the connection was closed with the call in flight")
    return await call


def _result(response: worker_pb2.ExecuteResponse, tool: str, codec: str) -> Any:
    if response.WhichOneof("outcome") == "error":
        raise error_from_info(response.error, tool)
    try:
        return decode(response.result, allow_pickle=codec == PICKLE)
    except CodecError as exc:
        raise PayloadError(f"{tool}: cannot decode the result: {exc}") from exc


def _chunk_value(chunk: worker_pb2.StreamChunk, tool: str, codec: str) -> Any:
    """A stream chunk's value, :data:`_END` for the end marker; raises the error one carries."""
    item = chunk.WhichOneof("item")
    if item == "error":
        raise error_from_info(chunk.error, tool)
    if item != "chunk":
        return _END
    try:
        return decode(chunk.chunk, allow_pickle=codec == PICKLE)
    except CodecError as exc:
        raise PayloadError(f"{tool}: cannot decode a chunk: {exc}") from exc


def _fill(
    request: worker_pb2.ExecuteRequest,
    rid: int,
    tool: str,
    args: Any,
    timeout: float | None,
    session_id: str,
    limit: int,
    codec: str,
) -> None:
    if timeout is not None and not timeout > 0:
        raise ConfigError("timeout", f"must be None or > 0, got {timeout!r}")
    request.request_id = rid
    request.tool = tool
    request.session_id = session_id
    request.timeout = timeout or 0.0
    try:
        encode_into(request.args, {} if args is None else args, codec=codec, root="args")
    except CodecError as exc:
        raise PayloadError(
            f"{tool}: cannot encode the arguments: {exc}", path=exc.path, type_name=exc.type_name
        ) from exc
    size = request.ByteSize()
    if size > limit - ENVELOPE:
        raise PayloadTooLarge(
            f"{tool}: the arguments are {size} bytes, over the {limit}-byte message limit",
            size=size,
            limit=limit,
        )


class WorkerConnection:
    """A gRPC connection to one worker process.

    :param address: as the worker's ready line gives it (``unix:PATH`` or
        ``tcp:HOST:PORT``).
    :param max_message_bytes: the message size limit (match the worker's).
    :param codec: ``"json"`` (the default) or ``"pickle"``, for trusted workers
        started with ``--allow-pickle``; results come back in the same codec.
    :param secret: the worker's secret (``WorkerProcess.secret``), sent with
        every call; None for a worker started without authentication.
    :raises ConfigError: an unknown codec.
    """

    def __init__(
        self,
        address: str,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        codec: Codec = JSON,
        secret: bytes | None = None,
    ) -> None:
        if codec not in (JSON, PICKLE):
            raise ConfigError("codec", f"must be 'json' or 'pickle', got {codec!r}")
        self._codec = codec
        self._metadata: tuple[tuple[str, str], ...] | None = (
            None if secret is None else ((METADATA_KEY, secret.hex()),)
        )
        self._limit = max_message_bytes
        self._channel = grpc.aio.insecure_channel(
            grpc_target(address),
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
                # Its own subchannel pool: one connection per worker, released
                # with this client instead of living on in grpc's global pool.
                ("grpc.use_local_subchannel_pool", 1),
            ],
        )
        # The generated stubs are untyped; the call sites below are typed.
        self._stub: Any = worker_pb2_grpc.WorkerServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._health: Any = health_pb2_grpc.HealthStub(self._channel)
        self._ids = itertools.count(1)

    @property
    def max_message_bytes(self) -> int:
        """The message size limit of this connection."""
        return self._limit

    async def __aenter__(self) -> WorkerConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection (calls in flight fail with WorkerUnavailable)."""
        await self._channel.close()

    def _request(
        self, tool: str, args: Any, timeout: float | None, session_id: str
    ) -> worker_pb2.ExecuteRequest:
        request = worker_pb2.ExecuteRequest()
        _fill(request, next(self._ids), tool, args, timeout, session_id, self._limit, self._codec)
        return request

    async def execute(
        self,
        tool: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        session_id: str = "",
    ) -> Any:
        """Call ``tool`` with ``args`` over a unary ``Execute`` and return its result.

        :raises RemoteError: the tool raised (``ToolNotFound``,
            ``InvalidArguments`` for bad calls).
        :raises ExecutionTimeout: ``timeout`` passed (the remote call is cancelled).
        :raises PayloadTooLarge, PayloadError, WorkerUnavailable: see :mod:`snakepit.errors`.
        """
        request = self._request(tool, args, timeout, session_id)
        with grpc_errors(tool):
            call = self._stub.Execute(request, timeout=timeout, metadata=self._metadata)
            response = await _finish(call)
        return _result(response, tool, self._codec)

    async def stream(
        self,
        tool: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        session_id: str = "",
    ) -> AsyncGenerator[Any, None]:
        """Call a streaming ``tool`` and yield its items in order.

        Closing the iterator early (``aclose()``, ``break``) cancels the remote side.

        :raises RemoteError, ExecutionTimeout, WorkerUnavailable: as :meth:`execute`.
        """
        request = self._request(tool, args, timeout, session_id)
        with grpc_errors(tool):
            call = self._stub.ExecuteStream(request, timeout=timeout, metadata=self._metadata)
        try:
            with grpc_errors(tool):
                async for chunk in call:
                    value = _chunk_value(chunk, tool, self._codec)
                    if value is _END:
                        return
                    yield value
        finally:
            call.cancel()
        raise WorkerUnavailable(f"{tool}: the stream ended without its end marker")

    async def describe(self, *, timeout: float | None = 10.0) -> WorkerDescription:
        """The worker's adapter, protocol version and tool specs."""
        with grpc_errors("Describe"):
            described: worker_pb2.DescribeResponse = await _finish(
                self._stub.Describe(
                    worker_pb2.DescribeRequest(), timeout=timeout, metadata=self._metadata
                )
            )
        return from_message(described)

    async def health(self, service: str = "", *, timeout: float | None = 5.0) -> str:
        """The ``grpc.health.v1`` status of ``service`` (``"SERVING"`` when all is well)."""
        with grpc_errors("Health.Check"):
            response = await _finish(
                self._health.Check(
                    health_pb2.HealthCheckRequest(service=service),
                    timeout=timeout,
                    metadata=self._metadata,
                )
            )
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    def multiplexer(self) -> Multiplexer:
        """Open a :class:`Multiplexer` on this connection's ``Channel`` RPC.

        :raises WorkerUnavailable: the connection is closed.
        """
        with grpc_errors("Channel"):
            transport = _GrpcTransport(self._stub, self._metadata)
        return Multiplexer(transport, self._limit, self._codec)


#: (channel, request id) of the call the current task left running (cancelled,
#: timed out, a stream closed early) on the worker: see Multiplexer.take_left_running.
_left_running: contextvars.ContextVar[tuple[Multiplexer, int] | None] = contextvars.ContextVar(
    "snakepit_left_running", default=None
)


class Multiplexer:
    """Many calls on one long-lived bidirectional ``Channel`` stream (the hot path).

    Requests that wait while a frame is being written go together in the next
    frame, and the worker batches its replies the same way, so 64 callers in
    flight cost a handful of messages, not 128 RPCs. Close it with
    :meth:`aclose` (or use it as an ``async with``); if the stream breaks,
    every pending call fails with :class:`~snakepit.errors.WorkerUnavailable`.

    It owns two tasks, started here and ended by :meth:`aclose`, which
    returns once both have: one reads the worker's frames, one writes (or,
    on the frames socket, waits for the socket's buffer to drain). Whatever
    ends either one early breaks the channel, and its calls fail with it.

    A call whose caller is cancelled, that times out, or a stream closed
    early is cancelled in the worker; its tool may run on a while (a sync
    tool cannot be interrupted). The worker answers once it has really ended;
    until then the request is *left running* (:meth:`take_left_running`,
    :meth:`settled`), and the worker's slot is not free.
    """

    def __init__(self, transport: Any, limit: int, codec: Codec = JSON) -> None:
        self._codec = codec
        self._loop = asyncio.get_running_loop()
        self._limit = limit
        # A gRPC stub (its Channel RPC carries the frames), or a transport.
        self._call: _Transport = (
            transport
            if isinstance(transport, _FramesTransport | _GrpcTransport)
            else _GrpcTransport(transport)
        )
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._streams: dict[int, asyncio.Queue[worker_pb2.StreamChunk | None]] = {}
        # Requests left running in the worker, until their final reply comes
        # (True) or the channel ends (False).
        self._unsettled: dict[int, asyncio.Future[bool]] = {}
        # Final replies that came for a cancelled call before its caller resumed.
        self._early: set[int] = set()
        self._wake = asyncio.Event()
        # A transport that writes without waiting (the frames socket) is written
        # from a callback at the end of the loop pass that queued the requests:
        # no hop to the writer task, and requests of one pass share a frame.
        self._batch = FrameBatcher(
            worker_pb2.ClientFrame,
            limit,
            write_nowait=getattr(self._call, "write_nowait", None),
            wake=self._wake.set,
            flush=self._flush,
        )
        self._drain = False
        self._broken: WorkerError | None = None
        self._closed = False
        self._writer = self._loop.create_task(self._write_loop(), name="snakepit channel writer")
        self._reader = self._loop.create_task(self._read_loop(), name="snakepit channel reader")

    async def __aenter__(self) -> Multiplexer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- calls -------------------------------------------------------------------------

    def _check(self) -> None:
        if self._broken is not None:
            raise WorkerUnavailable(str(self._broken)) from self._broken
        if self._closed:
            raise WorkerUnavailable("the channel is closed")

    def _queue(
        self, kind: str, tool: str, args: Any, timeout: float | None, session_id: str
    ) -> int:
        # The request is built in place inside the frame being filled (no copy);
        # a request that would push the frame over the size limit opens the next.
        rid = next(self._ids)
        batch = self._batch
        field = getattr(batch.frame, kind)
        request = field.add()
        try:
            _fill(request, rid, tool, args, timeout, session_id, self._limit, self._codec)
        except BaseException:
            del field[-1]
            raise
        size = request.ByteSize() + ITEM_OVERHEAD
        if not batch.fits(size):
            del field[-1]
            request = getattr(batch.next_frame(), kind).add()
            _fill(request, rid, tool, args, timeout, session_id, self._limit, self._codec)
        batch.added(size)
        return rid

    async def execute(
        self,
        tool: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        session_id: str = "",
    ) -> Any:
        """Call ``tool`` over the channel; semantics as :meth:`WorkerConnection.execute`.

        Cancelling the awaiting task cancels the remote call.
        """
        self._check()
        rid = self._queue("execute", tool, args, timeout, session_id)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending[rid] = future
        timer = self._loop.call_later(timeout, _expire, future) if timeout is not None else None
        try:
            response = await future
        except asyncio.CancelledError:
            replied = (
                future.done()
                and not future.cancelled()
                and future.exception() is None
                and future.result() is not _TIMED_OUT
            )
            if not replied:  # (a reply that came just before the cancellation ended it)
                self._leave_running(rid)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            self._pending.pop(rid, None)
        if response is _TIMED_OUT:
            self._leave_running(rid)
            raise ExecutionTimeout(
                f"{tool}: no reply within {timeout:g}s", tool=tool, timeout=timeout
            )
        return _result(response, tool, self._codec)

    async def stream(
        self,
        tool: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        session_id: str = "",
    ) -> AsyncGenerator[Any, None]:
        """Call a streaming ``tool`` over the channel; ``aclose()`` cancels it remotely."""
        self._check()
        rid = self._queue("stream", tool, args, timeout, session_id)
        queue: asyncio.Queue[worker_pb2.StreamChunk | None] = asyncio.Queue()
        self._streams[rid] = queue
        finished = False
        try:
            while True:
                if timeout is None:
                    chunk = await queue.get()
                else:
                    try:
                        chunk = await asyncio.wait_for(queue.get(), timeout)
                    except TimeoutError:
                        raise ExecutionTimeout(
                            f"{tool}: no chunk within {timeout:g}s", tool=tool, timeout=timeout
                        ) from None
                if chunk is None:
                    self._check()
                    raise WorkerUnavailable(f"{tool}: the channel closed mid-stream")
                finished = chunk.WhichOneof("item") != "chunk"  # end or error: nothing to cancel
                value = _chunk_value(chunk, tool, self._codec)
                if value is _END:
                    return
                yield value
        finally:
            self._streams.pop(rid, None)
            while not finished and not queue.empty():  # its last chunk may be in already
                left = queue.get_nowait()
                finished = left is None or left.WhichOneof("item") != "chunk"
            if not finished:
                self._leave_running(rid)

    def _leave_running(self, rid: int) -> None:
        # The caller stops waiting for ``rid``: cancel it in the worker and
        # remember it until the worker says it has ended.
        if self._broken is not None or self._closed:
            return  # the connection is gone: nothing to wait for
        if rid in self._early:
            self._early.discard(rid)  # its final reply is in: it ended
            return
        self._batch.frame.cancel.append(rid)
        self._batch.added(ITEM_OVERHEAD)
        self._unsettled[rid] = self._loop.create_future()
        _left_running.set((self, rid))

    def take_left_running(self) -> int | None:
        """The request the current task's last call left running on this channel, or None.

        A call cancelled (or timed out, or a stream closed early) before its
        reply came leaves its request running in the worker until the worker
        reports its end (see :meth:`settled`). Taking it clears it, so each
        such request is taken once, by the task that made the call.
        """
        left = _left_running.get()
        if left is None:
            return None
        _left_running.set(None)
        channel, rid = left
        return rid if channel is self and rid in self._unsettled else None

    @property
    def left_running(self) -> frozenset[int]:
        """Requests left running in the worker now, whose end has not been reported."""
        return frozenset(self._unsettled)

    async def settled(self, rid: int) -> bool:
        """Wait until the worker reports that the request ``rid`` left running has ended.

        True once it has (its slot in the worker is free again), at once for
        a request not left running; False if the channel broke or was closed
        (the worker's state is then unknown). Cancelling the wait leaves the
        request tracked.
        """
        settled = self._unsettled.get(rid)
        if settled is None:
            return self._broken is None and not self._closed
        return await asyncio.shield(settled)

    def _settle(self, rid: int) -> None:
        settled = self._unsettled.pop(rid, None)
        if settled is not None and not settled.done():
            settled.set_result(True)

    def _flush(self) -> None:
        if self._broken is not None or self._closed:
            return
        try:
            if not self._batch.write_all():
                self._drain = True  # over the high-water mark: the writer task waits
                self._wake.set()
        except Exception as exc:  # the socket broke under us
            self._fail(_broke(exc))

    # -- the two loops -----------------------------------------------------------------

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._drain:
                    self._drain = False
                    await self._call.drain()
                    continue
                for frame in self._batch.take():
                    await self._call.write(frame)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the call failed, or was closed under us
            self._fail(_broke(exc))

    async def _read_loop(self) -> None:
        pending = self._pending
        streams = self._streams
        try:
            while True:
                frame = await self._call.read()
                if frame is None:
                    break
                for response in frame.responses:
                    rid = response.request_id
                    future = pending.get(rid)
                    if future is not None and not future.done():
                        future.set_result(response)
                    elif rid in self._unsettled:
                        self._settle(rid)
                    elif future is not None:  # its caller gave up and has not resumed yet
                        self._early.add(rid)
                for chunk in frame.chunks:
                    rid = chunk.request_id
                    queue = streams.get(rid)
                    if queue is not None:
                        queue.put_nowait(chunk)
                    elif rid in self._unsettled and chunk.WhichOneof("item") != "chunk":
                        self._settle(rid)
            self._fail(WorkerUnavailable("the worker closed the channel"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the call failed, the socket broke, a frame was unreadable
            self._fail(_broke(exc))

    def _fail(self, error: WorkerError) -> None:
        if self._broken is None:
            self._broken = error
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WorkerUnavailable(str(error)))
        for queue in self._streams.values():
            queue.put_nowait(None)
        unsettled, self._unsettled = self._unsettled, {}
        for settled in unsettled.values():
            if not settled.done():
                settled.set_result(False)
        self._early.clear()

    async def aclose(self) -> None:
        """Close the stream (its pending calls fail with WorkerUnavailable) and end its tasks."""
        if not self._closed:
            self._closed = True
            self._fail(WorkerUnavailable("the channel was closed"))
            self._writer.cancel()
            self._reader.cancel()
            self._call.cancel()
        await asyncio.gather(self._writer, self._reader, return_exceptions=True)


class _Transport(Protocol):
    async def write(self, frame: worker_pb2.ClientFrame) -> None: ...
    async def drain(self) -> None: ...
    async def read(self) -> worker_pb2.ServerFrame | None: ...
    def cancel(self) -> None: ...


class _GrpcTransport:
    """The ``Channel`` RPC as a frame transport."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...] | None = None) -> None:
        self._call = stub.Channel(metadata=metadata)

    async def write(self, frame: worker_pb2.ClientFrame) -> None:
        await self._call.write(frame)

    async def drain(self) -> None:
        pass

    async def read(self) -> worker_pb2.ServerFrame | None:
        frame = await self._call.read()
        return None if frame is grpc.aio.EOF else frame

    def cancel(self) -> None:
        self._call.cancel()


class _FramesTransport:
    """Length-prefixed frames on a worker's frames socket (see ``snakepit._wire._frames``)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._limit = limit

    async def write(self, frame: worker_pb2.ClientFrame) -> None:
        self._writer.write(pack(frame))
        await self._writer.drain()

    def write_nowait(self, frame: worker_pb2.ClientFrame) -> bool:
        """Buffer ``frame``; False once the buffer is over its high-water mark."""
        return write_nowait(self._writer, frame)

    async def drain(self) -> None:
        await self._writer.drain()

    async def read(self) -> worker_pb2.ServerFrame | None:
        return await read_frame(self._reader, worker_pb2.ServerFrame, self._limit)

    def cancel(self) -> None:
        self._writer.close()


async def open_frames_multiplexer(
    address: str,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    codec: Codec = JSON,
    secret: bytes | None = None,
    timeout: float = 10.0,
) -> Multiplexer:
    """Connect to a worker's frames socket (``unix:PATH``) and multiplex calls over it.

    The same :class:`Multiplexer` as on the ``Channel`` RPC, at a fraction of
    the cost per call. The connection opens with the worker's ``secret``
    (None: a worker started without authentication) and is ready once the
    worker accepted it, within ``timeout`` seconds.

    :raises WorkerUnavailable: the socket cannot be reached, the worker
        refused the secret (the message says so), or did not answer in time.
    """
    path = unix_path(address)
    if path is None:
        raise ConfigError("address", f"a frames address is unix:PATH, got {address!r}")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(path, limit=1024 * 1024)
            try:
                writer.write(frames_preface(secret))
                answer = await reader.readexactly(len(FRAMES_ACCEPTED))
            except BaseException:
                writer.close()
                raise
    except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
        raise WorkerUnavailable(
            f"{address}: the worker closed the connection before accepting it:"
            " authentication failed (a missing or wrong secret), or it is stopping"
        ) from exc
    except TimeoutError as exc:
        raise WorkerUnavailable(
            f"{address}: the worker did not accept the connection within {timeout:g}s"
        ) from exc
    except OSError as exc:
        raise WorkerUnavailable(f"cannot connect to {address}: {exc}") from exc
    if answer != FRAMES_ACCEPTED:  # pragma: no cover - not a snakepit worker
        writer.close()
        raise WorkerUnavailable(f"{address}: not a snakepit worker's frames socket")
    transport = _FramesTransport(reader, writer, max_message_bytes)
    return Multiplexer(transport, max_message_bytes, codec)


def _broke(exc: Exception) -> WorkerError:
    """The error of a channel whose reading or writing raised ``exc``."""
    error = error_from_grpc(exc, "Channel")
    if error is None:
        error = WorkerUnavailable(f"the channel broke: {exc}")
        error.__cause__ = exc
    return error


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(_TIMED_OUT)
