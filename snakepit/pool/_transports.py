"""The frame transports a :class:`~snakepit.pool.Multiplexer` runs on.

A worker's ``Channel`` gRPC stream, or its frames socket (length-prefixed
frames on a unix socket, opened by :func:`open_frames_transport` with the
worker's secret).
"""

from __future__ import annotations

# First: grpc is imported with its logging quieted (before any module below imports it).
from snakepit._wire import _grpc_logging  # noqa: F401  # isort: skip

import asyncio
import contextlib
from typing import Any, Protocol

import grpc

from snakepit._wire._address import unix_path
from snakepit._wire._auth import FRAMES_ACCEPTED, frames_preface
from snakepit._wire._frames import pack, read_frame, write_nowait
from snakepit._wire._proto.snakepit.v1 import worker_pb2
from snakepit.errors import ConfigError, WorkerUnavailable

#: Seconds a closing ``Channel`` stream waits for the worker to end it.
CLOSE_GRACE = 1.0


class Transport(Protocol):
    async def write(self, frame: worker_pb2.ClientFrame) -> None: ...
    async def drain(self) -> None: ...
    async def read(self) -> worker_pb2.ServerFrame | None: ...
    async def close(self, writer: asyncio.Task[None], reader: asyncio.Task[None]) -> None: ...
    def cancel(self) -> None: ...


class GrpcTransport:
    """The ``Channel`` RPC as a frame transport."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...] | None = None) -> None:
        self._call = stub.Channel(metadata=metadata)

    async def close(self, writer: asyncio.Task[None], reader: asyncio.Task[None]) -> None:
        """End the stream from this side; return once ``writer`` and ``reader`` ended.

        The writer ends after the frame it is writing; the worker takes the
        end of the requests as the client gone (it cancels the calls still
        running and ends the RPC), and the reader ends on that. Cancelling
        the call instead would leave grpc waiting for the stream's last read
        and status: those complete later, and if the loop was closed by then,
        grpc fails in the next loop of the process ("Event loop is closed").
        After :data:`CLOSE_GRACE` seconds (a worker that does not answer)
        the caller cancels the call and both tasks.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_GRACE):
                await asyncio.wait([writer])
                if not self._call.done():
                    # A call that failed meanwhile raises here; the reader says why.
                    with contextlib.suppress(Exception):
                        await self._call.done_writing()
                await asyncio.wait([reader])

    async def write(self, frame: worker_pb2.ClientFrame) -> None:
        await self._call.write(frame)

    async def drain(self) -> None:
        pass

    async def read(self) -> worker_pb2.ServerFrame | None:
        frame = await self._call.read()
        return None if frame is grpc.aio.EOF else frame

    def cancel(self) -> None:
        self._call.cancel()


class FramesTransport:
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

    async def close(self, writer: asyncio.Task[None], reader: asyncio.Task[None]) -> None:
        """Nothing to wait for: the caller cancels both tasks and closes the socket."""

    def cancel(self) -> None:
        self._writer.close()


async def open_frames_transport(
    address: str, *, max_message_bytes: int, secret: bytes | None, timeout: float
) -> FramesTransport:
    """Connect to a worker's frames socket (``unix:PATH``) and open it with ``secret``.

    Returns once the worker accepted the connection, within ``timeout`` seconds.

    :raises ConfigError: ``address`` is not ``unix:PATH``.
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
    return FramesTransport(reader, writer, max_message_bytes)
