"""Monitors: one DOWN notice per monitor, with the exit reason."""

from __future__ import annotations

from typing import Any

import anyio

from ._reasons import ExitReason
from ._ref import ServerRef

__all__ = ("Monitor", "monitor")


class Monitor:
    """Watches one server and delivers exactly one DOWN notice: its exit reason.

    Create it with :func:`monitor`. Use it as ``async with monitor(ref) as m:``
    to have it removed on exit of the block.
    """

    __slots__ = ("_event", "_reason", "_ref")

    def __init__(self, ref: ServerRef[Any, Any]) -> None:
        self._ref = ref
        self._reason: ExitReason | None = None
        self._event = anyio.Event()

    def __repr__(self) -> str:
        return f"<Monitor of {self._ref!r}>"

    @property
    def ref(self) -> ServerRef[Any, Any]:
        """The monitored server."""
        return self._ref

    @property
    def reason(self) -> ExitReason | None:
        """The exit reason once DOWN was delivered, else None."""
        return self._reason

    async def down(self) -> ExitReason:
        """Wait for the monitored server to exit and return its exit reason.

        Returns at once (after a checkpoint) if it already has. Wrap it in
        ``anyio.fail_after`` for a deadline.
        """
        await self._event.wait()
        assert self._reason is not None
        return self._reason

    def demonitor(self) -> None:
        """Stop watching; :meth:`down` then never returns unless DOWN already came."""
        self._ref.unlink(self._fire)

    def _fire(self, ref: ServerRef[Any, Any], reason: ExitReason) -> None:
        # A link of the monitored server (ServerRef.link): called once, at its exit.
        if self._reason is None:
            self._reason = reason
            self._event.set()

    async def __aenter__(self) -> Monitor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.demonitor()


def monitor(ref: ServerRef[Any, Any]) -> Monitor:
    """Monitor ``ref``: the returned :class:`Monitor` gets exactly one DOWN.

    For an already-dead ref, DOWN is delivered at once with its exit reason
    (as in OTP, where monitoring a dead pid yields ``noproc`` immediately).
    """
    mon = Monitor(ref)
    ref.link(mon._fire)  # a dead ref: DOWN at once
    return mon
