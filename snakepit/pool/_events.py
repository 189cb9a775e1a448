"""The events a pool publishes (see :meth:`Pool.subscribe`): its telemetry.

Every event has ``at``, the time it happened on the event loop's clock
(``anyio.current_time()``), so durations between events are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

__all__ = (
    "PoolEvent",
    "PoolGaveUp",
    "RequestOutcome",
    "RequestQueued",
    "RequestStarted",
    "RequestStopped",
    "WorkerExitCause",
    "WorkerExited",
    "WorkerReady",
    "WorkerRecycled",
    "WorkerStartFailed",
    "WorkerStarting",
)

#: How a call ended: a result, an error (raised by the tool, or a bad payload),
#: its timeout, its worker's death, its caller's cancellation, or refused unrun
#: by a stopping worker (it is tried on another one), or rejected before it
#: got a worker (``QueueFull``, ``QueueTimeout``, the pool stopped or degraded).
RequestOutcome: TypeAlias = Literal[
    "ok", "error", "timeout", "crashed", "cancelled", "refused", "rejected"
]


@dataclass(frozen=True, slots=True)
class WorkerStarting:
    """A worker's process is being started; ``generation`` > 0: a replacement."""

    worker_id: str
    generation: int
    at: float


@dataclass(frozen=True, slots=True)
class WorkerReady:
    """A worker reported ready and takes calls; ``startup`` is seconds since it was started."""

    worker_id: str
    pid: int | None
    generation: int
    startup: float
    at: float


@dataclass(frozen=True, slots=True)
class WorkerStartFailed:
    """A worker's process failed before it was ready (its supervisor retries)."""

    worker_id: str
    generation: int
    error: BaseException
    at: float


#: Why a worker's process ended: it died on its own or its Worker server was
#: killed (``"crash"``); the pool killed it after missed health checks
#: (``"unhealthy"``); the pool killed it because a call to it timed out
#: (``"timeout"``); the pool stopped it (``"stopped"``: shutdown, recycling,
#: scaling down). A crash and an unhealthy worker count towards the restart
#: intensity (``max_restarts``); a timeout's replacement does not.
WorkerExitCause: TypeAlias = Literal["crash", "unhealthy", "timeout", "stopped"]


@dataclass(frozen=True, slots=True)
class WorkerExited:
    """A worker's process is gone and reaped.

    ``crashed`` is True when the worker failed: it died on its own, or was
    killed for missing health checks (``cause`` tells which); it is False when
    the pool ended it by its own decision: a call's timeout (``cause``
    ``"timeout"``: it is replaced, and that restart is not counted), shutdown,
    recycling, scaling down (``"stopped"``). ``reason`` says it in words.
    """

    worker_id: str
    pid: int | None
    generation: int
    returncode: int | None
    crashed: bool
    reason: str
    at: float
    cause: WorkerExitCause = "crash"


@dataclass(frozen=True, slots=True)
class WorkerRecycled:
    """A worker reached a recycling limit; its replacement is ready and it is being stopped."""

    worker_id: str
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class RequestQueued:
    """A call found no free slot and waits; ``queue_depth`` counts it."""

    request_id: int
    tool: str
    queue_depth: int
    at: float


@dataclass(frozen=True, slots=True)
class RequestStarted:
    """A call got a worker (it is sent to it); ``waited`` is the seconds it spent queued.

    With ``PoolConfig.prefetch``, a call sent ahead to a busy worker waits
    there to start (the host does not hear when it starts).
    """

    request_id: int
    tool: str
    worker_id: str
    waited: float
    at: float


@dataclass(frozen=True, slots=True)
class RequestStopped:
    """A call ended; ``duration`` is the seconds since it got its worker.

    A call that never got one (rejected, or cancelled while queued) has
    ``worker_id`` ``""`` and ``duration`` the seconds it waited.
    """

    request_id: int
    tool: str
    worker_id: str
    outcome: RequestOutcome
    duration: float
    at: float


@dataclass(frozen=True, slots=True)
class PoolGaveUp:
    """The pool's workers kept crashing (restart intensity): calls now raise ``PoolDegraded``.

    Until :meth:`Pool.restart` brings it back.
    """

    reason: str
    at: float


#: Any event a pool publishes.
PoolEvent: TypeAlias = (
    WorkerStarting
    | WorkerReady
    | WorkerStartFailed
    | WorkerExited
    | WorkerRecycled
    | RequestQueued
    | RequestStarted
    | RequestStopped
    | PoolGaveUp
)
