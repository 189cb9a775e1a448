"""The events a supervisor publishes (see ``SupervisorRef.subscribe``)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, TypeAlias

from ._reasons import ExitReason
from ._server import ServerRef

__all__ = (
    "ChildExited",
    "ChildStartFailed",
    "ChildStarted",
    "ChildTerminated",
    "RestartIntensityReached",
    "SupervisorEvent",
)


@dataclass(frozen=True, slots=True)
class ChildStarted:
    """A child finished ``init``; ``generation`` > 0 means it is a restart."""

    supervisor: ServerRef[Any, Any]
    child_id: Hashable
    ref: ServerRef[Any, Any]
    generation: int
    at: float


@dataclass(frozen=True, slots=True)
class ChildExited:
    """A child exited on its own (crash, kill, normal return).

    ``restarting`` is True when a restart follows: the restart type asks for
    one and the restart intensity allows it (when it does not, a
    :class:`RestartIntensityReached` follows instead).
    """

    supervisor: ServerRef[Any, Any]
    child_id: Hashable
    ref: ServerRef[Any, Any]
    reason: ExitReason
    restarting: bool
    at: float


@dataclass(frozen=True, slots=True)
class ChildTerminated:
    """The supervisor stopped a child (strategy, ``terminate_child`` or shutdown)."""

    supervisor: ServerRef[Any, Any]
    child_id: Hashable
    ref: ServerRef[Any, Any]
    reason: ExitReason
    at: float


@dataclass(frozen=True, slots=True)
class ChildStartFailed:
    """A child's (re)start raised; it counts against the restart intensity."""

    supervisor: ServerRef[Any, Any]
    child_id: Hashable
    generation: int
    error: BaseException
    at: float


@dataclass(frozen=True, slots=True)
class RestartIntensityReached:
    """More than ``max_restarts`` in ``max_seconds``: the supervisor is giving up."""

    supervisor: ServerRef[Any, Any]
    max_restarts: int
    max_seconds: float
    at: float


#: Any event a supervisor publishes.
SupervisorEvent: TypeAlias = (
    ChildStarted | ChildExited | ChildTerminated | ChildStartFailed | RestartIntensityReached
)
