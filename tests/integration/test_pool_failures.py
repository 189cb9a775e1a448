"""Pool failure handling: degraded pools, health checks, retries."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

from snakepit.errors import (
    PoolDegraded,
    ReachedMaxRestartIntensity,
    WorkerCrashed,
)
from snakepit.otp import monitor
from snakepit.pool import Pool

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

ROOT = str(Path(__file__).resolve().parents[2])
FLAGGED = "tests.unit.grpc._adapters:FailsWhenFlagged"


def the_pid(pool: Pool) -> int:
    (worker,) = [w for w in pool._workers.values() if w.usable]
    assert worker.process is not None
    assert worker.process.pid is not None
    return worker.process.pid


async def test_a_worker_that_keeps_failing_to_start_degrades_the_pool(tmp_path: Path) -> None:
    flag = tmp_path / "fail"
    options = {"size": 1, "cwd": ROOT, "max_restarts": 2, "max_seconds": 600}
    env = {"SNAKEPIT_TEST_FAIL_FLAG": str(flag)}
    async with Pool(FLAGGED, env=env, **options) as pool:  # type: ignore[arg-type]
        flag.touch()  # from now on every start fails
        async with monitor(pool.supervisor) as tree:
            os.kill(the_pid(pool), signal.SIGKILL)
            with anyio.fail_after(30):
                reason = await tree.down()
        assert isinstance(reason, ReachedMaxRestartIntensity)
        with pytest.raises(PoolDegraded, match="kept crashing"):
            await pool.execute("ping")
        stats = pool.stats()
        assert stats.degraded is not None
        assert "intensity" in stats.degraded


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
