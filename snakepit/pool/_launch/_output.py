r"""What worker processes write: drained in chunks, cut into bounded lines, logged, bounded.

A worker's stdout and stderr (one pipe) and a fork server's stderr are read
here, never with ``readline`` (whose limit a single long line breaks): any
chunk is taken, split on ``\n``, a ``\r`` redraw (a progress bar) keeps only
what was drawn last, a line past :data:`MAX_LINE` bytes is cut (the rest
counted), bytes that are not UTF-8 are replaced. Each line goes to a bounded
tail (for error messages) and to the host's ``logging`` (the worker's logger,
``snakepit.worker.<id>``) at most :data:`LOG_RATE` lines a second; lines over
that are counted and the count is logged. Nothing a process writes can grow
the host's memory or stop the pipe from being read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ()

#: The longest line kept, in bytes; the rest of a longer one is cut (and counted).
MAX_LINE = 4096
#: Lines a second forwarded to logging (a burst of :data:`LOG_BURST` first).
LOG_RATE = 200.0
LOG_BURST = 1000.0
#: Bytes read from a pipe at once.
CHUNK = 256 * 1024
#: At most this much is read, without waiting, from a pipe whose writer exited.
FINAL_DRAIN = 4 * 1024 * 1024
#: The longest ready report a worker may send.
MAX_READY = 1024 * 1024

_BREAK = re.compile(rb"[\r\n]")
_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
_LEVEL = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) \[")


class OutputLines:
    """Turns a byte stream into bounded lines for a tail and a logger (see the module docstring)."""

    def __init__(self, tail: deque[str], logger: logging.Logger | None = None) -> None:
        self.tail = tail
        self.logger = logger
        self._line = bytearray()
        self._drawn = b""  # the line as last drawn before a \r
        self._cut = 0
        self._cr = False  # a \r seen last: a redraw, unless a \n follows
        self._tokens = LOG_BURST
        self._stamp = time.monotonic()
        self._dropped = 0

    def feed(self, data: bytes) -> None:
        """Take the next bytes of the stream."""
        start, end = 0, len(data)
        while start < end:
            match = _BREAK.search(data, start)
            stop = end if match is None else match.start()
            if stop > start:
                self._add(data, start, stop)
            if match is None:
                return
            if data[stop] == 0x0A:  # \n (also the end of \r\n)
                self._cr = False
                self._emit()
            else:
                if self._line:
                    self._cr = True
            start = stop + 1

    def close(self) -> None:
        """The stream ended: a last line without a newline is kept too."""
        if self._line or self._drawn or self._cut:
            self._emit()
        self._flush_dropped()

    def _add(self, data: bytes, start: int, stop: int) -> None:
        if self._cr:  # a \r not followed by \n: the line is redrawn from its start
            self._cr = False
            self._drawn, self._cut = bytes(self._line), 0
            self._line.clear()
        room = MAX_LINE - len(self._line)
        if stop - start > room:
            self._cut += stop - start - room
            stop = start + room
        self._line += data[start:stop]

    def _emit(self) -> None:
        raw = bytes(self._line) if self._line else self._drawn
        text = raw.decode(errors="replace")
        if self._cut:
            text += f" [... {self._cut} more bytes cut]"
        self._line.clear()
        self._drawn, self._cut = b"", 0
        self.tail.append(text)
        if self.logger is not None:
            self._log(text)

    def _log(self, text: str) -> None:
        assert self.logger is not None
        now = time.monotonic()
        self._tokens = min(LOG_BURST, self._tokens + (now - self._stamp) * LOG_RATE)
        self._stamp = now
        if self._tokens < 1:
            self._dropped += 1
            return
        self._tokens -= 1
        self._flush_dropped()
        match = _LEVEL.match(text)
        level = _LEVELS[match.group(1)] if match else logging.INFO
        self.logger.log(level, "%s", text)

    def _flush_dropped(self) -> None:
        if self._dropped and self.logger is not None:
            dropped, self._dropped = self._dropped, 0
            self.logger.warning(
                "%d lines of output not logged (over %g lines/s)", dropped, LOG_RATE
            )


class OutputPump(asyncio.Protocol):
    """Reads one pipe into :class:`OutputLines` until EOF, or until :meth:`finish`."""

    def __init__(self, lines: OutputLines) -> None:
        self.lines = lines
        self._transport: asyncio.ReadTransport | None = None
        self._fd = -1
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def start(cls, fd: int, lines: OutputLines) -> OutputPump:
        """Read the pipe ``fd`` (owned from now on, closed at the end)."""
        pump = cls(lines)
        await _connect(fd, pump)
        pump._fd = fd
        return pump

    def connection_made(self, transport: Any) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self.lines.feed(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lines.close()
        if not self._done.done():
            self._done.set_result(None)

    async def finish(self) -> None:
        """The writer exited: take what the pipe holds now, then close it.

        Does not wait for EOF: a process that inherited the pipe (a tool's
        grandchild) may keep it open long after the writer is gone.
        """
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()
            left = FINAL_DRAIN
            with contextlib.suppress(OSError):  # BlockingIOError: nothing more for now
                while left > 0 and (data := os.read(self._fd, min(CHUNK, left))):
                    left -= len(data)
                    self.lines.feed(data)
            transport.close()
        await asyncio.shield(self._done)


class _ReadyProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.line: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.ReadTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        if b"\n" in self.data or len(self.data) > MAX_READY:
            self._done()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._done()

    def _done(self) -> None:
        if not self.line.done():
            self.line.set_result(bytes(self.data).partition(b"\n")[0][:MAX_READY])
        if self.transport is not None:
            self.transport.close()


async def read_ready_line(fd: int, exited: Callable[[], Awaitable[object]]) -> bytes | None:
    """The first line written to the pipe ``fd`` (closed after), or None: the writer exited first.

    :param exited: waits until the writing process exited (then what the
        pipe already holds is still read). It runs in a task of this call's
        own, ended before this returns.
    """
    protocol = _ReadyProtocol()
    await _connect(fd, protocol)
    death: asyncio.Future[Any] = asyncio.ensure_future(exited())
    try:
        await asyncio.wait([protocol.line, death], return_when=asyncio.FIRST_COMPLETED)
        if not protocol.line.done():
            death.result()  # its failure is ours
            with contextlib.suppress(OSError):
                while data := os.read(fd, 65536):
                    protocol.data += data
                    if b"\n" in protocol.data:
                        break
            if b"\n" in protocol.data:
                protocol._done()
                return await protocol.line
            return None
        return await protocol.line
    finally:
        death.cancel()
        if protocol.transport is not None:
            protocol.transport.close()
        await asyncio.wait([death])  # ended, not just asked to
        if not death.cancelled():
            death.exception()  # seen (a failure after the line: the next wait raises it again)


async def _connect(fd: int, protocol: asyncio.Protocol) -> None:
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(fd, "rb", buffering=0)
    try:
        await loop.connect_read_pipe(lambda: protocol, pipe)
    except BaseException:
        pipe.close()
        raise
