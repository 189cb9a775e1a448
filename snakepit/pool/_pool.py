"""Pool: supervised worker processes behind execute() and stream()."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, TypeAlias, Unpack

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from snakepit.errors import (
    ArgumentTypeError,
    ChildNotFound,
    ConfigError,
    PoolClosed,
    PoolDegraded,
    PoolError,
    PoolStartError,
    ReachedMaxRestartIntensity,
    ServerExited,
    WaitTimeout,
    WorkerCrashed,
    WorkerStopping,
    WorkerUnavailable,
    WrongEventLoop,
    check_int,
)
from snakepit.otp import (
    Broadcast,
    ChildSpec,
    DynamicSupervisorSpec,
    ExitReason,
    Supervisor,
    SupervisorRef,
    SupervisorSpec,
)

from ._calls import Calls
from ._config import PoolConfig, PoolOptions, check_seconds
from ._description import WorkerDescription
from ._events import PoolEvent, PoolGaveUp
from ._host import PoolHost
from ._launch._base import Launcher
from ._launch._local import LocalLauncher
from ._recycling import Recycler
from ._scheduler import Scheduler
from ._worker_server import IllegalTransition, WorkerArgs, WorkerServer, WorkerSupervisor

__all__ = ("Pool", "PoolStats", "WorkerInfo")

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


def _why(reason: object) -> str:
    """Why the tree gave up, from its exit reason (plain, or a Shutdown with a detail)."""
    detail = getattr(reason, "detail", reason)
    if isinstance(detail, ReachedMaxRestartIntensity):
        return (
            "its workers kept crashing: restart intensity reached (more than "
            f"{detail.max_restarts} restarts in {detail.max_seconds:g}s)"
        )
    return f"its supervision tree exited ({detail})"


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of a pool, from :meth:`Pool.stats`."""

    #: Configured worker processes.
    size: int
    #: Workers ready to take calls now.
    ready: int
    #: Free call slots now.
    idle: int
    #: Calls waiting for a slot now.
    queued: int
    #: Calls started, and how many ended in an error, a timeout or a crash.
    requests: int
    errors: int
    timeouts: int
    crashes: int
    #: Worker processes started to replace ones that exited (crashed, or killed
    #: for a timeout or missed health checks), and recycled ones.
    restarts: int
    recycled: int
    #: Why the pool gave up on its workers (restart intensity), or None.
    degraded: str | None
    #: Events not delivered to a :meth:`Pool.subscribe` stream that was full.
    events_dropped: int = 0


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One worker of a pool, from :meth:`Pool.workers`."""

    worker_id: str
    #: Its process id (None before its process started).
    pid: int | None
    #: 0 for the first process of this slot, +1 for each replacement.
    generation: int
    #: True while it takes calls.
    ready: bool
    #: Calls running on it now.
    in_flight: int


class _Startup:
    """Waits for the first ``size`` workers: all ready, or the first failure."""

    def __init__(self, size: int) -> None:
        self.waiting = size
        self.failure: tuple[str, BaseException] | None = None
        self.done = anyio.Event()

    def ready(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.done.set()

    def failed(self, worker_id: str, error: BaseException) -> None:
        if self.failure is None:
            self.failure = (worker_id, error)
        self.done.set()


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
        self.config = config if config is not None else PoolConfig.from_options(adapter, options)
        self._launcher = launcher
        self._state: PoolState = "new"
        self._scheduler: Scheduler[WorkerServer] = Scheduler(
            max_queue=self.config.max_queue,
            queue_timeout=self.config.queue_timeout,
        )
        self._supervisor: SupervisorRef | None = None
        self._workers: dict[str, WorkerServer] = {}
        self._startup: _Startup | None = None
        self._ids = itertools.count()
        self._ready_changed: anyio.Event | None = None  # made in __aenter__ (needs a loop)
        self._restarts = 0
        self._degraded: PoolDegraded | None = None
        self._leaving: set[str] = set()  # ids of workers being stopped for good
        self._size = self.config.size
        self._teardown_done: anyio.Event | None = None
        self._restarting: anyio.Lock | None = None
        self._entering: anyio.Event | None = None  # set once __aenter__ has ended
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop that entered it
        self._own_launcher: LocalLauncher | None = None  # made here: closed here
        self._launcher_in_use: Launcher | None = None  # the workers': set on entering
        self._run_id = ""  # set on entering
        self._workers_sup: SupervisorRef | None = None
        self._last_failure: str = ""
        self._events: Broadcast[PoolEvent] = Broadcast()
        self._host = PoolHost(self)  # the pool's task groups, in a task of their own
        self._recycler = Recycler(
            self.config,
            self._host,
            self._events,
            start_worker=self._start_worker,
            stop_worker=self._stop_worker,
        )
        self._calls = Calls(
            self.config,
            self._scheduler,
            self._events,
            self._host,
            self._recycler,
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
        self._enter("starting")
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
        self._launcher_in_use = launcher
        self._run_id = run_id
        self._ready_changed = anyio.Event()
        self._restarting = anyio.Lock()
        self._loop = asyncio.get_running_loop()
        self._entering = entering = anyio.Event()
        try:
            group = await self._host.start(f"snakepit pool {run_id}")
            self._check_not_closed("started")
            self._supervisor = await self._start_tree(group)
            self._check_not_closed("started")
            await self._start_workers()
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
            background.start_soon(self._recycler.housekeeping, self._workers.values)
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
        if self._startup is not None:  # waiting for workers to start: not any more
            self._startup.failed("", PoolClosed(f"{self!r} was closed"))
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
                if self._supervisor is not None:
                    await self._supervisor.stop("shutdown", timeout=None)
                if self._own_launcher is not None:
                    await self._own_launcher.aclose()
            finally:
                self._events.close()  # last: the workers' exits are published
                await self._host.stop()  # its group is empty by now
                done.set()

    async def _start_tree(self, group: TaskGroup) -> SupervisorRef:
        # The top of the tree: the workers' supervisor is its temporary child
        # (see _start_workers), so the top outlives a degraded pool.
        spec = SupervisorSpec([], max_restarts=0)
        ref = await Supervisor.start(group, spec, name="pool")
        ref.link(self._on_tree_exit)
        return ref

    async def _start_workers(self) -> None:
        """Start the WorkerSupervisor and ``size`` workers; return once all are ready.

        :raises PoolStartError: a worker failed to start, or not all were ready
            in time (the caller stops what started).
        """
        config = self.config
        assert self._supervisor is not None
        spec = DynamicSupervisorSpec(
            max_restarts=config.restart_limit(self._size), max_seconds=config.max_seconds
        )
        workers = await self._supervisor.start_child(
            ChildSpec("workers", WorkerSupervisor, spec, restart="temporary")
        )
        assert isinstance(workers, SupervisorRef)
        self._workers_sup = workers
        workers.link(self._on_workers_exit)
        self._startup = startup = _Startup(self._size)
        try:
            for _ in range(self._size):
                await self._start_worker()
            with anyio.move_on_after(config.startup_timeout + 5.0):
                await startup.done.wait()
            if startup.failure is not None:
                failed, error = startup.failure
                # A PoolError (closed, degraded) is no one worker's failure.
                worker_id = None if isinstance(error, PoolError) else failed
                raise PoolStartError(
                    f"{self!r} did not start: {error}", worker_id=worker_id
                ) from error
            if startup.waiting:
                raise PoolStartError(f"{self!r}: workers not ready after the startup timeout")
        finally:
            self._startup = None

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
            old = self._workers_sup
            if old is not None:
                await old.wait()  # gave up: its workers are stopped
            self._check_not_closed("restarted")
            assert self._host.group is not None
            assert self._supervisor is not None
            if not self._supervisor.alive:  # the top itself was killed
                self._supervisor = await self._start_tree(self._host.group)
            self._check_not_closed("restarted")
            self._workers.clear()
            self._leaving.clear()
            self._last_failure = ""
            self._scheduler.reopen()  # calls are still refused: the state is "degraded"
            try:
                await self._start_workers()
            except BaseException as exc:
                if self._closed:
                    raise PoolClosed(f"{self!r} was closed while it restarted") from exc
                with anyio.CancelScope(shield=True):
                    with contextlib.suppress(ChildNotFound, ServerExited):
                        await self._supervisor.terminate_child("workers")
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
            logger.warning("%r: restarted, %d workers ready", self, self._size)

    async def _start_worker(self) -> WorkerServer:
        """Add one worker to the tree; it boots in the background (see WorkerServer)."""
        config = self.config
        n = next(self._ids)
        assert self._launcher_in_use is not None
        args = WorkerArgs(
            config,
            self._launcher_in_use,
            f"w{n}",
            self._run_id,
            self._on_ready,
            self._on_failed,
            self._events,
        )
        assert self._workers_sup is not None
        ref = await self._workers_sup.start_child(
            ChildSpec(f"w{n}", WorkerServer, args, shutdown=config.shutdown_timeout + 1.0)
        )
        worker = ref.server
        assert isinstance(worker, WorkerServer)
        return worker

    async def _stop_worker(self, worker: WorkerServer) -> None:
        """Take a worker out (no new calls), let its calls finish, stop its process.

        By child id, not by ref: a worker being restarted right now is stopped
        in its new instance (which is not let into service meanwhile).
        """
        worker.drain()
        self._leaving.add(worker.worker_id)
        self._workers.pop(worker.worker_id, None)
        try:
            assert self._workers_sup is not None
            with contextlib.suppress(ChildNotFound, ServerExited):
                await self._workers_sup.terminate_child(worker.worker_id)
        finally:
            # Terminated and removed: no instance of it can become ready any more.
            self._leaving.discard(worker.worker_id)

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
        delta = size - self._size
        self._size = size
        if self.config.max_restarts is None and self._workers_sup is not None:
            with contextlib.suppress(ServerExited):  # gave up meanwhile: degraded
                await self._workers_sup.set_max_restarts(self.config.restart_limit(size))
        if delta > 0:
            new = [await self._start_worker() for _ in range(delta)]
            for worker in new:
                await worker.wait_booted()  # ready, failed, or ended (degraded, closed)
            self._running()  # closed or degraded meanwhile: say so
        elif delta < 0:
            victims = sorted(self._workers.values(), key=lambda w: (w.in_flight, w.worker_id))
            for worker in victims[:-delta]:
                await self._stop_worker(worker)

    def _on_ready(self, worker: WorkerServer) -> None:
        if worker.worker_id in self._leaving:
            worker.drain()  # a restart of a worker being stopped: not into service
            return
        self._workers[worker.worker_id] = worker
        if self._ready_changed is not None:
            self._ready_changed.set()
        self._ready_changed = anyio.Event()
        if worker.ref.generation > 0:
            self._restarts += 1
        self._scheduler.add(worker, self.config.max_concurrency)
        if self._startup is not None:
            self._startup.ready()

    def _on_failed(self, worker: WorkerServer, error: BaseException) -> None:
        self._last_failure = str(error)
        if self._startup is not None:
            self._startup.failed(worker.worker_id, error)

    def _on_tree_exit(self, ref: object, reason: ExitReason) -> None:
        # The top of the tree only exits when the pool stops it, or when it is
        # killed from outside: either way no call can be served.
        if self._state == "running":
            self._degrade(reason)

    def _on_workers_exit(self, ref: object, reason: ExitReason) -> None:
        # The WorkerSupervisor exits when it reaches its restart intensity
        # (with the ReachedMaxRestartIntensity, or a Shutdown-like reason whose
        # detail is that), or when the pool stops.
        if ref is not self._workers_sup:
            return  # one a restart replaced
        if self._startup is not None:
            self._startup.failed("workers", PoolDegraded(_why(reason), reason))
        if self._state == "running":
            self._degrade(reason)

    def _degrade(self, reason: ExitReason) -> None:
        """Stop taking calls: they raise PoolDegraded until :meth:`restart`. One log line."""
        self._enter("degraded")
        last = ""
        if self._last_failure:
            last = f"; last start failure: {self._last_failure}"
        self._degraded = error = PoolDegraded(f"{self!r}: {_why(reason)}{last}", reason)
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
            while self.stats().ready < self._size:
                assert self._ready_changed is not None
                await self._ready_changed.wait()
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
        if self._supervisor is None or self._state not in ("running", "degraded"):
            raise PoolClosed(f"{self!r} is not running")
        return self._supervisor

    def _running(self) -> Scheduler[WorkerServer]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None  # not asyncio (trio), or no loop at all
        if loop is not self._loop and self._loop is not None:
            raise WrongEventLoop(
                f"{self!r} was entered on another event loop: call it from that loop "
                "(from another thread: asyncio.run_coroutine_threadsafe)"
            )
        if self._state == "degraded":
            assert self._degraded is not None
            raise PoolDegraded(str(self._degraded), self._degraded.reason)
        if self._state != "running":
            raise PoolClosed(f"{self!r} is not running")
        return self._scheduler

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
            :class:`~snakepit.errors.ExecutionTimeout`, and the worker is
            killed and replaced (it may be stuck in a sync tool; this
            replacement does not count towards ``max_restarts``). Both are
            ``TimeoutError``. ``queue_timeout`` bounds the wait alone.
        :param retries: for idempotent tools only: how many times a call whose
            worker crashed is tried again on another worker, with backoff.
            0 by default: a crash is never retried silently.
        :raises RemoteError: the tool raised (``ToolNotFound``, ``InvalidArguments``).
        :raises WorkerCrashed: the worker died with the call in flight.
        :raises QueueFull, QueueTimeout, PoolClosed, PoolDegraded: no worker to run it.
        :raises ArgumentTypeError, ConfigError: an argument of the wrong type
            or value (``tool`` not a str, ``args`` not a dict of str keys,
            ``timeout`` not None or a finite number > 0, ``session_id`` not a
            str, ``retries`` not an int >= 0).
        """
        _check_call(tool, args, timeout, session_id)
        check_int("retries", retries, 0)
        deadline = None if timeout is None else anyio.current_time() + timeout
        attempt = 0
        while True:
            try:
                return await self._execute_once(tool, args, deadline, session_id)
            except WorkerStopping:
                continue  # refused unrun by a stopping worker (now drained): go elsewhere
            except (WorkerCrashed, WorkerUnavailable):
                if attempt >= retries:
                    raise
                attempt += 1
                backoff = min(RETRY_BACKOFF * 2 ** (attempt - 1), 1.0)
                if deadline is not None and anyio.current_time() + backoff >= deadline:
                    raise  # no time left for another try
                await anyio.sleep(backoff)

    async def _execute_once(
        self, tool: str, args: dict[str, Any] | None, deadline: float | None, session_id: str
    ) -> Any:
        async with self._calls.on_a_worker(tool, deadline) as mux:
            # What is left of the call's timeout after the wait (> 0: checkout
            # raises QueueTimeout at the deadline; a hair above 0 at worst).
            timeout = None if deadline is None else max(deadline - anyio.current_time(), 1e-6)
            return await mux.execute(tool, args, timeout=timeout, session_id=session_id)

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

        :param timeout: seconds allowed for the wait for a free worker
            (:class:`~snakepit.errors.QueueTimeout` after it: the tool did not
            run), then for each item (the first, and each next one): a stream
            that keeps yielding never times out; one that stalls longer raises
            :class:`~snakepit.errors.ExecutionTimeout` and its worker is
            killed and replaced (not counted towards ``max_restarts``).
        :raises RemoteError, WorkerCrashed: as :meth:`execute`.
        :raises ArgumentTypeError, ConfigError: a bad argument, as :meth:`execute`
            (raised by this call itself, before any iteration).
        """
        _check_call(tool, args, timeout, session_id)
        return self._stream(tool, args, timeout, session_id)

    async def _stream(
        self, tool: str, args: dict[str, Any] | None, timeout: float | None, session_id: str
    ) -> AsyncGenerator[Any, None]:
        deadline = None if timeout is None else anyio.current_time() + timeout
        async with (
            self._calls.on_a_worker(tool, deadline) as mux,
            contextlib.aclosing(
                mux.stream(tool, args, timeout=timeout, session_id=session_id)
            ) as items,
        ):
            # Closed explicitly: the remote cancel is queued before the slot is returned.
            async for item in items:
                yield item

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
            )
            for _, w in sorted(self._workers.items())
        ]

    def stats(self) -> PoolStats:
        """Counters and the state of the workers, now."""
        ready = sum(1 for w in self._workers.values() if w.usable)
        return PoolStats(
            size=self._size,
            ready=ready,
            idle=self._scheduler.idle,
            queued=self._scheduler.queued,
            requests=self._calls.requests,
            errors=self._calls.errors,
            timeouts=self._calls.timeouts,
            crashes=self._calls.crashes,
            restarts=self._restarts,
            recycled=self._recycler.recycled,
            degraded=None if self._degraded is None else str(self._degraded),
            events_dropped=self._events.dropped,
        )
