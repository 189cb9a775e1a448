"""Concurrency slots shared by the event loop and the tool threads.

``max_concurrency`` calls run at once, async or sync alike. A plain
``asyncio.Semaphore`` plus a thread pool would make every sync call wait for
the previous one's result to travel thread -> loop before it may start: two
cross-thread wake-ups per call. Here the thread that finishes a sync call hands
its slot straight to the next queued sync call, and results go back to the
loop in batches (one wake-up for all that finished meanwhile).

A slot is given back only once its call has really ended: a sync call's
future may be cancelled (its caller gave up), but the slot stays taken until
the thread returns; :meth:`Slots.finished` waits for that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Final

__all__ = ()  # internal to the worker

logger = logging.getLogger("snakepit.worker")


class ToolRaised(Exception):
    """A tool raised a ``BaseException`` that is not an ``Exception`` in its thread.

    ``KeyboardInterrupt``, ``SystemExit``, ``CancelledError`` or a user's own
    ``BaseException`` subclass would end the event loop (or pass for a
    cancellation) if it reached the loop as it is: it travels wrapped and is
    reported as what it was (:attr:`exception`).
    """

    def __init__(self, exception: BaseException) -> None:
        super().__init__(type(exception).__name__)
        #: What the tool raised.
        self.exception = exception


class Job:
    """One call for a tool thread: ``future`` gets its outcome (unless cancelled first)."""

    __slots__ = ("cancel", "ended", "fn", "future", "queued", "returned", "slotted", "started")

    def __init__(
        self,
        fn: Callable[[], Any],
        future: asyncio.Future[Any],
        cancel: threading.Event | None,
        slotted: bool,
        started: Callable[[], object] | None = None,
    ) -> None:
        self.fn = fn
        self.future = future
        self.cancel = cancel
        self.slotted = slotted
        #: Called on the tool thread just before ``fn`` (never for a job that does not run);
        #: if it returns False, ``fn`` does not run (the call was withdrawn).
        self.started = started
        #: True once it had to wait for a slot (it may be withdrawn until a thread takes it).
        self.queued = False
        #: True once its outcome reached the loop (its thread is done with it).
        self.returned = False
        #: Made by Slots.finished or Slots.when_ended: set when its thread returned.
        self.ended: asyncio.Future[None] | None = None


class ThreadCall:
    """A sync call whose outcome is handed to ``deliver`` on its tool thread (no loop hop).

    The frames fast lane's calls (see :mod:`._lane`): ``deliver(ok, value)``
    runs on the tool thread once the slot is given back; ``value`` is the
    result, or what the tool raised (a ``BaseException`` that is not an
    ``Exception`` wrapped in :class:`ToolRaised`). A call whose ``cancel`` is
    set before its turn does not run: it is delivered
    ``ToolRaised(CancelledError())``. ``started``, if given, is called on
    the tool thread just before ``fn`` (never for a call that does not run).
    """

    __slots__ = ("cancel", "deliver", "fn", "queued", "started")

    def __init__(
        self,
        fn: Callable[[], Any],
        cancel: threading.Event,
        deliver: Callable[[bool, Any], None],
        started: Callable[[], object] | None = None,
    ) -> None:
        self.fn = fn
        self.cancel = cancel
        self.deliver = deliver
        self.started = started
        #: True once it had to wait for a slot (it may be withdrawn until a thread takes it).
        self.queued = False


class _Nudge:
    """What :meth:`Slots.nudge` queues: the tool thread looks at its reader again."""


_NUDGE: Final = _Nudge()


class Slots:
    """``size`` concurrency slots and ``size`` tool threads for one worker.

    The threads are named ``{name}-{i}``. With one thread, a frames
    connection may lend it its socket (:meth:`lend`): the thread reads it
    whenever it has nothing to run, so a call read there runs on the same
    thread, without a hand-over from a reader thread (see :mod:`._lane`).
    """

    def __init__(
        self, size: int, loop: asyncio.AbstractEventLoop, *, name: str = "snakepit-tool"
    ) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._free = size
        # Waiting for a slot, in order: a loop future (async tool) or a job (sync tool).
        self._waiting: deque[asyncio.Future[None] | Job | ThreadCall] = deque()
        self._jobs: queue.SimpleQueue[Job | ThreadCall | _Nudge | None] = queue.SimpleQueue()
        self._done: list[tuple[Job, bool, Any]] = []
        self._posted = False
        self._waited = 0
        # A lent socket's reader (see lend); the tool thread waits in it while
        # ``_polling``, and a job queued meanwhile from another thread wakes it
        # through the pipe.
        self._reader: Callable[[], bool] | None = None
        self._reader_owner: object = None
        self._polling = False
        self._ended = False  # the (only) tool thread ended
        self._wake_r = self._wake_w = -1  # made by the first look at wake_fd
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()
        self._tool_ident = self._threads[0].ident if size == 1 else None

    # -- the loop's side ----------------------------------------------------------------

    async def acquire(self) -> None:
        """Take a slot for an async tool (or a stream), waiting in order if none is free."""
        with self._lock:
            if self._free:
                self._free -= 1
                return
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._waiting.append(waiter)
            self._waited += 1
        try:
            await waiter
        except asyncio.CancelledError:
            with self._lock:
                try:
                    self._waiting.remove(waiter)
                    handed = False
                except ValueError:  # not waiting any more: the slot was handed to it
                    handed = True
            # Handed over: either _wake is still on its way (it sees the waiter
            # cancelled and passes the slot on), or it ran already and the
            # cancellation came before this task resumed: the slot is ours to
            # give back.
            if handed and not waiter.cancelled():
                self.release()
            raise

    def call(
        self,
        fn: Callable[[], Any],
        cancel: threading.Event | None,
        started: Callable[[], object] | None = None,
    ) -> Job:
        """Run the sync ``fn`` on a tool thread once a slot is free; the slot is released after.

        Await ``job.future`` for the outcome. Cancelling that future does not
        stop the thread (nothing can): await :meth:`finished` for its end.
        ``started`` is called on the thread just before ``fn`` runs; if it
        returns False, ``fn`` does not run (as for a job cancelled first).
        """
        job = Job(fn, self._loop.create_future(), cancel, slotted=True, started=started)
        self._enqueue(job)
        return job

    def submit(self, call: ThreadCall) -> None:
        """Run ``call`` on a tool thread once a slot is free (in order); from any thread.

        The slot is given back on the thread before ``call.deliver`` runs there.
        """
        self._enqueue(call)

    def _enqueue(self, job: Job | ThreadCall) -> None:
        # To a tool thread if a slot is free, else in order behind the waiters.
        with self._lock:
            if not self._free:
                job.queued = True
                self._waiting.append(job)
                self._waited += 1
                return
            self._free -= 1
            self._jobs.put(job)
            if self._polling:
                self._wake_reader()

    def withdraw(self, call: ThreadCall | Job) -> bool:
        """Take ``call`` out of the queue for a slot; False if a thread has it (or had it).

        A :class:`Job` withdrawn (from the loop's thread) never runs: it counts
        as returned, its future is cancelled, and who waits for its end is told.
        """
        with self._lock:
            try:
                self._waiting.remove(call)
            except ValueError:
                return False
        if isinstance(call, Job):
            call.returned = True
            call.future.cancel()
            if call.ended is not None and not call.ended.done():
                call.ended.set_result(None)
        return True

    def run(self, fn: Callable[[], Any]) -> Job:
        """Run ``fn`` on a tool thread for a caller that already holds a slot."""
        job = Job(fn, self._loop.create_future(), None, slotted=False)
        self._put(job)
        return job

    async def finished(self, job: Job) -> None:
        """Return once ``job``'s thread is done with it, whatever its outcome.

        For a job whose future was cancelled: the thread may still be running
        the tool, and the slot is not free before it returns; one still
        waiting for a slot is withdrawn (it never runs).
        """
        future = job.future
        if job.returned:
            return
        if not future.cancelled():
            await asyncio.wait((future,))  # delivered with its outcome (not consumed here)
            return
        with self._lock:
            try:
                self._waiting.remove(job)  # still queued: it never runs
                job.returned = True
            except ValueError:
                pass  # taken by a thread already
        if job.returned:
            if job.ended is not None and not job.ended.done():
                job.ended.set_result(None)  # for when_ended
            return
        if job.ended is None:
            job.ended = self._loop.create_future()
        await asyncio.shield(job.ended)

    def when_ended(self, job: Job, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the loop) once ``job``'s thread is done with it; now if it is.

        Whatever the job's outcome, and whether its future was cancelled or not.
        """
        if job.returned:
            callback()
            return
        if job.ended is None:
            job.ended = self._loop.create_future()
        job.ended.add_done_callback(lambda _: callback())

    @property
    def free(self) -> int:
        """Slots free now (for introspection and tests)."""
        return self._free

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot now (for introspection and tests)."""
        return len(self._waiting)

    @property
    def waited(self) -> int:
        """Calls that had to wait for a slot so far (for introspection and tests).

        A pool never sends a worker more calls than it has free slots, so in a
        pool's worker this stays 0.
        """
        return self._waited

    def release(self) -> None:
        """Give a slot back: to the next waiter if there is one (from any thread)."""
        with self._lock:
            if not self._waiting:
                self._free += 1
                return
            waiter = self._waiting.popleft()
        if isinstance(waiter, (Job, ThreadCall)):
            self._put(waiter)
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
            self._put(None)

    # -- a lent socket --------------------------------------------------------------------

    def lend(self, owner: object, reader: Callable[[], bool]) -> bool:
        """Let the (only) tool thread call ``reader`` whenever it has no job to run.

        ``reader`` runs on the tool thread: it waits for its socket or for
        :attr:`wake_fd` (a job was queued meanwhile; it need not read it,
        only return), reads and serves what came, and returns True; False
        when it does not read now (the socket is another thread's for the
        moment, or gone): the thread then waits for a job, or a
        :meth:`nudge`. False (nothing lent) with more than one tool thread,
        or while another owner's reader is lent.
        """
        with self._lock:
            if self._tool_ident is None or self._reader is not None or self._ended:
                return False
            self._reader, self._reader_owner = reader, owner
        self.nudge()
        return True

    def take_back(self, owner: object) -> None:
        """End :meth:`lend` for ``owner`` (its reader must return False from now on)."""
        with self._lock:
            if self._reader_owner is owner:
                self._reader = self._reader_owner = None

    def nudge(self) -> None:
        """Make the tool thread look at its reader again once it has no job (from any thread)."""
        self._put(_NUDGE)

    @property
    def wake_fd(self) -> int:
        """What a lent reader waits on besides its socket: readable once a job is queued.

        -1 with more than one tool thread (nothing can be lent), or once the thread ended.
        """
        with self._lock:
            if self._wake_r < 0 and self._tool_ident is not None and not self._ended:
                self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            return self._wake_r

    def drain_wake(self) -> None:
        """Empty :attr:`wake_fd` (the reader saw it readable)."""
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 512):
                pass

    def _put(self, job: Job | ThreadCall | _Nudge | None) -> None:
        with self._lock:
            self._jobs.put(job)
            if self._polling:
                self._wake_reader()

    def _wake_reader(self) -> None:
        # (Under the lock.) The tool thread waits in its reader: a byte in the
        # pipe brings it out (not from the tool thread itself: it is in its
        # reader, serving).
        if threading.get_ident() != self._tool_ident:
            with contextlib.suppress(OSError):  # full: it is awake already
                os.write(self._wake_w, b"\0")

    def _close_wake(self) -> None:
        # The (only) tool thread ends: nobody waits on the pipe any more.
        with self._lock:
            self._ended = True
            self._reader = self._reader_owner = None
            fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    def _next(self) -> Job | ThreadCall | None:
        # The next job; with a reader lent, the thread reads while it has none.
        # (With a reader, this thread is the queue's only consumer: a queue
        # seen not empty has a job for it.)
        jobs = self._jobs
        while True:
            reader = self._reader
            if reader is None:
                job = jobs.get()
            elif not jobs.empty():
                job = jobs.get_nowait()
            else:
                with self._lock:
                    if not jobs.empty():
                        continue
                    self._polling = True
                try:
                    reading = reader()
                finally:
                    with self._lock:
                        self._polling = False
                if reading:
                    continue
                job = jobs.get()  # the socket is not ours now: a job, or a nudge
            if not isinstance(job, _Nudge):
                return job

    # -- the threads' side --------------------------------------------------------------

    def _work(self) -> None:
        try:
            self._serve_jobs()
        finally:
            if self._tool_ident is not None:
                self._close_wake()

    def _serve_jobs(self) -> None:
        while (job := self._next()) is not None:
            if isinstance(job, ThreadCall):
                self._call(job)
                # Let it go before the next read (in _next, maybe a long wait):
                # its arguments and its call's state, a big payload's too.
                del job
                continue
            ok: bool
            value: Any
            if (job.cancel is not None and job.cancel.is_set()) or (
                job.started is not None and job.started() is False
            ):
                # Cancelled (or withdrawn: its start refused) before it started
                # (its future is cancelled: the value is not seen).
                ok, value = False, ToolRaised(asyncio.CancelledError())
            else:
                try:
                    ok, value = True, job.fn()
                except Exception as exc:
                    ok, value = False, exc
                except BaseException as exc:  # must not reach the loop as it is
                    ok, value = False, ToolRaised(exc)
            if job.slotted:
                self.release()  # the next queued sync call starts now, on this thread
            with self._lock:
                self._done.append((job, ok, value))
                post = not self._posted
                self._posted = True
            del job, value  # (the loop holds them now)
            if post:
                try:
                    self._loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:  # the loop is closed: the worker is exiting
                    return

    def _call(self, call: ThreadCall) -> None:
        ok: bool
        value: Any
        if call.cancel.is_set():  # cancelled (or its deadline passed) before its turn
            ok, value = False, ToolRaised(asyncio.CancelledError())
        else:
            if call.started is not None:
                call.started()
            try:
                ok, value = True, call.fn()
            except Exception as exc:
                ok, value = False, exc
            except BaseException as exc:
                ok, value = False, ToolRaised(exc)
        self.release()  # the slot is free before the call is answered
        try:
            call.deliver(ok, value)
        except BaseException:  # the thread must go on serving
            logger.exception("delivering a sync call's outcome failed")

    def _deliver(self) -> None:
        with self._lock:
            done, self._done = self._done, []
            self._posted = False
        for job, ok, value in done:
            job.returned = True
            ended = job.ended  # somebody waits for the thread's end
            if ended is not None and not ended.done():
                ended.set_result(None)
            future = job.future
            if future.done():  # cancelled: the outcome is not seen
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
