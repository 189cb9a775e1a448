"""Adapters that print, as real libraries do: banners at import, chatter in setup, progress bars."""

from __future__ import annotations

import os
import sys

from snakepit.testing.adapters import Crash
from snakepit.worker import tool

# A banner at import, as many libraries print one (on stdout and on stderr).
print("NoisyLib 1.0 -- loaded", flush=True)
print("NoisyLib: using 1 thread", file=sys.stderr, flush=True)


class Noisy(Crash):
    """Crash's tools, plus tools that write to stdout and stderr in every way."""

    def setup(self) -> None:
        """Print on stdout, with and without a newline, as a chatty setup does."""
        print('{"event": "not-the-ready-line"}')
        print("loading weights", end="", flush=True)
        os.write(1, b"\n")

    @tool
    def say(self, text: str, stream: str = "stdout") -> str:
        """Print ``text`` (and a newline) on ``stream``; return "said"."""
        print(text, file=sys.stdout if stream == "stdout" else sys.stderr, flush=True)
        return "said"

    @tool
    def write(self, size: int, fd: int = 2, pattern: str = "x", newline: bool = False) -> int:
        """Write ``size`` bytes of ``pattern`` to ``fd`` (no newline unless asked)."""
        data = (pattern.encode() * (size // max(1, len(pattern)) + 1))[:size]
        if newline:
            data += b"\n"
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        return size

    @tool
    def progress(self, steps: int, width: int) -> int:
        """A progress bar of ``steps`` updates, each ``width`` bytes, redrawn with ``\\r``."""
        for step in range(steps):
            sys.stderr.write("\r" + f"{step}/{steps} ".ljust(width, "#"))
        sys.stderr.flush()
        return steps

    @tool
    def garbage(self, size: int) -> int:
        """Write ``size`` bytes of binary noise (every byte value) to stdout."""
        data = bytes(range(256)) * (size // 256 + 1)
        os.write(1, data[:size])
        return size

    @tool
    def close_stdout(self) -> str:
        """``os.close(1)`` and print anyway, as a clumsy tool may."""
        os.close(1)
        print("into the void")
        return "closed"
