"""The adapter of ``pool_vs_peers.py``'s crash-under-load row: a tool that records that it ran.

``record`` appends its call's id to a file before it does anything else (one
``O_APPEND`` write of a short line: whole, even when workers race), then
spins for a moment, so that a worker killed under load is often in the middle
of one. The row reads the file: an id twice is a call that ran twice; an id
absent is a call that never started.
"""

from __future__ import annotations

import os
import time

from snakepit.testing.adapters import Echo
from snakepit.worker import tool


class Recording(Echo):
    """Echo's tools, plus ``record``."""

    @tool
    def record(self, path: str, call_id: int, spin_us: float = 200.0) -> int:
        """Append ``call_id`` to ``path`` (a line), spin ``spin_us`` µs, return ``call_id``."""
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"%d\n" % call_id)
        finally:
            os.close(fd)
        end = time.perf_counter() + spin_us / 1e6
        while time.perf_counter() < end:
            pass
        return call_id
