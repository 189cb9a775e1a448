"""Calls: the way of one call through a pool (checkout, telemetry, outcome, check-in)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio

from snakepit.errors import (
    ExecutionTimeout,
    PoolClosed,
    QueueTimeout,
    WorkerCrashed,
    WorkerStopping,
    WorkerUnavailable,
)
from snakepit.otp import Broadcast
from snakepit.pool._connection import CallTimedOut, ChannelBroke, Multiplexer, Withdrawn
from snakepit.session import SessionRecord

from ._config import PoolConfig
from ._events import PoolEvent, RequestOutcome, RequestQueued, RequestStarted, RequestStopped
from ._host import PoolHost
from ._recycling import Recycler
from ._scheduler import Scheduler, time_left
from ._sessions import SessionRouter
from ._worker_server import WorkerServer

#: Seconds of a call's own timeout that must be left when a worker comes free
#: for a call that waited for it; with less it raises QueueTimeout (the tool did not run).
MIN_RUN_TIME = 0.001


class NotStarted(WorkerUnavailable):
    """The call's worker died before the call started there: it may run on another worker.

    Raised by :class:`Calls` to the pool's own retry loop, which sends the
    call again (it never reaches the caller, unless the call was sent and
    lost :data:`MAX_RESENDS` times; then the crash is raised).
    """

    def __init__(self, crash: WorkerCrashed) -> None:
        super().__init__(f"the call had not started when its worker died: {crash}")
        #: The crash that lost the call.
        self.crash = crash


#: Seconds the host waits for a worker to answer the cancel of a call whose
#: timeout its own timer saw pass before the call started (the worker was late
#: to give it up itself): a worker that does not answer by then is stuck, and
#: the call is an ExecutionTimeout that gets it replaced.
UNSTARTED_GRACE = 0.25

#: Seconds a worker has, after a call's timeout passed in the host, to report
#: that the call's tool ended (it saw ``ctx.cancelled`` at its own deadline,
#: the same instant): then it is not stuck and stays; else it is replaced. The
#: caller does not wait for this (its ExecutionTimeout is raised at once); the
#: slot stays taken meanwhile, so nothing else lands on the worker.
TIMEOUT_GRACE = 0.25

#: Times a call whose worker died before it started is sent again; one more
#: such loss raises the crash (``WorkerCrashed``) rather than looping. A bound
#: for a call that kills every worker it reaches before it starts (its request
#: cannot be read); chance alone does not reach it: a call sent again waits for
#: a free worker (it is not sent ahead again), where it starts at once.
MAX_RESENDS = 32


@dataclass(slots=True)
class _Call:
    """One call that holds a worker's slot: what its telemetry and its check-in need."""

    tool: str
    worker: WorkerServer
    #: The call's session ("" for none): the worker serves it until the call is over.
    session_id: str
    #: > 0: the call is observed (somebody subscribed before it began).
    request_id: int = 0
    queued_at: float = 0.0
    started: float = 0.0
    outcome: RequestOutcome = "cancelled"
    #: Its timeout passed in the host while its tool ran: its worker is judged
    #: at check-in (replaced unless the tool ends within TIMEOUT_GRACE).
    timed_out: bool = False


