"""Length-prefixed protobuf frames over a byte stream (the Channel's fast transport).

Shared by the host and the worker: a frame is a 4-byte little-endian length
and that many bytes of a serialized ``ClientFrame`` or ``ServerFrame``. On a
unix socket this carries the multiplexed calls with a fraction of a gRPC
stream message's cost; gRPC keeps the unary calls, health and describe.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Final, Protocol, TypeVar

__all__ = (
    "HIGH_WATER",
    "FlushSoon",
    "FrameError",
    "frames_path",
    "pack",
    "read_frame",
    "write_nowait",
)

_HEADER: Final = struct.Struct("<I")
#: Bytes buffered for a frames connection past which its writer waits for a
#: drain (writers keep queueing meanwhile: the buffer is not a hard bound).
HIGH_WATER: Final = 4 * 1024 * 1024
#: Room above the message limit for a frame's envelope (tags and lengths).
SLACK: Final = 64 * 1024


class _Message(Protocol):
    def SerializeToString(self) -> bytes: ...


M = TypeVar("M")
M_co = TypeVar("M_co", covariant=True)


class _Parser(Protocol[M_co]):
    def FromString(self, data: bytes) -> M_co: ...


class FrameError(Exception):
    """The byte stream broke mid-frame, or a frame is larger than allowed."""


def frames_path(socket_path: str) -> str:
    """The frames socket that goes with a worker's gRPC socket path."""
    return socket_path + ".frames"


def pack(message: _Message) -> bytes:
    """One frame: the length, then the serialized message."""
    data = message.SerializeToString()
    return _HEADER.pack(len(data)) + data


def write_nowait(writer: asyncio.StreamWriter, message: _Message) -> bool:
    """Buffer one frame on ``writer``; False once its buffer is over :data:`HIGH_WATER`."""
    writer.write(pack(message))
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
