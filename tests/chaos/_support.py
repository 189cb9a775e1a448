"""Helpers of the chaos tests: a pool of the test adapter, its workers, kills, process checks."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import anyio

from snakepit.errors import ExecutionTimeout, WorkerCrashed, WorkerUnavailable
from snakepit.pool import Pool, WorkerServer

ADAPTER = "tests.unit.grpc._adapters:All"
ROOT = str(Path(__file__).resolve().parents[2])

#: The seed when pytest-randomly is not running.
FIXED_SEED = 5_182_024
#: What a call may raise while its worker is killed; anything else is a bug.
TYPED = (WorkerCrashed, WorkerUnavailable, ExecutionTimeout)
#: Deadlines: one call, one recovery, a whole test.
CALL_DEADLINE = 15.0
RECOVERY_DEADLINE = 15.0
TEST_DEADLINE = 45.0


def make_pool(**options: Any) -> Pool:
    return Pool(ADAPTER, cwd=ROOT, **options)


def live_workers(pool: Pool) -> list[WorkerServer]:
    """The pool's usable workers, in a stable order (for a seeded choice)."""
    return sorted((w for w in pool._tree.workers.values() if w.usable), key=lambda w: w.worker_id)


def pid_of(worker: WorkerServer) -> int:
    assert worker.process is not None
    assert worker.process.pid is not None
    return worker.process.pid


async def kill_and_wait_replaced(pool: Pool, victims: list[WorkerServer]) -> None:
    """SIGKILL the victims' processes; return once each is gone and the pool is full again.

    Waiting for each WorkerServer to exit first makes sure ``wait_ready`` waits
    for the replacements, not for the victims' stale ready state.
    """
    for worker in victims:
        os.kill(pid_of(worker), signal.SIGKILL)
    with anyio.fail_after(RECOVERY_DEADLINE):
        for worker in victims:
            await worker.ref.wait()
        await pool.wait_ready(timeout=None)
