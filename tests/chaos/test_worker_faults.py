"""Chaos beyond a plain kill: a frozen worker, an outside SIGTERM, kills past the restart intensity.

Every wait is event-driven (a WorkerServer's exit, ``pool.wait_ready()``,
the workers supervisor's ``wait()``, call completions) and has a deadline.
"""

from __future__ import annotations

import os
import random
import signal
from collections import Counter

import anyio
import pytest

from snakepit.errors import ExecutionTimeout, PoolDegraded, WorkerError
from tests._procs import descendant_pids

from ._support import (
    CALL_DEADLINE,
    RECOVERY_DEADLINE,
    TEST_DEADLINE,
    TYPED,
    kill_and_wait_replaced,
    live_workers,
    make_pool,
    pid_of,
)

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio


class TestFaults:
    """Frozen; stopped from outside; killed faster than the restart intensity allows."""

    async def test_frozen_worker_times_out_and_is_replaced(self) -> None:
        before = descendant_pids()
        outcome: list[BaseException] = []
        async with make_pool(size=1, max_concurrency=3) as pool:
            (worker,) = live_workers(pool)
            os.kill(pid_of(worker), signal.SIGSTOP)  # alive, but answers nothing

            async def call(i: int) -> None:
                try:
                    await pool.execute("echo", {"value": i}, timeout=0.3)
                except Exception as exc:
                    outcome.append(exc)

            with anyio.fail_after(RECOVERY_DEADLINE):
                async with anyio.create_task_group() as tg:
                    for i in range(3):
                        tg.start_soon(call, i)
                await worker.ref.wait()  # retired: killed (SIGKILL works on a stopped one)
                await pool.wait_ready(timeout=None)
            assert len(outcome) == 3
            assert all(isinstance(e, ExecutionTimeout) for e in outcome), outcome
            with anyio.fail_after(CALL_DEADLINE):
                assert await pool.execute("echo", {"value": 1}, timeout=10) == 1
            stats = pool.stats()
            assert (stats.ready, stats.timeouts, stats.restarts) == (1, 3, 1), stats
        assert descendant_pids() - before == set()

    async def test_kills_beyond_the_restart_intensity_degrade_the_pool(self, seed: int) -> None:
        """Every caller ends (PoolDegraded once the tree gave up); nothing is left running."""
        rng = random.Random(seed)
        tag = f"[seed {seed}]"
        before = descendant_pids()
        outcomes: Counter[str] = Counter()
        untyped: list[BaseException] = []
        max_restarts = 2
        async with make_pool(size=2, max_restarts=max_restarts, max_seconds=3600) as pool:

            async def caller(i: int) -> None:
                while True:
                    try:
                        with anyio.fail_after(CALL_DEADLINE):
                            await pool.execute("echo", {"value": i})
                    except PoolDegraded:
                        outcomes["PoolDegraded"] += 1
                        return
                    except TYPED as exc:
                        outcomes[type(exc).__name__] += 1
                    except Exception as exc:  # a hang is a TimeoutError: also untyped
                        untyped.append(exc)
                        return
                    else:
                        outcomes["ok"] += 1

            with anyio.fail_after(TEST_DEADLINE):
                async with anyio.create_task_group() as tg:
                    for i in range(20):
                        tg.start_soon(caller, i)
                    for _ in range(max_restarts):
                        await kill_and_wait_replaced(pool, [rng.choice(live_workers(pool))])
                    last = rng.choice(live_workers(pool))
                    workers = pool.supervisor.child("workers")  # it gives up; the top stays
                    assert workers is not None
                    os.kill(pid_of(last), signal.SIGKILL)  # one restart too many
                    await workers.wait()
            assert untyped == [], f"{tag} {untyped[:5]!r}"
            assert outcomes["PoolDegraded"] == 20, f"{tag} {outcomes}"
            stats = pool.stats()
            assert stats.degraded is not None, stats
            assert (stats.ready, stats.queued) == (0, 0), stats
            with pytest.raises(PoolDegraded):
                await pool.execute("ping")
        assert descendant_pids() - before == set(), f"{tag} orphan workers"

    async def test_outside_sigterm_drains_a_worker_without_failing_new_calls(self) -> None:
        """A stopping worker refuses calls unrun; the pool sends them elsewhere, none fails."""
        before = descendant_pids()
        failures: list[WorkerError] = []
        calls = 0
        async with make_pool(size=2, max_concurrency=2) as pool:

            async def hang() -> None:
                with pytest.raises(WorkerError):  # the worker's grace ran out
                    await pool.execute("hang")

            async def echo() -> None:
                nonlocal calls
                calls += 1
                try:
                    assert await pool.execute("echo", {"value": calls}) == calls
                except WorkerError as exc:
                    failures.append(exc)

            with anyio.fail_after(RECOVERY_DEADLINE):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(hang)
                    await anyio.wait_all_tasks_blocked()
                    (busy,) = (w for w in live_workers(pool) if w.in_flight)
                    assert busy.process is not None
                    # the free slots are [busy, other, other]: one call moves busy's to the back
                    await echo()
                    os.kill(pid_of(busy), signal.SIGTERM)  # finishes the hang call, takes no new
                    # until its stderr says it stopped taking calls, then one round of the
                    # three free slots (one is the stopping worker's)
                    while "stopping (SIGTERM)" not in busy.process.stderr_tail(200):
                        await echo()
                    for _ in range(3):
                        await echo()
                    assert not busy.usable  # out of rotation once it refused a call
                    tg.cancel_scope.cancel()  # the hang call: the stopping worker exits
                await busy.ref.wait()
                await pool.wait_ready(timeout=None)
            assert failures == [], f"{len(failures)} of {calls} calls failed: {failures[0]!r}"
            stats = pool.stats()
            assert (stats.ready, stats.crashes, stats.restarts) == (2, 0, 1), stats
        assert descendant_pids() - before == set()
