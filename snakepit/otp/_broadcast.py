"""Broadcast: one publisher's events, fanned out to subscribers that never slow it down."""

from __future__ import annotations

import math
from typing import Generic, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ("Broadcast",)

T = TypeVar("T")


class Broadcast(Generic[T]):
    """Fans events out to subscribers: a supervisor's, a pool's telemetry.

    Each subscriber gets an unbounded stream of the events published after it
    subscribed, so publishing never waits for a slow reader; one that closed
    its end is dropped. :meth:`close` ends every stream, and a later
    subscriber gets an ended one. Costs nothing while nobody listens::

        events: Broadcast[str] = Broadcast()
        stream = events.subscribe()
        events.publish("started")
        events.close()
        assert [e async for e in stream] == ["started"]
    """

    def __init__(self) -> None:
        self._streams: list[MemoryObjectSendStream[T]] = []
        self._closed = False

    @property
    def active(self) -> bool:
        """True while somebody listens (build costly events only then)."""
        return bool(self._streams)

    def subscribe(self) -> MemoryObjectReceiveStream[T]:
        """A new stream of the events from now on; it ends at :meth:`close`."""
        send, receive = anyio.create_memory_object_stream[T](math.inf)
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
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._streams.remove(stream)
                stream.close()

    def close(self) -> None:
        """End every subscriber's stream; later subscribers get an ended one."""
        self._closed = True
        streams, self._streams = self._streams, []
        for stream in streams:
            stream.close()
