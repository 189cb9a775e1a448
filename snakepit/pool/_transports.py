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
import logging
import os
from collections.abc import Callable
from typing import Any, Protocol

import grpc

from snakepit._wire._address import unix_path
from snakepit._wire._auth import FRAMES_ACCEPTED, frames_preface
from snakepit._wire._frames import FrameError, FrameProtocol, FrameSplitter, size_buffers
from snakepit._wire._proto.snakepit.v1 import worker_pb2
from snakepit._wire._started import StartedPage
from snakepit.errors import ConfigError, WorkerUnavailable

logger = logging.getLogger("snakepit.pool")

#: Seconds a closing ``Channel`` stream waits for the worker to end it.
CLOSE_GRACE = 1.0

#: Bytes per read of what is left in a lost frames connection.
_READ_LEFT = 256 * 1024


class Transport(Protocol):
    async def write(self, frame: worker_pb2.ClientFrame) -> None: ...
    async def drain(self) -> None: ...
    async def read(self) -> worker_pb2.ServerFrame | None: ...
    async def close(
        self, writer: asyncio.Task[None], reader: asyncio.Task[None] | None
    ) -> None: ...
    def cancel(self) -> None: ...


class GrpcTransport:
    """The ``Channel`` RPC as a frame transport."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...] | None = None) -> None:
        self._call = stub.Channel(metadata=metadata)

    async def close(self, writer: asyncio.Task[None], reader: asyncio.Task[None] | None) -> None:
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
                if reader is not None:
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


#: Bytes read at most at once before the worker accepted the connection (then the
#: splitter's buffers take what comes: ``snakepit._wire._frames.READ_CHUNK``).
_PREFACE_READ = 4096


class FramesTransport(FrameProtocol, asyncio.BufferedProtocol):
    """Length-prefixed frames on a worker's frames socket (see ``snakepit._wire._frames``).

    A push transport: the loop reads into its buffer (:meth:`get_buffer`,
    :meth:`buffer_updated`: no bytes object allocated per read, which for the
    loop's 256 KiB reads was an mmap, an mremap and a munmap), or hands it
    the bytes that came in (:meth:`data_received`); it cuts them into frames
    and gives each to the
    owner's ``deliver`` in that same callback (no reader task, no task
    wake-up per frame). The connection's end (the worker closed it, it
    broke, a frame over the limit or one that does not parse) goes to the
    owner's ``lost``, once, and the socket is closed. Writes are buffered by
    the loop's transport (:meth:`write_nowait`); :meth:`drain` waits while
    its buffer is over :data:`~snakepit._wire._frames.HIGH_WATER`.

    Opened by :func:`open_frames_transport`, which returns it once the
    worker accepted the secret; frames go to the owner from :meth:`attach` on.
    """

    def __init__(self, limit: int, page: StartedPage | None = None) -> None:
        super().__init__()
        #: The connection's started page (named in its first frame), if one could be made.
        self.page = page
        self._splitter = FrameSplitter(worker_pb2.ServerFrame, limit)
        #: The worker's answer to the preface: True (accepted), False (not a
        #: snakepit worker), or the connection's failure before it answered.
        self.accepted: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._deliver: Callable[[worker_pb2.ServerFrame], object] | None = None
        self._lost: Callable[[Exception | None], object] | None = None
        self._ended = False
        self._end_error: Exception | None = None  # the end, until an owner attaches
        self._early: list[worker_pb2.ServerFrame] = []  # frames before attach()
        self._read_view = memoryview(bytearray(_PREFACE_READ))  # until the worker accepted
        self._into_splitter = False  # get_buffer() gives the splitter's buffer (once accepted)

    # -- the owner's side --------------------------------------------------------------

    def attach(
        self,
        deliver: Callable[[worker_pb2.ServerFrame], object],
        lost: Callable[[Exception | None], object],
    ) -> None:
        """Give each frame to ``deliver`` from now on, and the connection's end to ``lost``.

        ``lost`` gets None for a clean end (the worker closed the socket),
        the error otherwise, and is called once. Frames that came before,
        and an end reached before, are handed over here.
        """
        early, self._early = self._early, []
        for frame in early:
            deliver(frame)
        if self._ended:
            lost(self._end_error)
            return
        self._deliver = deliver
        self._lost = lost

    def write_nowait(self, frame: worker_pb2.ClientFrame) -> bool:
        """Buffer ``frame``; False once the buffer is over its high-water mark."""
        return self.send(frame)

    async def write(self, frame: worker_pb2.ClientFrame) -> None:
        """Buffer ``frame``, then wait until the buffer is below its high-water mark."""
        self.send(frame)
        await self.drain()

    async def read(self) -> worker_pb2.ServerFrame | None:
        """Not used: frames are pushed to the owner (:meth:`attach`)."""
        raise NotImplementedError("a push transport: frames go to attach()'s deliver")

    async def close(self, writer: asyncio.Task[None], reader: asyncio.Task[None] | None) -> None:
        """Nothing to wait for: the caller cancels its task and closes the socket."""
        if self.page is not None:
            self.page.remove()  # its mapping stays readable, for a crash's judgement

    def cancel(self) -> None:
        """Close the socket (what is buffered is still sent)."""
        if self.transport is not None:
            self.transport.close()

    # -- the loop's side ---------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where the loop reads what comes in: the splitter's buffer (see ``FrameSplitter``).

        Small frames go many at a time into one reused buffer; a big frame's
        rest straight into a buffer of its size.
        """
        if self._into_splitter or self.accepted.done():
            self._into_splitter = True  # from now on (the preface was answered)
            return self._splitter.get_buffer()
        return self._read_view

    def buffer_updated(self, nbytes: int) -> None:
        """The loop read ``nbytes`` into the buffer: deliver the frames they complete."""
        if not self._into_splitter:  # the worker's answer to the preface, maybe frames
            self.data_received(self._read_view[:nbytes])
            return
        if self._ended:
            return
        try:
            frames = self._splitter.filled(nbytes)
        except FrameError as exc:
            self._end(exc)
            return
        self._hand_over(frames)

    def data_received(self, data: bytes | memoryview) -> None:
        """Cut ``data`` into frames and deliver those it completes."""
        if self._ended:
            return
        accepted = self.accepted
        if not accepted.done():  # the worker's one-byte answer to the preface
            if data[:1] != FRAMES_ACCEPTED:  # pragma: no cover - not a snakepit worker
                accepted.set_result(False)
                self._end(None)
                return
            accepted.set_result(True)
            data = data[1:]
        try:
            frames = self._splitter.feed(data)
        except FrameError as exc:
            self._end(exc)
            return
        self._hand_over(frames)

    def _hand_over(self, frames: list[worker_pb2.ServerFrame]) -> None:
        deliver = self._deliver
        if deliver is None:
            self._early.extend(frames)
            return
        for frame in frames:
            deliver(frame)

    def eof_received(self) -> bool:
        """The worker closed its side: the connection ends (the socket is closed)."""
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail a handshake still waiting; tell the owner how the connection ended.

        A connection lost to an error of a write (the worker died: a broken
        pipe) still has the worker's last replies unread in the socket: they
        are read and delivered first, so that a call that ended before the
        worker died gets its result, not a crash.
        """
        if exc is not None and not self._ended and self.accepted.done():
            self._read_what_is_left()
        super().connection_lost(exc)
        if not self.accepted.done():
            self.accepted.set_exception(
                ConnectionResetError("the connection closed") if exc is None else exc
            )
        if exc is None and self._splitter.partial:
            exc = FrameError("the stream ended inside a frame")
        self._end(exc)

    def _read_what_is_left(self) -> None:
        # The socket is still open here (the loop closes it after
        # connection_lost); what the worker wrote before it went is in it.
        transport = self.transport
        sock = None if transport is None else transport.get_extra_info("socket")
        if sock is None:
            return
        try:
            fd = sock.fileno()
            while fd >= 0 and not self._ended:
                data = os.read(fd, _READ_LEFT)
                if not data:
                    return
                self.data_received(data)
        except OSError:  # nothing more (EAGAIN), reset, or closed: what came is delivered
            return

    def _end(self, exc: Exception | None) -> None:
        # Once: the first end wins (an unreadable frame, not the close it causes).
        if self._ended:
            return
        self._ended = True
        self._end_error = exc
        if self.transport is not None:
            self.transport.close()
        lost = self._lost
        self._lost = self._deliver = None
        if lost is not None:
            lost(exc)


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
    loop = asyncio.get_running_loop()
    frames = FramesTransport(max_message_bytes)
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_unix_connection(lambda: frames, path)
            size_buffers(transport.get_extra_info("socket"))
            try:
                transport.write(frames_preface(secret))
                accepted = await frames.accepted
            except BaseException:
                transport.close()
                raise
    except ConnectionResetError as exc:
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
    if not accepted:  # pragma: no cover - not a snakepit worker
        raise WorkerUnavailable(f"{address}: not a snakepit worker's frames socket")
    page = frames.page = _started_page(path)
    if page is not None:  # the first frame names it
        frames.send(worker_pb2.ClientFrame(started_page=page.path))
    return frames


def _started_page(socket_path: str) -> StartedPage | None:
    """A started page beside the worker's socket; None (logged) where none can be made."""
    directory, name = os.path.split(socket_path)
    try:
        return StartedPage.create(directory or ".", f".{name}-")
    except OSError as exc:
        logger.warning(
            "no started page beside %s (%s): a crash fails every call in flight on it,"
            " those that had not started too",
            socket_path,
            exc,
        )
        return None
