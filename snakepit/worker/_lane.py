"""The frames fast lane: a connection's sync unary calls served without the event loop.

With one slot (``max_concurrency=1``) and no session accounting, a frames
connection is served by a thread of its own that reads the socket with
blocking ``recv``: each unary call of a sync tool is prepared there and handed
to the worker's tool thread (:meth:`Slots.submit <._slots.Slots.submit>`),
which runs it, encodes its reply as :meth:`AdapterService.execute
<._service.AdapterService.execute>` does and writes it with a blocking
``sendall``. The loop sees none of it: no task, no cross-thread hop back.
Everything else (async tools, streams, their cancels, ended sessions) goes to
the loop, to a :class:`~._channel.FramesChannel` as before; its replies are
written to the same socket under the same lock.

The documented behaviours hold: a cancelled call's ``ctx.cancel_event`` is set
as the cancel is read, and it is answered CANCELLED once its tool has really
returned (the slot is free by then); a call's timeout sets it at the deadline
(the reader's ``poll`` waits no longer than the earliest deadline) and the
call is answered DEADLINE_EXCEEDED once the tool returned; a call waiting for
the slot (an async call holds it) is withdrawn at once. A call the host
withdraws (``ClientFrame.withdraw``: its worker is being recycled or stopped)
is dropped and answered NOT_STARTED if it still waits for the slot; one a
tool thread took runs on. When the client is
gone (end of the stream, or the worker aborting), the lane's calls are
abandoned as the loop's are: cancelled, not answered, no longer in flight.

``SNAKEPIT_WORKER_FAST_LANE=0`` in a worker's environment turns the lane off
(every call then takes the loop's path).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import queue
import select
import socket
import threading
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from snakepit._wire._auth import FRAMES_ACCEPTED
from snakepit._wire._frames import FrameError, FrameSplitter, pack_parts, rest_of, send_parts
from snakepit._wire._proto.snakepit.v1 import worker_pb2
from snakepit._wire._started import StartedPage, attach_started_page, no_page_notice

from ._context import Context
from ._service import AdapterService, cancelled_info, not_started_info, start_margin
from ._slots import ThreadCall

__all__ = ()  # internal to the worker

logger = logging.getLogger("snakepit.worker")

#: The environment variable that turns the fast lane off ("0", "false", "no", "off").
LANE_ENV = "SNAKEPIT_WORKER_FAST_LANE"

#: The longest ``poll`` (seconds; it takes milliseconds in a C int): then it polls again.
_POLL_MAX = 3600.0

#: Seconds a call may run on the tool thread, which reads the socket when it
#: has nothing to run, before the lane's own thread takes the socket over (to
#: read cancels, and the next calls); it keeps deadlines exactly.
_RELIEF_AFTER = 0.005


class _Ended(Exception):
    """The connection's stream ended."""


