"""Let go of the closed event loops grpc.aio remembers.

grpc.aio polls its completion queue on a thread of its own and binds every
event loop that makes a grpc.aio object to that queue, in a dict it never
prunes (``PollerCompletionQueue._loops``, not reachable from Python by name).
A closed loop stays in it for good, and with the loop everything it reaches:
its exception handler's owner, its tasks, what they held (a test's pool, its
workers' connections). A process that runs one loop after another (a test
suite: one per test; ``asyncio.run`` in a loop) grows without end.

:func:`forget_closed_loops` drops the closed loops from that dict; a pool
calls it as it starts (a closed loop never runs again: grpc has nothing left
to hand it). Should a grpc release hold its loops some other way, it finds
nothing to drop and does nothing.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading

__all__ = ("forget_closed_loops",)


def forget_closed_loops() -> int:
    """Drop the closed loops from grpc.aio's poller; return how many were dropped."""
    if "grpc" not in sys.modules:
        return 0  # nothing bound any loop
    dropped = 0
    for thread in threading.enumerate():
        poller = getattr(getattr(thread, "_target", None), "__self__", None)
        if poller is None or type(poller).__name__ != "PollerCompletionQueue":
            continue
        for held in gc.get_referents(poller):
            if not isinstance(held, dict):
                continue
            try:  # a loop of another thread may bind itself meanwhile: next time
                closed = [key for key in held if _closed_loop(key)]
            except RuntimeError:
                continue
            for loop in closed:
                held.pop(loop, None)
                dropped += 1
    return dropped


def _closed_loop(key: object) -> bool:
    return isinstance(key, asyncio.AbstractEventLoop) and key.is_closed()
