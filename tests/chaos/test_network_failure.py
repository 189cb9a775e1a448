"""Faults on the way to the workers: the seed's bar, and what the callers see.

A FaultInjecting pool whose calls kill their worker half of the time (as a
lost connection does) keeps at least 75 % of the calls successful with
``retries=``; without retries each failure is a typed ``WorkerCrashed``,
never a hang, and the pool comes back to full size.
"""

from __future__ import annotations

import random

import anyio
import pytest

from snakepit.errors import WorkerCrashed
from snakepit.pool import Pool

from ._support import ROOT

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

ADAPTER = "snakepit.testing.adapters:FaultInjecting"
#: Calls made; each costs a worker restart half of the time, so few of them.
CALLS = 8


def fault_pool(seed: int, rate: float) -> Pool:
    env = {"SNAKEPIT_FAULT_RATE": str(rate), "SNAKEPIT_FAULT_SEED": str(seed)}
    # Every failure is a restart: room for all of them in the intensity window.
    return Pool(ADAPTER, size=2, cwd=ROOT, env=env, max_restarts=10 * CALLS)


async def test_half_the_calls_failing_with_retries_keeps_75_percent(seed: int) -> None:
    rng = random.Random(seed)
    outcomes: list[str] = []

    async def call(i: int) -> None:
        try:
            value = await pool.execute("flaky", {"value": i, "kind": "exit"}, retries=5)
        except WorkerCrashed:
            outcomes.append("crashed")
        else:
            assert value == i
            outcomes.append("ok")

    async with fault_pool(rng.randrange(2**32), 0.5) as pool:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(CALLS):
                    tg.start_soon(call, i)
            await pool.wait_ready()
        ok = outcomes.count("ok")
        assert len(outcomes) == CALLS
        assert ok >= 0.75 * CALLS, f"only {ok}/{CALLS} calls succeeded (seed {seed})"
        assert pool.stats().ready == 2


async def test_without_retries_each_failure_is_a_typed_crash(seed: int) -> None:
    async with fault_pool(seed, 1.0) as pool:
        with anyio.fail_after(30):
            with pytest.raises(WorkerCrashed, match="exit code 70"):
                await pool.execute("flaky", {"value": 1, "kind": "exit"})
            await pool.wait_ready()
        assert pool.stats().crashes == 1
