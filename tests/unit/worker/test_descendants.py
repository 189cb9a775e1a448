"""Process trees in the worker (worker/_descendants.py): kill_tree kills what it must.

A whole dead run's processes, found and killed by the next pool, are in
tests/integration/test_orphans.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys

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
