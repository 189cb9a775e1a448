"""The host's end of a FIFO gate: the ``wait_gate`` tool of the test adapters blocks on one."""

from __future__ import annotations

import os
from io import BufferedWriter
from pathlib import Path

import anyio


async def open_gate(path: Path, timeout: float) -> BufferedWriter:
    """Open the FIFO's write end: returns once the ``wait_gate`` tool opened the read end.

    Closing the returned writer lets the tool return. On the deadline, a
    non-blocking reader frees the thread stuck in ``open``.

    :raises TimeoutError: no tool opened the gate within ``timeout`` seconds.
    """
    try:
        with anyio.fail_after(timeout):
            return await anyio.to_thread.run_sync(open, path, "wb", abandon_on_cancel=True)
    except TimeoutError:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        raise
