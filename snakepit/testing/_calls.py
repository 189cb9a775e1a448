"""monitor_call: each call made through a proxy, recorded with its outcome and duration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import anyio

from snakepit.otp import DEFAULT_TIMEOUT, CallTimeout, ServerExited, ServerRef

__all__ = (
    "CallMonitor",
    "CallRecord",
    "monitor_call",
)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call made through a :class:`CallMonitor`.

    ``assert obs.records[0].outcome == "ok"``.
    """

    request: Any
    #: ``"ok"``, ``"timeout"`` (CallTimeout), ``"exited"`` (ServerExited),
    #: ``"error"`` (another exception) or ``"cancelled"``.
    outcome: Literal["ok", "timeout", "exited", "error", "cancelled"]
    #: ``anyio.current_time()`` at the start and at the end of the call.
    started: float
    ended: float
    reply: Any = None
    error: BaseException | None = None

    @property
    def duration(self) -> float:
        """Seconds the call took."""
        return self.ended - self.started


def _outcome(exc: BaseException) -> Literal["timeout", "exited", "error", "cancelled"]:
    if isinstance(exc, CallTimeout):
        return "timeout"
    if isinstance(exc, ServerExited):
        return "exited"
    if isinstance(exc, Exception):
        return "error"
    return "cancelled"


class CallMonitor:
    """A proxy for ``ref.call`` that records each call; made by :func:`monitor_call`.

    ``reply = await obs.call("get")``, then ``obs.records``.
    """

    def __init__(self, ref: ServerRef[Any, Any]) -> None:
        #: The server the calls go to.
        self.ref = ref
        self._records: list[CallRecord] = []
        self._in_flight = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"<CallMonitor of {self.ref!r}: {len(self._records)} calls>"

    @property
    def records(self) -> list[CallRecord]:
        """The finished calls, in the order they ended."""
        return list(self._records)

    @property
    def in_flight(self) -> int:
        """Calls started and not yet ended."""
        return self._in_flight

    async def call(self, request: Any, *, timeout: float | None = DEFAULT_TIMEOUT) -> Any:
        """``ref.call(request, timeout=timeout)``, recorded; raises what it raises.

        :raises anyio.ClosedResourceError: the ``monitor_call`` block has ended.
        """
        if self._closed:
            raise anyio.ClosedResourceError("the monitor_call block has ended")
        started = anyio.current_time()
        self._in_flight += 1
        try:
            reply = await self.ref.call(request, timeout=timeout)
        except BaseException as exc:
            outcome = _outcome(exc)
            self._add(CallRecord(request, outcome, started, anyio.current_time(), error=exc))
            raise
        self._add(CallRecord(request, "ok", started, anyio.current_time(), reply=reply))
        return reply

    def _add(self, record: CallRecord) -> None:
        self._in_flight -= 1
        self._records.append(record)

    def assert_all_ok(self) -> None:
        """Assert that every recorded call replied (none timed out, failed or was cut off)."""
        bad = [r for r in self._records if r.outcome != "ok"]
        if bad:
            shown = "; ".join(f"{r.request!r}: {r.outcome} ({r.error!r})" for r in bad[:5])
            raise AssertionError(
                f"expected every call to {self.ref!r} to succeed; {len(bad)} of "
                f"{len(self._records)} did not: {shown}"
            )


@asynccontextmanager
async def monitor_call(ref: ServerRef[Any, Any]) -> AsyncIterator[CallMonitor]:
    """Record each call made through the yielded proxy: start, end, outcome, duration.

    Calls go through ``obs.call`` (the ref itself is not changed, so calls made
    on it directly are not recorded)::

        async with monitor_call(ref) as obs:
            await obs.call("get")
        assert obs.records[0].outcome == "ok"
        assert obs.records[0].duration < 1
    """
    obs = CallMonitor(ref)
    try:
        yield obs
    finally:
        obs._closed = True
