"""WorkerConnection: the host's gRPC connection to one worker (unary, streaming, health)."""

from __future__ import annotations

# First: grpc is imported with its logging quieted (before any module below imports it).
from snakepit._wire import _grpc_logging  # noqa: F401  # isort: skip

import asyncio
import itertools
from collections.abc import AsyncGenerator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from snakepit._wire._address import grpc_target
from snakepit._wire._auth import METADATA_KEY
from snakepit._wire._codec import JSON, PICKLE
from snakepit._wire._grpc_loops import forget_closed_loops
from snakepit._wire._proto.snakepit.v1 import worker_pb2, worker_pb2_grpc
from snakepit.errors import ConfigError, WorkerUnavailable

from ._config import Codec
from ._connection import Multiplexer
from ._description import WorkerDescription, from_message
from ._grpc_errors import grpc_errors
from ._requests import DEFAULT_MAX_MESSAGE_BYTES, END, chunk_value, fill_request, result_of
from ._transports import GrpcTransport

__all__ = ("WorkerConnection",)


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
        forget_closed_loops()  # grpc.aio binds this loop now: let go of the closed ones
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
        fill_request(
            request,
            next(self._ids),
            tool,
            args,
            timeout,
            session_id,
            b"",
            self._limit,
            self._codec,
        )
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
        return result_of(response, tool, self._codec)

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
                    value = chunk_value(chunk, tool, self._codec)
                    if value is END:
                        return
                    yield value
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if call.cancelled() and task is not None and not task.cancelling():
                # grpc's own CancelledError: the connection was closed under
                # the stream, not the consumer cancelled.
                raise WorkerUnavailable(
                    f"{tool}: the connection was closed with the stream in flight"
                ) from exc
            raise
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
            transport = GrpcTransport(self._stub, self._metadata)
        return Multiplexer(transport, self._limit, self._codec)
