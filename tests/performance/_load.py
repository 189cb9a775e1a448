"""A closed-loop load: numbered calls, a fixed number in flight, under a generous bound."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio


async def run_calls(
    call: Callable[[int], Awaitable[Any]], *, calls: int, in_flight: int, bound: float
) -> tuple[dict[int, Any], float]:
    """Make ``calls`` calls, ``in_flight`` at a time; return each result by number and the time.

    ``in_flight`` runners each take the next number as soon as their last call
    returned, so that many calls are in flight until the last ones.

    :raises AssertionError: not every call was done within ``bound`` seconds.
    """
    results: dict[int, Any] = {}
    numbers = iter(range(calls))

    async def runner() -> None:
        for i in numbers:  # shared: each runner takes the next number
            results[i] = await call(i)

    start = time.perf_counter()
    with anyio.move_on_after(bound) as scope:
        async with anyio.create_task_group() as tg:
            for _ in range(in_flight):
                tg.start_soon(runner)
    elapsed = time.perf_counter() - start
    assert not scope.cancelled_caught, f"only {len(results)}/{calls} calls in {bound}s"
    return results, elapsed
