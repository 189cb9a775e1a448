"""Process helpers shared by the tests."""

from __future__ import annotations

import os

import anyio

from snakepit.testing._leaks import child_pids, wait_exited


async def wait_exit(pid: int, timeout: float = 30) -> None:
    """Wait until ``pid`` (any process, not only a child) has exited: a pidfd, no polling.

    :raises TimeoutError: still running after ``timeout`` seconds.
    """
    with anyio.fail_after(timeout):
        await wait_exited(pid)


def descendant_pids(pid: int | None = None) -> set[int]:
    """Every descendant of this process (or of ``pid``), zombies included (Linux).

    Pool workers forked by a fork server are its children: grandchildren of the host.
    """
    found = child_pids(pid)
    assert found is not None, "these tests need /proc"
    return found


def gone(pid: int) -> bool:
    """True once no process has this pid (reaped, not even a zombie of ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
