"""WorkerTree: a pool's supervision tree, and its workers from start to stop."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

import anyio
from anyio.abc import TaskGroup

from snakepit._wire._bridge import worker_token
from snakepit.errors import (
    ChildNotFound,
    PoolDegraded,
    PoolError,
    PoolStartError,
    ReachedMaxRestartIntensity,
    ServerExited,
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
from snakepit.session import SessionStore, SessionStoreConfig, SessionStoreRef

from ._bridge import Bridge, BridgeArgs
from ._config import PoolConfig
from ._events import PoolEvent
from ._launch._base import Launcher, WorkerBridge
from ._scheduler import Scheduler
from ._sessions import SessionRouter, store_not_running
from ._worker_server import WorkerArgs, WorkerServer, WorkerSupervisor

#: Restarts of the session store the top of the tree allows in ``STORE_SECONDS``.
STORE_RESTARTS = 3
STORE_SECONDS = 5.0


def why(reason: object) -> str:
    """Why the tree gave up, from its exit reason (plain, or a Shutdown with a detail)."""
    detail = getattr(reason, "detail", reason)
    if isinstance(detail, ReachedMaxRestartIntensity):
        return (
            "its workers kept crashing: restart intensity reached (more than "
            f"{detail.max_restarts} restarts in {detail.max_seconds:g}s)"
        )
    return f"its supervision tree exited ({detail})"


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


class WorkerTree:
    """A pool's supervision tree: a top Supervisor over the SessionStore and a WorkerSupervisor.

    The top (``supervisor``) outlives a degraded pool. Its first child is the
    :class:`~snakepit.session.SessionStore` (``"sessions"``, permanent: a
    crash of it is restarted, up to ``STORE_RESTARTS`` in ``STORE_SECONDS``),
    so it starts before the workers and stops after them; then the pool's
    :class:`~snakepit.pool.Bridge` (``"bridge"``, permanent), when it has one. The
    WorkerSupervisor is its temporary child, replaced by
    :meth:`start_workers` on a restart.
    A worker ready is put into service (``workers``, the scheduler); one
    stopped for good is taken out first. When the tree gives up (the
    WorkerSupervisor reached its restart intensity, or the top was killed),
    ``gave_up`` is called with the exit reason: the pool decides what that
    means for its state.

    :param owner: the pool, named in errors.
    """

    def __init__(
        self,
        config: PoolConfig,
        scheduler: Scheduler[WorkerServer],
        events: Broadcast[PoolEvent],
        router: SessionRouter,
        sessions: SessionStoreConfig,
        *,
        owner: object,
        gave_up: Callable[[ExitReason], None],
    ) -> None:
        self._config = config
        self._router = router
        self._sessions = sessions
        self._scheduler = scheduler
        self._events = events
        #: The top of the tree, once started.
        self.supervisor: SupervisorRef | None = None
        self._workers_sup: SupervisorRef | None = None
        #: The workers in service, by id.
        self.workers: dict[str, WorkerServer] = {}
        self._startup: _Startup | None = None
        self._ids = itertools.count()
        self._ready_changed: anyio.Event | None = None  # made in open() (needs a loop)
        #: Workers started to replace ones that exited (a restart of their slot).
        self.restarts = 0
        self._leaving: set[str] = set()  # ids of workers being stopped for good
        #: How many workers the pool runs (:meth:`set_size` changes it).
        self.size = config.size
        #: Why the last worker that failed to start failed ("" if none did).
        self.last_failure: str = ""
        self._launcher: Launcher | None = None  # the workers': set by open()
        self._bridge: BridgeArgs | None = None  # set by open()
        self._run_id = ""  # set by open()
        self._owner = owner  # named in errors
        self._gave_up = gave_up  # told when the tree gives up

    def open(self, launcher: Launcher, run_id: str, bridge: BridgeArgs | None = None) -> None:
        """Start workers with ``launcher``, in the run ``run_id``, from now on.

        With ``bridge``, the tree's second child is the pool's :class:`Bridge`.
        """
        self._launcher = launcher
        self._run_id = run_id
        self._bridge = bridge
        self._ready_changed = anyio.Event()

    @property
    def ready(self) -> int:
        """How many workers take calls now."""
        return sum(1 for w in self.workers.values() if w.usable)

    async def wait_all_ready(self) -> None:
        """Wait until ``size`` workers are ready; wakes each time one becomes ready."""
        while self.ready < self.size:
            assert self._ready_changed is not None
            await self._ready_changed.wait()

    # -- the tree -----------------------------------------------------------------------

    async def start(self, group: TaskGroup) -> None:
        """Start the top of the tree in ``group`` (again if it was killed)."""
        # The top of the tree: the workers' supervisor is its temporary child
        # (see start_workers), so the top outlives a degraded pool.
        store = ChildSpec("sessions", SessionStore, arg=self._sessions)
        children = [store]
        if self._bridge is not None:  # after the store, whose variables it serves
            children.append(ChildSpec("bridge", Bridge, arg=self._bridge))
        spec = SupervisorSpec(children, max_restarts=STORE_RESTARTS, max_seconds=STORE_SECONDS)
        ref = await Supervisor.start(group, spec, name="pool")
        ref.link(self._on_tree_exit)
        self.supervisor = ref

    @property
    def store(self) -> SessionStoreRef:
        """The running session store.

        :raises SessionError: it is not running (being restarted after a crash).
        """
        supervisor = self.supervisor
        store = None if supervisor is None else supervisor.child("sessions")
        if not isinstance(store, SessionStoreRef):
            raise store_not_running()
        return store

    async def revive(self, group: TaskGroup) -> None:
        """Start a new top in ``group`` if the top itself was killed."""
        assert self.supervisor is not None
        if not self.supervisor.alive:  # the top itself was killed
            await self.start(group)

    async def stop(self) -> None:
        """Stop the whole tree, its workers with it (a no-op if it never started)."""
        if self.supervisor is not None:
            await self.supervisor.stop("shutdown", timeout=None)

    async def start_workers(self) -> None:
        """Start the WorkerSupervisor and ``size`` workers; return once all are ready.

        :raises PoolStartError: a worker failed to start, or not all were ready
            in time (the caller stops what started).
        """
        config = self._config
        assert self.supervisor is not None
        spec = DynamicSupervisorSpec(
            max_restarts=config.restart_limit(self.size), max_seconds=config.max_seconds
        )
        workers = await self.supervisor.start_child(
            ChildSpec("workers", WorkerSupervisor, spec, restart="temporary")
        )
        assert isinstance(workers, SupervisorRef)
        self._workers_sup = workers
        workers.link(self._on_workers_exit)
        self._startup = startup = _Startup(self.size)
        try:
            for _ in range(self.size):
                await self.start_worker()
            with anyio.move_on_after(config.startup_timeout + 5.0):
                await startup.done.wait()
            if startup.failure is not None:
                failed, error = startup.failure
                # A PoolError (closed, degraded) is no one worker's failure.
                worker_id = None if isinstance(error, PoolError) else failed
                raise PoolStartError(
                    f"{self._owner!r} did not start: {error}", worker_id=worker_id
                ) from error
            if startup.waiting:
                raise PoolStartError(
                    f"{self._owner!r}: workers not ready after the startup timeout"
                )
        finally:
            self._startup = None

    def stop_waiting(self, error: BaseException) -> None:
        """End a wait of :meth:`start_workers` with ``error`` (the pool is closed)."""
        if self._startup is not None:  # waiting for workers to start: not any more
            self._startup.failed("", error)

    async def wait_gave_up(self) -> None:
        """Wait until the WorkerSupervisor that gave up has stopped its workers."""
        old = self._workers_sup
        if old is not None:
            await old.wait()  # gave up: its workers are stopped

    def reset(self) -> None:
        """Forget the workers of a tree that gave up, before new ones start."""
        self.workers.clear()
        self._leaving.clear()
        self.last_failure = ""

    async def stop_workers(self) -> None:
        """Stop the WorkerSupervisor and its workers (the top stays)."""
        assert self.supervisor is not None
        with contextlib.suppress(ChildNotFound, ServerExited):
            await self.supervisor.terminate_child("workers")

    # -- one worker ---------------------------------------------------------------------

    async def start_worker(self) -> WorkerServer:
        """Add one worker to the tree; it boots in the background (see WorkerServer)."""
        config = self._config
        n = next(self._ids)
        assert self._launcher is not None
        worker_id = f"w{n}"
        bridge = self._bridge
        args = WorkerArgs(
            config,
            self._launcher,
            worker_id,
            self._run_id,
            self._on_ready,
            self._on_failed,
            self._events,
            self._router.worker_left,
            None
            if bridge is None
            else WorkerBridge(f"unix:{bridge.path}", worker_token(bridge.secret, worker_id)),
            on_recycling=self._scheduler.stop_ahead,
        )
        assert self._workers_sup is not None
        ref = await self._workers_sup.start_child(
            ChildSpec(f"w{n}", WorkerServer, args, shutdown=config.shutdown_timeout + 1.0)
        )
        worker = ref.server
        assert isinstance(worker, WorkerServer)
        return worker

    def in_service(self, worker: WorkerServer) -> bool:
        """True while ``worker`` is one of the pool's (not stopped for good, nor replaced)."""
        return self.workers.get(worker.worker_id) is worker

    async def stop_worker(self, worker: WorkerServer, why: str = "the pool stopped it") -> None:
        """Take a worker out (no new calls), let its calls finish, stop its process.

        By child id, not by ref: a worker being restarted right now is stopped
        in its new instance (which is not let into service meanwhile).

        :param why: why it goes (its :attr:`~WorkerServer.left_because`).
        """
        worker.drain(why)
        self._leaving.add(worker.worker_id)
        self.workers.pop(worker.worker_id, None)
        try:
            assert self._workers_sup is not None
            with contextlib.suppress(ChildNotFound, ServerExited):
                await self._workers_sup.terminate_child(worker.worker_id)
        finally:
            # Terminated and removed: no instance of it can become ready any more.
            self._leaving.discard(worker.worker_id)

    # -- scaling ------------------------------------------------------------------------

    async def set_size(self, size: int) -> None:
        """Run ``size`` workers from now on (the workers themselves: :meth:`grow`, :meth:`shrink`).

        With the default ``max_restarts``, the restart budget follows the size.
        """
        self.size = size
        if self._config.max_restarts is None and self._workers_sup is not None:
            with contextlib.suppress(ServerExited):  # gave up meanwhile: degraded
                await self._workers_sup.set_max_restarts(self._config.restart_limit(size))

    async def grow(self, count: int) -> None:
        """Start ``count`` workers; return once each is ready, failed, or ended."""
        new = [await self.start_worker() for _ in range(count)]
        for worker in new:
            await worker.wait_booted()  # ready, failed, or ended (degraded, closed)

    async def shrink(self, count: int) -> None:
        """Stop ``count`` workers, idle ones first; their calls in flight finish."""
        victims = sorted(self.workers.values(), key=lambda w: (w.in_flight, w.worker_id))
        for worker in victims[:count]:
            await self.stop_worker(worker, "the pool scaled down")

    # -- what the tree tells ------------------------------------------------------------

    def _on_ready(self, worker: WorkerServer) -> None:
        if worker.worker_id in self._leaving:
            worker.drain()  # a restart of a worker being stopped: not into service
            return
        self.workers[worker.worker_id] = worker
        if self._ready_changed is not None:
            self._ready_changed.set()
        self._ready_changed = anyio.Event()
        if worker.ref.generation > 0:
            self.restarts += 1
        self._router.worker_ready(worker)
        self._scheduler.add(
            worker, self._config.max_concurrency, self._config.max_requests_per_worker
        )
        if self._startup is not None:
            self._startup.ready()

    def _on_failed(self, worker: WorkerServer, error: BaseException) -> None:
        self.last_failure = str(error)
        if self._startup is not None:
            self._startup.failed(worker.worker_id, error)

    def _on_tree_exit(self, ref: object, reason: ExitReason) -> None:
        # The top of the tree only exits when the pool stops it, or when it is
        # killed from outside: either way no call can be served.
        self._gave_up(reason)

    def _on_workers_exit(self, ref: object, reason: ExitReason) -> None:
        # The WorkerSupervisor exits when it reaches its restart intensity
        # (with the ReachedMaxRestartIntensity, or a Shutdown-like reason whose
        # detail is that), or when the pool stops.
        if ref is not self._workers_sup:
            return  # one a restart replaced
        if self._startup is not None:
            self._startup.failed("workers", PoolDegraded(why(reason), reason))
        self._gave_up(reason)
