"""Process helpers shared by the tests."""

from __future__ import annotations

import os
import select

import anyio


async def wait_exit(pid: int, timeout: float = 30) -> None:
    """Wait until ``pid`` (any process, not only a child) has exited: a pidfd, no polling.

    :raises TimeoutError: still running after ``timeout`` seconds.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already exited and reaped
    try:
        with anyio.fail_after(timeout):
            await anyio.to_thread.run_sync(select.select, [fd], [], [])
    finally:
        os.close(fd)
