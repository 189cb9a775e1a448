"""Pool: supervised worker processes behind execute() and stream()."""

from __future__ import annotations

import contextlib
import itertools
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from snakepit._client import Multiplexer
from snakepit._proto.snakepit.v1 import worker_pb2
from snakepit.errors import (
    ChildNotFound,
    ConfigError,
    ExecutionTimeout,
    PoolClosed,
    PoolDegraded,
    PoolStartError,
    QueueTimeout,
    ServerExited,
    WorkerCrashed,
    WorkerStopping,
    WorkerUnavailable,
)
from snakepit.otp import (
    Broadcast,
    ChildSpec,
    DynamicSupervisor,
    DynamicSupervisorSpec,
    ExitReason,
    Supervisor,
    SupervisorRef,
    SupervisorSpec,
    is_abnormal,
)

from ._config import PoolConfig
from ._events import (
    PoolEvent,
    PoolGaveUp,
    RequestOutcome,
    RequestQueued,
    RequestStarted,
    RequestStopped,
    WorkerRecycled,
)
from ._launcher import Launcher, LocalLauncher
from ._scheduler import Scheduler
from ._worker import Worker, WorkerArgs

__all__ = ("Pool", "PoolStats", "WorkerInfo")

#: Seconds before the first retry of a crashed call; doubled for each next one.
RETRY_BACKOFF = 0.05

logger = logging.getLogger("snakepit.pool")


