"""PoolStats and WorkerInfo: the snapshots a :class:`~snakepit.pool.Pool` gives of itself."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ("PoolStats", "WorkerInfo")


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
    #: Sessions in the pool's store, as far as it knows without asking the
    #: backend (exact for the memory backend; see ``SessionStoreRef.known_count``).
    sessions: int = 0
    #: Calls sent again because the worker they were sent to died before it
    #: started them (they had not run there: see :meth:`Pool.execute`), or
    #: handed them back unstarted as it was recycled, drained or stopped; each
    #: sending also counts in ``requests``.
    resent: int = 0


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
    #: The id a session pinned to this process records (``SessionRecord.worker_id``):
    #: ``w3.1@<run id>``. Not compared (it holds the pool's random run id).
    pin_id: str = field(default="", compare=False)
