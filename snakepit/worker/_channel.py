"""One Channel stream in the worker: many calls, replies coalesced into frames.

A reader task takes frames in and starts a task per call; the RPC's own task
writes, and whatever finishes while a write is in flight goes out together in
the next frame. Every request gets exactly one final reply (a response, or a
stream's end or error chunk), sent once its tool has really ended: a call the
client cancelled is answered with a CANCELLED error when its task is done (an
async tool cancelled, a sync tool's thread returned, a generator closed), so
the client knows when the worker's slot is free again. (An "eager" first
step of each call in the reader task was tried and dropped: a tool that
captures ``current_task()``, as ``asyncio.timeout`` and anyio's cancel scopes
do, would cancel the reader.)
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final

from snakepit._wire._frames import FrameBatcher
from snakepit._wire._proto.snakepit.v1 import worker_pb2
from snakepit._wire._started import StartedPage, attach_started_page, no_page_notice

if TYPE_CHECKING:
    from ._service import AdapterService, Admission

#: How a call runs: its request, its admission, and what to call as it starts.
_Call = Callable[
    ["worker_pb2.ExecuteRequest", "Admission", "Callable[[], object] | None"],
    Coroutine[Any, Any, Any],
]

logger = logging.getLogger("snakepit.worker")

#: A call's claim (FramesChannel._claims): it started; the host withdrew it first.
_BEGUN: Final = object()
_WITHDRAWN: Final = object()


class FramesChannel:
    """Serves one channel: reads frames, runs calls, writes coalesced replies.

    The transport is the caller's: ``write`` sends one frame (the ``Channel``
    RPC's ``context.write``, or a length-prefixed write on a frames socket).
    """

    def __init__(
        self,
        service: AdapterService,
        write: Callable[[worker_pb2.ServerFrame], Awaitable[Any]],
        *,
        write_nowait: Callable[[worker_pb2.ServerFrame], bool] | None = None,
        drain: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self._service = service
        self._write = write
        # A transport that buffers writes (the frames socket) is written from a
        # callback at the end of the loop pass that produced the replies, not
        # by a hop to the writing task; that task then only waits for drains.
        self._drain = drain
        self._ready = asyncio.Event()
        # Each item fits the limit (checked where it was made); frames are split
        # so that none exceeds it. A stream's chunks keep their order.
        self._batch = FrameBatcher(
            worker_pb2.ServerFrame,
            service.max_message_bytes,
            write_nowait=write_nowait,
            wake=self._ready.set,
            flush=self._flush,
        )
        self._nowait = write_nowait is not None
        self._drain_needed = False
        self._reading = True
        self._loop = asyncio.get_running_loop()
        self._tasks: dict[int, asyncio.Task[None]] = {}  # by request id
        self._running: dict[asyncio.Task[None], int] = {}  # the request id of each task
        self._stream_ids: set[int] = set()
        # Session calls admitted whose task has not taken its admission yet
        # (by request id): one cancelled before its first step gives it back.
        self._admitted: dict[int, Admission] = {}
        from ._service import FREE

        self._free = FREE  # the admission of a call without a session to count
        self._closed = False
        self._gone: asyncio.Future[None] = self._loop.create_future()  # the client is gone
        # The host's started page (named by its first frame): each call's id
        # goes in as the call starts, so that the host knows after a crash
        # which calls never ran (snakepit/_wire/_started.py).
        self._page: StartedPage | None = None
        # Each call's claim, by request id, until its task is done: _BEGUN once
        # it starts (on a tool thread for a sync tool), _WITHDRAWN once the
        # host took it back first. dict.setdefault decides which came first
        # (atomic: no lock on the call's path).
        self._claims: dict[int, object] = {}

    async def run(
        self, frames: AsyncIterator[worker_pb2.ClientFrame], *, eof_is_gone: bool = False
    ) -> None:
        """Serve until the client closes its side and every call is answered.

        The calling task (the RPC's) writes; a reader task reads. With
        ``eof_is_gone`` the end of the frames means the client is gone (a
        socket that closed): the calls still running are cancelled at once.
        """
        from ._service import answering

        token = answering.set(self._gone)  # the reader and the calls' tasks inherit it
        reader = self._loop.create_task(self._read(frames))
        answering.reset(token)
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                if self._drain_needed and self._drain is not None:
                    self._drain_needed = False
                    await self._drain()
                if self._nowait:
                    self._flush()
                else:
                    for frame in self._batch.take():
                        await self._write(frame)
                if reader.done() and (eof_is_gone or not self._running):
                    reader.result()  # re-raise what ended the reading, if anything
                    return
        finally:
            self._closed = True  # nobody to answer any more
            self._gone.set_result(None)  # cancelled calls stop waiting for their tools
            reader.cancel()
            tasks = [reader, *self._running]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._page is not None:  # a tool thread still marking is harmless
                self._page.close()

    async def _read(self, frames: AsyncIterator[worker_pb2.ClientFrame]) -> None:
        # Each call is admitted (counted among its session's calls, or queued
        # behind its session's pending end) as it is read, before the frame's
        # ends: in the order of the wire, whenever its task gets to run. (The
        # host never puts a call after an end of its session in one frame.)
        service = self._service
        admit = service.admit if service.tracks_sessions else None  # None: nothing to count
        free = self._free
        admitted = self._admitted
        try:
            async for frame in frames:
                if frame.started_page and self._page is None:  # one per connection
                    self._page = attach_started_page(frame.started_page)
                    if self._page is None:  # the host must know, before any call starts
                        await self._write(no_page_notice())
                for request in frame.execute:
                    if admit is not None and (admission := admit(request)) is not free:
                        admitted[request.request_id] = admission
                    self._start(request.request_id, service.execute, request, self._reply)
                for request in frame.stream:
                    if admit is not None and (admission := admit(request)) is not free:
                        admitted[request.request_id] = admission
                    self._stream_ids.add(request.request_id)
                    self._start(request.request_id, self._stream, request, None)
                for rid in frame.cancel:
                    task = self._tasks.get(rid)
                    if task is not None:
                        task.cancel()
                for rid in frame.withdraw:
                    self._withdraw(rid)
                if frame.end_sessions:  # the adapter's hook runs in the service's task
                    self._service.end_sessions(frame.end_sessions)
        finally:
            self._reading = False
            self._ready.set()  # the writer checks whether it is all over

    # -- running calls ------------------------------------------------------------------

    def _start(
        self,
        rid: int,
        call: _Call,
        request: worker_pb2.ExecuteRequest,
        on_done: Callable[[Any], None] | None,
    ) -> None:
        # The coroutine is made inside the task: a call cancelled before its
        # task's first step (its cancel came in the same frame) leaves no
        # coroutine that was never awaited.
        # A task per call: its tool may capture current_task() (asyncio.timeout,
        # anyio cancel scopes), so its first step must run in its own task.
        task = self._loop.create_task(self._finish(call, request, on_done))
        self._tasks[rid] = task
        self._running[task] = rid
        task.add_done_callback(self._task_done)

    def _withdraw(self, rid: int) -> None:
        # The host takes the call back if it has not started (its worker is
        # recycled or stopped): its task is cancelled and it is answered
        # NOT_STARTED; it can start no more (its claim says so). One that
        # started runs on. A stream is never withdrawn (never sent ahead).
        task = self._tasks.get(rid)
        if task is None or rid in self._stream_ids:
            return
        if self._claims.setdefault(rid, _WITHDRAWN) is _WITHDRAWN:
            task.cancel()

    def _claim(self, rid: int) -> bool:
        # As the call starts (its slot taken, before anything of its tool
        # runs; on the tool's thread for a sync tool): False if it was
        # withdrawn first (it must not run), else its start is marked.
        if self._claims.setdefault(rid, _BEGUN) is not _BEGUN:
            return False
        page = self._page
        if page is not None:
            page.mark(rid)
        return True

    def _task_done(self, task: asyncio.Task[None]) -> None:
        rid = self._running.pop(task)
        if self._tasks.get(rid) is task:
            del self._tasks[rid]
        withdrawn = self._claims.pop(rid, None) is _WITHDRAWN
        if self._admitted:  # a session call's task cancelled before its first step
            admission = self._admitted.pop(rid, None)
            if admission is not None:
                self._service.release(admission)
        # A task that returned has sent its final reply; one that did not (it
        # was cancelled, maybe before its first step, or it failed) is
        # answered here: every request gets its final reply.
        if task.cancelled() or task.exception() is not None:
            self._answer_unfinished(rid, task, withdrawn)
        if not self._reading:
            self._ready.set()  # the last call may have ended

    def _answer_unfinished(self, rid: int, task: asyncio.Task[None], withdrawn: bool) -> None:
        from ._service import cancelled_info, error_info, withdrawn_info

        if task.cancelled():
            info = withdrawn_info() if withdrawn else cancelled_info()
        else:
            exc = task.exception()
            assert exc is not None
            logger.error("request %d failed in the worker", rid, exc_info=exc)
            info = error_info(exc)
        if rid in self._stream_ids:
            self._stream_ids.discard(rid)
            chunk = worker_pb2.StreamChunk(request_id=rid, error=info)
            if not self._closed:
                self._batch.append("chunks", chunk)
        elif not self._closed:
            self._reply(worker_pb2.ExecuteResponse(request_id=rid, error=info))

    async def _finish(
        self,
        call: _Call,
        request: worker_pb2.ExecuteRequest,
        on_done: Callable[[Any], None] | None,
    ) -> None:
        # The call takes its admission at its first step (and gives it back).
        admitted = self._admitted
        admission = admitted.pop(request.request_id, self._free) if admitted else self._free
        # Claimed (and marked in the page) as it starts: its slot taken,
        # before anything of its tool runs.
        result = await call(request, admission, functools.partial(self._claim, request.request_id))
        if on_done is not None:
            on_done(result)

    async def _stream(
        self,
        request: worker_pb2.ExecuteRequest,
        admission: Admission,
        started: Callable[[], object] | None,
    ) -> None:
        async for chunk in self._service.stream(request, admission, started):
            self._batch.append("chunks", chunk)
        self._stream_ids.discard(request.request_id)  # its last chunk was the end or an error

    def _reply(self, response: worker_pb2.ExecuteResponse) -> None:
        self._batch.append("responses", response)

    def _flush(self) -> None:
        if self._batch.pending and not self._batch.write_all():
            self._drain_needed = True  # over the high-water mark
            self._ready.set()
