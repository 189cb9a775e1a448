"""A pool leaves nothing of its event loop behind once the loop is closed."""

from __future__ import annotations

import asyncio
import gc
import weakref

from snakepit.pool import InProcessLauncher, Pool


def test_the_loops_of_closed_pools_are_let_go() -> None:
    # grpc.aio binds every loop that makes a grpc object to its poller, in a
    # dict it never prunes; with the loop it kept the pool, its tasks and its
    # connections for good (one loop per test in a suite). A pool starting
    # drops the closed ones.
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []
    launcher = InProcessLauncher()

    async def run() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        adapter = "snakepit.testing.adapters:Echo"
        async with Pool(adapter=adapter, size=1, launcher=launcher) as pool:
            assert await pool.execute("echo", {"value": 1}, timeout=60) == 1

    try:
        for _ in range(3):
            asyncio.run(run())
    finally:
        launcher.close()
    gc.collect()
    assert [loop() is None for loop in loops] == [True, True, False]  # the last: not yet
