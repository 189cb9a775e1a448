"""Multiplexer: many calls on one long-lived stream to a worker (the pool's hot path).

The stream is the worker's ``Channel`` gRPC stream, or its frames socket
(:func:`open_frames_multiplexer`); see :mod:`snakepit.pool._transports`.
The unary and streaming gRPC calls, health and describe are
:class:`~snakepit.pool.WorkerConnection`'s (``_worker_connection.py``); every
lower-layer error is mapped in ``_grpc_errors.py``.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
from collections.abc import AsyncGenerator
from typing import Any, Final

from snakepit._wire._codec import JSON
from snakepit._wire._frames import ITEM_OVERHEAD, FrameBatcher
from snakepit._wire._proto.snakepit.v1 import worker_pb2
from snakepit._wire._started import NO_PAGE_ID, StartedPage
from snakepit.errors import ExecutionTimeout, WorkerError, WorkerStopping, WorkerUnavailable

from ._config import Codec
from ._grpc_errors import ended_under_a_write, error_from_grpc
from ._requests import DEFAULT_MAX_MESSAGE_BYTES, END, chunk_value, fill_request, result_of
from ._transports import FramesTransport, GrpcTransport, Transport, open_frames_transport

__all__ = ("Multiplexer",)

_TIMED_OUT: Final = object()
_ClientFrame: Final = worker_pb2.ClientFrame
_NOT_STARTED: Final = worker_pb2.ErrorInfo.Kind.NOT_STARTED


class ChannelBroke(WorkerUnavailable):
    """The channel broke with this call in flight (or before it was sent).

    :meth:`Multiplexer.call_started` says, once the worker's process has
    exited, whether the call had started there.
    """

    def __init__(self, message: str, mux: Multiplexer, request_id: int | None) -> None:
        super().__init__(message)
        #: The channel the call was on.
        self.mux = mux
        #: The call's request id on it; None: it was never sent.
        self.request_id = request_id

    def never_started(self) -> bool:
        """True when the call certainly did not start (meaningful once the worker exited)."""
        if self.request_id is None:
            return True
        return self.mux.call_started(self.request_id) is False


class Withdrawn(WorkerStopping):
    """The call was withdrawn from its worker before it started there (it did not run).

    :meth:`Multiplexer.withdraw_unstarted` asked for it (its worker is being
    recycled or stopped): a pool sends the call to another worker, as any
    call a stopping worker refused.
    """


class CallTimedOut(ExecutionTimeout):
    """The host's timer of a call in flight fired before its reply came.

    As ExecutionTimeout, with the channel and the request id, so that the
    pool can ask the started page whether the call had started at all (sent
    ahead, it may still wait in its worker).
    """

    def __init__(self, message: str, mux: Multiplexer, request_id: int, **kw: Any) -> None:
        super().__init__(message, **kw)
        #: The channel the call was on.
        self.mux = mux
        #: The call's request id on it.
        self.request_id = request_id


#: (channel, request id) of the call the current task left running (cancelled,
#: timed out, a stream closed early) on the worker: see Multiplexer.take_left_running.
_left_running: contextvars.ContextVar[tuple[Multiplexer, int] | None] = contextvars.ContextVar(
    "snakepit_left_running", default=None
)


class Multiplexer:
    """Many calls on one long-lived bidirectional ``Channel`` stream (the hot path).

    Requests that wait while a frame is being written go together in the next
    frame, and the worker batches its replies the same way, so 64 callers in
    flight cost a handful of messages, not 128 RPCs. Close it with
    :meth:`aclose` (or use it as an ``async with``); if the stream breaks,
    every pending call fails with :class:`~snakepit.errors.WorkerUnavailable`.

    It owns its tasks, started here and ended by :meth:`aclose`, which
    returns once they have: on the Channel RPC one reads the worker's frames
    and one writes; on the frames socket the frames are pushed to it by the
    transport (no reader task) and one task waits for the socket's buffer to
    drain. Whatever ends the reading or the writing early breaks the
    channel, and its calls fail with it.

    A call whose caller is cancelled, that times out, or a stream closed
    early is cancelled in the worker; its tool may run on a while (a sync
    tool cannot be interrupted). The worker answers once it has really ended;
    until then the request is *left running* (:meth:`take_left_running`,
    :meth:`settled`), and the worker's slot is not free.
    """

    def __init__(self, transport: Any, limit: int, codec: Codec = JSON) -> None:
        self._codec = codec
        self._loop = asyncio.get_running_loop()
        self._limit = limit
        # A gRPC stub (its Channel RPC carries the frames), or a transport.
        self._call: Transport = (
            transport
            if isinstance(transport, FramesTransport | GrpcTransport)
            else GrpcTransport(transport)
        )
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._streams: dict[int, asyncio.Queue[worker_pb2.StreamChunk | None]] = {}
        # Requests left running in the worker, until their final reply comes
        # (True) or the channel ends (False).
        self._unsettled: dict[int, asyncio.Future[bool]] = {}
        # Final replies that came for a cancelled call before its caller resumed.
        self._early: set[int] = set()
        # Calls asked back (withdraw_unstarted) whose reply has not come yet.
        self._withdrawn: set[int] = set()
        self._wake = asyncio.Event()
        # A transport that writes without waiting (the frames socket) is written
        # from a callback at the end of the loop pass that queued the requests:
        # no hop to the writer task, and requests of one pass share a frame.
        self._batch = FrameBatcher(
            worker_pb2.ClientFrame,
            limit,
            write_nowait=getattr(self._call, "write_nowait", None),
            wake=self._wake.set,
            flush=self._flush,
        )
        # A transport that writes without waiting: a call alone on the channel
        # is written at once with it (see execute).
        self._direct_send = (
            self._call.write_nowait if isinstance(self._call, FramesTransport) else None
        )
        # The sessions ended in the frame being filled (its number, in
        # ``_batch.opened``): a call of one of them goes in the next frame,
        # since the worker reads a frame's calls before its ends.
        self._ended: set[str] = set()
        self._ended_in = 0
        self._drain = False
        self._broken: WorkerError | None = None
        self._closed = False
        self._writer = self._loop.create_task(self._write_loop(), name="snakepit channel writer")
        self._reader: asyncio.Task[None] | None = None
        if isinstance(self._call, FramesTransport):
            self._call.attach(self._dispatch, self._lost)  # frames pushed: no reader task
        else:
            self._reader = self._loop.create_task(self._read_loop(), name="snakepit channel reader")

    async def __aenter__(self) -> Multiplexer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- calls -------------------------------------------------------------------------

    def call_started(self, request_id: int) -> bool | None:
        """Whether the worker began the call ``request_id``; None if it cannot be known.

        Read from the connection's started page (``snakepit._wire._started``):
        only meaningful once the worker's process has exited.
        """
        page = self._page()
        return None if page is None else page.started(request_id)

    def seal_started_page(self, *, exited: bool) -> None:
        """Free the started page, keeping what it says when the worker's process ``exited``.

        Its owner calls it once the worker's process is reaped (a pool's
        WorkerServer does); otherwise the page is freed with the Multiplexer.

        With ``exited`` (nothing can start any more) :meth:`call_started`
        answers from what was kept; without, it says None (not known) from
        then on. Idempotent.
        """
        page = self._page()
        if page is not None:
            if exited:
                page.seal()
            else:
                page.close()

    def _page(self) -> StartedPage | None:
        return self._call.page if isinstance(self._call, FramesTransport) else None

    def _check(self, request_id: int | None = None) -> None:
        # request_id: the call in flight that meets the broken channel (None: not sent).
        if self._broken is not None:
            raise ChannelBroke(str(self._broken), self, request_id) from self._broken
        if self._closed:
            raise WorkerUnavailable("the channel is closed")

    def _queue(
        self,
        kind: str,
        tool: str,
        args: Any,
        timeout: float | None,
        session_id: str,
        session_metadata: bytes,
    ) -> int:
        # The request is built in place inside the frame being filled (no copy);
        # a request that would push the frame over the size limit opens the next.
        rid = next(self._ids)
        batch = self._batch
        ended = self._ended
        if ended:  # rare: a session ended in this loop pass
            if batch.opened != self._ended_in:
                ended.clear()  # that frame is full or sent already
            elif session_id in ended:
                batch.next_frame()  # after the end, not before it
                ended.clear()
        field = getattr(batch.frame, kind)
        request = field.add()
        try:
            fill_request(
                request,
                rid,
                tool,
                args,
                timeout,
                session_id,
                session_metadata,
                self._limit,
                self._codec,
            )
        except BaseException:
            del field[-1]
            raise
        size = request.ByteSize() + ITEM_OVERHEAD
        if not batch.fits(size):  # into the next frame, as built (not encoded again)
            getattr(batch.next_frame(), kind).add().CopyFrom(request)
            del field[-1]
        batch.added(size)
        return rid

    async def execute(
        self,
        tool: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        session_id: str = "",
        session_metadata: bytes = b"",
    ) -> Any:
        """Call ``tool`` over the channel; semantics as :meth:`WorkerConnection.execute`.

        Cancelling the awaiting task cancels the remote call.

        :param session_id: the session the call belongs to ("" for none).
        :param session_metadata: that session's metadata in its wire form
            (:func:`snakepit._wire._session.encode_metadata`; b"" for none),
            what the tool reads as ``ctx.session.metadata``.
        """
        if self._broken is not None or self._closed:
            self._check()
        pending = self._pending
        # Alone on the channel (nothing in flight, nothing queued: a caller at
        # a time per worker): its own frame, written now rather than at the end
        # of the loop pass (a pass saved per call), and built outside the batch
        # (nothing to share it with). Calls in flight together share frames.
        direct = self._direct_send
        if direct is not None and not pending and not self._batch.pending:
            rid = next(self._ids)
            frame = _ClientFrame()
            fill_request(
                frame.execute.add(),
                rid,
                tool,
                args,
                timeout,
                session_id,
                session_metadata,
                self._limit,
                self._codec,
            )
            future: asyncio.Future[Any] = self._loop.create_future()
            pending[rid] = future
            try:
                if not direct(frame):
                    self._drain = True  # over the high-water mark: the writer task waits
                    self._wake.set()
            except Exception as exc:  # the socket broke under us: fails the future
                self._fail(_broke(exc))
        else:
            rid = self._queue("execute", tool, args, timeout, session_id, session_metadata)
            future = self._loop.create_future()
            pending[rid] = future
        timer = self._loop.call_later(timeout, _expire, future) if timeout is not None else None
        try:
            response = await future
        except asyncio.CancelledError:
            replied = (
                future.done()
                and not future.cancelled()
                and future.exception() is None
                and future.result() is not _TIMED_OUT
            )
            if not replied:  # (a reply that came just before the cancellation ended it)
                self._leave_running(rid)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            self._pending.pop(rid, None)
        if response is _TIMED_OUT:
            self._leave_running(rid)
            raise CallTimedOut(
                f"{tool}: no reply within {timeout:g}s", self, rid, tool=tool, timeout=timeout
            )
        if self._withdrawn and rid in self._withdrawn:
            self._withdrawn.discard(rid)
            if response.WhichOneof("outcome") == "error" and response.error.kind == _NOT_STARTED:
                raise Withdrawn(f"{tool}: withdrawn from its worker before it started")
        return result_of(response, tool, self._codec)

    def withdraw_unstarted(self) -> int:
        """Ask the worker to give back the unary calls in flight that have not started.

        For a worker the pool stops sending calls to (recycled, drained):
        each call it still holds waiting to start (sent ahead) ends in
        :class:`Withdrawn` (it did not run; the pool sends it elsewhere);
        one that started runs on and ends as usual. Never blocks; returns
        how many calls were asked back (0 on a closed or broken channel).
        """
        if self._broken is not None or self._closed:
            return 0
        withdrawn = self._withdrawn
        asked = 0
        for rid, future in self._pending.items():
            if not future.done() and rid not in withdrawn:
                withdrawn.add(rid)
                self._batch.append("withdraw", rid)  # takes room in a frame like any item
                asked += 1
        return asked

    async def stream(
        self,
        tool: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        session_id: str = "",
        session_metadata: bytes = b"",
    ) -> AsyncGenerator[Any, None]:
        """Call a streaming ``tool`` over the channel; ``aclose()`` cancels it remotely.

        ``session_id`` and ``session_metadata`` as in :meth:`execute`.
        """
        self._check()
        rid = self._queue("stream", tool, args, timeout, session_id, session_metadata)
        queue: asyncio.Queue[worker_pb2.StreamChunk | None] = asyncio.Queue()
        self._streams[rid] = queue
        finished = False
        try:
            while True:
                if timeout is None:
                    chunk = await queue.get()
                else:
                    try:
                        chunk = await asyncio.wait_for(queue.get(), timeout)
                    except TimeoutError:
                        raise ExecutionTimeout(
                            f"{tool}: no chunk within {timeout:g}s", tool=tool, timeout=timeout
                        ) from None
                if chunk is None:
                    self._check(rid)
                    raise WorkerUnavailable(f"{tool}: the channel closed mid-stream")
                finished = chunk.WhichOneof("item") != "chunk"  # end or error: nothing to cancel
                value = chunk_value(chunk, tool, self._codec)
                if value is END:
                    return
                yield value
        finally:
            self._streams.pop(rid, None)
            while not finished and not queue.empty():  # its last chunk may be in already
                left = queue.get_nowait()
                finished = left is None or left.WhichOneof("item") != "chunk"
            if not finished:
                self._leave_running(rid)

    def _leave_running(self, rid: int) -> None:
        # The caller stops waiting for ``rid``: cancel it in the worker and
        # remember it until the worker says it has ended.
        if self._broken is not None or self._closed:
            return  # the connection is gone: nothing to wait for
        if self._withdrawn:
            self._withdrawn.discard(rid)  # whatever its reply, nobody reads it
        if rid in self._early:
            self._early.discard(rid)  # its final reply is in: it ended
            return
        self._batch.append("cancel", rid)  # takes room in a frame like any item
        self._unsettled[rid] = self._loop.create_future()
        _left_running.set((self, rid))

    def end_session(self, session_id: str) -> None:
        """Tell the worker that the session ``session_id`` ended; it runs ``on_session_end``.

        For a session deleted or expired whose calls this worker served: the
        worker's adapter frees what it kept for it (``Adapter.on_session_end``,
        run in the worker in the order the ids were given). Never blocks: the id
        goes into the next frame with whatever else is queued, and nothing
        answers it; a call of that session queued after it goes in a later
        frame (the worker reads a frame's calls before its ends). On a closed
        or broken channel it does nothing: the worker is gone, and what it
        kept for the session with it.
        """
        if self._broken is not None or self._closed or not session_id:
            return
        batch = self._batch
        batch.append("end_sessions", session_id)  # takes room in a frame like any item
        if batch.opened != self._ended_in:
            self._ended.clear()
            self._ended_in = batch.opened
        self._ended.add(session_id)

    def take_left_running(self) -> int | None:
        """The request the current task's last call left running on this channel, or None.

        A call cancelled (or timed out, or a stream closed early) before its
        reply came leaves its request running in the worker until the worker
        reports its end (see :meth:`settled`). Taking it clears it, so each
        such request is taken once, by the task that made the call.
        """
        left = _left_running.get()
        if left is None:
            return None
        _left_running.set(None)
        channel, rid = left
        return rid if channel is self and rid in self._unsettled else None

    @property
    def open(self) -> bool:
        """True until the channel broke or was closed."""
        return self._broken is None and not self._closed

    @property
    def left_running(self) -> frozenset[int]:
        """Requests left running in the worker now, whose end has not been reported."""
        return frozenset(self._unsettled)

    async def settled(self, rid: int) -> bool:
        """Wait until the worker reports that the request ``rid`` left running has ended.

        True once it has (its slot in the worker is free again), at once for
        a request not left running; False if the channel broke or was closed
        (the worker's state is then unknown). Cancelling the wait leaves the
        request tracked.
        """
        settled = self._unsettled.get(rid)
        if settled is None:
            return self._broken is None and not self._closed
        return await asyncio.shield(settled)

    def _settle(self, rid: int) -> None:
        settled = self._unsettled.pop(rid, None)
        if settled is not None and not settled.done():
            settled.set_result(True)

    def _flush(self) -> None:
        if self._broken is not None or self._closed:
            return
        try:
            if not self._batch.write_all():
                self._drain = True  # over the high-water mark: the writer task waits
                self._wake.set()
        except Exception as exc:  # the socket broke under us
            self._fail(_broke(exc))

    # -- the two loops -----------------------------------------------------------------

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._closed:
                    return
                if self._drain:
                    self._drain = False
                    await self._call.drain()
                    continue
                for frame in self._batch.take():
                    await self._call.write(frame)
        except asyncio.CancelledError:
            if self._ours(asyncio.current_task()):
                raise
            # grpc's: the call ended under the writer. The reader reports why
            # (the call's status, or the connection closed under it).
        except Exception as exc:  # the call failed, or was closed under us
            self._fail(_broke(exc))

    async def _read_loop(self) -> None:
        # A transport read by a task (the Channel RPC); the frames socket
        # pushes its frames to _dispatch itself (FramesTransport.attach).
        dispatch = self._dispatch
        try:
            while True:
                frame = await self._call.read()
                if frame is None:
                    break
                dispatch(frame)
            self._fail(WorkerUnavailable("the worker closed the channel"))
        except asyncio.CancelledError:
            if self._ours(asyncio.current_task()):
                raise
            self._fail(WorkerUnavailable("the connection was closed under the channel"))
        except Exception as exc:  # the call failed, the socket broke, a frame was unreadable
            self._fail(_broke(exc))

    def _dispatch(self, frame: worker_pb2.ServerFrame) -> None:
        # The worker's replies to the calls waiting for them.
        pending = self._pending
        for response in frame.responses:
            rid = response.request_id
            future = pending.get(rid)
            if future is not None and not future.done():
                future.set_result(response)
            elif rid in self._unsettled:
                self._settle(rid)
            elif future is not None:  # its caller gave up and has not resumed yet
                self._early.add(rid)
            elif rid == NO_PAGE_ID and (page := self._page()) is not None:
                page.refuse()  # the worker could not map it: it says nothing
        if frame.chunks:
            streams = self._streams
            for chunk in frame.chunks:
                rid = chunk.request_id
                queue = streams.get(rid)
                if queue is not None:
                    queue.put_nowait(chunk)
                elif rid in self._unsettled and chunk.WhichOneof("item") != "chunk":
                    self._settle(rid)

    def _lost(self, exc: Exception | None) -> None:
        # The frames socket ended (FramesTransport.attach's ``lost``).
        if exc is None:
            self._fail(WorkerUnavailable("the worker closed the channel"))
        else:
            self._fail(_broke(exc))

    def _ours(self, task: asyncio.Task[Any] | None) -> bool:
        # A CancelledError in a loop is either the loop's own cancellation
        # (aclose, or the owner cancelled) or grpc's, when the WorkerConnection
        # under a Channel was closed: that one breaks the channel (its calls
        # would wait forever otherwise).
        return self._closed or task is None or task.cancelling() > 0

    def _fail(self, error: WorkerError) -> None:
        if self._broken is None:
            self._broken = error
        for rid, future in self._pending.items():
            if not future.done():
                failed = ChannelBroke(str(error), self, rid)
                failed.__cause__ = error
                future.set_exception(failed)
        for queue in self._streams.values():
            queue.put_nowait(None)
        unsettled, self._unsettled = self._unsettled, {}
        for settled in unsettled.values():
            if not settled.done():
                settled.set_result(False)
        self._early.clear()
        self._withdrawn.clear()

    async def aclose(self) -> None:
        """Close the stream (its pending calls fail with WorkerUnavailable) and end its tasks."""
        if not self._closed:
            self._closed = True
            # Its started page stays: the worker's process may have died
            # before its socket said so, and the calls failed here are judged
            # once it exited (seal_started_page() then frees the page; else it
            # goes with this Multiplexer).
            self._fail(WorkerUnavailable("the channel was closed"))
            self._wake.set()  # the writer sees _closed
            try:
                await self._call.close(self._writer, self._reader)
            finally:  # what is left (after the transport's grace, or a cancelled close)
                self._writer.cancel()
                if self._reader is not None:
                    self._reader.cancel()
                self._call.cancel()
        tasks = (self._writer,) if self._reader is None else (self._writer, self._reader)
        await asyncio.gather(*tasks, return_exceptions=True)


async def open_frames_multiplexer(
    address: str,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    codec: Codec = JSON,
    secret: bytes | None = None,
    timeout: float = 10.0,
) -> Multiplexer:
    """Connect to a worker's frames socket (``unix:PATH``) and multiplex calls over it.

    The same :class:`Multiplexer` as on the ``Channel`` RPC, at a fraction of
    the cost per call. The connection opens with the worker's ``secret``
    (None: a worker started without authentication) and is ready once the
    worker accepted it, within ``timeout`` seconds.

    :raises WorkerUnavailable: the socket cannot be reached, the worker
        refused the secret (the message says so), or did not answer in time.
    """
    transport = await open_frames_transport(
        address, max_message_bytes=max_message_bytes, secret=secret, timeout=timeout
    )
    return Multiplexer(transport, max_message_bytes, codec)


def _broke(exc: Exception) -> WorkerError:
    """The error of a channel whose reading or writing raised ``exc``."""
    if ended_under_a_write(exc):
        # A wrong secret is refused at once, so a first write can meet it;
        # grpc's own error says nothing of why the stream ended.
        ended = WorkerUnavailable(
            "Channel: the worker ended the stream as a frame was written to it:"
            " authentication failed (a missing or wrong secret), or the worker stopped"
        )
        ended.__cause__ = exc
        return ended
    error = error_from_grpc(exc, "Channel")
    if error is None:
        error = WorkerUnavailable(f"the channel broke: {exc}")
        error.__cause__ = exc
    return error


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(_TIMED_OUT)
