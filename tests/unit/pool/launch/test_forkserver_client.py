"""The host side of a fork server (pool/_launch/_forkserver_client.py) against a scripted server.

What a real fork server does is in tests/integration/test_forkserver.py;
here a server that misbehaves on cue (``_scripted_forkserver.py``), for what
a real one never does.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
import pytest

from snakepit.pool._launch._forkserver_client import ForkedProcess, ForkServerClient

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # the client runs on asyncio's loop

ROOT = str(Path(__file__).resolve().parents[4])
SCRIPT = Path(__file__).with_name("_scripted_forkserver.py")

Scripted = Callable[[str], Coroutine[Any, Any, tuple[ForkServerClient, ForkedProcess]]]


@pytest.fixture
async def scripted(tmp_path: Path) -> AsyncIterator[Scripted]:
    """Start the scripted server in a mode and have it fork its one worker; close it after."""
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{SCRIPT}" "$@"\n')
    python.chmod(0o700)
    servers: list[ForkServerClient] = []

    async def start(mode: str) -> tuple[ForkServerClient, ForkedProcess]:
        env = {**os.environ, "PYTHONPATH": ROOT, "SNAKEPIT_TEST_FORKSERVER": mode}
        with anyio.fail_after(10):
            server = await ForkServerClient.start(python=str(python), env=env, cwd=ROOT)
            servers.append(server)
            child, out_fd, ready_fd = await server.spawn(["--adapter", "x:Y"], cwd=ROOT)
        os.close(out_fd)
        os.close(ready_fd)
        return server, child

    yield start
    for server in servers:
        with anyio.fail_after(10):
            await server.aclose(grace=0)


async def test_an_unreadable_exit_report_loses_the_server_and_reports_its_worker(
    scripted: Scripted,
) -> None:
    # Before: the worker was taken from the server's list before its code was
    # read; the server was lost, but this worker was never reported: wait() hung.
    server, child = await scripted("bad-exit")
    with anyio.fail_after(5):
        assert await child.wait() == -signal.SIGKILL
    assert not server.alive
    assert child.lost_reason is not None
    assert "unreadable message" in child.lost_reason
    assert child._pidfd is None


async def test_a_worker_whose_watcher_fails_is_reported_lost(scripted: Scripted) -> None:
    server, child = await scripted("file-pidfd")
    with anyio.fail_after(5):
        assert await child.wait() == -signal.SIGKILL
    assert child.lost_reason is not None
    assert "PermissionError" in child.lost_reason  # epoll refuses a regular file
    assert not server.alive  # a watcher's failure is its server's
    assert child._pidfd is None
