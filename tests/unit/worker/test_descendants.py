"""Process trees in the worker (worker/_descendants.py): kill_tree kills what it must.

A whole dead run's processes, found and killed by the next pool, are in
tests/integration/test_orphans.py.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from typing import Any

import pytest

from snakepit.worker import _descendants


def test_kill_tree_never_leaves_its_root_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    # The listing of its descendants fails (out of file descriptors): the
    # root, stopped first, is still killed, never left stopped for good.
    def no_listing(root: int | None = None, *, depth: int = 0) -> list[int]:
        raise OSError(24, "Too many open files")

    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        monkeypatch.setattr(_descendants, "descendants", no_listing)
        _descendants.kill_tree(child.pid)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()
        assert child.stdin is not None
        child.stdin.close()


def test_kill_tree_kills_what_it_stopped_even_once_it_moved_to_init(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found by a helper (a flaky test left stopped `cat` processes under
    # init): the root exited between the stop and the kill, its child moved
    # to init, the second listing missed it, and it stayed stopped for good.
    root = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys; c = subprocess.Popen(['cat'], stdin=subprocess.PIPE); "
            "print(c.pid, flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert root.stdout is not None
    grandchild = int(root.stdout.readline())
    pidfd = os.pidfd_open(grandchild)
    real = _descendants._signal_tree
    passes: list[int] = []

    def root_dies_after_the_stop(tree_root: int, signum: int, **kwargs: Any) -> list[int]:
        pids = real(tree_root, signum, **kwargs)
        passes.append(signum)
        if signum == signal.SIGSTOP:
            os.kill(root.pid, signal.SIGKILL)  # it exits: its child moves to init
            root.wait()
        return pids

    try:
        monkeypatch.setattr(_descendants, "_signal_tree", root_dies_after_the_stop)
        _descendants.kill_tree(root.pid)
        assert passes == [signal.SIGSTOP, signal.SIGKILL]
        # The grandchild, stopped by the first pass, is killed all the same.
        assert select.select([pidfd], [], [], 10)[0] == [pidfd]
    finally:
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        os.close(pidfd)
        root.kill()
        root.wait()
        for stream in (root.stdin, root.stdout):
            assert stream is not None
            stream.close()
