"""Process helpers shared by the tests."""

from __future__ import annotations

import os

import anyio

from snakepit.pool import default_fork_servers
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
    Of this process's, the fork servers it shares between its pools (see the
    ``snakepit_share_fork_servers`` ini option) are left out: they belong to
    no test (a test about a pool's fork server is marked
    ``snakepit_own_fork_server``); their workers are not.
    """
    found = child_pids(pid)
    assert found is not None, "these tests need /proc"
    shared = default_fork_servers()
    if pid is None and shared is not None:
        found -= shared.pids
    return found


def gone(pid: int) -> bool:
    """True once no process has this pid (reaped, not even a zombie of ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
