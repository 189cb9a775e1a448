"""Length-prefixed protobuf frames over a byte stream (the Channel's fast transport).

Shared by the host and the worker: a frame is a 4-byte little-endian length
and that many bytes of a serialized ``ClientFrame`` or ``ServerFrame``. On a
unix socket this carries the multiplexed calls with a fraction of a gRPC
stream message's cost; gRPC keeps the unary calls, health and describe.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Final, Generic, Protocol, TypeVar, cast

from google.protobuf.message import DecodeError

__all__ = (
    "ENVELOPE",
    "HIGH_WATER",
    "FlushSoon",
    "FrameBatcher",
    "FrameError",
    "FrameProtocol",
    "FrameSplitter",
    "pack",
    "pack_parts",
    "read_frame",
    "rest_of",
    "send_parts",
    "size_buffers",
    "write_nowait",
)

_HEADER: Final = struct.Struct("<I")
#: Bytes buffered for a frames connection past which its writer waits for a
#: drain (writers keep queueing meanwhile: the buffer is not a hard bound).
HIGH_WATER: Final = 4 * 1024 * 1024
#: Room above the message limit for a frame's envelope (tags and lengths).
SLACK: Final = 64 * 1024
#: Room left below the message limit in a frame for all but its items (field
#: tags, lengths): what a frame's items may fill is the limit minus this.
ENVELOPE: Final = 1024
#: What an item adds to a frame besides its own bytes (its tag and length), at most.
ITEM_OVERHEAD: Final = 8


#: A frame at least this big (its body) is read straight into a buffer of its size, and
#: written without joining it to its header.
DIRECT: Final = 64 * 1024
#: Bytes a splitter's reused read buffer holds (what :meth:`FrameSplitter.get_buffer` gives
#: between big frames).
READ_CHUNK: Final = 256 * 1024
#: A big frame's buffer up to this size is kept for the next big frame (not freed).
KEEP: Final = 8 * 1024 * 1024


#: The socket buffers asked for on a frames connection (the kernel caps them at
#: ``net.core.wmem_max`` / ``rmem_max``): with the default ~200 KiB a 1 MiB
#: frame crossed a unix socket in ~20 KiB pieces, a wake-up and a read each.
SOCKET_BUFFER: Final = 4 * 1024 * 1024


def size_buffers(sock: socket.socket | None) -> None:
    """Ask for :data:`SOCKET_BUFFER`-byte send and receive buffers on a frames socket.

    Best effort: a socket that refuses (or none, as some transports report) is left as it is.
    """
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)


class _Message(Protocol):
    def SerializeToString(self) -> bytes: ...
    def ByteSize(self) -> int: ...


M = TypeVar("M")
M_co = TypeVar("M_co", covariant=True)


class _Parser(Protocol[M_co]):
    def FromString(self, data: bytes) -> M_co: ...


F = TypeVar("F", bound=_Message)


class FrameError(Exception):
    """The byte stream broke mid-frame, or a frame is larger than allowed."""


def pack(message: _Message) -> bytes:
    """One frame: the length, then the serialized message."""
    data = message.SerializeToString()
    return _HEADER.pack(len(data)) + data


def pack_parts(message: _Message) -> list[bytes]:
    """One frame as the pieces to write in order: itself, or its header and its message.

    A frame of :data:`DIRECT` bytes or more is not joined to its header (a
    copy of all of it): the pieces go out with one ``sendmsg``, or two writes.
    """
    data = message.SerializeToString()
    header = _HEADER.pack(len(data))
    if len(data) < DIRECT:
        return [header + data]
    return [header, data]


def send_parts(sock: socket.socket, parts: Sequence[bytes | memoryview]) -> None:
    """Send ``parts`` whole on a blocking socket, in order (``sendall`` of their join, unjoined)."""
    if len(parts) == 1:
        sock.sendall(parts[0])
        return
    pending: list[bytes | memoryview] = list(parts)
    while pending:
        pending = rest_of(pending, sock.sendmsg(pending))


def rest_of(parts: list[bytes | memoryview], sent: int) -> list[bytes | memoryview]:
    """What is left of ``parts`` once their first ``sent`` bytes went out (no copy)."""
    for index, part in enumerate(parts):
        if sent < len(part):
            rest = parts[index:]
            if sent:
                rest[0] = memoryview(part)[sent:]
            return rest
        sent -= len(part)
    return []


def write_nowait(writer: asyncio.StreamWriter, message: _Message) -> bool:
    """Buffer one frame on ``writer``; False once its buffer is over :data:`HIGH_WATER`."""
    for part in pack_parts(message):
        writer.write(part)
    return writer.transport.get_write_buffer_size() < HIGH_WATER


class FlushSoon:
    """Calls ``flush`` once, at the end of the event-loop pass that first asked for it.

    Both ends of a frames connection queue what they have to send and call
    this: what one pass produced goes out in one frame, written from a loop
    callback rather than by waking a writer task.
    """

    __slots__ = ("_flush", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop, flush: Callable[[], object]) -> None:
        self._loop = loop
        self._flush = flush
        self._scheduled = False

    def __call__(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        self._flush()


class FrameBatcher(Generic[F]):
    """The frames one end of a channel has queued, to be sent together (both ends use one).

    Items go into the current frame (a request may be built in place in it:
    :attr:`frame`, :meth:`fits`, :meth:`next_frame`, :meth:`added`; or
    appended whole: :meth:`append`) until the next one would push it past the
    message limit less :data:`ENVELOPE`; then a new frame opens. Each item
    added calls :meth:`kick`: with a transport that buffers its writes
    (``write_nowait``, the frames socket) the frames are written by ``flush``
    at the end of the loop pass (:class:`FlushSoon`), so what one pass
    produced goes out in one frame; otherwise ``wake`` tells the owner's
    writer task to :meth:`take` them.

    :param new_frame: makes an empty frame (the message class).
    :param max_message_bytes: the message size limit.
    :param write_nowait: buffers one frame, False once the transport's
        buffer is over its high-water mark; None: a writer task writes.
    :param wake: wakes the owner's writer task (no ``write_nowait``).
    :param flush: called at the end of a loop pass that kicked (with
        ``write_nowait``); the owner's guard around :meth:`write_all`.
    """

    __slots__ = ("_frames", "_limit", "_new", "_size", "_write_nowait", "kick", "opened")

    def __init__(
        self,
        new_frame: Callable[[], F],
        max_message_bytes: int,
        *,
        write_nowait: Callable[[F], bool] | None,
        wake: Callable[[], object],
        flush: Callable[[], object],
    ) -> None:
        self._new = new_frame
        self._limit = max_message_bytes - ENVELOPE
        self._frames = [new_frame()]
        self._size = 0  # of the last frame's items; 0: nothing queued at all
        self._write_nowait = write_nowait
        #: Frames opened so far: it tells the frame being filled from those before it.
        self.opened = 1
        #: Have the queued frames sent: soon (a flush at the end of this loop
        #: pass), or by waking the writer task.
        self.kick: Callable[[], object] = (
            wake if write_nowait is None else FlushSoon(asyncio.get_running_loop(), flush)
        )

    @property
    def frame(self) -> F:
        """The frame being filled."""
        return self._frames[-1]

    @property
    def pending(self) -> bool:
        """True while something is queued."""
        return self._size > 0 or len(self._frames) > 1

    def fits(self, item_size: int) -> bool:
        """Whether an item of ``item_size`` bytes (with its overhead) fits the current frame."""
        return not self._size or self._size + item_size <= self._limit

    def next_frame(self) -> F:
        """Open a new frame (the current one is full) and return it."""
        frame = self._new()
        self._frames.append(frame)
        self._size = 0
        self.opened += 1
        return frame

    def added(self, item_size: int) -> None:
        """Count an item of ``item_size`` bytes put into :attr:`frame`, and :attr:`kick`."""
        self._size += item_size
        self.kick()

    def frame_for(self, item_size: int) -> F:
        """The frame an item of ``item_size`` bytes (overhead included) goes in."""
        return self._frames[-1] if self.fits(item_size) else self.next_frame()

    def append(self, field: str, item: _Message | int | str) -> None:
        """Append ``item`` (a message, or a scalar such as a cancelled request's id) to ``field``.

        The item goes in the frame it fits in; an int counts as :data:`ITEM_OVERHEAD`
        bytes, a str (an ended session's id) as its UTF-8 length plus that.
        """
        if isinstance(item, int):
            size = ITEM_OVERHEAD
        elif isinstance(item, str):
            size = len(item.encode("utf-8")) + ITEM_OVERHEAD
        else:
            size = item.ByteSize() + ITEM_OVERHEAD
        getattr(self.frame_for(size), field).append(item)
        self.added(size)

    def take(self) -> list[F]:
        """The frames queued (none if nothing is); the batcher starts afresh.

        A last frame opened by :meth:`next_frame` with nothing added yet is
        not sent; the full ones before it are.
        """
        frames = self._frames
        if not self._size:
            frames = frames[:-1]
            if not frames:
                return []
        self._frames = [self._new()]
        self._size = 0
        self.opened += 1
        return frames

    def write_all(self) -> bool:
        """Write the queued frames with ``write_nowait``; False once over the high-water mark.

        What the write raises (the socket broke) is the caller's to handle.
        """
        write = self._write_nowait
        assert write is not None
        below = True
        for frame in self.take():
            if not write(frame):
                below = False
        return below


async def read_frame(reader: asyncio.StreamReader, parser: _Parser[M], limit: int) -> M | None:
    """Read one frame and parse it; None at a clean end of the stream.

    :raises FrameError: the stream ended inside a frame, or the frame is
        larger than ``limit`` (plus the envelope's slack).
    """
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise FrameError("the stream ended inside a frame header") from None
    (size,) = _HEADER.unpack(header)
    if size > limit + SLACK:
        raise FrameError(f"a frame of {size} bytes is over the limit of {limit}")
    try:
        data = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise FrameError("the stream ended inside a frame") from None
    return parser.FromString(data)


class FrameSplitter(Generic[M]):
    """Cuts frames out of a byte stream as it arrives (an ``asyncio.Protocol``'s data).

    What :func:`read_frame` does for a stream reader, without a task waiting
    on it: :meth:`feed` takes what came in and returns the messages it
    completed, keeping the rest for the next.

    A reader that can receive into a buffer (``recv_into``, an
    ``asyncio.BufferedProtocol``) asks :meth:`get_buffer` where to put the
    next bytes and tells :meth:`filled` how many came: small frames are read
    many at a time into one reused buffer; once a frame's header says it is
    big (:data:`DIRECT` bytes or more), the rest of it is received straight
    into a buffer of its size (kept for the next one up to :data:`KEEP`
    bytes): no reassembly, no copy but the kernel's and the parser's.
    """

    __slots__ = ("_body", "_buffer", "_chunk", "_filled", "_limit", "_parser", "_spare")

    def __init__(self, parser: _Parser[M], limit: int) -> None:
        self._parser = parser
        self._limit = limit
        self._buffer = bytearray()
        self._chunk: memoryview | None = None  # the reused read buffer, made on first use
        self._body: memoryview | None = None  # the big frame being received, exactly its size
        self._filled = 0  # of it, the bytes received
        self._spare: bytearray | None = None  # a big frame's buffer, kept for the next

    @property
    def partial(self) -> bool:
        """True while part of a frame is kept (a stream that ends now ends inside one)."""
        return bool(self._buffer) or self._body is not None

    def get_buffer(self) -> memoryview:
        """Where the next bytes go (receive into it, then call :meth:`filled`).

        The rest of the big frame being received, or the reused read buffer.
        """
        body = self._body
        if body is not None:
            return body[self._filled :]
        chunk = self._chunk
        if chunk is None:
            chunk = self._chunk = memoryview(bytearray(READ_CHUNK))
        return chunk

    def filled(self, nbytes: int) -> list[M]:
        """The messages completed by the ``nbytes`` received into :meth:`get_buffer`'s view.

        :raises FrameError: as :meth:`feed`.
        """
        body = self._body
        if body is None:
            chunk = self._chunk
            assert chunk is not None
            if nbytes >= _HEADER.size and not self._buffer:  # the usual read: one whole frame
                (size,) = _HEADER.unpack_from(chunk)
                if size + _HEADER.size == nbytes and size <= self._limit + SLACK:
                    return [self._parse(chunk[_HEADER.size : nbytes])]
            return self.feed(chunk[:nbytes])
        self._filled += nbytes
        if self._filled < len(body):
            return []
        self._body = None
        return [self._parse(body)]

    def _parse(self, data: bytes | bytearray | memoryview) -> M:
        try:
            # (protobuf parses any buffer, into memory of its own)
            return self._parser.FromString(cast(bytes, data))
        except DecodeError as exc:
            raise FrameError(f"a frame that does not parse: {exc}") from None

    def _receive_body(self, size: int, start: bytes | bytearray | memoryview) -> None:
        # A big frame: its body is received straight into a buffer of its size.
        spare = self._spare
        if spare is not None and len(spare) >= size:
            self._spare = None if size > KEEP else spare
        else:
            spare = bytearray(size)
            self._spare = spare if size <= KEEP else None
        body = memoryview(spare)[:size]
        body[: len(start)] = start
        self._body = body
        self._filled = len(start)

    def feed(self, data: bytes | memoryview) -> list[M]:
        """The messages ``data`` completes (maybe none), in order.

        ``data`` may be a view of a buffer reused once this returns: what is
        kept of it is copied, and the messages are parsed into their own memory.

        :raises FrameError: a frame is larger than the limit (plus the
            envelope's slack), or is not a message of the parser's type.
        """
        if self._body is not None:  # the rest of a big frame first
            messages: list[M] = []
            while data and self._body is not None:
                target = self.get_buffer()
                count = min(len(target), len(data))
                target[:count] = data[:count]
                data = data[count:]
                messages += self.filled(count)
            return messages + self.feed(data) if data else messages
        buffer = self._buffer
        if buffer:
            buffer += data
            view: bytes | bytearray | memoryview = buffer
        else:
            view = data
            # The usual read: one whole frame, nothing kept from before.
            if len(data) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(data)
                if size + _HEADER.size == len(data) and size <= self._limit + SLACK:
                    return [self._parse(data[_HEADER.size :])]
        messages = []
        start, end = 0, len(view)
        while end - start >= _HEADER.size:
            (size,) = _HEADER.unpack_from(view, start)
            if size > self._limit + SLACK:
                raise FrameError(f"a frame of {size} bytes is over the limit of {self._limit}")
            stop = start + _HEADER.size + size
            if stop > end:
                if size >= DIRECT:  # the rest of it goes straight into its own buffer
                    self._receive_body(size, view[start + _HEADER.size : end])
                    start = end
                break
            chunk = view[start + _HEADER.size : stop]
            messages.append(self._parse(chunk if isinstance(chunk, bytes) else bytes(chunk)))
            start = stop
        if view is buffer:
            del buffer[:start]
        elif start < end:
            buffer += view[start:]
        return messages


class FrameProtocol(asyncio.Protocol):
    """A frames connection's flow control: :meth:`drain` waits while its buffer is full.

    Its transport is paused for writing over :data:`HIGH_WATER` (and resumed
    below a quarter of it); :meth:`drain` returns at once unless paused, and
    when the connection is lost.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._paused = False
        self._drained: list[asyncio.Future[None]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport; its writes pause over :data:`HIGH_WATER`."""
        # A stream transport, not always an asyncio.Transport instance: uvloop's
        # (a worker's loop with snakepit[uvloop]) subclass none of asyncio's.
        stream = cast(asyncio.Transport, transport)
        stream.set_write_buffer_limits(high=HIGH_WATER)
        self.transport = stream

    def connection_lost(self, exc: Exception | None) -> None:
        """Wake the drains."""
        self.resume_writing()

    def pause_writing(self) -> None:
        """The buffer went over the high-water mark."""
        self._paused = True

    def resume_writing(self) -> None:
        """The buffer went below the low-water mark (or the connection ended)."""
        self._paused = False
        drained, self._drained = self._drained, []
        for waiter in drained:
            if not waiter.done():
                waiter.set_result(None)

    def send(self, message: _Message) -> bool:
        """Buffer one frame; False once the buffer is over :data:`HIGH_WATER` (then drain).

        A closed connection takes nothing (its end is the reader's to report).
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            return True
        data = message.SerializeToString()  # (pack_parts(), inline: once per frame sent)
        if len(data) < DIRECT:
            transport.write(_HEADER.pack(len(data)) + data)
        else:  # not joined (a copy of all of it): two writes (writelines joins, before 3.12)
            transport.write(_HEADER.pack(len(data)))
            transport.write(data)
        return not self._paused

    async def drain(self) -> None:
        """Wait until the buffer is below the low-water mark, or the connection is lost."""
        if self._paused:
            waiter = asyncio.get_running_loop().create_future()
            self._drained.append(waiter)
            await waiter