def lane_enabled() -> bool:
    """Whether the environment leaves the fast lane on (it is, unless :data:`LANE_ENV` says not)."""
    return os.environ.get(LANE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


#: What a call's request is once its reply is made (its memory let go).
_ANSWERED = worker_pb2.ExecuteRequest()


class _Call:
    """A unary call of the lane, from its request until its reply (or abandonment)."""

    __slots__ = (
        "cancelled",
        "ctx",
        "expired",
        "give_up",
        "gone",
        "job",
        "name",
        "request",
        "withdrawn",
    )

    def __init__(self, request: worker_pb2.ExecuteRequest, name: str, ctx: Context) -> None:
        self.request = request
        self.name = name
        self.ctx = ctx
        self.cancelled = False  # the client cancelled it
        self.expired = False  # its timeout passed
        self.gone = False  # nobody to answer
        self.withdrawn = False  # withdrawn before it started (its timeout, the host): never ran
        self.job: ThreadCall | None = None
        # When it gives up if it has not started (its deadline less the start
        # margin); None: no deadline, or it started (its deadline applies).
        deadline = ctx.deadline
        self.give_up = (
            None if deadline is None else deadline - start_margin(deadline - time.monotonic())
        )

    def due(self) -> float | None:
        """When the reader must look at it next (None: never)."""
        if self.expired or self.withdrawn:
            return None
        return self.give_up if self.give_up is not None else self.ctx.deadline


class Lane:
    """One frames connection served by a reader thread (see the module's docstring).

    ``sock`` is the connection, accepted (its preface read) but not answered
    yet: the reader thread sends the acceptance, then reads. ``leftover``:
    bytes read past the preface already.
    """

    def __init__(self, service: AdapterService, sock: socket.socket, leftover: bytes = b"") -> None:
        self._service = service
        self._loop = service.loop
        self._slots = service.slots
        self._sock = sock
        self._leftover = leftover
        self._lock = threading.Lock()  # the calls, the count, the idle waiters
        self._write_lock = threading.Lock()  # one frame at a time; the socket's closing
        self._state_lock = threading.Lock()  # shutdown and close (not held while writing)
        self._closed = False  # the socket is closed (under both locks)
        # The loop's frames that could not be written at once, for the writer thread.
        self._queued: queue.SimpleQueue[tuple[list[bytes | memoryview], bool] | None] = (
            queue.SimpleQueue()
        )
        self._pending_lock = threading.Lock()
        self._pending = 0  # queued, not written yet
        self._writer: threading.Thread | None = None
        self._calls: dict[int, _Call] = {}  # by request id
        self._timed = 0  # of them, those with a deadline
        # The host's started page: each call's id goes in on its tool thread,
        # just before its tool runs (snakepit/_wire/_started.py).
        self._page: StartedPage | None = None
        self._inflight = 0
        self._idle: list[asyncio.Future[None]] = []
        self._frames: asyncio.Queue[worker_pb2.ClientFrame | None] = asyncio.Queue()
        self._splitter = FrameSplitter(worker_pb2.ClientFrame, service.max_message_bytes)
        # Who reads the socket: the tool thread (it was lent; _tool_reads) when
        # it has nothing to run, else this lane's own thread (see _run).
        self._relief = threading.Condition(self._lock)
        self._tool_reads = True
        self._tool_reading = False  # the tool thread waits in the socket now
        self._tool_left = 0.0  # when it last stopped reading (to run a call)
        self._episodes = 0  # times it stopped reading
        self._parked = False  # the lane's thread waits without a timeout
        self._over = False  # the connection is over (_gone ran)
        self._closing = False
        self._poller = select.poll()
        self._poller.register(sock.fileno(), select.POLLIN)
        self._tool_poller = select.poll()
        self._tool_poller.register(sock.fileno(), select.POLLIN)
        self._wake_fd = self._slots.wake_fd  # (-1: more than one tool thread, never lent)
        if self._wake_fd >= 0:
            self._tool_poller.register(self._wake_fd, select.POLLIN)
        self._thread = threading.Thread(target=self._run, name="snakepit-frames-lane", daemon=True)

    # -- the loop's side ----------------------------------------------------------------

    def start(self) -> None:
        """Start the reader thread."""
        self._thread.start()

    @property
    def in_flight(self) -> int:
        """The lane's calls running now (a cancelled one until its tool returned)."""
        return self._inflight

    async def wait_idle(self) -> None:
        """Return once none of the lane's calls is in flight."""
        with self._lock:
            if not self._inflight:
                return
            waiter = self._loop.create_future()
            self._idle.append(waiter)
        await waiter

    async def frames(self) -> AsyncIterator[worker_pb2.ClientFrame]:
        """What the loop serves: the frames' other parts, until the client is gone."""
        while (frame := await self._frames.get()) is not None:
            yield frame

    def write_nowait(self, frame: worker_pb2.ServerFrame) -> bool:
        """Write a frame of the loop's replies without blocking; always True.

        The loop never blocks on the socket (its peer may be a client on the
        same loop, an in-process worker, which must go on reading): a frame
        that cannot go out at once, whole, goes to a writer thread (the loop's
        frames keep their order).
        """
        parts: list[bytes | memoryview] = list(pack_parts(frame))
        if self._write_lock.acquire(blocking=False):
            with self._pending_lock:
                direct = not self._pending
            if not direct:
                self._write_lock.release()
            else:
                if self._closed:
                    self._write_lock.release()
                    return True
                try:
                    sent = self._sock.sendmsg(parts, (), socket.MSG_DONTWAIT)
                except BlockingIOError:
                    sent = 0
                except OSError:  # the connection broke: the reader sees its end
                    self._write_lock.release()
                    return True
                parts = rest_of(parts, sent)
                if not parts:
                    self._write_lock.release()
                    return True
                # The rest goes next, before any other frame: the writer
                # thread takes the lock as it is (held) and releases it.
                self._queue(parts, held=True)
                return True
        self._queue(parts, held=False)
        return True

    def _queue(self, data: list[bytes | memoryview], *, held: bool) -> None:
        with self._pending_lock:
            self._pending += 1
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._write_queued, name="snakepit-frames-writer", daemon=True
            )
            self._writer.start()
        self._queued.put((data, held))

    async def write(self, frame: worker_pb2.ServerFrame) -> None:
        """:meth:`write_nowait`, for a caller that awaits."""
        self.write_nowait(frame)

    def close(self) -> None:
        """End the connection: the reader wakes up, abandons the calls and closes the socket.

        Never blocks (a write in progress fails at once).
        """
        with self._state_lock:
            if not self._closed:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)
        with self._lock:  # the lane's thread reads the end, if the tool thread is busy
            self._closing = True
            self._relief.notify()
        self._queued.put(None)
        if not self._thread.is_alive() and not self._thread.ident:
            self._close_socket()  # never started

    def _write_queued(self) -> None:
        while (item := self._queued.get()) is not None:
            data, held = item
            if not held:
                self._write_lock.acquire()
            try:
                if not self._closed:
                    with contextlib.suppress(OSError):
                        send_parts(self._sock, data)
            finally:
                with self._pending_lock:
                    self._pending -= 1
                self._write_lock.release()

    def _woken(self, waiters: list[asyncio.Future[None]]) -> None:
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _post(self, callback: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the worker is exiting
            self._loop.call_soon_threadsafe(callback, *args)

    # -- the reader thread --------------------------------------------------------------

    def _run(self) -> None:
        # The lane's own thread: it answers the preface, lends the socket to
        # the tool thread, and reads it only while that thread runs a call
        # longer than _RELIEF_AFTER (or a deadline is due); without a loan
        # (another connection has it) it reads all along.
        try:
            self._send([FRAMES_ACCEPTED])
            if self._leftover:
                self._serve(self._splitter.feed(self._leftover))
                self._leftover = b""
            with self._lock:
                self._tool_left = time.monotonic()
            lent = self._slots.lend(self, self._read_on_tool_thread)
            while True:
                if lent and not self._stand_by():
                    return
                self._step(self._poller, -1)
                if lent:
                    self._hand_back()
        except _Ended:
            pass
        except BaseException as exc:
            self._failed(exc)
        finally:
            self._gone()

    def _read_on_tool_thread(self) -> bool:
        # The tool thread's reader (Slots.lend): one step, or False when the
        # socket is not the tool thread's now.
        with self._lock:
            if self._over or not self._tool_reads:
                return False
            self._tool_reading = True
        try:
            self._step(self._tool_poller, self._wake_fd)
            return True
        except _Ended:
            self._gone()
            return False
        except BaseException as exc:
            self._failed(exc)
            self._gone()
            return False
        finally:
            with self._lock:
                self._tool_reading = False
                self._tool_left = time.monotonic()
                self._episodes += 1
                if self._parked:
                    self._relief.notify()

    def _step(self, poller: select.poll, wake_fd: int) -> None:
        # One read by the thread that holds the socket: frames served, due
        # deadlines kept. Raises _Ended at the end of the stream.
        left = self._time_left() if self._timed else None
        if left is not None or wake_fd >= 0:
            timeout = -1 if left is None else math.ceil(min(left, _POLL_MAX) * 1000)
            events = poller.poll(timeout)
            if not events:
                self._expire()
                return
            if wake_fd >= 0:
                readable = False
                for fd, _ in events:
                    if fd == wake_fd:
                        self._slots.drain_wake()
                    else:
                        readable = True
                if not readable:
                    return  # a job for the tool thread: it runs it, then reads
        # Small frames many at a time into the splitter's reused buffer; a big
        # frame's rest straight into a buffer of its size.
        count = self._sock.recv_into(self._splitter.get_buffer())
        if not count:
            if self._splitter.partial:
                raise FrameError("the stream ended inside a frame")
            raise _Ended
        self._serve(self._splitter.filled(count))

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, (FrameError, ConnectionError)):
            logger.warning("frames connection closed: %s", exc)
        elif not isinstance(exc, OSError):  # an OSError: closed under us (the worker stops)
            logger.error("the frames lane failed", exc_info=exc)

    def _stand_by(self) -> bool:
        # The lane's thread while the socket is the tool thread's: it takes
        # the socket (True) once the tool thread has been away from it, running
        # a call, for _RELIEF_AFTER (that call's cancel must be read, and the
        # next calls), when a deadline is due meanwhile, or when the lane
        # closes; False once the connection ended. While the tool thread
        # reads, it keeps the deadlines itself: this thread looks again after
        # _RELIEF_AFTER, and parks when nothing happened since its last look.
        with self._lock:
            seen = -1
            while not self._over:
                if self._tool_reading:
                    if self._episodes == seen:
                        self._parked = True
                        self._relief.notify_all()  # (for a test that waits for it)
                        self._relief.wait()
                        self._parked = False
                    else:
                        seen = self._episodes
                        self._relief.wait(_RELIEF_AFTER)
                    continue
                if self._closing:
                    break
                now = time.monotonic()
                due = self._due_locked()
                wait = _RELIEF_AFTER - (now - self._tool_left)
                if due is not None:
                    wait = min(wait, due - now)
                if wait <= 0:
                    break
                self._relief.wait(wait)
            else:
                return False
            self._tool_reads = False
            self._relief.notify_all()  # (for a test that waits for it)
            return True

    def _hand_back(self) -> None:
        # Back to the tool thread, which reads once it has no job (or at once).
        with self._lock:
            self._tool_reads = True
            self._tool_left = time.monotonic()  # (its time away counts from now)
        self._slots.nudge()

    def _serve(self, frames: list[worker_pb2.ClientFrame]) -> None:
        service = self._service
        for frame in frames:
            if frame.started_page:  # the first frame's: before its calls start
                self._attach(frame.started_page)
            rest: worker_pb2.ClientFrame | None = None  # the loop's part
            for request in frame.execute:
                if service.lane_takes(request):
                    self._start(request)
                else:
                    if rest is None:
                        rest = worker_pb2.ClientFrame()
                    rest.execute.append(request)
            for rid in frame.cancel:
                if not self._cancel(rid):  # not the lane's (or answered already)
                    if rest is None:
                        rest = worker_pb2.ClientFrame()
                    rest.cancel.append(rid)
            for rid in frame.withdraw:
                if not self._withdraw(rid):  # not the lane's (or answered already)
                    if rest is None:
                        rest = worker_pb2.ClientFrame()
                    rest.withdraw.append(rid)
            if frame.stream or frame.end_sessions or frame.started_page:
                if rest is None:
                    rest = worker_pb2.ClientFrame()
                rest.stream.extend(frame.stream)
                rest.end_sessions.extend(frame.end_sessions)
                rest.started_page = frame.started_page  # the loop marks its calls in it too
            if rest is not None:
                self._post(self._frames.put_nowait, rest)

    def _start(self, request: worker_pb2.ExecuteRequest) -> None:
        service = self._service
        try:
            name, fn, ctx = service.lane_prepare(request)
        except BaseException as exc:  # refused before its tool ran
            frame = worker_pb2.ServerFrame()
            frame.responses.add(
                request_id=request.request_id, error=service.lane_error(request, exc)
            )
            self._send(pack_parts(frame))
            return
        call = _Call(request, name, ctx)
        page = self._page
        call.job = job = ThreadCall(
            fn,
            ctx.cancel_event,
            functools.partial(self._finish, call),
            None if page is None else functools.partial(page.mark, request.request_id),
        )
        with self._lock:
            self._calls[request.request_id] = call
            self._inflight += 1
            if ctx.deadline is not None:
                self._timed += 1
                self._relief.notify()  # the lane's thread keeps its deadline
        self._slots.submit(job)

    def _attach(self, path: str) -> None:
        if self._page is None:  # one per connection: the first
            self._page = attach_started_page(path)
            if self._page is None:  # the host must know, before any call starts
                self._send(pack_parts(no_page_notice()))

    def _cancel(self, rid: int) -> bool:
        with self._lock:
            call = self._calls.get(rid)
            if call is None:
                return False
            call.cancelled = True
        self._stop(call)
        return True

    def _withdraw(self, rid: int) -> bool:
        # The host takes the call back if it has not started: one still
        # waiting for the slot never runs (NOT_STARTED); one a tool thread
        # took runs on, answered as usual. False: not one of the lane's.
        with self._lock:
            call = self._calls.get(rid)
            if call is None:
                return False
        assert call.job is not None
        if self._slots.withdraw(call.job):
            call.withdrawn = True
            call.ctx.cancel_event.set()
            self._finish(call, False, None)
        return True

    def _stop(self, call: _Call) -> None:
        # Its tool sees ctx.cancelled; one still waiting for the slot never runs.
        call.ctx.cancel_event.set()
        assert call.job is not None
        if self._slots.withdraw(call.job):
            self._finish(call, False, None)

    def _time_left(self) -> float | None:
        # Seconds until a call must be looked at (one still waiting may give
        # up, one running may time out); None: no deadline. (Read without the
        # lock first: only the socket's reader adds a call with a deadline.)
        if not self._timed:
            return None
        with self._lock:
            due = self._due_locked()
        return None if due is None else max(0.0, due - time.monotonic())

    def _due_locked(self) -> float | None:
        # When the first call must be looked at (monotonic), or None.
        if not self._timed:
            return None
        return min((t for c in self._calls.values() if (t := c.due()) is not None), default=None)

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [c for c in self._calls.values() if (t := c.due()) is not None and t <= now]
        for call in due:
            assert call.job is not None
            if call.give_up is not None:
                # It has not started by its deadline less the margin: withdrawn
                # (NOT_STARTED); else it runs, and its own deadline applies.
                call.give_up = None
                if self._slots.withdraw(call.job):
                    call.withdrawn = True
                    call.ctx.cancel_event.set()
                    self._finish(call, False, None)
                continue
            call.expired = True
            self._stop(call)

    def _gone(self) -> None:
        # The client is gone (or the worker stops): the calls are abandoned,
        # the loop's channel ends, the socket closes. Once, from the thread
        # that read the end (the lane's own thread, after the tool thread).
        self._slots.take_back(self)
        with self._lock:
            if self._over:
                return
            self._over = True
            self._relief.notify_all()
            calls = list(self._calls.values())
            self._calls.clear()
            self._inflight = self._timed = 0
            for call in calls:
                call.gone = True
            waiters, self._idle = self._idle, []
        for call in calls:
            call.ctx.cancel_event.set()
            assert call.job is not None
            self._slots.withdraw(call.job)
        self._close_socket()
        if self._page is not None:  # a tool thread still marking is harmless
            self._page.close()
        self._post(self._ended, waiters)

    def _ended(self, waiters: list[asyncio.Future[None]]) -> None:
        self._frames.put_nowait(None)
        self._woken(waiters)

    def _close_socket(self) -> None:
        with self._write_lock, self._state_lock:
            if not self._closed:
                self._closed = True
                self._sock.close()

    # -- a tool thread (or the reader, for a call that never ran) -----------------------

    def _finish(self, call: _Call, ok: bool, value: Any) -> None:
        request = call.request
        rid = request.request_id
        with self._lock:
            if call.gone:
                return  # nobody to answer
            del self._calls[rid]
            self._inflight -= 1
            if call.ctx.deadline is not None:
                self._timed -= 1
            waiters = None
            if not self._inflight and self._idle:
                waiters, self._idle = self._idle, []
        if waiters:
            self._post(self._woken, waiters)
        service = self._service
        frame = worker_pb2.ServerFrame()
        response = frame.responses.add(request_id=rid)
        if call.cancelled:
            response.error.CopyFrom(cancelled_info())
        elif call.withdrawn:
            response.error.CopyFrom(not_started_info(call.name))
        elif call.expired:
            response.error.CopyFrom(service.lane_error(request, TimeoutError(), deadline=True))
        elif ok:
            service.lane_result(response, request, call.name, value)
        else:
            response.error.CopyFrom(service.lane_error(request, value))
        parts = pack_parts(frame)
        # The request and the reply's message are let go before the reply is
        # sent: the next request, read as soon as the host has this reply,
        # then reuses their memory (a big payload's buffers) instead of more.
        call.request = _ANSWERED
        del frame, response, request
        self._send(parts)

    def _send(self, parts: Sequence[bytes | memoryview]) -> None:
        with self._write_lock:
            if self._closed:
                return
            try:  # noqa: SIM105 - per call: no context manager
                send_parts(self._sock, parts)
            except OSError:
                pass  # the connection broke: the reader sees its end
