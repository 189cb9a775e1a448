"""Process helpers shared by the tests."""

from __future__ import annotations

import anyio

from snakepit.testing._leaks import wait_exited


async def wait_exit(pid: int, timeout: float = 30) -> None:
    """Wait until ``pid`` (any process, not only a child) has exited: a pidfd, no polling.

    :raises TimeoutError: still running after ``timeout`` seconds.
    """
    with anyio.fail_after(timeout):
        await wait_exited(pid)
