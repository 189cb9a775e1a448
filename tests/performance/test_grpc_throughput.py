"""gRPC throughput: many small calls, a large payload, a long stream, within generous bounds.

The bounds here only catch a pool that stalls, crawls, drops or reorders; the
real numbers live in ``benchmarks/``. Each test runs one small pool of the
ready-made Echo adapter and takes well under a second on a 2-core machine.
"""

from __future__ import annotations

import os
import time
from contextlib import aclosing
from typing import Any

import anyio
import pytest

from snakepit.pool import Pool

from ._load import run_calls

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

ADAPTER = "snakepit.testing.adapters:Echo"
SIZE = 2
#: CALLS noop calls, IN_FLIGHT at a time, within BOUND seconds (a generous bound).
CALLS = 2000
IN_FLIGHT = 64
BOUND = 60.0
#: Deadline of the other tests.
DEADLINE = 30.0
MIB = 1024 * 1024
#: Items of the long streams.
ITEMS = 4_000
SYNC_ITEMS = 600


def make_pool(**options: Any) -> Pool:
    options.setdefault("size", SIZE)
    return Pool(ADAPTER, **options)


async def test_noop_calls_complete_within_a_generous_bound() -> None:
    # 64 calls really in flight: 32 slots on each of the 2 workers
    async with make_pool(max_concurrency=IN_FLIGHT // SIZE) as pool:
        results, elapsed = await run_calls(
            lambda i: pool.execute("noop"), calls=CALLS, in_flight=IN_FLIGHT, bound=BOUND
        )
        assert results == dict.fromkeys(range(CALLS))  # every call, each returning None
        stats = pool.stats()
        assert (stats.requests, stats.errors, stats.crashes) == (CALLS, 0, 0), stats
        assert (stats.queued, stats.idle) == (0, IN_FLIGHT), stats
        print(f"{CALLS} noop calls, {IN_FLIGHT} in flight: {CALLS / elapsed:.0f}/s")


async def test_one_mib_round_trip_returns_identical_bytes() -> None:
    payload = os.urandom(MIB)
    nested = {"blob": payload, "tail": [1, "two", None]}
    async with make_pool(size=1) as pool:
        with anyio.fail_after(DEADLINE):
            for tool in ("echo", "aecho"):  # a sync and an async tool
                for _ in range(2):
                    result = await pool.execute(tool, {"value": payload})
                    assert type(result) is bytes, tool
                    assert result == payload, tool
                assert await pool.execute(tool, {"value": nested}) == nested, tool


async def test_a_long_stream_arrives_complete_and_in_order() -> None:
    # An async generator (its items go out in batches), and a sync one, whose every
    # item is a round trip to a tool thread: fewer items, to keep this test short.
    async with make_pool(size=1) as pool:
        with anyio.fail_after(DEADLINE):
            for tool, n in (("acount", ITEMS), ("count", SYNC_ITEMS)):
                start = time.perf_counter()
                async with aclosing(pool.stream(tool, {"n": n})) as items:
                    received = [item async for item in items]
                elapsed = time.perf_counter() - start
                assert len(received) == n, tool
                assert received == list(range(n)), tool
                print(f"{n} stream items ({tool}): {n / elapsed:.0f}/s")
            stats = pool.stats()
            assert (stats.requests, stats.errors, stats.idle) == (2, 0, 1), stats
