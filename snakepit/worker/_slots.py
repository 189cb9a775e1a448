"""Concurrency slots shared by the event loop and the tool threads.

``max_concurrency`` calls run at once, async or sync alike. A plain
``asyncio.Semaphore`` plus a thread pool would make every sync call wait for
the previous one's result to travel thread -> loop before it may start: two
cross-thread wake-ups per call. Here the thread that finishes a sync call hands
its slot straight to the next queued sync call, and results go back to the
loop in batches (one wake-up for all that finished meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ()  # internal to the worker


class _Job:
    __slots__ = ("cancel", "fn", "future", "slotted")

    def __init__(
        self,
        fn: Callable[[], Any],
        future: asyncio.Future[Any],
        cancel: threading.Event | None,
        slotted: bool,
    ) -> None:
        self.fn = fn
        self.future = future
        self.cancel = cancel
        self.slotted = slotted


class Slots:
    """``size`` concurrency slots and ``size`` tool threads for one worker."""

    def __init__(self, size: int, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._free = size
        # Waiting for a slot, in order: a loop future (async tool) or a job (sync tool).
        self._waiting: deque[asyncio.Future[None] | _Job] = deque()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._done: list[tuple[_Job, bool, Any]] = []
        self._posted = False
        self._threads = [
            threading.Thread(target=self._work, name=f"snakepit-tool-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    # -- the loop's side ----------------------------------------------------------------

    async def acquire(self) -> None:
        """Take a slot for an async tool (or a stream), waiting in order if none is free."""
        with self._lock:
            if self._free:
                self._free -= 1
                return
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._waiting.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            # Not waiting any more means the slot is on its way: _wake passes it on.
            with self._lock, contextlib.suppress(ValueError):
                self._waiting.remove(waiter)
            raise

    def call(self, fn: Callable[[], Any], cancel: threading.Event | None) -> asyncio.Future[Any]:
        """Run the sync ``fn`` on a tool thread once a slot is free; the slot is released after."""
        job = _Job(fn, self._loop.create_future(), cancel, slotted=True)
        with self._lock:
            if self._free:
                self._free -= 1
                self._jobs.put(job)
            else:
                self._waiting.append(job)
        return job.future

    def run(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run ``fn`` on a tool thread for a caller that already holds a slot."""
        job = _Job(fn, self._loop.create_future(), None, slotted=False)
        self._jobs.put(job)
        return job.future

    def release(self) -> None:
        """Give a slot back: to the next waiter if there is one (from any thread)."""
        with self._lock:
            if not self._waiting:
                self._free += 1
                return
            waiter = self._waiting.popleft()
        if isinstance(waiter, _Job):
            self._jobs.put(waiter)
        else:
            with contextlib.suppress(RuntimeError):  # a closed loop: the worker is exiting
                self._loop.call_soon_threadsafe(self._wake, waiter)

    def _wake(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done():  # cancelled on its way: pass the slot on
            self.release()
        else:
            waiter.set_result(None)

    def close(self) -> None:
        """Let the tool threads end once their current call returns (they are daemons)."""
        for _ in self._threads:
            self._jobs.put(None)

    # -- the threads' side --------------------------------------------------------------

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            ok: bool
            value: Any
            if job.cancel is not None and job.cancel.is_set():
                ok, value = False, asyncio.CancelledError()  # cancelled before it started
            else:
                try:
                    ok, value = True, job.fn()
                except BaseException as exc:
                    ok, value = False, exc
            if job.slotted:
                self.release()  # the next queued sync call starts now, on this thread
            with self._lock:
                self._done.append((job, ok, value))
                post = not self._posted
                self._posted = True
            if post:
                try:
                    self._loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:  # the loop is closed: the worker is exiting
                    return

    def _deliver(self) -> None:
        with self._lock:
            done, self._done = self._done, []
            self._posted = False
        for job, ok, value in done:
            if job.future.done():
                continue
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)
