"""Broadcast: one publisher's events, fanned out to subscribers that never slow it down."""

from __future__ import annotations

import math
from typing import Generic, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from snakepit.errors import check_int

__all__ = ("Broadcast",)

T = TypeVar("T")


class Broadcast(Generic[T]):
    """Fans events out to subscribers: a supervisor's, a pool's telemetry.

    Each subscriber gets a stream of the events published after it
    subscribed; publishing never waits for a slow reader. A stream is
    unbounded unless subscribed with ``max_buffer``: an event that finds such
    a stream full (its reader is ``max_buffer`` events behind) is not put in
    it, and counted in :attr:`dropped`. A subscriber that closed its end is
    dropped. :meth:`close` ends every stream, and a later subscriber gets an
    ended one. Costs nothing while nobody listens::

        events: Broadcast[str] = Broadcast()
        stream = events.subscribe()
        events.publish("started")
        events.close()
        assert [e async for e in stream] == ["started"]
    """

    def __init__(self) -> None:
        self._streams: list[MemoryObjectSendStream[T]] = []
        self._closed = False
        #: Events not delivered to a subscriber whose stream was full.
        self.dropped = 0

    @property
    def active(self) -> bool:
        """True while somebody listens (build costly events only then)."""
        return bool(self._streams)

    def subscribe(self, max_buffer: int | None = None) -> MemoryObjectReceiveStream[T]:
        """A new stream of the events from now on; it ends at :meth:`close`.

        :param max_buffer: the most events it holds unread (None: no limit);
            one more is dropped for it and counted in :attr:`dropped`.
        :raises ConfigError: ``max_buffer`` is not None or an int >= 1.
        """
        check_int("max_buffer", max_buffer, 1, allow_none=True)
        size = math.inf if max_buffer is None else max_buffer
        send, receive = anyio.create_memory_object_stream[T](size)
        if self._closed:
            send.close()
        else:
            self._streams.append(send)
        return receive

    def publish(self, event: T) -> None:
        """Send ``event`` to every subscriber (one that closed its end is dropped)."""
        for stream in list(self._streams):
            try:
                stream.send_nowait(event)
            except anyio.WouldBlock:
                self.dropped += 1  # full: its reader is max_buffer events behind
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._streams.remove(stream)
                stream.close()

    def close(self) -> None:
        """End every subscriber's stream; later subscribers get an ended one."""
        self._closed = True
        streams, self._streams = self._streams, []
        for stream in streams:
            stream.close()