def _needs_housekeeping(config: PoolConfig) -> bool:
    return config.worker_ttl is not None or config.max_worker_memory_mb is not None


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
    #: Worker processes started to replace crashed ones, and recycled ones.
    restarts: int
    recycled: int
    #: Why the pool gave up on its workers (restart intensity), or None.
    degraded: str | None


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
    reaped. Options are those of :class:`PoolConfig` (or pass ``config=``).

    The tree: a Supervisor (``pool.supervisor``) over a DynamicSupervisor of
    :class:`~snakepit.pool.Worker` servers, one per process; a crashed
    process's Worker exits and is replaced. Calls take a free slot from the
    scheduler and go straight to the worker's multiplexed channel from the
    caller's task.
    """

    def __init__(
        self,
        adapter: str | None = None,
        *,
        config: PoolConfig | None = None,
        launcher: Launcher | None = None,
        **options: Any,
    ) -> None:
        if config is not None and (adapter is not None or options):
            raise ConfigError("config", "pass either config= or adapter and options, not both")
        self.config = config if config is not None else PoolConfig.from_options(adapter, options)
        self._launcher = launcher
        self._state = "new"
        self._scheduler: Scheduler[Worker] = Scheduler(
            max_queue=self.config.max_queue,
            queue_timeout=self.config.queue_timeout,
        )
        self._stack: AsyncExitStack | None = None
        self._supervisor: SupervisorRef | None = None
        self._workers: dict[str, Worker] = {}
        self._startup: _Startup | None = None
        self._ids = itertools.count()
        self._ready_changed: anyio.Event | None = None  # made in __aenter__ (needs a loop)
        self._requests = self._errors = self._timeouts = self._crashes = self._restarts = 0
        self._degraded: PoolDegraded | None = None
        self._leaving: set[str] = set()  # ids of workers being stopped for good
        self._size = self.config.size
        self._recycled = 0
        self._tg: TaskGroup | None = None
        self._last_failure: str = ""
        self._events: Broadcast[PoolEvent] = Broadcast()
        self._request_ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"<Pool {self.config.adapter} size={self.config.size} {self._state}>"

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Pool:
        if self._state != "new":
            raise PoolClosed(f"{self!r}: a Pool is entered once")
        self._state = "starting"
        config = self.config
        run_id = uuid.uuid4().hex[:12]
        if self._launcher is None:
            local = LocalLauncher(config.run_dir)
            try:
                local.open(run_id)  # sweeps dead runs; a bad run_dir fails before any start
            except BaseException:
                self._state = "closed"
                raise
            launcher: Launcher = local
        else:
            launcher = self._launcher
        self._startup = startup = _Startup(config.size)
        self._ready_changed = anyio.Event()
        stack = AsyncExitStack()
        stack.callback(self._events.close)  # last: the workers' exits are published
        if self._launcher is None:
            stack.push_async_callback(launcher.aclose)
        stack.callback(self._scheduler.close)
        try:
            workers_spec = DynamicSupervisorSpec(
                max_restarts=config.max_restarts, max_seconds=config.max_seconds
            )
            spec = SupervisorSpec(
                [ChildSpec("workers", DynamicSupervisor, workers_spec)], max_restarts=0
            )
            self._supervisor = await stack.enter_async_context(
                Supervisor.running(spec, name="pool")
            )
            self._supervisor.link(self._on_tree_exit)
            workers = self._supervisor.child("workers")
            assert isinstance(workers, SupervisorRef)
            self._workers_sup = workers
            self._launcher_in_use = launcher
            self._run_id = run_id
            for _ in range(config.size):
                await self._start_worker()
            with anyio.move_on_after(config.startup_timeout + 5.0):
                await startup.done.wait()
            if startup.failure is not None:
                _, error = startup.failure
                raise PoolStartError(f"{self!r} did not start: {error}") from error
            if startup.waiting:
                raise PoolStartError(f"{self!r}: workers not ready after the startup timeout")
        except BaseException:
            self._state = "closed"
            await stack.aclose()  # the tree's own stop is shielded
            raise
        self._startup = None
        # Background work (recycling, housekeeping) lives in a task group closed
        # before the tree; its tasks catch their own errors.
        self._tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(self._tg.cancel_scope.cancel)
        if _needs_housekeeping(config):
            self._tg.start_soon(self._housekeeping)
        self._stack = stack
        self._state = "running"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every worker (SIGTERM, ``shutdown_timeout``, SIGKILL) and reap it."""
        stack, self._stack = self._stack, None
        self._state = "closed"
        if stack is not None:
            self._scheduler.close()  # queued calls fail now, not after the workers stopped
            await stack.aclose()  # the tree's own stop is shielded

    async def _start_worker(self) -> Worker:
        """Add one worker to the tree; it boots in the background (see Worker)."""
        config = self.config
        n = next(self._ids)
        args = WorkerArgs(
            config,
            self._launcher_in_use,
            f"w{n}",
            self._run_id,
            self._on_ready,
            self._on_failed,
            self._events,
        )
        ref = await self._workers_sup.start_child(
            ChildSpec(f"w{n}", Worker, args, shutdown=config.shutdown_timeout + 1.0)
        )
        worker = ref.server
        assert isinstance(worker, Worker)
        return worker

    async def _stop_worker(self, worker: Worker) -> None:
        """Take a worker out (no new calls), let its calls finish, stop its process.

        By child id, not by ref: a worker being restarted right now is stopped
        in its new instance (which is not let into service meanwhile).
        """
        worker.drain()
        self._leaving.add(worker.worker_id)
        self._workers.pop(worker.worker_id, None)
        try:
            with contextlib.suppress(ChildNotFound, ServerExited):
                await self._workers_sup.terminate_child(worker.worker_id)
        finally:
            # Terminated and removed: no instance of it can become ready any more.
            self._leaving.discard(worker.worker_id)

    # -- recycling and scaling ------------------------------------------------------------

    def _recycle_reason(self, worker: Worker, *, memory: bool) -> str | None:
        # ``memory`` reads /proc: the housekeeping's, never on a call's way out.
        config = self.config
        limit = config.max_requests_per_worker
        if limit is not None and worker.requests >= limit:
            return f"it ran {worker.requests} calls (max_requests_per_worker={limit})"
        ttl = config.worker_ttl
        if ttl is not None and worker.ready_at is not None:
            age = anyio.current_time() - worker.ready_at
            if age >= ttl:
                return f"it ran {age:.0f}s (worker_ttl={ttl:g})"
        max_mb = config.max_worker_memory_mb
        if memory and max_mb is not None:
            rss = worker.rss_mb()
            if rss is not None and rss >= max_mb:
                return f"it uses {rss:.0f} MiB (max_worker_memory_mb={max_mb:g})"
        return None

    def _check_recycle(self, worker: Worker, *, memory: bool = False) -> None:
        if worker.recycling or not worker.usable or self._tg is None:
            return
        reason = self._recycle_reason(worker, memory=memory)
        if reason is not None:
            worker.recycling = True
            self._tg.start_soon(self._recycle, worker, reason)

    async def _recycle(self, old: Worker, reason: str) -> None:
        # The replacement is ready before the old one stops: capacity never drops.
        try:
            logger.info("recycling worker %r: %s", old.worker_id, reason)
            new = await self._start_worker()
            await new.booted.wait()
            self._recycled += 1  # replaced: the old one takes no calls from here on
            if self._events.active:
                self._events.publish(WorkerRecycled(old.worker_id, reason, anyio.current_time()))
            await self._stop_worker(old)
        except Exception:
            logger.exception("recycling worker %r failed", old.worker_id)

    async def _housekeeping(self) -> None:
        # worker_ttl and max_worker_memory_mb need a look now and then.
        interval = min(
            x for x in (self.config.health_interval, self.config.worker_ttl, 5.0) if x is not None
        )
        while True:
            await anyio.sleep(interval)
            for worker in list(self._workers.values()):
                self._check_recycle(worker, memory=True)

    async def scale(self, size: int) -> None:
        """Grow or shrink the pool to ``size`` workers; return when that is done.

        Growing waits until the new workers are ready; shrinking takes idle
        workers first and lets their calls in flight finish.

        :raises ConfigError: ``size`` is not an int >= 1.
        """
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigError("size", f"must be an int >= 1, got {size!r}")
        self._running()
        delta = size - self._size
        self._size = size
        if delta > 0:
            new = [await self._start_worker() for _ in range(delta)]
            for worker in new:
                await worker.booted.wait()
        elif delta < 0:
            victims = sorted(self._workers.values(), key=lambda w: (w.in_flight, w.worker_id))
            for worker in victims[:-delta]:
                await self._stop_worker(worker)

    def _on_ready(self, worker: Worker) -> None:
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

    def _on_failed(self, worker: Worker, error: BaseException) -> None:
        self._last_failure = str(error)
        if self._startup is not None:
            self._startup.failed(worker.worker_id, error)

    def _on_tree_exit(self, ref: object, reason: ExitReason) -> None:
        # The supervision tree gave up (workers kept crashing): stop taking calls.
        if self._state != "running" or not is_abnormal(reason):
            return
        self._state = "degraded"
        config = self.config
        last = f"; last start failure: {self._last_failure}" if self._last_failure else ""
        self._degraded = error = PoolDegraded(
            f"{self!r}: its workers kept crashing: restart intensity reached (more than "
            f"{config.max_restarts} restarts in {config.max_seconds:g}s){last}",
            reason,
        )
        self._scheduler.close(error)
        if self._events.active:
            self._events.publish(PoolGaveUp(str(error), anyio.current_time()))

    async def wait_ready(self, *, timeout: float | None = 30.0) -> None:
        """Wait until all ``size`` workers are ready (after crashes: replaced).

        Event-driven: wakes each time a worker becomes ready.

        :raises QueueTimeout: not all ready within ``timeout``.
        """
        self._running()
        with anyio.move_on_after(timeout if timeout is not None else float("inf")):
            while self.stats().ready < self._size:
                assert self._ready_changed is not None
                await self._ready_changed.wait()
            return
        raise QueueTimeout(f"{self!r}: only {self.stats().ready} workers ready after {timeout}s")

    def subscribe(self) -> MemoryObjectReceiveStream[PoolEvent]:
        """Return a stream of this pool's events (its telemetry) from now on.

        Workers starting, ready, failing to start, exiting (crashed or
        stopped), recycled; each call queued, started and stopped (with its
        outcome and duration); the pool giving up. Unbounded, so the pool
        never waits for a slow reader; it ends when the pool has stopped.
        Subscribe before entering the pool to see its workers start. Close
        it (``async with``) when done. Costs nothing while nobody listens.
        """
        return self._events.subscribe()

    @property
    def supervisor(self) -> SupervisorRef:
        """The pool's supervision tree (for inspection and the testing harness).

        Still there (dead) once the pool is degraded, for its exit reason.

        :raises PoolClosed: the pool is not running.
        """
        if self._supervisor is None or self._state not in ("running", "degraded"):
            raise PoolClosed(f"{self!r} is not running")
        return self._supervisor

    def _running(self) -> Scheduler[Worker]:
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

        :param timeout: seconds; when it passes the call raises
            :class:`~snakepit.errors.ExecutionTimeout` and the worker is
            killed and replaced (it may be stuck in a sync tool).
        :param retries: for idempotent tools only: how many times a call whose
            worker crashed is tried again on another worker, with backoff.
            0 by default: a crash is never retried silently.
        :raises RemoteError: the tool raised (``ToolNotFound``, ``InvalidArguments``).
        :raises WorkerCrashed: the worker died with the call in flight.
        :raises QueueFull, QueueTimeout, PoolClosed, PoolDegraded: no worker to run it.
        """
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ConfigError("retries", f"must be an int >= 0, got {retries!r}")
        attempt = 0
        while True:
            try:
                return await self._execute_once(tool, args, timeout, session_id)
            except WorkerStopping:
                continue  # refused unrun by a stopping worker (now drained): go elsewhere
            except (WorkerCrashed, WorkerUnavailable):
                if attempt >= retries:
                    raise
                attempt += 1
                await anyio.sleep(min(RETRY_BACKOFF * 2 ** (attempt - 1), 1.0))

    @asynccontextmanager
    async def _call_on_a_worker(self, tool: str) -> AsyncIterator[Multiplexer]:
        """Check a worker out for one call; map its failures; check it back in.

        The one place a call's outcome is judged: a stopping worker is drained,
        a broken connection is a crash (worker out of rotation, WorkerCrashed),
        a timeout gets the worker killed and replaced.
        """
        scheduler = self._running()
        events = self._events
        request_id = 0  # > 0: this call is observed (somebody subscribed before it began)
        if events.active:
            request_id = next(self._request_ids)
            queued_at = anyio.current_time()

            def on_wait(depth: int) -> None:
                events.publish(RequestQueued(request_id, tool, depth, queued_at))

            try:
                worker = await scheduler.checkout(on_wait)
            except BaseException as exc:
                ended = anyio.current_time()
                outcome: RequestOutcome = "rejected" if isinstance(exc, Exception) else "cancelled"
                events.publish(
                    RequestStopped(request_id, tool, "", outcome, ended - queued_at, ended)
                )
                raise
        else:
            worker = await scheduler.checkout()
        self._requests += 1
        worker.call_started()
        if request_id:
            started = anyio.current_time()
            events.publish(
                RequestStarted(request_id, tool, worker.worker_id, started - queued_at, started)
            )
        outcome = "cancelled"
        try:
            if worker.mux is None:
                raise WorkerUnavailable(f"worker {worker.worker_id!r} is gone")
            yield worker.mux
            outcome = "ok"
        except WorkerStopping:
            outcome = "refused"
            worker.drain()  # stopping on its own (an outside SIGTERM): no new calls
            raise
        except WorkerUnavailable as exc:
            if self._state == "closed":  # stopped by the pool's exit: no crash
                raise PoolClosed(f"{self!r} stopped with the call to {tool!r} in flight") from exc
            outcome = "crashed"
            self._crashes += 1
            worker.retire("its connection broke", report=False)  # out of rotation, group killed
            raise await worker.crash_error(exc)  # noqa: B904 - the cause is set inside
        except ExecutionTimeout:
            outcome = "timeout"
            self._timeouts += 1
            worker.retire(f"a call to {tool!r} timed out")
            raise
        except Exception:
            outcome = "error"
            self._errors += 1
            raise
        finally:
            mux = worker.mux
            left = mux.take_left_running() if mux is not None else None
            if left is not None and mux is not None and worker.usable and self._tg is not None:
                # Cancelled before its reply: the tool may still run in the
                # worker. The slot stays taken until the worker says it ended
                # (the caller does not wait for that); see PoolConfig.cancel_grace.
                self._tg.start_soon(self._check_in_when_ended, worker, mux, left, tool)
            else:
                worker.call_ended()
                scheduler.checkin(worker)
                self._check_recycle(worker)
            if request_id:
                ended = anyio.current_time()
                events.publish(
                    RequestStopped(
                        request_id, tool, worker.worker_id, outcome, ended - started, ended
                    )
                )

    async def _check_in_when_ended(
        self, worker: Worker, mux: Multiplexer, rid: int, tool: str
    ) -> None:
        # A cancelled call's slot: back once the worker reports the call ended;
        # after cancel_grace without that, the worker is replaced (not a crash).
        # A pool closing meanwhile cancels this wait: the worker stops anyway.
        try:
            grace = self.config.cancel_grace
            with anyio.move_on_after(grace) as scope:
                await mux.settled(rid)
            if scope.cancelled_caught:
                worker.retire(
                    f"a cancelled call to {tool!r} did not end within cancel_grace={grace:g}s",
                    failed=False,
                )
        finally:
            worker.call_ended()
            self._scheduler.checkin(worker)  # a no-op for a retired worker
            self._check_recycle(worker)

    async def _execute_once(
        self, tool: str, args: dict[str, Any] | None, timeout: float | None, session_id: str
    ) -> Any:
        async with self._call_on_a_worker(tool) as mux:
            return await mux.execute(tool, args, timeout=timeout, session_id=session_id)

    async def stream(
        self,
        tool: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        session_id: str = "",
    ) -> AsyncGenerator[Any, None]:
        """Run a streaming ``tool`` and yield its items; ``aclose()`` cancels it remotely.

        The worker's slot is held until the stream ends or is closed.

        :param timeout: seconds allowed for each item (the first, and each next
            one): a stream that keeps yielding never times out; one that stalls
            longer raises :class:`~snakepit.errors.ExecutionTimeout` and its
            worker is killed and replaced.
        :raises RemoteError, WorkerCrashed: as :meth:`execute`.
        """
        async with (
            self._call_on_a_worker(tool) as mux,
            contextlib.aclosing(
                mux.stream(tool, args, timeout=timeout, session_id=session_id)
            ) as items,
        ):
            # Closed explicitly: the remote cancel is queued before the slot is returned.
            async for item in items:
                yield item

    async def describe(self) -> worker_pb2.DescribeResponse:
        """The adapter's tools, as a worker describes them."""
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
            requests=self._requests,
            errors=self._errors,
            timeouts=self._timeouts,
            crashes=self._crashes,
            restarts=self._restarts,
            recycled=self._recycled,
            degraded=None if self._degraded is None else str(self._degraded),
        )
