"""The adapter the demo runs in its worker processes."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator

from snakepit.worker import Adapter, Context, tool


class TextTools(Adapter):
    """A few tools: some quick, one that streams, one that never returns."""

    @tool
    def word_count(self, text: str) -> dict[str, int]:
        """Count the words of ``text``."""
        counts: dict[str, int] = {}
        for word in text.lower().split():
            counts[word] = counts.get(word, 0) + 1
        return counts

    @tool
    def fib(self, n: int) -> dict[str, int]:
        """Compute fib(n) the slow way (CPU work, in a worker thread); say which process did."""

        def f(k: int) -> int:
            return k if k < 2 else f(k - 1) + f(k - 2)

        return {"fib": f(n), "pid": os.getpid()}

    @tool
    def words(self, text: str) -> Iterator[str]:
        """Stream the words of ``text`` one by one."""
        yield from text.split()

    @tool
    async def wait_forever(self) -> None:
        """Wait on an event that is never set (a call to kill the worker under)."""
        await asyncio.Event().wait()

    @tool
    def stuck(self, ctx: Context) -> None:
        """Block a worker thread for good, ignoring cancellation (a stuck C extension)."""
        threading.Event().wait()
