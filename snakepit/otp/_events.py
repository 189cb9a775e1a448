"""The events a supervisor publishes (see ``SupervisorRef.subscribe``)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, TypeAlias

from ._reasons import ExitReason
from ._ref import ServerRef

__all__ = (
    "ChildExited",
    "ChildStartFailed",
    "ChildStarted",
    "ChildTerminated",
    "RestartIntensityReached",
    "SupervisorEvent",
)


@dataclass(frozen=True, slots=True)
class _Event:
    #: The supervisor that publishes it.
    supervisor: ServerRef[Any, Any]


@dataclass(frozen=True, slots=True)
class _ChildEvent(_Event):
    child_id: Hashable


@dataclass(frozen=True, slots=True)
class _InstanceEvent(_ChildEvent):
    #: The child's instance it is about.
    ref: ServerRef[Any, Any]


@dataclass(frozen=True, slots=True)
class ChildStarted(_InstanceEvent):
    """A child finished ``init``; ``generation`` > 0 means it is a restart."""

    generation: int
    at: float


@dataclass(frozen=True, slots=True)
class ChildExited(_InstanceEvent):
    """A child exited on its own (crash, kill, normal return).

    ``restarting`` is True when a restart follows: the restart type asks for
    one and the restart intensity allows it (when it does not, a
    :class:`RestartIntensityReached` follows instead).
    """

    reason: ExitReason
    restarting: bool
    at: float


@dataclass(frozen=True, slots=True)
class ChildTerminated(_InstanceEvent):
    """The supervisor stopped a child (strategy, ``terminate_child`` or shutdown).

    ``reason`` is how the instance ended: ``"shutdown"``, ``"killed"`` (a
    ``brutal_kill``, or a stop past its ``shutdown``), or its own exit reason
    if it died before the supervisor got to it.
    """

    reason: ExitReason
    at: float


@dataclass(frozen=True, slots=True)
class ChildStartFailed(_ChildEvent):
    """A child's (re)start raised; it counts against the restart intensity."""

    generation: int
    error: BaseException
    at: float


@dataclass(frozen=True, slots=True)
class RestartIntensityReached(_Event):
    """More than ``max_restarts`` in ``max_seconds``: the supervisor is giving up."""

    max_restarts: int
    max_seconds: float
    at: float


#: Any event a supervisor publishes.
SupervisorEvent: TypeAlias = (
    ChildStarted | ChildExited | ChildTerminated | ChildStartFailed | RestartIntensityReached
)
