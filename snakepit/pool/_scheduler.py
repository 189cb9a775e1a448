"""Scheduler: hands worker slots to calls, with a bounded queue (the hot path)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from snakepit.errors import PoolClosed, PoolError, QueueFull, QueueTimeout

__all__ = ("PinnedWorkerGone", "Schedulable", "Scheduler")


def time_left(deadline: float | None) -> float | None:
    """Seconds to ``deadline`` (the loop's clock), at least a microsecond; None without one.

    What is left of a call's timeout for its next step (a store request, the
    call itself): a hair above 0 at worst, never 0 (which means no limit).
    """
    if deadline is None:
        return None
    return max(deadline - asyncio.get_running_loop().time(), 1e-6)


class Schedulable(Protocol):
    """What a :class:`Scheduler` hands out: anything that says whether it takes calls."""

    @property
    def usable(self) -> bool:
        """True while it takes calls; a slot of an unusable one is dropped."""
        ...


W = TypeVar("W", bound=Schedulable)


def _pop(queue: deque[W], entries: dict[W, int]) -> W:
    # The first worker of a deque of slot entries, its count of entries there taken down.
    worker = queue.popleft()
    left = entries[worker] - 1
    if left:
        entries[worker] = left
    else:
        del entries[worker]
    return worker


class PinnedWorkerGone(PoolError):
    """The worker :meth:`Scheduler.checkout_pinned` was asked for left service (or had left).

    A pool raises :class:`~snakepit.errors.SessionWorkerLost` for it, naming the session.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        #: Why the worker left service.
        self.reason = reason


