"""A host killed with SIGKILL in the middle of its work leaves nothing of its pool behind.

Nothing: no worker, no fork server, no process a tool started (in the
worker's process group, in a session of its own, orphaned), within 2 s,
whatever the tools do (block the worker's event loop, ignore SIGTERM).
"""

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

from snakepit.testing import describe_process, wait_exited
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


HOSTILE_HOST = """
import asyncio, sys, snakepit

async def main():
    fifo, report, start_method, tool = sys.argv[1:5]
    pool = snakepit.Pool(
        "tests.integration._process_adapters:Hostile",
        size=2,
        cwd={root!r},
        start_method=start_method,
        health_interval=None,
    )
    async with pool:
        args = {{"fifo": fifo, "report": report}}
        await asyncio.gather(*(pool.execute(tool, args) for _ in range(2)))

asyncio.run(main())
"""


async def _read_lines(fd: int, count: int) -> list[str]:
    """``count`` lines from the non-blocking ``fd``, waiting by event."""
    data = b""
    while data.count(b"\n") < count:
        await anyio.wait_readable(fd)
        data += os.read(fd, 4096)
    return data.decode().splitlines()


@pytest.mark.parametrize(
    ("start_method", "tool"),
    [
        ("forkserver", "hostile"),
        ("spawn", "hostile"),
        # A tool that holds the GIL in C: no code of its worker runs again, so
        # the fork server (which runs none of the tools) ends the worker's tree.
        ("forkserver", "hostile_in_c"),
    ],
)
async def test_nothing_of_the_pool_outlives_a_sigkilled_host_whatever_the_tools_do(
    start_method: str, tool: str, tmp_path: Path
) -> None:
    # Each worker runs a tool that ignores SIGTERM, starts three processes
    # that ignore it too (in its group, in a session of its own, orphaned in
    # a session of its own) and blocks the worker's event loop.
    fifo, report = tmp_path / "hold", tmp_path / "report"
    os.mkfifo(fifo)
    os.mkfifo(report)
    hold = os.open(fifo, os.O_RDWR)  # the processes left behind run while it is open
    reports = os.open(report, os.O_RDWR | os.O_NONBLOCK)
    script = HOSTILE_HOST.format(root=str(ROOT))
    host = subprocess.Popen(
        [sys.executable, "-c", script, str(fifo), str(report), start_method, tool],
        cwd=ROOT,
        start_new_session=True,
    )
    pids: set[int] = set()
    try:
        with anyio.fail_after(30):
            lines = await _read_lines(reports, 2)
        left = {int(pid) for line in lines for pid in line.split()}
        pids = descendant_pids(host.pid) | left
        per_worker = 4 if tool == "hostile" else 2  # the worker and what its tool left
        assert len(pids) >= 2 * per_worker + (start_method == "forkserver")
        host.kill()
        host.wait()
        started = time.monotonic()
        try:
            with anyio.fail_after(2.0):
                for pid in pids:
                    await wait_exited(pid)
        except TimeoutError:
            alive = [describe_process(pid) for pid in pids if _alive(pid)]
            pytest.fail(
                f"{time.monotonic() - started:.2f}s after the host's SIGKILL, still alive:\n"
                + "\n".join(alive)
            )
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
        for pid in pids:  # nothing left, even on failure
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        os.close(hold)
        os.close(reports)


def _alive(pid: int) -> bool:
    return not describe_process(pid).endswith("(gone)") and "exited" not in describe_process(pid)
