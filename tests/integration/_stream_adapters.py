"""Streaming tools for tests/integration/test_streaming.py (imported inside worker processes).

Start them with ``Pool("tests.integration._stream_adapters:Streams", cwd=ROOT)``.
Nothing here passes time: what must block waits on an event (the call's
cancellation, or one that is never set).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import AsyncIterator, Iterator

from snakepit.testing.adapters import Crash, Hang
from snakepit.worker import Context, tool


class Streams(Hang, Crash):
    """Echo, Hang and Crash, plus streams of tagged items, large items, and watched streams."""

    def setup(self) -> None:
        """Make the tables of closed watched streams and of stopped streams."""
        self.lock = threading.Lock()
        self.closed_events: dict[str, threading.Event] = {}
        self.stop_events: dict[str, threading.Event] = {}

    def closed_event(self, key: str) -> threading.Event:
        """The event set once the watched stream called with ``key`` closed."""
        with self.lock:
            return self.closed_events.setdefault(key, threading.Event())

    @tool
    def tagged(self, tag: str, n: int) -> Iterator[str]:
        """Yield ``f"{tag}:{i}"`` for i in 0 .. n-1 (a sync generator)."""
        for i in range(n):
            yield f"{tag}:{i}"

    @tool
    async def atagged(self, tag: str, n: int) -> AsyncIterator[str]:
        """Yield ``f"{tag}:{i}"`` for i in 0 .. n-1 (an async generator)."""
        for i in range(n):
            yield f"{tag}:{i}"

    @tool
    async def afail_midstream(self, after: int) -> AsyncIterator[int]:
        """Yield ``after`` items, then raise ``RuntimeError`` (an async generator)."""
        for i in range(after):
            yield i
        raise RuntimeError(f"failed after {after} items")

    @tool
    def blobs(self, size: int, n: int) -> Iterator[bytes]:
        """Yield ``n`` items of ``size`` bytes; item i is the byte ``i % 256`` repeated."""
        for i in range(n):
            yield bytes([i % 256]) * size

    @tool
    def watched(self, ctx: Context, key: str) -> Iterator[int]:
        """Yield 0, block a tool thread until cancelled; record under ``key`` that it closed."""
        try:
            yield 0
            ctx.cancel_event.wait()
            yield 1
        finally:
            self.closed_event(key).set()

    @tool
    def stuck_stream(self) -> Iterator[int]:
        """Yield 0, then block a tool thread for good, deaf to cancellation (stuck in C)."""
        yield 0
        threading.Event().wait()

    @tool
    async def awatched(self, key: str) -> AsyncIterator[int]:
        """Yield 0, wait on an event never set; record under ``key`` that it closed."""
        try:
            yield 0
            await asyncio.Event().wait()
        finally:
            self.closed_event(key).set()

    @tool
    def was_closed(self, key: str, within: float = 10.0) -> bool:
        """True once the watched stream called with ``key`` closed; False after ``within`` s."""
        return self.closed_event(key).wait(within)

    def stop_event(self, key: str) -> threading.Event:
        """The event that ends the ``until_stopped`` stream called with ``key``."""
        with self.lock:
            return self.stop_events.setdefault(key, threading.Event())

    @tool
    async def until_stopped(self, key: str, limit: int) -> AsyncIterator[int]:
        """Yield 0, 1, ... until ``stop(key)`` is called, at most ``limit`` items; never awaits."""
        stop = self.stop_event(key)
        for i in range(limit):
            if stop.is_set():
                return
            yield i

    @tool
    def stop(self, key: str) -> None:
        """End the ``until_stopped`` stream called with ``key``."""
        self.stop_event(key).set()

    @tool
    def die_midstream(self, after: int) -> Iterator[int]:
        """Yield ``after`` items, then SIGKILL this process."""
        yield from range(after)
        os.kill(os.getpid(), signal.SIGKILL)