class Scheduler(Generic[W]):
    """Free slots of the pool's workers, and the calls waiting for one.

    Each worker adds one slot per call it may run at once. :meth:`checkout`
    takes any free slot (no message to any server: a deque pop), or waits in
    order; :meth:`checkout_pinned` takes a slot of one given worker (a
    session's), or waits for one of its slots, in order. :meth:`checkin` hands
    the slot to the oldest call waiting for that worker, else to the oldest
    call waiting for any, else back to the free slots. A slot of a worker that
    is no longer usable (crashed, retired) is dropped; its replacement brings
    new ones.

    Every operation is O(1) (amortized): the free slots are a deque of
    workers, one entry per free slot, with a count of free slots per worker.
    A pinned checkout takes from the count and leaves its entry in the deque
    (stale); an unpinned checkout skips a worker's entries beyond its count.
    A worker has at most as many entries as it has slots.

    With ``prefetch`` (pipelining), each worker also has that many slots
    *ahead*: an unpinned call that finds no free slot takes one, and is sent
    to a busy worker, where it waits to start (so the worker never waits for
    the host between calls). Free slots always go first; the ahead slots are
    a second deque of the same kind, of workers whose calls in flight
    (:attr:`busy`) are under their slots plus ``prefetch``. A slot given back
    goes to a waiting call whatever its kind; else back to the free slots
    when the worker's calls in flight fall under its slots, or to the ahead
    ones. Pinned calls (a session's) take free slots only.
    """

    def __init__(
        self,
        *,
        max_queue: int,
        queue_timeout: float | None,
        prefetch: int = 0,
        on_exhausted: Callable[[W], object] | None = None,
    ) -> None:
        self._max_queue = max_queue
        #: Called with a worker handed its last call (see :meth:`add`'s ``budget``).
        self._on_exhausted = on_exhausted
        #: Calls each worker with a budget may still be handed (no key: no budget).
        self._budget: dict[W, int] = {}
        self._queue_timeout = queue_timeout
        self._prefetch = prefetch
        #: Slots per worker (as added), and its calls in flight (slots taken, of either kind).
        self._slots: dict[W, int] = {}
        self._busy: dict[W, int] = {}
        #: Workers with a free ahead slot, one entry per slot (stale ones skipped), and
        #: their entries there.
        self._ahead: deque[W] = deque()
        self._ahead_entries: dict[W, int] = {}
        #: Workers sent no call ahead any more (recycled: see stop_ahead).
        self._no_ahead: set[W] = set()
        #: The waiting calls (in _waiters) that take a free slot only.
        self._free_only: set[asyncio.Future[W]] = set()
        self._idle: deque[W] = deque()
        #: Free slots per worker (a worker with none has no key), and its entries in _idle.
        self._free: dict[W, int] = {}
        self._entries: dict[W, int] = {}
        self._waiters: deque[asyncio.Future[W]] = deque()
        #: Calls waiting for one worker's slot, per worker (no key: none waits).
        self._pinned: dict[W, deque[asyncio.Future[W]]] = {}
        self._closed: PoolError | None = None

    @property
    def queued(self) -> int:
        """Calls waiting for a slot now."""
        pinned = self._pinned
        return len(self._waiters) + (sum(len(q) for q in pinned.values()) if pinned else 0)

    @property
    def has_idle(self) -> bool:
        """True when a slot may be free (cheap; a dead worker's slot counts until taken)."""
        return bool(self._free)

    @property
    def idle(self) -> int:
        """Free slots of usable workers now."""
        return sum(n for w, n in self._free.items() if w.usable)

    def free_slots(self, worker: W) -> int:
        """Free slots of ``worker`` now."""
        return self._free.get(worker, 0) if worker.usable else 0

    # -- taking a slot ------------------------------------------------------------------

    async def checkout(
        self,
        on_wait: Callable[[int], object] | None = None,
        *,
        deadline: float | None = None,
        ahead: bool = True,
    ) -> W:
        """Take a free slot, else (``ahead``) one ahead, waiting in order if there is none.

        ``on_wait`` is called with the queue depth (this call included) when
        the call has to wait (not when it gets a slot at once, nor when it is
        refused with ``QueueFull``). ``deadline`` (on the loop's clock, as
        ``anyio.current_time()``) is the call's own: waiting ends there too.

        :raises QueueFull: ``max_queue`` calls already wait.
        :raises QueueTimeout: none came free within ``queue_timeout``, or
            before ``deadline``.
        :raises PoolClosed: the pool stopped.
        """
        if self._closed is not None:
            raise self._closed
        idle = self._idle
        free = self._free
        entries = self._entries
        while idle:
            worker = _pop(idle, entries)
            slots = free.get(worker, 0)
            if not slots:
                continue  # a slot a pinned checkout took
            if not worker.usable:
                del free[worker]
                continue
            if slots == 1:
                del free[worker]
            else:
                free[worker] = slots - 1
            self._busy[worker] += 1
            if self._budget:
                self._spend(worker)
            return worker
        if ahead and self._ahead:
            busy = self._take_ahead()
            if busy is not None:
                return busy
        return await self._wait(self._waiters, on_wait, deadline, ahead)

    def _take_ahead(self) -> W | None:
        # A busy worker with room for a call sent ahead (its entry's room is
        # checked: the slot may have gone to a waiting call meanwhile).
        ahead = self._ahead
        entries = self._ahead_entries
        busy = self._busy
        limit = self._prefetch
        while ahead:
            worker = _pop(ahead, entries)
            n = busy.get(worker)
            if n is None or not worker.usable or worker in self._no_ahead:
                continue  # it left service, or takes calls on free slots only
            if n < self._slots[worker] + limit:
                busy[worker] = n + 1
                if self._budget:
                    self._spend(worker)
                return worker
        return None

    def _spend(self, worker: W) -> None:
        # A call handed to ``worker``: one less of its budget, if it has one.
        # The last one: it is told (it takes no more calls: no longer usable).
        left = self._budget.get(worker)
        if left is None:
            return
        if left > 1:
            self._budget[worker] = left - 1
            return
        del self._budget[worker]
        if self._on_exhausted is not None:
            self._on_exhausted(worker)

    @property
    def busy(self) -> dict[W, int]:
        """Calls in flight per worker in service (a slot taken, free or ahead): a copy."""
        return dict(self._busy)

    def try_take(self, worker: W) -> bool:
        """Take a free slot of ``worker`` if it has one (never waits); True if taken."""
        if self._closed is not None:
            raise self._closed
        slots = self._free.get(worker, 0)
        if not slots or not worker.usable:
            return False
        if slots == 1:
            del self._free[worker]  # its entry in _idle is now stale
        else:
            self._free[worker] = slots - 1
        self._busy[worker] += 1
        if self._budget:
            self._spend(worker)
        return True

    async def checkout_pinned(
        self,
        worker: W,
        on_wait: Callable[[int], object] | None = None,
        *,
        deadline: float | None = None,
    ) -> W:
        """Take a slot of ``worker``, waiting for one in order (after the calls waiting for it).

        As :meth:`checkout` otherwise (``queue_timeout``, ``deadline``,
        ``max_queue`` counts every waiting call).

        :raises PinnedWorkerGone: ``worker`` is not usable, or left service while the call waited.
        """
        if self._closed is not None:
            raise self._closed
        if not worker.usable:
            raise PinnedWorkerGone("it is out of service")
        queue = self._pinned.get(worker)
        if not queue and self.try_take(worker):
            return worker
        if queue is None:
            queue = self._pinned[worker] = deque()
        return await self._wait(queue, on_wait, deadline)

    async def _wait(
        self,
        queue: deque[asyncio.Future[W]],
        on_wait: Callable[[int], object] | None,
        deadline: float | None,
        ahead: bool = False,
    ) -> W:
        # ``ahead``: the call may be handed a slot ahead (a busy worker's).
        if self.queued >= self._max_queue:
            self._forget(queue)
            raise QueueFull(self._max_queue)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[W] = loop.create_future()
        queue.append(waiter)
        if not ahead and queue is self._waiters:
            self._free_only.add(waiter)
            waiter.add_done_callback(self._free_only.discard)
        if on_wait is not None:
            on_wait(self.queued)
        if deadline is None and self._queue_timeout is None:
            try:  # no time limit: no timeout context to enter and leave
                return await waiter
            except BaseException:  # cancelled, PoolClosed, PinnedWorkerGone
                self._give_up(waiter, queue)
                raise
        now = loop.time()
        when = None if self._queue_timeout is None else now + self._queue_timeout
        own = deadline is not None and (when is None or deadline < when)
        if own:
            when = deadline
        try:
            async with asyncio.timeout_at(when):
                return await waiter
        except TimeoutError:
            self._give_up(waiter, queue)
            if own:
                assert deadline is not None
                raise QueueTimeout(
                    f"no worker came free within the {deadline - now:.3g}s left of the "
                    "call's timeout (the tool did not run)",
                    timeout=deadline - now,
                ) from None
            raise QueueTimeout(
                f"no worker came free within {self._queue_timeout:g}s",
                timeout=self._queue_timeout,
            ) from None
        except BaseException:  # cancelled, PoolClosed, PinnedWorkerGone
            self._give_up(waiter, queue)
            raise

    def _give_up(self, waiter: asyncio.Future[W], queue: deque[asyncio.Future[W]]) -> None:
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            self.checkin(waiter.result())  # handed over just as the caller gave up
        else:
            waiter.cancel()
            if waiter in queue:
                queue.remove(waiter)
        self._forget(queue)

    def _forget(self, queue: deque[asyncio.Future[W]]) -> None:
        # An empty queue of pinned waiters is dropped (not the shared one).
        if not queue and queue is not self._waiters:
            for worker, pinned in list(self._pinned.items()):
                if pinned is queue:
                    del self._pinned[worker]

    # -- giving it back -----------------------------------------------------------------

    def checkin(self, worker: W) -> None:
        """Return a slot: to the oldest call waiting for ``worker``, else for any, else free.

        A slot ahead (the worker is still as busy as its slots) goes only to
        a call that may be sent ahead: not to a pinned one, nor to one that
        waits for a free slot (:meth:`checkout` with ``ahead=False``).
        """
        if not worker.usable:
            return
        busy = self._busy.get(worker)
        if busy is None:  # a worker not added (or lost): one slot more, as add() offers
            self._slots[worker] = self._slots.get(worker, 0) + 1
            busy = 1
        free = busy - 1 < self._slots[worker]
        if not free and self._no_ahead and worker in self._no_ahead:
            self._busy[worker] = busy - 1  # an ahead slot of a worker sent no call ahead
            return
        pinned = self._pinned.get(worker)
        if pinned is not None and free:
            while pinned:
                waiter = pinned.popleft()
                if not waiter.done():
                    if not pinned:
                        del self._pinned[worker]
                    waiter.set_result(worker)
                    if self._budget:
                        self._spend(worker)
                    return
            del self._pinned[worker]
        waiters = self._waiters
        if free or not self._free_only:
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(worker)
                    if self._budget:
                        self._spend(worker)
                    return
        else:  # the oldest waiting call that may go ahead, if any
            for waiter in waiters:
                if not waiter.done() and waiter not in self._free_only:
                    waiters.remove(waiter)
                    waiter.set_result(worker)
                    if self._budget:
                        self._spend(worker)
                    return
        busy -= 1
        self._busy[worker] = busy
        if busy >= self._slots[worker]:  # still as busy as its slots: an ahead slot is free
            entries = self._ahead_entries.get(worker, 0)
            if entries < self._prefetch:
                self._ahead.append(worker)
                self._ahead_entries[worker] = entries + 1
            return
        slots = self._free.get(worker, 0) + 1
        self._free[worker] = slots
        entries = self._entries.get(worker, 0)
        if entries < slots:
            self._idle.append(worker)
            self._entries[worker] = entries + 1

    def add(self, worker: W, slots: int, budget: int | None = None) -> None:
        """Offer ``slots`` slots of a worker that became ready (and its ``prefetch`` ahead).

        ``budget``: how many calls it may be handed in all (a pool's
        ``max_requests_per_worker``; None: no limit). As the last one is
        handed out (a slot free or ahead, or to a waiting call), the
        scheduler's ``on_exhausted`` is called with it, which must make it
        unusable: it is handed no more calls.
        """
        if budget is not None:
            self._budget[worker] = budget
        self._slots[worker] = slots
        self._busy[worker] = slots + self._prefetch  # each checkin below gives one back
        for _ in range(slots + self._prefetch):
            self.checkin(worker)

    def stop_ahead(self, worker: W) -> None:
        """Send no call ahead to ``worker`` from now on; its free slots still serve.

        For a worker being recycled: its calls sent ahead are withdrawn (they
        go elsewhere) and none follows them. Its ahead slots are dropped as
        they come back.
        """
        if worker in self._busy:  # (not one that left service)
            self._no_ahead.add(worker)

    def lost(self, worker: W, reason: str) -> None:
        """``worker`` left service: the calls waiting for its slots raise :class:`PinnedWorkerGone`.

        Its free slots are dropped (their entries are skipped when reached).
        """
        self._free.pop(worker, None)
        self._slots.pop(worker, None)
        self._busy.pop(worker, None)
        self._no_ahead.discard(worker)
        self._budget.pop(worker, None)
        pinned = self._pinned.pop(worker, None)
        while pinned:
            waiter = pinned.popleft()
            if not waiter.done():
                waiter.set_exception(PinnedWorkerGone(reason))

    def reopen(self) -> None:
        """Take calls again after :meth:`close` (a degraded pool restarted)."""
        self._closed = None

    def close(self, error: PoolError | None = None) -> None:
        """Refuse new calls with ``error`` (default :class:`PoolClosed`); fail waiting ones."""
        self._closed = error if error is not None else PoolClosed("the pool stopped")
        queues = [self._waiters, *self._pinned.values()]
        self._pinned.clear()
        for queue in queues:
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_exception(self._closed)
        self._idle.clear()
        self._free.clear()
        self._entries.clear()
        self._ahead.clear()
        self._ahead_entries.clear()
        self._slots.clear()
        self._busy.clear()
        self._no_ahead.clear()
        self._budget.clear()
