"""Scheduler: hands worker slots to calls, with a bounded queue (the hot path)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from snakepit.errors import PoolClosed, PoolError, QueueFull, QueueTimeout

__all__ = ("Schedulable", "Scheduler")


class Schedulable(Protocol):
    """What a :class:`Scheduler` hands out: anything that says whether it takes calls."""

    @property
    def usable(self) -> bool:
        """True while it takes calls; a slot of an unusable one is dropped."""
        ...


W = TypeVar("W", bound=Schedulable)


class Scheduler(Generic[W]):
    """Free slots of the pool's workers, and the calls waiting for one.

    Each worker adds one slot per call it may run at once. :meth:`checkout`
    takes a slot (no message to any server: a deque pop), or waits in order;
    :meth:`checkin` hands the slot straight to the oldest waiter. A slot of a
    worker that is no longer usable (crashed, retired) is dropped; its
    replacement brings new ones.
    """

    def __init__(self, *, max_queue: int, queue_timeout: float | None) -> None:
        self._max_queue = max_queue
        self._queue_timeout = queue_timeout
        self._idle: deque[W] = deque()
        self._waiters: deque[asyncio.Future[W]] = deque()
        self._closed: PoolError | None = None

    @property
    def queued(self) -> int:
        """Calls waiting for a slot now."""
        return len(self._waiters)

    @property
    def has_idle(self) -> bool:
        """True when a slot may be free (cheap; a dead worker's slot counts until taken)."""
        return bool(self._idle)

    @property
    def idle(self) -> int:
        """Free slots of usable workers now."""
        return sum(1 for w in self._idle if w.usable)

    async def checkout(
        self, on_wait: Callable[[int], object] | None = None, *, deadline: float | None = None
    ) -> W:
        """Take a free slot, waiting in order if there is none.

        ``on_wait`` is called with the queue depth (this call included) when
        the call has to wait (not when it gets a slot at once, nor when it is
        refused with ``QueueFull``). ``deadline`` (on the loop's clock, as
        ``anyio.current_time()``) is the call's own: waiting ends there too.

        :raises QueueFull: ``max_queue`` calls already wait.
        :raises QueueTimeout: none came free within ``queue_timeout``, or
            before ``deadline``.
        :raises PoolClosed: the pool stopped.
        """
        if self._closed is not None:
            raise self._closed
        idle = self._idle
        while idle:
            worker = idle.popleft()
            if worker.usable:
                return worker
        if len(self._waiters) >= self._max_queue:
            raise QueueFull(self._max_queue)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[W] = loop.create_future()
        self._waiters.append(waiter)
        if on_wait is not None:
            on_wait(len(self._waiters))
        now = loop.time()
        when = None if self._queue_timeout is None else now + self._queue_timeout
        own = deadline is not None and (when is None or deadline < when)
        if own:
            when = deadline
        try:
            async with asyncio.timeout_at(when):
                return await waiter
        except TimeoutError:
            self._give_up(waiter)
            if own:
                assert deadline is not None
                raise QueueTimeout(
                    f"no worker came free within the {deadline - now:.3g}s left of the "
                    "call's timeout (the tool did not run)",
                    timeout=deadline - now,
                ) from None
            raise QueueTimeout(
                f"no worker came free within {self._queue_timeout:g}s",
                timeout=self._queue_timeout,
            ) from None
        except BaseException:  # cancelled, or PoolClosed
            self._give_up(waiter)
            raise

    def _give_up(self, waiter: asyncio.Future[W]) -> None:
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            self.checkin(waiter.result())  # handed over just as the caller gave up
        else:
            waiter.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def checkin(self, worker: W) -> None:
        """Return a slot: to the oldest waiter, else to the free slots."""
        if not worker.usable:
            return
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return
        self._idle.append(worker)

    def add(self, worker: W, slots: int) -> None:
        """Offer ``slots`` slots of a worker that became ready."""
        for _ in range(slots):
            self.checkin(worker)

    def reopen(self) -> None:
        """Take calls again after :meth:`close` (a degraded pool restarted)."""
        self._closed = None

    def close(self, error: PoolError | None = None) -> None:
        """Refuse new calls with ``error`` (default :class:`PoolClosed`); fail waiting ones."""
        self._closed = error if error is not None else PoolClosed("the pool stopped")
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(self._closed)
        self._idle.clear()
