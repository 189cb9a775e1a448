"""Recycler: replaces workers that ran too many calls, ran too long, or grew too big."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

import anyio

from snakepit.otp import Broadcast

from ._config import PoolConfig
from ._events import PoolEvent, WorkerRecycled
from ._host import PoolHost
from ._worker_server import WorkerServer

logger = logging.getLogger("snakepit.pool")

#: From this ``max_requests_per_worker`` on, a worker's replacement starts when
#: it was sent nine tenths of its calls, not its last (which may come before
#: the replacement is ready: the pool would be a worker short meanwhile).
EARLY_FROM = 20


class Recycler:
    """Replaces workers past ``max_requests_per_worker``, ``worker_ttl``, ``max_worker_memory_mb``.

    A worker due is replaced in the pool's background: the replacement is
    ready before the old one stops (and its calls in flight finish). The
    request count is checked on each call's way out (:meth:`check`); the age
    and the memory by :meth:`housekeeping`.

    The request limit is exact: a worker handed its ``max_requests_per_worker``-th
    call (those sent ahead count) takes no more (:attr:`WorkerServer.full`)
    and its replacement starts at once; until it is ready, the calls the
    worker was handed run there (what has not started when it stops is
    withdrawn and runs elsewhere), and the pool has one worker less to hand
    new calls to. With a limit of :data:`EARLY_FROM` or more, the replacement
    starts earlier, when the worker was sent nine tenths of its calls: it
    serves on its free slots meanwhile (as one recycled for its age), so the
    pool keeps its capacity unless that last tenth goes faster than a worker
    starts. One recycled for its age or memory serves on its free slots
    until then: its calls sent ahead that have not started are withdrawn as
    its recycling starts (they run on another worker), and none follows them.
    """

    def __init__(
        self,
        config: PoolConfig,
        host: PoolHost,
        events: Broadcast[PoolEvent],
        *,
        start_worker: Callable[[], Awaitable[WorkerServer]],
        stop_worker: Callable[[WorkerServer, str], Awaitable[None]],
        in_service: Callable[[WorkerServer], bool],
    ) -> None:
        self._config = config
        self._host = host
        self._events = events
        self._start_worker = start_worker
        self._stop_worker = stop_worker
        self._in_service = in_service
        #: Workers replaced so far.
        self.recycled = 0

    @property
    def needs_housekeeping(self) -> bool:
        """True if some limit needs a look now and then (age, memory), not only per call."""
        config = self._config
        return config.worker_ttl is not None or config.max_worker_memory_mb is not None

    def reason(self, worker: WorkerServer, *, memory: bool) -> str | None:
        """Why ``worker`` is due for recycling, or None.

        :param memory: read its memory too (/proc: the housekeeping's, never
            on a call's way out).
        """
        config = self._config
        limit = config.max_requests_per_worker
        if limit is not None:
            if worker.full or worker.requests >= limit:
                return f"it was sent {limit} calls (max_requests_per_worker={limit})"
            if limit >= EARLY_FROM and worker.requests >= limit - limit // 10:
                # Its replacement starts now, while it serves its last tenth: the
                # pool keeps its capacity (a full worker takes no call).
                return (
                    f"it was sent {worker.requests} of its max_requests_per_worker={limit} "
                    "calls (its replacement starts before the last)"
                )
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

    def check(self, worker: WorkerServer, *, memory: bool = False) -> None:
        """Start recycling ``worker`` in the background if it is due (and only ``ready``)."""
        config = self._config
        if not memory and config.max_requests_per_worker is None and config.worker_ttl is None:
            return  # no limit to check on a call's way out (the usual pool)
        background = self._host.background
        if worker.state != "ready" or background is None:  # not recycling already, nor out
            return
        reason = self.reason(worker, memory=memory)
        if reason is not None:
            worker.start_recycling()
            background.start_soon(self._recycle, worker, reason)

    async def _recycle(self, old: WorkerServer, reason: str) -> None:
        # The replacement is ready before the old one stops: capacity never drops.
        try:
            logger.info("recycling worker %r: %s", old.worker_id, reason)
            new = await self._start_worker()
            await new.wait_booted()
            if not self._in_service(old):
                # Taken out meanwhile (the pool shrank, scale() picked it): its
                # replacement would be one worker too many.
                logger.info("worker %r left the pool while recycled", old.worker_id)
                await self._stop_worker(new, "its recycling was cut short")
                return
            self.recycled += 1  # replaced: the old one takes no calls from here on
            if self._events.active:
                self._events.publish(WorkerRecycled(old.worker_id, reason, anyio.current_time()))
            await self._stop_worker(old, f"it was recycled ({reason})")
        except Exception:
            logger.exception("recycling worker %r failed", old.worker_id)
            if old.full and self._in_service(old):
                # It takes no call and nothing replaces it: its supervisor
                # restarts it in place (the pool's decision, not counted).
                old.retire("its replacement failed to start", failed=False)

    async def housekeeping(self, workers: Callable[[], Iterable[WorkerServer]]) -> None:
        """Check ``workers()`` for age and memory now and then, until cancelled."""
        config = self._config
        interval = min(x for x in (config.health_interval, config.worker_ttl, 5.0) if x is not None)
        while True:
            await anyio.sleep(interval)
            for worker in list(workers()):
                self.check(worker, memory=True)
