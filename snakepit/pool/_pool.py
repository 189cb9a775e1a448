"""Pool: supervised worker processes behind execute() and stream()."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import math
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from types import EllipsisType, TracebackType
from typing import Any, Final, Literal, TypeAlias, Unpack

import anyio
import sniffio
from anyio.streams.memory import MemoryObjectReceiveStream

from snakepit._wire._auth import new_secret
from snakepit._wire._grpc_loops import forget_closed_loops
from snakepit.errors import (
    ArgumentTypeError,
    CallTimeout,
    ConfigError,
    PoolClosed,
    PoolDegraded,
    PoolStartError,
    SessionError,
    SessionExists,
    SessionNotFound,
    SnakepitError,
    WaitTimeout,
    WorkerCrashed,
    WorkerStopping,
    WorkerUnavailable,
    WrongEventLoop,
    check_int,
)
from snakepit.otp import Broadcast, ExitReason, SupervisorRef
from snakepit.session import (
    DEFAULT_TTL,
    Affinity,
    EndReason,
    SessionRecord,
    SessionStoreConfig,
    SessionStoreRef,
)

from ._bridge import BridgeArgs, HostTools, _coherence_page
from ._calls import MAX_RESENDS, Calls, NotStarted
from ._config import PoolConfig, PoolOptions, check_seconds
from ._description import WorkerDescription
from ._events import PoolEvent, PoolGaveUp
from ._host import PoolHost
from ._launch._base import Launcher
from ._launch._local import LocalLauncher
from ._launch._rundir import RunDir
from ._recycling import Recycler
from ._scheduler import Scheduler, time_left
from ._session import PoolSession
from ._sessions import SessionRouter, store_timeout
from ._stats import PoolStats, WorkerInfo
from ._tree import WorkerTree, why
from ._worker_server import IllegalTransition, WorkerServer

__all__ = ("Pool",)

#: Seconds before the first retry of a crashed call; doubled for each next one.
RETRY_BACKOFF = 0.05

#: Events a :meth:`Pool.subscribe` stream holds unread by default.
SUBSCRIBE_BUFFER = 10_000

logger = logging.getLogger("snakepit.pool")

#: Where a :class:`Pool` is in its life.
PoolState: TypeAlias = Literal["new", "starting", "running", "degraded", "closed"]

#: The legal moves of a Pool's state (``Pool._enter`` checks them): ``new`` ->
#: ``starting`` (entered) or ``closed`` (closed unentered); ``starting`` ->
#: ``running``, or ``closed`` (it failed, or was closed meanwhile); ``running``
#: -> ``degraded`` (its workers kept crashing) or ``closed``; ``degraded`` ->
#: ``running`` (restart()) or ``closed``. ``closed`` is final.
_TRANSITIONS: Final[Mapping[PoolState, frozenset[PoolState]]] = {
    "new": frozenset({"starting", "closed"}),
    "starting": frozenset({"running", "closed"}),
    "running": frozenset({"degraded", "closed"}),
    "degraded": frozenset({"running", "closed"}),
    "closed": frozenset(),
}


def _check_call(tool: object, args: object, timeout: object, session_id: object) -> None:
    """The arguments of execute() and stream(): typed errors naming them, at the call.

    :raises ArgumentTypeError: a wrong type. :raises ConfigError: a bad value.
    """
    if not isinstance(tool, str):
        raise ArgumentTypeError("tool", f"must be a tool name (str), got {tool!r}")
    if not tool:
        raise ConfigError("tool", "must not be empty")
    if args is not None:
        if not isinstance(args, dict):
            raise ArgumentTypeError(
                "args", f"must be a dict of str keys or None, got {type(args).__name__}"
            )
        for key in args:
            if not isinstance(key, str):
                raise ArgumentTypeError("args", f"keys must be str, got {key!r}")
    check_seconds("timeout", timeout)
    if not isinstance(session_id, str):
        raise ArgumentTypeError("session_id", f"must be a str, got {session_id!r}")


def _str_keys(args: dict[Any, Any]) -> bool:
    """True when every key of ``args`` is a str."""
    return all(type(key) is str for key in args)


def _check_resumed(record: SessionRecord, ttl: object, affinity: object, metadata: object) -> None:
    """What ``pool.session()`` asks of a session that exists must be what it has.

    :raises ConfigError: naming the option that differs.
    """
    if ttl is not ... and ttl != record.ttl:
        raise ConfigError("ttl", f"session {record.session_id!r} exists with ttl={record.ttl!r}")
    if affinity is not None and affinity != record.affinity:
        raise ConfigError(
            "affinity",
            f"session {record.session_id!r} exists with affinity={record.affinity!r}",
        )
    if metadata is not None and metadata != record.metadata:
        raise ConfigError("metadata", f"session {record.session_id!r} exists with other metadata")


class Pool:
    """A supervised pool of worker processes running one adapter.

    ::

        async with Pool(adapter="myapp.adapters:Model", size=4) as pool:
            result = await pool.execute("predict", {"x": 1})

    Entering starts ``size`` workers in parallel and returns when all are
    ready, or raises :class:`~snakepit.errors.PoolStartError` naming the
    worker that failed, with its stderr tail (nothing is left running).
    Leaving stops them: SIGTERM, ``shutdown_timeout``, SIGKILL, every process
    reaped.

    The tree: a Supervisor (``pool.supervisor``) over a
    :class:`~snakepit.pool.WorkerSupervisor` of :class:`~snakepit.pool.WorkerServer`
    servers, one per process; a crashed process's WorkerServer exits and is
    replaced. Calls take a free slot from the scheduler and go straight to the
    worker's multiplexed channel from the caller's task.

    Restarts: more than ``max_restarts`` (default: 3 per worker) worker
    failures in ``max_seconds`` make the pool degraded: calls raise
    :class:`~snakepit.errors.PoolDegraded` until :meth:`restart`. A worker
    killed because a call timed out is replaced without counting.

    :param adapter: ``package.module:Class`` of the :class:`~snakepit.worker.Adapter`.
    :param config: a whole :class:`PoolConfig` instead of ``adapter`` and options.
    :param launcher: where workers run (default: a :class:`LocalLauncher` of the pool's own).
    :param options: the other fields of :class:`PoolConfig` by name, typed by
        :class:`PoolOptions` (a type checker rejects an unknown name).
    :raises ConfigError: an unknown option or a bad value, naming it
        (:class:`~snakepit.errors.ArgumentTypeError` for a wrong type); both
        ``config`` and options given.
    """

    def __init__(
        self,
        adapter: str | None = None,
        *,
        config: PoolConfig | None = None,
        launcher: Launcher | None = None,
        **options: Unpack[PoolOptions],
    ) -> None:
        if config is not None and (adapter is not None or options):
            raise ConfigError("config", "pass either config= or adapter and options, not both")
        if config is not None and not isinstance(config, PoolConfig):
            raise ArgumentTypeError("config", f"must be a PoolConfig, got {config!r}")
        self.config = config if config is not None else PoolConfig.from_options(adapter, options)
        self._launcher = launcher
        self._state: PoolState = "new"
        self._scheduler: Scheduler[WorkerServer] = Scheduler(
            max_queue=self.config.max_queue,
            queue_timeout=self.config.queue_timeout,
            # queue_timeout bounds a call's wait for a free worker: it waits in the host.
            prefetch=self.config.prefetch if self.config.queue_timeout is None else 0,
            on_exhausted=self._exhausted,  # max_requests_per_worker: exact
        )
        self._degraded: PoolDegraded | None = None
        self._teardown_done: anyio.Event | None = None
        self._restarting: anyio.Lock | None = None
        self._entering: anyio.Event | None = None  # set once __aenter__ has ended
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop that entered it
        self._own_launcher: LocalLauncher | None = None  # made here: closed here
        self._events: Broadcast[PoolEvent] = Broadcast()
        self._host = PoolHost(self)  # the pool's task groups, in a task of their own
        self._router = SessionRouter(self._scheduler, self._store)
        self._store_ref: SessionStoreRef | None = None
        self._host_tools = HostTools()
        self._bridge: BridgeArgs | None = None  # made by __aenter__
        # A run directory of the bridge's own, with a launcher of the caller's
        # (locked while the pool runs: the next pool's sweep removes it after a crash).
        self._bridge_run: RunDir | None = None
        sessions = self.config.sessions or SessionStoreConfig()
        self._user_on_end = sessions.on_end
        self._user_in_use = sessions.in_use
        self._user_on_written = sessions.on_variables_written
        sessions = dataclasses.replace(
            sessions,
            on_end=self._session_ended,
            in_use=self._session_in_use,
            on_variables_written=self._variables_written,
        )
        self._tree = WorkerTree(
            self.config,
            self._scheduler,
            self._events,
            self._router,
            sessions,
            owner=self,
            gave_up=self._on_gave_up,
        )
        self._recycler = Recycler(
            self.config,
            self._host,
            self._events,
            start_worker=self._tree.start_worker,
            stop_worker=self._tree.stop_worker,
            in_service=self._tree.in_service,
        )
        self._calls = Calls(
            self.config,
            self._scheduler,
            self._events,
            self._host,
            self._recycler,
            self._router,
            owner=self,
            running=self._running,
            state=lambda: self._state,
        )

    def __repr__(self) -> str:
        return f"<Pool {self.config.adapter} size={self.config.size} {self._state}>"

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Pool:
        if self._state != "new":
            raise PoolClosed(f"{self!r}: a Pool is entered once")
        library = sniffio.current_async_library()
        if library != "asyncio":  # before: "RuntimeError: no running event loop", half-started
            raise ConfigError(
                "event loop",
                f"a Pool runs on asyncio (its workers are spoken to with grpc.aio), not on"
                f" {library}: run it with anyio.run(..., backend='asyncio') or asyncio.run()",
            )
        self._enter("starting")
        # What grpc.aio keeps of the loops that pools ran on before (see the module).
        forget_closed_loops()
        config = self.config
        run_id = uuid.uuid4().hex[:12]
        if self._launcher is None:
            local = LocalLauncher(config.run_dir)
            try:
                local.open(run_id)  # sweeps dead runs; a bad run_dir fails before any start
            except BaseException:
                self._close()
                raise
            self._own_launcher = local
            launcher: Launcher = local
        else:
            launcher = self._launcher
        try:
            self._bridge = self._bridge_args()  # (a run directory: a bad run_dir fails here)
        except BaseException:
            self._close()
            raise
        self._tree.open(launcher, run_id, self._bridge)
        self._restarting = anyio.Lock()
        self._loop = asyncio.get_running_loop()
        self._entering = entering = anyio.Event()
        try:
            group = await self._host.start(f"snakepit pool {run_id}")
            self._check_not_closed("started")
            await self._tree.start(group)
            self._check_not_closed("started")
            await self._tree.start_workers()
            self._check_not_closed("started")
        except BaseException as exc:
            closed_meanwhile = self._closed  # by aclose() from another task
            self._close()
            try:
                await self._teardown()  # shielded
            finally:
                entering.set()
            if closed_meanwhile and isinstance(exc, Exception):
                raise PoolClosed(f"{self!r} was closed while it started") from exc
            raise
        entering.set()
        background = self._host.background
        assert background is not None
        if self._recycler.needs_housekeeping:
            background.start_soon(self._recycler.housekeeping, self._tree.workers.values)
        self._enter("running")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every worker (SIGTERM, ``shutdown_timeout``, SIGKILL) and reap it.

        Returns once nothing of the pool runs. May be called from any task,
        not only the one that entered the pool (a web app's shutdown hook,
        another request): calls in flight and queued get
        :class:`~snakepit.errors.PoolClosed`. Idempotent; not cancellable.
        """
        if self._state == "new":
            self._close()
            return
        starting = self._state == "starting"
        self._close()
        self._tree.stop_waiting(PoolClosed(f"{self!r} was closed"))
        entering = self._entering
        if starting and entering is not None:
            # The task entering the pool sees the close at its next step and
            # tears down what it started; this waits for that.
            with anyio.CancelScope(shield=True):
                await entering.wait()
            return
        await self._teardown()

    def _enter(self, new: PoolState) -> None:
        if new not in _TRANSITIONS[self._state]:
            raise IllegalTransition(f"{self!r}: {self._state} -> {new}")
        self._state = new

    def _close(self) -> None:
        """Any state -> ``closed`` (closing again does nothing)."""
        if self._state != "closed":
            self._enter("closed")

    @property
    def _closed(self) -> bool:
        # Read through here where a check above narrowed self._state for mypy:
        # another task may have closed the pool meanwhile.
        return self._state == "closed"

    def _check_not_closed(self, doing: str) -> None:
        if self._closed:
            raise PoolClosed(f"{self!r} was closed while it {doing}")

    async def _teardown(self) -> None:
        """Stop the background work, the tree, the launcher; end the event streams.

        Idempotent, shielded, and callable from any task: a second caller
        waits for the first one's teardown.
        """
        with anyio.CancelScope(shield=True):
            if self._teardown_done is not None:
                await self._teardown_done.wait()
                return
            self._teardown_done = done = anyio.Event()
            try:
                self._scheduler.close()  # queued calls fail now, not after the workers stopped
                if self._restarting is not None:
                    # A restart in progress sees the close and ends first: what
                    # it started is then part of the tree stopped below.
                    async with self._restarting:
                        pass
                await self._host.stop_background()
                await self._tree.stop()
                if self._bridge is not None:
                    await self._bridge.stop()  # if the tree was killed, it still served
                    self._bridge.close_page()
                if self._bridge_run is not None:
                    self._bridge_run.close()
                if self._own_launcher is not None:
                    await self._own_launcher.aclose()
            finally:
                self._events.close()  # last: the workers' exits are published
                await self._host.stop()  # its group is empty by now
                done.set()

    async def restart(self) -> None:
        """Bring a degraded pool back: a new worker supervisor and ``size`` new workers.

        Returns once all of them are ready; does nothing if the pool runs.
        Calls made meanwhile still raise :class:`~snakepit.errors.PoolDegraded`.
        The restart budget starts afresh. If a worker fails to start, the pool
        stays degraded (call again once the cause is fixed).

        :raises PoolStartError: a worker failed to start; nothing of this try runs.
        :raises PoolClosed: the pool is not running (not entered, or left).
        """
        if self._restarting is None:
            raise PoolClosed(f"{self!r} is not running")
        async with self._restarting:
            if self._state == "running":
                return
            if self._state != "degraded":
                raise PoolClosed(f"{self!r} is not running")
            await self._tree.wait_gave_up()
            self._check_not_closed("restarted")
            assert self._host.group is not None
            await self._tree.revive(self._host.group)
            self._check_not_closed("restarted")
            self._tree.reset()
            self._scheduler.reopen()  # calls are still refused: the state is "degraded"
            try:
                await self._tree.start_workers()
            except BaseException as exc:
                if self._closed:
                    raise PoolClosed(f"{self!r} was closed while it restarted") from exc
                with anyio.CancelScope(shield=True):
                    await self._tree.stop_workers()
                    assert self._degraded is not None
                    if isinstance(exc, PoolStartError):
                        self._degraded = PoolDegraded(
                            f"{self!r}: a restart failed: {exc}", self._degraded.reason
                        )
                    self._scheduler.close(self._degraded)
                raise
            if self._state != "degraded":  # closed meanwhile
                raise PoolClosed(f"{self!r} was closed while it restarted")
            self._degraded = None
            self._enter("running")
            logger.warning("%r: restarted, %d workers ready", self, self._tree.size)

    # -- scaling ------------------------------------------------------------------------------

    async def scale(self, size: int) -> None:
        """Grow or shrink the pool to ``size`` workers; return when that is done.

        Growing waits until the new workers are ready; shrinking takes idle
        workers first and lets their calls in flight finish.

        With the default ``max_restarts``, the restart budget follows the
        new size (3 per worker).

        :raises ArgumentTypeError: ``size`` is not an int.
        :raises ConfigError: ``size`` is < 1.
        """
        check_int("size", size, 1)
        self._running()
        delta = size - self._tree.size
        await self._tree.set_size(size)
        if delta > 0:
            await self._tree.grow(delta)
            self._running()  # closed or degraded meanwhile: say so
        elif delta < 0:
            await self._tree.shrink(-delta)

    def _on_gave_up(self, reason: ExitReason) -> None:
        # The tree gave up (its workers kept crashing, or its top was killed):
        # no call can be served. When the pool stops it, it is closed already.
        if self._state == "running":
            self._degrade(reason)

    def _degrade(self, reason: ExitReason) -> None:
        """Stop taking calls: they raise PoolDegraded until :meth:`restart`. One log line."""
        self._enter("degraded")
        last = ""
        if self._tree.last_failure:
            last = f"; last start failure: {self._tree.last_failure}"
        self._degraded = error = PoolDegraded(f"{self!r}: {why(reason)}{last}", reason)
        self._scheduler.close(error)
        logger.error(
            "%s; calls raise PoolDegraded until `await pool.restart()`",
            str(error).splitlines()[0],
        )
        if self._events.active:
            self._events.publish(PoolGaveUp(str(error), anyio.current_time()))

    async def wait_ready(self, *, timeout: float | None = 30.0) -> None:
        """Wait until all ``size`` workers are ready (after crashes: replaced).

        Event-driven: wakes each time a worker becomes ready.

        :raises WaitTimeout: not all ready within ``timeout``.
        :raises ArgumentTypeError, ConfigError: ``timeout`` is not None or a
            finite number > 0.
        """
        check_seconds("timeout", timeout)
        self._running()
        with anyio.move_on_after(timeout if timeout is not None else float("inf")):
            await self._tree.wait_all_ready()
            return
        raise WaitTimeout(
            f"{self!r}: only {self.stats().ready} workers ready after {timeout}s", timeout=timeout
        )

    def subscribe(
        self, *, max_buffer: int | None = SUBSCRIBE_BUFFER
    ) -> MemoryObjectReceiveStream[PoolEvent]:
        """Return a stream of this pool's events (its telemetry) from now on.

        Workers starting, ready, failing to start, exiting (crashed or
        stopped), recycled; each call queued, started and stopped (with its
        outcome and duration); the pool giving up. The pool never waits for
        a slow reader: the stream holds at most ``max_buffer`` unread events
        (10,000 by default, about 2 MB); while it is full, new events are
        dropped for it and counted in ``stats().events_dropped``.
        ``max_buffer=None`` keeps every event (memory grows until read). The
        stream ends when the pool has stopped. Subscribe before entering the
        pool to see its workers start. Close it (``async with``) when done.
        Costs nothing while nobody listens.

        :raises ArgumentTypeError, ConfigError: ``max_buffer`` is not None or an int >= 1.
        """
        return self._events.subscribe(max_buffer)

    @property
    def supervisor(self) -> SupervisorRef:
        """The pool's supervision tree (for inspection and the testing harness).

        Still there (dead) once the pool is degraded, for its exit reason.

        :raises PoolClosed: the pool is not running.
        """
        supervisor = self._tree.supervisor
        if supervisor is None or self._state not in ("running", "degraded"):
            raise PoolClosed(f"{self!r} is not running")
        return supervisor

    def _exhausted(self, worker: WorkerServer) -> None:
        # Handed its max_requests_per_worker-th call: it takes no more, and its
        # replacement starts now (its calls run there meanwhile).
        worker.exhaust()
        self._recycler.check(worker)

    def _running(self) -> Scheduler[WorkerServer]:
        # Read on every call: the usual case (running, on the pool's loop) first.
        if self._state == "running" and self._loop is not None:
            try:
                if asyncio.get_running_loop() is self._loop:
                    return self._scheduler
            except RuntimeError:
                pass  # not asyncio: _check_loop says so
        self._check_loop()
        if self._state == "degraded":
            assert self._degraded is not None
            raise PoolDegraded(str(self._degraded), self._degraded.reason)
        if self._state != "running":
            raise PoolClosed(f"{self!r} is not running")
        return self._scheduler

    def _check_loop(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None  # not asyncio (trio), or no loop at all
        if loop is not self._loop and self._loop is not None:
            raise WrongEventLoop(
                f"{self!r} was entered on another event loop: call it from that loop "
                "(from another thread: asyncio.run_coroutine_threadsafe)"
            )

    # -- calls ---------------------------------------------------------------------------------

    async def execute(
        self,
        tool: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        session_id: str = "",
        retries: int = 0,
    ) -> Any:
        """Run ``tool`` with ``args`` on a free worker and return its result.

        :param timeout: seconds for the whole call, from now: waiting for a
            free worker, then running (and any ``retries``). If it passes
            while the call waits, :class:`~snakepit.errors.QueueTimeout` (the
            tool did not run); while the tool runs,
            :class:`~snakepit.errors.ExecutionTimeout` at once; the tool sees
            ``ctx.cancelled`` (an async one is cancelled), and a worker whose
            tool has not ended 0.25 s later is killed and replaced (it may be
            stuck in C code; this replacement does not count towards
            ``max_restarts``); one whose tool ended stays. Both are
            ``TimeoutError``. ``queue_timeout`` bounds the wait alone.
        :param session_id: the id of a session of this pool's store
            (:meth:`session`, :attr:`sessions`): the call is a use of it (its
            TTL starts again) and goes to a worker as its affinity says; the
            tool sees ``ctx.session``. "" (default): no session.
        :param retries: for idempotent tools only: how many times a call whose
            worker crashed is tried again on another worker, with backoff.
            0 by default: a crash is never retried silently.
        :raises RemoteError: the tool raised (``ToolNotFound``, ``InvalidArguments``).
        :raises WorkerCrashed: the worker died while the call ran there. A
            call its worker had not started yet when it died (sent, still in
            the socket or queued in the worker) is sent to another worker
            instead, with no ``retries`` needed: it cannot run twice.
        :raises QueueFull, QueueTimeout, PoolClosed, PoolDegraded: no worker to run it.
        :raises SessionNotFound: ``session_id`` names no session (never made,
            deleted or expired); the tool did not run.
        :raises SessionWorkerLost: a strict session's worker is gone (crashed,
            recycled, replaced); the tool did not run.
        :raises WorkerBusy: a ``strict_fail_fast`` session's worker has no
            free slot; the tool did not run.
        :raises CallTimeout: a call without ``timeout`` whose session store
            did not answer within 5 s (with a ``timeout``: QueueTimeout);
            the tool did not run.
        :raises ArgumentTypeError, ConfigError: an argument of the wrong type
            or value (``tool`` not a str, ``args`` not a dict of str keys,
            ``timeout`` not None or a finite number > 0, ``session_id`` not a
            str, ``retries`` not an int >= 0).
        """
        # The usual call (a str tool, no args or a dict of str keys, no timeout,
        # no session, no retries) is checked inline; anything else in full.
        if (
            type(tool) is not str
            or not tool
            or timeout is not None
            or session_id != ""
            or retries != 0
            or type(retries) is not int
            or (args is not None and (type(args) is not dict or not _str_keys(args)))
        ):
            _check_call(tool, args, timeout, session_id)
            check_int("retries", retries, 0)
        deadline = None if timeout is None else self._now() + timeout
        attempt = resends = 0
        while True:
            try:
                if session_id:
                    return await self._execute_in_session(tool, args, deadline, session_id)
                # A call without a session, in this frame (no coroutine of its own);
                # one sent again (its worker died before it started) is not sent ahead.
                return await self._calls.execute(tool, args, deadline, ahead=not resends)
            except WorkerStopping:
                continue  # refused unrun by a stopping worker (now drained): go elsewhere
            except NotStarted as lost:
                # Its worker died before the call started there: it runs elsewhere.
                resends += 1
                if resends > MAX_RESENDS:
                    raise lost.crash from None
                continue
            except (WorkerCrashed, WorkerUnavailable):
                if attempt >= retries:
                    raise
                attempt += 1
                backoff = min(RETRY_BACKOFF * 2 ** (attempt - 1), 1.0)
                if deadline is not None and self._now() + backoff >= deadline:
                    raise  # no time left for another try
                await anyio.sleep(backoff)

    async def _execute_in_session(
        self, tool: str, args: dict[str, Any] | None, deadline: float | None, session_id: str
    ) -> Any:
        # A call of a session (execute() runs one without a session itself).
        session = await self._use_session(session_id, deadline)
        try:
            async with self._calls.on_a_worker(tool, deadline, session) as mux:
                return await mux.execute(
                    tool,
                    args,
                    timeout=time_left(deadline),
                    session_id=session_id,
                    session_metadata=self._router.metadata_of(session),
                )
        finally:
            self._session_call_ended(session)

    def _now(self) -> float:
        # anyio.current_time() without its backend lookup (~0.5 us a call): the
        # loop that entered the pool (one that is not is refused right after).
        loop = self._loop
        return loop.time() if loop is not None else anyio.current_time()

    async def _use_session(self, session_id: str, deadline: float | None) -> SessionRecord:
        """Touch ``session_id`` (a use: its TTL starts again); return its record.

        From here until :meth:`_session_call_ended`, the session is in use:
        it does not expire, however long the call runs.

        :raises SessionNotFound: no such session (never made, deleted, expired).
        """
        self._running()
        if deadline is None:
            record = await self._store().touch(session_id)
        else:
            try:
                record = await self._store().touch(session_id, timeout=time_left(deadline))
            except CallTimeout as exc:
                raise store_timeout(exc, "a touch") from None
        self._router.call_began(session_id)
        return record

    def _session_call_ended(self, record: SessionRecord) -> None:
        # The last call of a session that ran for half its TTL or more: touch
        # it again (in the background) so that its TTL counts from now, and
        # only then is it no longer in use (its TTL may have passed during the
        # call: a touch of a session in use revives it).
        session_id = record.session_id
        background = self._host.background
        if (
            record.ttl is not None
            and background is not None
            and self._router.last_call(session_id)
            and self._store_now() - record.last_used >= record.ttl / 2
        ):
            background.start_soon(self._touch_then_release, session_id)
            return
        self._router.call_ended(session_id)

    def _store_now(self) -> float:
        # The store's clock (what session times are on); -inf while it restarts.
        try:
            return self._store().now()
        except SessionError:
            return -math.inf

    async def _touch_then_release(self, session_id: str) -> None:
        try:
            with contextlib.suppress(SnakepitError):  # gone meanwhile, or the store is
                await self._store().touch(session_id)
        finally:
            self._router.call_ended(session_id)

    def stream(
        self,
        tool: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        session_id: str = "",
    ) -> AsyncGenerator[Any, None]:
        """Run a streaming ``tool`` and yield its items; ``aclose()`` cancels it remotely.

        The arguments are checked here, at the call; the stream starts at
        the first iteration (its ``timeout`` counts from there).

        The worker's slot is held until the stream ends or is closed.
        Items the worker has produced wait on the host until they are read:
        there is no flow control per stream yet, so a tool that yields much
        faster than its consumer reads grows the host's memory (yield fewer,
        larger items, or have the tool wait for a cue).

        :param timeout: seconds allowed for the wait for a free worker
            (:class:`~snakepit.errors.QueueTimeout` after it: the tool did not
            run), then for each item (the first, and each next one): a stream
            that keeps yielding never times out; one that stalls longer raises
            :class:`~snakepit.errors.ExecutionTimeout`, and its worker is
            killed and replaced unless the generator ends within 0.25 s
            (not counted towards ``max_restarts``).
        :param session_id: a session's id, as for :meth:`execute`.
        :raises RemoteError, WorkerCrashed: as :meth:`execute`.
        :raises SessionNotFound, SessionWorkerLost, WorkerBusy: as :meth:`execute`.
        :raises ArgumentTypeError, ConfigError: a bad argument, as :meth:`execute`
            (raised by this call itself, before any iteration).
        """
        _check_call(tool, args, timeout, session_id)
        return self._stream(tool, args, timeout, session_id)

    async def _stream(
        self, tool: str, args: dict[str, Any] | None, timeout: float | None, session_id: str
    ) -> AsyncGenerator[Any, None]:
        deadline = None if timeout is None else anyio.current_time() + timeout
        session = None if not session_id else await self._use_session(session_id, deadline)
        try:
            metadata = b"" if session is None else self._router.metadata_of(session)
            resends = 0
            while True:
                yielded = False
                try:
                    async with (
                        # Never sent ahead: a stream's timeout is per item, and a
                        # worker cannot tell the wait for its first from a wait to start.
                        self._calls.on_a_worker(tool, deadline, session, ahead=False) as mux,
                        contextlib.aclosing(
                            mux.stream(
                                tool,
                                args,
                                timeout=timeout,
                                session_id=session_id,
                                session_metadata=metadata,
                            )
                        ) as items,
                    ):
                        # Closed explicitly: the remote cancel is queued before the slot is
                        # returned.
                        async for item in items:
                            yielded = True
                            yield item
                    return
                except NotStarted as lost:
                    # Its worker died before the stream started there: it runs elsewhere.
                    resends += 1
                    if yielded or resends > MAX_RESENDS:
                        raise lost.crash from None
        finally:
            if session is not None:
                self._session_call_ended(session)

    # -- the bridge ------------------------------------------------------------------------

    def _bridge_args(self) -> BridgeArgs:
        run = self._own_launcher.run if self._own_launcher is not None else None
        if run is not None:
            path = str(run.socket("bridge"))
        else:  # a launcher of the caller's: a run directory of the pool's own
            # An id of its own: the caller's launcher may claim the pool's run id.
            self._bridge_run = RunDir.claim(self.config.run_dir, uuid.uuid4().hex[:12])
            path = str(self._bridge_run.socket("bridge"))
        return BridgeArgs(
            path,
            self._store,
            self._host_tools,
            new_secret(),
            max_message_bytes=self.config.max_message_bytes,
            may_touch=self._router.may_touch,
            _page=_coherence_page(path),
        )

    def _variables_written(self, session_id: str, names: Sequence[str] | None) -> None:
        # The store's on_variables_written: the workers' caches of these go stale.
        bridge = self._bridge
        if bridge is not None and bridge.page is not None:
            if names is None:  # the session ended
                bridge.page.session_changed(session_id)
            else:
                bridge.page.variables_written(session_id, names)
        if self._user_on_written is not None:
            self._user_on_written(session_id, names)

    def register_host_tool(self, fn: Callable[..., Any], *, name: str | None = None) -> str:
        """Let tools call ``fn`` on the host (``ctx.call_host(name, args)``); return its name.

        ``fn`` takes the call's arguments as keywords and returns something
        JSON-able; it may be a coroutine function, and gets the calling
        tool's session id if it has a ``session_id`` parameter. Its errors
        go back to the tool, typed. Before or after the pool starts.

        :raises ArgumentTypeError: ``fn`` is not callable.
        :raises ConfigError: no name (a lambda without ``name=``), or it is taken.
        """
        return self._host_tools.register(fn, name=name)

    @property
    def bridge_address(self) -> str | None:
        """Where the pool's bridge serves its workers (``unix:PATH``), or None before it starts."""
        bridge = self._bridge
        return None if bridge is None or bridge.serving is None else bridge.serving.address

    # -- sessions --------------------------------------------------------------------------

    @property
    def sessions(self) -> SessionStoreRef:
        """The pool's session store: ``list()``, ``get(id)``, ``delete(id)``, ``create()``...

        Deleting a session here runs ``Adapter.on_session_end`` in the
        worker it was pinned to, as an expiry does. A degraded pool's store
        still runs (it is the first child of the tree, which outlives the
        workers): its sessions can be listed and deleted; their calls raise
        :class:`~snakepit.errors.PoolDegraded`.

        :raises PoolClosed: the pool is not running (not entered, or left).
        :raises SessionError: the store is being restarted after a crash.
        """
        if self._state == "degraded":
            self._check_loop()
        else:
            self._running()
        return self._store()

    def _store(self) -> SessionStoreRef:
        # The running store: the one seen last while it lives (a store restarted
        # after a crash is a new server, looked up again).
        store = self._store_ref
        if store is None or not store.alive:
            store = self._store_ref = self._tree.store
        return store

    @contextlib.asynccontextmanager
    async def session(
        self,
        session_id: str | None = None,
        *,
        ttl: float | EllipsisType | None = ...,
        affinity: Affinity | None = None,
        metadata: Mapping[str, Any] | None = None,
        keep: bool = False,
    ) -> AsyncIterator[PoolSession]:
        """Create a session (or resume one), for an ``async with`` block; delete it at the end.

        ::

            async with pool.session(metadata={"user": "ada"}) as s:
                await s.execute("load", {"path": "model.bin"})
                await s.execute("predict", {"x": 1})  # the same worker process

        :param session_id: None: a new session with a random id. A str: the
            session of that id, resumed if it exists (the options given must
            then be the ones it has), else created with that id.
        :param ttl: seconds of disuse after which it expires (default: an
            hour; None: never).
        :param affinity: ``"hint"`` (default: its worker when free, else any
            free one, which it is then pinned to), ``"strict_queue"`` (wait
            for its worker, in order; :class:`~snakepit.errors.SessionWorkerLost`
            once that is gone), ``"strict_fail_fast"`` (as strict_queue, but
            :class:`~snakepit.errors.WorkerBusy` instead of waiting).
        :param metadata: a small JSON-able dict the tools see as
            ``ctx.session.metadata`` (read-only).
        :param keep: True: the session is not deleted at the end of the block
            (resume it later by id, or delete it with ``pool.sessions.delete``).
        :raises ArgumentTypeError, ConfigError: a bad option (naming it), or
            one that differs from the resumed session's.
        :raises SessionLimitReached: the store's ``max_sessions`` sessions exist.
        :raises PoolClosed, PoolDegraded: the pool is not running.
        """
        if not isinstance(keep, bool):
            raise ArgumentTypeError("keep", f"must be a bool, got {keep!r}")
        self._running()
        store = self._store()
        record = created = None
        # Shielded: a cancel that came while the store created the session
        # would leave it to its TTL; it is delivered in the block instead,
        # whose end deletes the session.
        with anyio.CancelScope(shield=True):
            if session_id is not None:
                with contextlib.suppress(SessionNotFound):
                    record = await store.get(session_id)
            if record is None:
                with contextlib.suppress(SessionExists):  # created meanwhile: resumed below
                    created = record = await store.create(
                        session_id,
                        ttl=DEFAULT_TTL if ttl is ... else ttl,
                        affinity=affinity if affinity is not None else "hint",
                        metadata=metadata,
                    )
            if record is None:
                assert session_id is not None  # (a random id is never taken)
                record = await store.get(session_id)
            if record is not created:
                _check_resumed(record, ttl, affinity, metadata)
        assert record is not None  # (a shielded scope swallows no exception)
        try:
            yield PoolSession(self, record)
        finally:
            if not keep:
                with anyio.CancelScope(shield=True):
                    await self._end_session(record.session_id)

    async def _end_session(self, session_id: str) -> None:
        # The end of a pool.session() block: a pool that stopped meanwhile took
        # its sessions with it (memory), or left them to their TTL (a shared
        # backend). A delete that fails (a store that does not answer, Redis
        # down) is logged, not raised: it must not hide the block's own error.
        try:
            await self.sessions.delete(session_id)
        except PoolClosed:
            pass
        except SnakepitError as exc:
            logger.warning(
                "%r: the session %r was not deleted at the end of its block (%s: %s); "
                "it ends with its TTL",
                self,
                session_id,
                type(exc).__name__,
                exc,
            )

    def _session_in_use(self, session_id: str) -> bool:
        # The store's in_use: a call of it runs here (or the user's in_use says so).
        user = self._user_in_use
        return self._router.in_use(session_id) or (user is not None and user(session_id))

    async def _session_ended(self, record: SessionRecord, why: EndReason) -> None:
        # The store's on_end: the session's worker frees its state, then the user's on_end.
        try:
            self._router.ended(record, why)
        except Exception:
            logger.exception(
                "%r: telling the worker that session %r ended failed", self, record.session_id
            )
        if self._user_on_end is not None:
            result = self._user_on_end(record, why)
            if inspect.isawaitable(result):
                await result

    async def describe(self) -> WorkerDescription:
        """The adapter and its tools, as a free worker describes them.

        Takes a slot of a worker for the time of the call (it waits for one
        like a call does).

        :raises QueueFull, QueueTimeout, PoolClosed, PoolDegraded: no worker to ask.
        :raises WorkerUnavailable: the worker's connection broke.
        """
        scheduler = self._running()
        worker = await scheduler.checkout()
        worker.call_started()
        try:
            client = worker.client
            if client is None:
                raise WorkerUnavailable(f"worker {worker.worker_id!r} is gone")
            return await client.describe()
        finally:
            worker.call_ended()
            scheduler.checkin(worker)

    def workers(self) -> list[WorkerInfo]:
        """The current worker of each slot, sorted by id."""
        return [
            WorkerInfo(
                w.worker_id,
                w.process.pid if w.process is not None else None,
                w.ref.generation,
                w.usable,
                w.in_flight,
                w.pin_id,
            )
            for _, w in sorted(self._tree.workers.items())
        ]

    def stats(self) -> PoolStats:
        """Counters and the state of the workers, now."""
        return PoolStats(
            size=self._tree.size,
            ready=self._tree.ready,
            idle=self._scheduler.idle,
            queued=self._scheduler.queued,
            requests=self._calls.requests,
            errors=self._calls.errors,
            timeouts=self._calls.timeouts,
            crashes=self._calls.crashes,
            resent=self._calls.resent,
            restarts=self._tree.restarts,
            recycled=self._recycler.recycled,
            degraded=None if self._degraded is None else str(self._degraded),
            events_dropped=self._events.dropped,
            sessions=self._sessions_known(),
        )

    def _sessions_known(self) -> int:
        try:
            return self._store().known_count
        except SessionError:
            return 0
