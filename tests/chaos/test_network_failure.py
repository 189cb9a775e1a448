"""Faults on the way to the workers: the seed's chaos example, and what the callers see.

The seed's "pool recovers from worker failures": a pool of 4 FaultInjecting
workers whose calls end their worker process half of the time (as a lost
connection does); of 20 requests, each tried again after a failure, at least
15 (75 %) succeed, every failure is a worker's death, and the pool comes back
to full size and serves (the harness's ``inject_random_failures`` and
``assert_chaos_resilient``). Without retries each failure is a typed
``WorkerCrashed``, never a hang.
"""

from __future__ import annotations

import random
from typing import Any

import anyio
import pytest

from snakepit.errors import WorkerCrashed
from snakepit.pool import Pool, WorkerExited
from snakepit.testing import FaultReport, PoolEvents, assert_chaos_resilient, inject_random_failures

from ._support import ROOT

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

ADAPTER = "snakepit.testing.adapters:FaultInjecting"
#: The seed's example: workers, requests, the fault rate, the share that must succeed.
SIZE = 4
CALLS = 20
RATE = 0.5
AT_LEAST = 0.75
#: Tries after a failed one. A call fails 1 time in 2 ** (RETRIES + 1), so the bar
#: (at most 5 failed calls of 20) is missed about once in 40 000 runs; each failed
#: try is a worker restart, about 20 in all.
RETRIES = 4
#: The worker's exit code for a "flaky" call that failed (FaultInjecting's os._exit(70)).
FAULT_EXIT = 70


def fault_pool(seed: int, rate: float, **options: Any) -> Pool:
    env = {"SNAKEPIT_FAULT_RATE": str(rate), "SNAKEPIT_FAULT_SEED": str(seed)}
    return Pool(ADAPTER, cwd=ROOT, env=env, **options)


async def test_pool_recovers_from_worker_failures(
    chaos_rng: random.Random, pool_events: PoolEvents
) -> None:
    # Each failed try is a restart: room for all of them in the intensity window.
    limit = (RETRIES + 1) * CALLS
    pool = fault_pool(chaos_rng.randrange(2**32), RATE, size=SIZE, max_restarts=limit)
    pool_events.attach(pool)
    reports: list[FaultReport] = []

    async def worker_failures(p: Pool) -> None:
        # rate=None: the workers draw the faults, and "flaky" fails by ending the process
        report = await inject_random_failures(
            p, rate=None, tool="flaky", calls=CALLS, retries=RETRIES
        )
        reports.append(report)

    async def serves(p: Pool) -> None:
        assert await p.execute("echo", {"value": "after"}) == "after"

    async with pool:
        await assert_chaos_resilient(pool, worker_failures, serves, timeout=30)
        (report,) = reports
        report.assert_success_rate(AT_LEAST)
        assert report.ok >= 15, report  # the seed's own line
        assert report.ok + report.failed == CALLS, report
        assert report.attempts == report.ok + report.faults, report
        # every failed try was its worker's death, and every dead worker was replaced
        pool_events.assert_event(
            WorkerExited, count=report.faults, crashed=True, returncode=FAULT_EXIT
        )
        faults = report.faults
        assert pool_events.count(WorkerExited) == faults
        stats = pool.stats()
        assert (stats.ready, stats.idle, stats.queued) == (SIZE, SIZE, 0), stats
        assert (stats.crashes, stats.restarts, stats.errors) == (faults, faults, 0), stats


async def test_without_retries_each_failure_is_a_typed_crash(seed: int) -> None:
    async with fault_pool(seed, 1.0, size=2) as pool:
        with anyio.fail_after(30):
            with pytest.raises(WorkerCrashed, match="exit code 70"):
                await pool.execute("flaky", {"value": 1, "kind": "exit"})
            await pool.wait_ready()
        assert pool.stats().crashes == 1
