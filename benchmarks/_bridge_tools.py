"""The adapter of ``sessions.py``: HostCaller, plus tools that use their session's variables.

``bridge_set`` writes a variable through the worker's bridge (what a tool's
variable write costs, end to end); the ``time_*`` tools time a loop of
reads or writes inside the worker (``time.perf_counter``), so a row shows
what one costs a tool, without the call that carries the loop.
"""

from __future__ import annotations

import time
from typing import Any

from snakepit.testing.adapters import HostCaller
from snakepit.worker import Context, tool


def _variables(ctx: Context) -> Any:
    assert ctx.session is not None, "called in a session"
    return ctx.session.variables


class BridgeCaller(HostCaller):
    """HostCaller (``noop``, ``call_host``...), plus ``bridge_set`` and the ``time_*`` loops."""

    @tool
    async def bridge_set(self, ctx: Context, name: str, value: Any) -> int:
        """Set the variable ``name`` of the call's session to ``value``; its new version."""
        version: int = await _variables(ctx).set(name, value)
        return version

    @tool
    def time_reads(self, ctx: Context, name: str, n: int) -> float:
        """µs per ``get(name)`` from a sync tool, ``n`` in a row (after the first: cached)."""
        variables = _variables(ctx)
        variables.get(name)
        start = time.perf_counter()
        for _ in range(n):
            variables.get(name)
        return (time.perf_counter() - start) / n * 1e6

    @tool
    async def time_reads_async(self, ctx: Context, name: str, n: int) -> float:
        """µs per ``await get(name)`` from an async tool (cached after the first)."""
        variables = _variables(ctx)
        await variables.get(name)
        start = time.perf_counter()
        for _ in range(n):
            await variables.get(name)
        return (time.perf_counter() - start) / n * 1e6

    @tool
    async def time_cold_reads(self, ctx: Context, name: str, n: int) -> float:
        """µs per ``await get(name)`` with the worker's cache emptied before each (a round trip)."""
        variables = _variables(ctx)
        cache = ctx._bridge.cache
        total = 0.0
        for _ in range(n):
            cache.drop(ctx.session_id, name)
            start = time.perf_counter()
            await variables.get(name)
            total += time.perf_counter() - start
        return total / n * 1e6

    @tool
    async def time_sets(self, ctx: Context, name: str, n: int) -> float:
        """µs per ``await set(name, i)`` from an async tool, ``n`` in a row."""
        variables = _variables(ctx)
        start = time.perf_counter()
        for i in range(n):
            await variables.set(name, i)
        return (time.perf_counter() - start) / n * 1e6
