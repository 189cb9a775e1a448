"""Adapters for process tests: what a worker looks like, what it leaves behind, how it blocks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from snakepit.testing.adapters import Crash, Echo
from snakepit.worker import tool


class Introspect(Echo):
    """Echo, plus ``process()``: the worker's ids, directory and environment."""

    @tool
    def process(self, variable: str = "SNAKEPIT_TEST_VALUE") -> dict[str, Any]:
        """The pid, parent, process group, session, cwd and one environment variable."""
        return {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "pgid": os.getpgid(0),
            "sid": os.getsid(0),
            "cwd": os.getcwd(),
            "value": os.environ.get(variable),
            "argv": sys.argv,
            "name": Path("/proc/self/comm").read_text().strip(),
        }


class ExitsInSetup(Echo):
    """``setup()`` calls ``sys.exit`` with a message, as a config check may."""

    def setup(self) -> None:
        """Leave with a message."""
        sys.exit("bad config: FOO is not set")


#: ``cat FIFO`` that ignores SIGTERM: runs until nobody holds the FIFO open for writing.
_HOLD = 'trap "" TERM; exec cat "$0"'


class Hostile(Crash):
    """Crash's tools, plus tools that leave processes behind or block their worker."""

    @tool
    def orphan_holding_pipes(self, fifo: str) -> int:
        """Start ``cat FIFO`` in a session of its own, with this worker's stdout and stderr.

        Returns its pid. It outlives this worker: the pool's kill of the
        worker's process group does not reach it.
        """
        return subprocess.Popen(["sh", "-c", _HOLD, fifo], start_new_session=True).pid

    @tool
    def hostile_in_c(self, fifo: str, report: str) -> None:
        """Leave a process behind in a session of its own, then hold the GIL in C for good.

        Its pid and the worker's go to the FIFO ``report``; then a regular
        expression that backtracks for ever runs in C without releasing the
        GIL: no Python code of this worker runs again (no thread, no handler).
        """
        own = subprocess.Popen(["sh", "-c", _HOLD, fifo], start_new_session=True)
        fd = os.open(report, os.O_WRONLY)
        try:
            os.write(fd, f"{os.getpid()} {own.pid}\n".encode())
        finally:
            os.close(fd)
        re.match(r"(a+)+$", "a" * 64 + "b")

    @tool
    def block(self) -> None:
        """Block this call's thread for good (a timeout gets the worker killed)."""
        threading.Event().wait()

    @tool
    async def hostile(self, fifo: str, report: str, ignore_sigterm: bool = True) -> None:
        """Ignore SIGTERM, leave three processes behind, block the event loop for good.

        The processes (each ``cat FIFO``, ignoring SIGTERM, with this worker's
        stderr): one in the worker's process group, one in a session of its
        own, and one orphaned at once (its parent exits: a daemon's double
        fork) in a session of its own. Their pids go to the FIFO ``report``
        as one line, then the tool blocks the event loop on an event that is
        never set.
        """
        if ignore_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        same = subprocess.Popen(["sh", "-c", _HOLD, fifo])
        own = subprocess.Popen(["sh", "-c", _HOLD, fifo], start_new_session=True)
        daemon = subprocess.run(
            [
                "sh",
                "-c",
                f"( {_HOLD.replace('exec cat', 'exec setsid cat')} ) >/dev/null & echo $!",
                fifo,
            ],
            stdout=subprocess.PIPE,
            check=True,
        )
        orphan = int(daemon.stdout)
        fd = os.open(report, os.O_WRONLY)
        try:
            os.write(fd, f"{os.getpid()} {same.pid} {own.pid} {orphan}\n".encode())
        finally:
            os.close(fd)
        threading.Event().wait()  # on the event loop's thread: nothing else runs there
