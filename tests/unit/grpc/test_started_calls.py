"""After a worker's kill -9, its frames connection knows which calls it had started.

The started page (snakepit/_wire/_started.py), end to end: a real worker
process, its tool thread held by a FIFO gate, a second call queued behind it.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest

from snakepit.errors import WorkerUnavailable
from snakepit.pool._connection import ChannelBroke, Multiplexer, open_frames_multiplexer
from snakepit.pool._launch._process import WorkerProcess
from snakepit.worker._lane import LANE_ENV
from tests._fifo import open_gate

from .conftest import Spawn

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)

GATED = "snakepit.testing.adapters:Gated"
DEADLINE = 20.0


async def _kill_with_calls_in_flight(
    worker: WorkerProcess, gate: Path
) -> tuple[ChannelBroke, ChannelBroke, Multiplexer]:
    """A call runs (held at the gate), a second waits for the slot; kill -9; their errors."""
    assert worker.frames_address is not None
    mux = await open_frames_multiplexer(worker.frames_address, secret=worker.secret)
    errors: dict[str, BaseException] = {}

    async def call(name: str, tool: str, args: dict[str, Any]) -> None:
        try:
            await mux.execute(tool, args)
        except WorkerUnavailable as exc:
            errors[name] = exc

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "running", "wait_gate", {"path": str(gate)})
            writer = await open_gate(gate, DEADLINE)  # the tool runs now
            tg.start_soon(call, "queued", "echo", {"value": 1})
            await anyio.wait_all_tasks_blocked()  # sent: it waits for the slot there
            try:
                os.killpg(worker.pid, signal.SIGKILL)
                await worker.wait()
            finally:
                writer.close()
    running, queued = errors["running"], errors["queued"]
    assert isinstance(running, ChannelBroke)
    assert isinstance(queued, ChannelBroke)
    return running, queued, mux


@pytest.mark.parametrize("lane", ["1", "0"], ids=["fast-lane", "loop"])
async def test_the_running_call_started_and_the_queued_one_did_not(
    spawn: Spawn, tmp_path: Path, lane: str
) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    worker = await spawn(GATED, env={**os.environ, LANE_ENV: lane})
    running, queued, mux = await _kill_with_calls_in_flight(worker, gate)
    assert running.request_id is not None
    assert queued.request_id is not None
    assert not running.never_started()
    assert queued.never_started()  # marked on the tool thread, when its turn comes
    mux.seal_started_page(exited=True)  # what it said is kept
    assert not running.never_started()
    assert queued.never_started()
    await mux.aclose()


async def test_a_page_closed_before_the_judgement_counts_every_call_as_started(
    spawn: Spawn, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    worker = await spawn(GATED)
    running, queued, mux = await _kill_with_calls_in_flight(worker, gate)
    mux.seal_started_page(exited=False)  # not known to have exited: nothing is final
    assert not running.never_started()
    assert not queued.never_started()  # reported as a crash, never run twice
    await mux.aclose()
