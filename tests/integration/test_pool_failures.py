"""Pool failure handling: degraded pools, health checks, retries."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

from snakepit.errors import (
    ExecutionTimeout,
    PoolDegraded,
    ReachedMaxRestartIntensity,
    WorkerCrashed,
)
from snakepit.otp import monitor
from snakepit.pool import Pool, WorkerReady
from tests._fifo import open_gate

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

ROOT = str(Path(__file__).resolve().parents[2])
FLAGGED = "tests.unit.grpc._adapters:FailsWhenFlagged"


def the_pid(pool: Pool) -> int:
    (worker,) = [w for w in pool._tree.workers.values() if w.usable]
    assert worker.process is not None
    assert worker.process.pid is not None
    return worker.process.pid


async def test_a_worker_that_keeps_failing_to_start_degrades_the_pool_until_restart(
    tmp_path: Path,
) -> None:
    flag = tmp_path / "fail"
    options = {"size": 1, "cwd": ROOT, "max_restarts": 2, "max_seconds": 600}
    env = {"SNAKEPIT_TEST_FAIL_FLAG": str(flag)}
    async with Pool(FLAGGED, env=env, **options) as pool:  # type: ignore[arg-type]
        flag.touch()  # from now on every start fails
        workers = pool.supervisor.child("workers")
        assert workers is not None
        async with monitor(workers) as tree:
            os.kill(the_pid(pool), signal.SIGKILL)
            with anyio.fail_after(30):
                reason = await tree.down()
        # ReachedMaxRestartIntensity, or a shutdown-like reason carrying it
        assert isinstance(getattr(reason, "detail", reason), ReachedMaxRestartIntensity)
        with pytest.raises(PoolDegraded, match="kept crashing"):
            await pool.execute("ping")
        stats = pool.stats()
        assert stats.degraded is not None
        assert "intensity" in stats.degraded

        flag.unlink()  # the cause is fixed: the pool comes back
        with anyio.fail_after(30):
            await pool.restart()
        assert await pool.execute("ping") == {"status": "pong"}
        assert pool.stats().degraded is None


async def test_timeouts_kill_real_workers_without_spending_the_restart_budget() -> None:
    # max_restarts=0: one crash would degrade the pool; a timeout is the pool's decision.
    async with Pool(FLAGGED, size=1, cwd=ROOT, max_restarts=0, max_seconds=600) as pool:
        pids = {the_pid(pool)}
        events = pool.subscribe()
        for n in (1, 2):
            with pytest.raises(ExecutionTimeout):
                await pool.execute("stuck_sync", timeout=0.1)  # deaf to ctx: it must be killed
            with anyio.fail_after(30):
                async for event in events:  # its replacement
                    if isinstance(event, WorkerReady) and event.generation == n:
                        break
            pids.add(the_pid(pool))
            assert len(pids) == n + 1  # a new process each time
        events.close()
        assert await pool.execute("ping") == {"status": "pong"}
        stats = pool.stats()
        assert (stats.degraded, stats.timeouts, stats.restarts) == (None, 2, 2)


async def test_retries_run_an_idempotent_call_again_on_another_worker(tmp_path: Path) -> None:
    async with Pool(FLAGGED, size=2, cwd=ROOT) as pool:
        flag = str(tmp_path / "crashed-once")
        with pytest.raises(WorkerCrashed):
            await pool.execute("exit_once", {"flag": flag})  # retries=0: not retried
        os.unlink(flag)
        with anyio.fail_after(30):
            assert await pool.execute("exit_once", {"flag": flag}, retries=2) == "ok"
        assert pool.stats().crashes == 2


async def test_bad_retries() -> None:
    from snakepit.errors import ConfigError

    async with Pool(FLAGGED, size=1, cwd=ROOT) as pool:
        with pytest.raises(ConfigError):
            await pool.execute("ping", retries=-1)


async def test_a_worker_killed_under_a_call_is_logged_with_its_signal(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # The connection broke first (the pool retires the worker without a
    # reason of its own): the log line names the signal, not "retired: None".
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    async with Pool("snakepit.testing.adapters:Gated", size=1) as pool:
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                with pytest.raises(WorkerCrashed):
                    await pool.execute("wait_gate", {"path": str(gate)})

            tg.start_soon(call)
            # The call runs once its tool opened the gate (a call sent but not
            # started would run on the replacement instead).
            writer = await open_gate(gate, 10)
            try:
                os.kill(the_pid(pool), signal.SIGKILL)
            finally:
                writer.close()
        with anyio.fail_after(10):
            await pool.wait_ready()
    lines = [r.getMessage() for r in caplog.records if r.name == "snakepit.pool"]
    assert any("was killed by SIGKILL; starting a replacement" in line for line in lines), lines
    assert not any("None" in line for line in lines), lines
