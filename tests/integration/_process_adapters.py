"""An adapter that reports what its worker process looks like (fork server tests)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from snakepit.testing.adapters import Echo
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
