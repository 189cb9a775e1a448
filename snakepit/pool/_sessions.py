"""Sessions of a pool: which worker a session's call goes to, and a session's end in its worker."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from snakepit._wire._session import encode_metadata
from snakepit.errors import (
    CallTimeout,
    QueueTimeout,
    SessionError,
    SessionNotFound,
    SessionWorkerLost,
    WorkerBusy,
)
from snakepit.session import EndReason, SessionRecord, SessionStoreRef

from ._scheduler import PinnedWorkerGone, Scheduler, time_left
from ._worker_server import WorkerServer

#: Workers that left service whose reason a session pinned to them is told (the newest).
GONE_KEPT: Final = 1024
#: Sessions whose metadata's wire form is kept (the most recently used).
METADATA_KEPT: Final = 4096
#: Sessions that ended whose calls still looking for a slot are refused (the latest).
ENDED_KEPT: Final = 4096
#: Sessions whose worker the bridge lets touch them outside their calls (the most recently used).
PINS_KEPT: Final = 65536

logger = logging.getLogger("snakepit.pool")


def store_timeout(exc: CallTimeout, doing: str) -> QueueTimeout:
    """The error of a call whose timeout passed while the session store answered: it did not run."""
    error = QueueTimeout(
        f"the session store did not answer ({doing}) within the call's timeout "
        "(the tool did not run)",
        timeout=exc.timeout,
    )
    error.__cause__ = exc
    return error


class SessionRouter:
    """The pool's side of its sessions: the worker each session's call goes to.

    Knows the pool's workers by :attr:`~WorkerServer.pin_id` (the id a
    session is pinned to) while they take calls, and why the last
    :data:`GONE_KEPT` of them left. :meth:`take_slot` applies a session's
    affinity; :meth:`ended` tells a session's worker that it ended;
    :meth:`may_touch` says whether a worker serves a session (the bridge's check).

    :param store: returns the pool's store (raises when it is not running).
    """

    def __init__(
        self, scheduler: Scheduler[WorkerServer], store: Callable[[], SessionStoreRef]
    ) -> None:
        self._scheduler = scheduler
        self._store = store
        self._live: dict[str, WorkerServer] = {}
        self._gone: OrderedDict[str, str] = OrderedDict()
        #: Calls running now, by session (no key: none).
        self._running: dict[str, int] = {}
        #: Sessions that ended lately, as (id, created_at) (an id may be used
        #: again): a call that looked its session up before the end, and had
        #: not taken its slot yet, raises SessionNotFound instead of running.
        self._ended: OrderedDict[tuple[str, float], None] = OrderedDict()
        #: The wire form of a session's metadata, by (id, created_at).
        self._metadata: OrderedDict[tuple[str, float], bytes] = OrderedDict()
        #: Calls in flight by (worker id, session id): from before the request
        #: is sent until its reply (a cancelled call's: until the worker ended it).
        self._serving: dict[tuple[str, str], int] = {}
        #: The worker each session was last pinned to here, as (pin id, created_at).
        self._pins: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def metadata_of(self, record: SessionRecord) -> bytes:
        """The session's metadata as the worker receives it, encoded once per session."""
        if not record.metadata:
            return b""
        key = (record.session_id, record.created_at)
        cache = self._metadata
        data = cache.get(key)
        if data is None:
            data = cache[key] = encode_metadata(record.metadata)
            if len(cache) > METADATA_KEPT:
                cache.popitem(last=False)
        else:
            cache.move_to_end(key)
        return data

    # -- calls in flight ----------------------------------------------------------------

    def in_use(self, session_id: str) -> bool:
        """True while a call of ``session_id`` runs (the store does not expire it then)."""
        return session_id in self._running

    def call_began(self, session_id: str) -> None:
        """A call of ``session_id`` began (after its touch)."""
        self._running[session_id] = self._running.get(session_id, 0) + 1

    def last_call(self, session_id: str) -> bool:
        """True if one call of ``session_id`` runs here (the one that asks)."""
        return self._running.get(session_id) == 1

    def call_ended(self, session_id: str) -> bool:
        """A call of ``session_id`` ended; True if it was the last one running."""
        left = self._running[session_id] - 1
        if left:
            self._running[session_id] = left
            return False
        del self._running[session_id]
        return True

    # -- who may touch a session (the bridge's check) ----------------------------------

    def serving_began(self, worker_id: str, session_id: str) -> None:
        """A call of ``session_id`` is about to be sent to the worker ``worker_id``."""
        key = (worker_id, session_id)
        self._serving[key] = self._serving.get(key, 0) + 1

    def serving_ended(self, worker_id: str, session_id: str) -> None:
        """That call is over: its reply (or failure) came, or the worker ended it."""
        key = (worker_id, session_id)
        left = self._serving[key] - 1
        if left:
            self._serving[key] = left
        else:
            del self._serving[key]

    def may_touch(self, worker_id: str, session_id: str) -> bool:
        """Whether the worker ``worker_id`` serves ``session_id`` now (the bridge's check).

        True while a call of the session is in flight on it (sent, not yet
        answered), or while the session is pinned to it (its current process,
        in service), as this pool last pinned it. Two dict lookups, no store.
        """
        if (worker_id, session_id) in self._serving:
            return True
        pinned = self._pins.get(session_id)
        if pinned is None:
            return False
        worker = self._live.get(pinned[0])
        return worker is not None and worker.worker_id == worker_id

    def _pinned(self, record: SessionRecord, worker: WorkerServer) -> None:
        pins = self._pins
        session_id = record.session_id
        pins[session_id] = (worker.pin_id, record.created_at)
        pins.move_to_end(session_id)
        if len(pins) > PINS_KEPT:
            pins.popitem(last=False)

    # -- what the tree tells ------------------------------------------------------------

    def worker_ready(self, worker: WorkerServer) -> None:
        """``worker`` takes calls: sessions may be pinned to it."""
        self._live[worker.pin_id] = worker

    def worker_left(self, worker: WorkerServer) -> None:
        """``worker`` takes no more calls: strict sessions pinned to it are lost."""
        pin = worker.pin_id
        if self._live.get(pin) is worker:
            del self._live[pin]
        reason = worker.left_because or "it left the pool"
        self._gone[pin] = reason
        if len(self._gone) > GONE_KEPT:
            self._gone.popitem(last=False)
        self._scheduler.lost(worker, reason)

    def why_gone(self, pin: str) -> str:
        """Why the worker ``pin`` takes no calls (it may be another pool's)."""
        reason = self._gone.get(pin)
        if reason is not None:
            return reason
        if self._live.get(pin) is not None:
            return "it takes no calls"
        return "it is not one of this pool's workers (another pool's, or gone long ago)"

    def ended(self, record: SessionRecord, why: EndReason) -> None:
        """The store's ``on_end``: the worker the session was pinned to frees its state.

        Calls of it still waiting for a slot here raise ``SessionNotFound``.
        """
        session_id = record.session_id
        key = (session_id, record.created_at)
        self._metadata.pop(key, None)
        pinned = self._pins.get(session_id)
        if pinned is not None and pinned[1] == record.created_at:
            del self._pins[session_id]
        self._ended[key] = None
        if len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)
        self._tell_end(record.worker_id, session_id)

    def _tell_end(self, pin: str | None, session_id: str) -> None:
        # The worker runs Adapter.on_session_end once its calls of the session ended.
        worker = None if pin is None else self._live.get(pin)
        if worker is not None and worker.mux is not None:
            worker.mux.end_session(session_id)

    def _check_not_ended(self, record: SessionRecord, worker: WorkerServer) -> WorkerServer:
        if self._ended and (record.session_id, record.created_at) in self._ended:
            self._scheduler.checkin(worker)
            raise SessionNotFound(record.session_id, "it was deleted while the call waited")
        return worker

    # -- a session's call ---------------------------------------------------------------

    async def take_slot(
        self,
        record: SessionRecord,
        on_wait: Callable[[int], object] | None,
        deadline: float | None,
    ) -> WorkerServer:
        """A slot for a call of the session ``record``, as its affinity says; pin it there.

        ``hint``: its worker if that has a free slot, else the first free one
        (the session is pinned there). ``strict_queue``: a slot of its worker,
        waiting in order. ``strict_fail_fast``: a free slot of its worker, or
        :class:`~snakepit.errors.WorkerBusy` at once. A session not pinned yet
        is pinned to the first free worker (a compare-and-set: of two calls
        that pin it at once, the second goes where the first one pinned it).

        A hint session that moves from a worker still in service tells that
        one the session ended there (its ``on_session_end`` frees what it
        kept). A session deleted while its call waited raises
        :class:`~snakepit.errors.SessionNotFound` (the slot goes back).

        :raises SessionWorkerLost: a strict session's worker left service.
        :raises WorkerBusy: a ``strict_fail_fast`` session's worker has no free slot.
        :raises SessionNotFound: it was deleted while the call waited.
        :raises QueueFull, QueueTimeout, PoolClosed, PoolDegraded: as an unpinned call
            (QueueTimeout too when the store did not answer a pin before ``deadline``).
        """
        worker = self._check_not_ended(record, await self._take(record, on_wait, deadline))
        self._pinned(record, worker)  # where the session is pinned now
        return worker

    async def _take(
        self,
        record: SessionRecord,
        on_wait: Callable[[int], object] | None,
        deadline: float | None,
    ) -> WorkerServer:
        scheduler = self._scheduler
        session_id = record.session_id
        while True:
            pin = record.worker_id
            strict = record.affinity != "hint"
            worker = None if pin is None else self._live.get(pin)
            if worker is not None and not worker.usable:
                worker = None
            if strict and pin is not None:
                if worker is None:
                    raise SessionWorkerLost(session_id, pin, self.why_gone(pin))
                if record.affinity == "strict_queue":
                    try:
                        return await scheduler.checkout_pinned(worker, on_wait, deadline=deadline)
                    except PinnedWorkerGone as exc:
                        raise SessionWorkerLost(session_id, pin, exc.reason) from None
                if scheduler.try_take(worker):
                    return worker
                raise WorkerBusy(session_id, pin)
            if worker is not None and scheduler.try_take(worker):
                return worker
            # Never ahead: a session's call runs where it is pinned, at once.
            taken = await scheduler.checkout(on_wait, deadline=deadline, ahead=False)
            if taken.pin_id == pin:
                return taken  # hint: its own worker came free first
            try:
                record = await self._store().pin(
                    session_id, taken.pin_id, only_if_pinned_to=pin, timeout=time_left(deadline)
                )
            except CallTimeout as exc:
                scheduler.checkin(taken)
                raise store_timeout(exc, "a pin") from None
            except BaseException:
                scheduler.checkin(taken)
                raise
            if record.worker_id == taken.pin_id:
                if pin is not None and worker is not None:
                    self._tell_end(pin, session_id)  # it moved: the old worker frees its state
                return taken
            # Another call pinned it meanwhile: go where that one did (a hint
            # call that ran here would leave state in a worker the session's
            # end is never sent to).
            scheduler.checkin(taken)


def store_not_running() -> SessionError:
    """The error for a session used while the pool's store is not running."""
    return SessionError("the pool's session store is not running (restarting after a crash?)")