class Calls:
    """Runs each call of a pool on a worker, and counts them.

    The one place a call's outcome is judged: a stopping worker is drained,
    a broken connection is a crash (the worker out of rotation,
    :class:`~snakepit.errors.WorkerCrashed`), a timeout gets the worker
    killed and replaced (not counted as a crash).
    """

    def __init__(
        self,
        config: PoolConfig,
        scheduler: Scheduler[WorkerServer],
        events: Broadcast[PoolEvent],
        host: PoolHost,
        recycler: Recycler,
        router: SessionRouter,
        *,
        owner: object,
        running: Callable[[], Scheduler[WorkerServer]],
        state: Callable[[], str],
    ) -> None:
        """Serve the calls of ``owner`` (the pool, named in errors).

        :param running: returns the scheduler, or raises why the pool takes no calls.
        :param state: the pool's state now (``"running"``, ``"closed"``...).
        """
        self._config = config
        self._scheduler = scheduler
        self._events = events
        self._host = host
        self._recycler = recycler
        self._router = router
        self._owner = owner
        self._running = running
        self._state = state
        self._request_ids = itertools.count(1)
        #: Calls started, and how many ended in an error, a timeout or a crash.
        self.requests = self.errors = self.timeouts = self.crashes = 0
        #: Calls whose worker died before they started there, or handed them
        #: back unstarted (recycled, drained, stopped): sent again.
        self.resent = 0

    @asynccontextmanager
    async def on_a_worker(
        self,
        tool: str,
        deadline: float | None,
        session: SessionRecord | None = None,
        *,
        ahead: bool = True,
    ) -> AsyncIterator[Multiplexer]:
        """Check a worker out for one call; map its failures; check it back in.

        ``deadline`` (``anyio.current_time()``'s clock) bounds the wait. A
        call of ``session`` goes where the session's affinity says. Without
        ``ahead`` the call waits for a free slot (it is not sent ahead).
        """
        call = await self._check_out(tool, deadline, session, ahead)
        try:
            yield self._mux_of(call.worker)
            call.outcome = "ok"
        except Exception as exc:
            error = await self._failed(call, exc)
            if error is not exc:
                raise error  # noqa: B904 - its cause is set
            raise
        finally:
            self._check_in(call)

    async def execute(
        self, tool: str, args: Any, deadline: float | None, *, ahead: bool = True
    ) -> Any:
        """One call without a session: :meth:`on_a_worker`'s steps in one frame.

        The usual call's path: no context manager (about a tenth of the
        host's instructions per call).
        """
        call = await self._check_out(tool, deadline, None, ahead)
        try:
            result = await self._mux_of(call.worker).execute(
                tool, args, timeout=None if deadline is None else time_left(deadline)
            )
            call.outcome = "ok"
            return result
        except Exception as exc:
            error = await self._failed(call, exc)
            if error is not exc:
                raise error  # noqa: B904 - its cause is set
            raise
        finally:
            self._check_in(call)

    # -- the steps ----------------------------------------------------------------------

    async def _check_out(
        self, tool: str, deadline: float | None, session: SessionRecord | None, ahead: bool
    ) -> _Call:
        """Take a slot (telling subscribers the call queued, or was refused); start the call."""
        scheduler = self._running()
        events = self._events
        session_id = "" if session is None else session.session_id
        if not events.active:
            worker = await self._take_slot(scheduler, deadline, session, ahead)
            return self._start(_Call(tool, worker, session_id))
        request_id = next(self._request_ids)
        queued_at = anyio.current_time()

        def on_wait(depth: int) -> None:
            events.publish(RequestQueued(request_id, tool, depth, queued_at))

        try:
            worker = await self._take_slot(scheduler, deadline, session, ahead, on_wait)
        except BaseException as exc:
            ended = anyio.current_time()
            outcome: RequestOutcome = "rejected" if isinstance(exc, Exception) else "cancelled"
            events.publish(RequestStopped(request_id, tool, "", outcome, ended - queued_at, ended))
            raise
        return self._start(_Call(tool, worker, session_id, request_id, queued_at))

    async def _take_slot(
        self,
        scheduler: Scheduler[WorkerServer],
        deadline: float | None,
        session: SessionRecord | None,
        ahead: bool,
        on_wait: Callable[[int], object] | None = None,
    ) -> WorkerServer:
        # A slot, and enough of the call's own timeout left to run in: a call
        # that waited and is handed a slot with microseconds left would time
        # out and get its healthy worker killed; it is refused as a wait that
        # ran out instead. (One that gets a slot at once is sent as it is.)
        if deadline is None:
            if session is None:
                return await scheduler.checkout(on_wait, ahead=ahead)
            return await self._router.take_slot(session, on_wait, None)
        waited_from = anyio.current_time()
        waited = False

        def note_wait(depth: int) -> None:
            nonlocal waited
            waited = True
            if on_wait is not None:
                on_wait(depth)

        if session is None:
            worker = await scheduler.checkout(note_wait, deadline=deadline, ahead=ahead)
        else:
            worker = await self._router.take_slot(session, note_wait, deadline)
        # A session call may also have spent its time on the store (a touch, a pin).
        if (waited or session is not None) and deadline - anyio.current_time() < MIN_RUN_TIME:
            scheduler.checkin(worker)
            where = "a worker came free" if waited else "its session was looked up"
            raise QueueTimeout(
                f"{where} with less than {MIN_RUN_TIME * 1000:g} ms left of the "
                "call's timeout (the tool did not run)",
                timeout=deadline - waited_from,
            )
        return worker

    def _start(self, call: _Call) -> _Call:
        # No await from here to the caller's use of the slot: the worker
        # serves the session (for the bridge) before the request is sent.
        self.requests += 1
        call.worker.call_started()
        if call.session_id:
            self._router.serving_began(call.worker.worker_id, call.session_id)
        if call.request_id:
            call.started = now = anyio.current_time()
            self._events.publish(
                RequestStarted(
                    call.request_id, call.tool, call.worker.worker_id, now - call.queued_at, now
                )
            )
        return call

    @staticmethod
    def _mux_of(worker: WorkerServer) -> Multiplexer:
        if worker.mux is None:
            raise WorkerUnavailable(f"worker {worker.worker_id!r} is gone")
        return worker.mux

    async def _failed(self, call: _Call, exc: Exception) -> BaseException:
        """Judge a failed call (its outcome, counters, its worker's fate); return what to raise."""
        worker = call.worker
        if isinstance(exc, Withdrawn):  # its worker is recycled or stopped: it goes elsewhere
            call.outcome = "refused"
            self.resent += 1
            return exc
        if isinstance(exc, WorkerStopping):
            call.outcome = "refused"
            worker.drain("it is stopping on its own (a SIGTERM from outside?)")  # no new calls
            return exc
        if isinstance(exc, WorkerUnavailable):
            if self._state() == "closed":  # stopped by the pool's exit: no crash
                closed = PoolClosed(
                    f"{self._owner!r} stopped with the call to {call.tool!r} in flight"
                )
                closed.__cause__ = exc
                return closed
            worker.retire("its connection broke", report=False)  # out of rotation, group killed
            error = await worker.crash_error(exc)
            # Once the process exited, its started page says which calls it had begun.
            if (
                isinstance(error, WorkerCrashed)
                and isinstance(exc, ChannelBroke)
                and exc.never_started()
            ):
                call.outcome = "refused"
                self.resent += 1
                not_started = NotStarted(error)
                not_started.__cause__ = error
                return not_started
            call.outcome = "crashed"
            self.crashes += 1
            if type(error) is ChannelBroke:  # the process did not exit in time: no crash report
                unavailable = WorkerUnavailable(str(error))  # the public type, not ours
                unavailable.__cause__ = error.__cause__
                return unavailable
            return error
        if isinstance(exc, CallTimedOut) and exc.mux.call_started(exc.request_id) is False:
            # Sent ahead, it still waits in its worker (whose own NOT_STARTED
            # reply was late): judged once the worker answers the cancel.
            queued = await self._timed_out_unstarted(call, exc)
            if queued is not None:
                return queued
        if isinstance(exc, ExecutionTimeout):
            call.outcome = "timeout"
            self.timeouts += 1
            # Its worker is judged at check-in: the host's timer left the call
            # running (a call's, a stream item's): replaced unless the worker
            # reports the tool's end within TIMEOUT_GRACE, the slot taken
            # meanwhile; the worker answered DEADLINE_EXCEEDED itself (its tool
            # ended, it saw ctx.cancelled): nothing left running, it stays.
            call.timed_out = True
            if type(exc) is CallTimedOut:  # the public type, not ours
                return ExecutionTimeout(
                    str(exc), tool=exc.tool, timeout=exc.timeout, worker_id=worker.worker_id
                )
            exc.worker_id = worker.worker_id
            return exc
        if isinstance(exc, QueueTimeout):  # the worker says the tool did not run
            call.outcome = "rejected"
            return exc
        call.outcome = "error"
        self.errors += 1
        return exc

    async def _timed_out_unstarted(self, call: _Call, exc: CallTimedOut) -> QueueTimeout | None:
        # The call's cancel is on its way (it was left running): once the
        # worker answered it (within cancel_grace), the started page is final
        # for it. Not started: a QueueTimeout, the worker is not at fault.
        # Started meanwhile: None (an ExecutionTimeout, as any other).
        mux, rid = exc.mux, exc.request_id
        settled = False
        with anyio.move_on_after(min(self._config.cancel_grace, UNSTARTED_GRACE)):
            settled = await mux.settled(rid)
        if not settled or mux.call_started(rid) is not False:
            return None
        call.outcome = "rejected"
        timed_out = QueueTimeout(
            f"{call.tool}: the call's timeout ({exc.timeout:g}s) passed while it waited in its"
            " worker for a free slot (it was sent ahead: PoolConfig.prefetch); the tool did"
            " not run",
            timeout=exc.timeout,
        )
        timed_out.__cause__ = exc
        return timed_out

    def _check_in(self, call: _Call) -> None:
        """Give the slot back; for a call cancelled before its reply, once the worker ended it."""
        worker = call.worker
        mux = worker.mux
        left = mux.take_left_running() if mux is not None else None
        background = self._host.background
        if (
            left is not None
            and mux is not None
            and background is not None
            and self._state() in ("running", "degraded")  # not while the pool closes
            and (worker.usable or call.timed_out)  # (a timed-out call's worker is judged too)
        ):
            # Cancelled (or timed out) before its reply: the tool may still run
            # in the worker. The slot stays taken until the worker says it
            # ended (the caller does not wait for that); see
            # PoolConfig.cancel_grace, TIMEOUT_GRACE. Its RequestStopped is
            # published then, when the call is over.
            background.start_soon(self._check_in_when_ended, call, mux, left)
            return
        if call.timed_out and (left is not None or mux is None or not mux.open):
            # Not judged (the pool closes), or its connection is gone: out. (Nothing
            # left running on an open channel: the worker reported the call's end
            # already, its reply racing the timeout; it is not stuck.)
            worker.retire(f"a call to {call.tool!r} timed out", failed=False)
        self._release(call)

    async def _check_in_when_ended(self, call: _Call, mux: Multiplexer, rid: int) -> None:
        # A cancelled call's slot: back once the worker reports the call ended;
        # after cancel_grace without that, the worker is replaced (not a crash).
        # A pool closing meanwhile cancels this wait: the worker stops anyway.
        worker = call.worker
        try:
            grace = self._config.cancel_grace
            if call.timed_out:
                grace = min(grace, TIMEOUT_GRACE)
            settled = False
            with anyio.move_on_after(grace) as scope:
                settled = await mux.settled(rid)
            if scope.cancelled_caught:
                why = (
                    f"a call to {call.tool!r} timed out and did not end within {grace:g}s"
                    if call.timed_out
                    else f"a cancelled call to {call.tool!r} did not end within "
                    f"cancel_grace={grace:g}s"
                )
                worker.retire(why, failed=False)
            elif not settled:  # its connection broke: as for a call in flight, out of rotation
                worker.retire("its connection broke", report=False)
        finally:
            self._release(call)

    def _release(self, call: _Call) -> None:
        """The call is over: its slot back (a no-op for a retired worker), its RequestStopped."""
        worker = call.worker
        if call.session_id:
            self._router.serving_ended(worker.worker_id, call.session_id)
        worker.call_ended()
        self._scheduler.checkin(worker)
        self._recycler.check(worker)
        if call.request_id:
            ended = anyio.current_time()
            self._events.publish(
                RequestStopped(
                    call.request_id,
                    call.tool,
                    worker.worker_id,
                    call.outcome,
                    ended - call.started,
                    ended,
                )
            )
