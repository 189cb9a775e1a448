"""Process helpers shared by the tests."""

from __future__ import annotations

import os
from pathlib import Path

import anyio

from snakepit.testing._leaks import wait_exited


async def wait_exit(pid: int, timeout: float = 30) -> None:
    """Wait until ``pid`` (any process, not only a child) has exited: a pidfd, no polling.

    :raises TimeoutError: still running after ``timeout`` seconds.
    """
    with anyio.fail_after(timeout):
        await wait_exited(pid)


def descendant_pids(pid: int | None = None) -> set[int]:
    """Every descendant of this process (or of ``pid``), from /proc (zombies included).

    Pool workers forked by a fork server are its children: grandchildren of the host.
    """
    pids: set[int] = set()
    try:
        tasks = list(Path(f"/proc/{pid or os.getpid()}/task").iterdir())
    except FileNotFoundError:  # it exited meanwhile
        return pids
    for task in tasks:
        try:
            text = (task / "children").read_text().split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        for child in map(int, text):
            pids |= {child} | descendant_pids(child)
    return pids
