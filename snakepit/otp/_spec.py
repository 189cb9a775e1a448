"""Child specs and supervisor specs: frozen, validated at construction."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from snakepit.errors import ConfigError, InvalidChildSpec, check_int, is_number

if TYPE_CHECKING:
    from ._registry import Registry
    from ._server import GenServer

__all__ = (
    "ChildShutdown",
    "ChildSpec",
    "ChildType",
    "DynamicSupervisorSpec",
    "Restart",
    "Strategy",
    "SupervisorSpec",
)

#: When a child is restarted: always, only after an abnormal exit, or never.
Restart: TypeAlias = Literal["permanent", "transient", "temporary"]
#: How a child is stopped: seconds of grace before a kill, a kill at once, or no limit.
#: (Named ``ChildShutdown`` so as not to clash with the :class:`Shutdown` exit reason.)
ChildShutdown: TypeAlias = float | Literal["brutal_kill", "infinity"]
#: Whether a child is a worker or a supervisor (sets the default shutdown).
ChildType: TypeAlias = Literal["worker", "supervisor"]
#: Which children are restarted when one exits.
Strategy: TypeAlias = Literal["one_for_one", "one_for_all", "rest_for_one"]

_RESTARTS = ("permanent", "transient", "temporary")
_TYPES = ("worker", "supervisor")
_STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How a supervisor starts, restarts and stops one child.

    :param id: unique within the supervisor (any hashable; usually a str).
    :param start: a :class:`~snakepit.otp.GenServer` subclass, or any
        zero-argument callable returning a fresh GenServer instance.
    :param arg: passed to the child's ``init``.
    :param restart: ``"permanent"`` (always restarted), ``"transient"`` (only
        after an abnormal exit) or ``"temporary"`` (never; removed on exit).
    :param shutdown: seconds to wait for a graceful stop before killing,
        ``"brutal_kill"`` or ``"infinity"``; default 5 s for a worker,
        ``"infinity"`` for a supervisor (OTP's defaults).
    :param type: ``"worker"`` or ``"supervisor"``; inferred from ``start``.
    :param name: registered in the supervisor's registry while alive.
    :raises InvalidChildSpec: naming the field that is wrong.
    """

    id: Hashable
    start: Callable[[], GenServer[Any, Any, Any]]
    arg: Any = None
    restart: Restart = "permanent"
    shutdown: ChildShutdown | None = None
    type: ChildType | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        try:
            hash(self.id)
        except TypeError:
            raise InvalidChildSpec("id", f"must be hashable, got {self.id!r}") from None
        if self.id is None or self.id == "":
            raise InvalidChildSpec("id", "must not be None or empty")
        if not callable(self.start):
            raise InvalidChildSpec(
                "start", f"must be a GenServer class or factory, got {self.start!r}"
            )
        if self.restart not in _RESTARTS:
            raise InvalidChildSpec("restart", f"must be one of {_RESTARTS}, got {self.restart!r}")
        kind = self.type
        if kind is None:
            kind = getattr(self.start, "_child_type", "worker")
            object.__setattr__(self, "type", kind)
        elif kind not in _TYPES:
            raise InvalidChildSpec("type", f"must be one of {_TYPES}, got {kind!r}")
        if self.shutdown is None:
            object.__setattr__(self, "shutdown", "infinity" if kind == "supervisor" else 5.0)
        elif self.shutdown not in ("brutal_kill", "infinity") and not (
            is_number(self.shutdown) and 0 <= self.shutdown < math.inf
        ):
            raise InvalidChildSpec(
                "shutdown",
                f"must be seconds >= 0, 'brutal_kill' or 'infinity', got {self.shutdown!r}",
            )
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise InvalidChildSpec("name", f"must be a non-empty string, got {self.name!r}")


def _check_intensity(max_restarts: object, max_seconds: object) -> None:
    check_int("max_restarts", max_restarts, 0)
    if not (is_number(max_seconds) and 0 < max_seconds < math.inf):
        raise ConfigError("max_seconds", f"must be a number > 0, got {max_seconds!r}")


@dataclass(frozen=True, slots=True)
class SupervisorSpec:
    """A supervisor's children, strategy and restart intensity.

    More than ``max_restarts`` restarts within ``max_seconds`` makes the
    supervisor stop its children and exit with
    :class:`~snakepit.errors.ReachedMaxRestartIntensity` (OTP defaults: 3 in 5 s).

    :raises ConfigError: a bad strategy or intensity, children that are not
        ChildSpecs, or a child ``name`` without a ``registry``.
    :raises DuplicateChild: two children share an id.
    """

    children: Sequence[ChildSpec] = ()
    strategy: Strategy = "one_for_one"
    max_restarts: int = 3
    max_seconds: float = 5.0
    registry: Registry | None = None
    _ids: frozenset[Hashable] = field(default=frozenset(), init=False, repr=False)

    def __post_init__(self) -> None:
        from snakepit.errors import DuplicateChild

        if self.strategy not in _STRATEGIES:
            raise ConfigError("strategy", f"must be one of {_STRATEGIES}, got {self.strategy!r}")
        _check_intensity(self.max_restarts, self.max_seconds)
        children = tuple(self.children)
        seen: set[Hashable] = set()
        for child in children:
            if not isinstance(child, ChildSpec):
                raise ConfigError("children", f"expected ChildSpec items, got {child!r}")
            if child.id in seen:
                raise DuplicateChild(child.id)
            seen.add(child.id)
            if child.name is not None and self.registry is None:
                raise ConfigError("registry", f"child {child.id!r} has a name but no registry")
        object.__setattr__(self, "children", children)
        object.__setattr__(self, "_ids", frozenset(seen))


@dataclass(frozen=True, slots=True)
class DynamicSupervisorSpec:
    """A :class:`~snakepit.otp.DynamicSupervisor`'s limits (strategy: one_for_one).

    :param max_children: None for no limit.
    :raises ConfigError: a bad limit or intensity.
    """

    max_children: int | None = None
    max_restarts: int = 3
    max_seconds: float = 5.0
    registry: Registry | None = None

    def __post_init__(self) -> None:
        check_int("max_children", self.max_children, 0, allow_none=True)
        _check_intensity(self.max_restarts, self.max_seconds)
