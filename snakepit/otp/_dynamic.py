"""DynamicSupervisor: children added and removed at run time, one_for_one."""

from __future__ import annotations

from typing import Any

from snakepit.errors import ConfigError, MaxChildrenReached

from ._spec import ChildSpec, DynamicSupervisorSpec
from ._supervisor import Supervisor, _Child

__all__ = ("DynamicSupervisor",)


class DynamicSupervisor(Supervisor):
    """A supervisor that starts with no children and gets them at run time.

    Its argument is a :class:`DynamicSupervisorSpec`. Children are added with
    :meth:`SupervisorRef.start_child` and removed with
    :meth:`SupervisorRef.terminate_child` (by ref or id); ids need not be
    unique, so terminate by ref when they are not. A child that exits and is
    not restarted (temporary, or transient after a normal exit) is removed and
    frees its ``max_children`` place. The strategy is always ``one_for_one``;
    restart intensity applies as for :class:`Supervisor`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._max_children: int | None = None

    async def init(self, arg: Any) -> None:
        """Validate the spec; there are no children to start."""
        spec = DynamicSupervisorSpec() if arg is None else arg
        if not isinstance(spec, DynamicSupervisorSpec):
            raise ConfigError(
                "arg", f"a DynamicSupervisor takes a DynamicSupervisorSpec, got {arg!r}"
            )
        self._configure("one_for_one", spec.max_restarts, spec.max_seconds, spec.registry)
        self._max_children = spec.max_children

    def _admit(self, spec: ChildSpec) -> None:
        limit = self._max_children
        if limit is not None and len(self._children) >= limit:
            raise MaxChildrenReached(limit)

    def _keeps_stopped(self, child: _Child) -> bool:
        return False  # as Elixir's: a child that is not restarted is gone
