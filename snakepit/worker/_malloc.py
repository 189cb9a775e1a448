"""The worker's malloc: big transient buffers reused, not handed back and faulted in again.

A 1 MiB payload crosses a worker as a few short-lived buffers of its size
(the parsed request, the encoded reply, its serialization). With glibc's
defaults each is returned to the kernel when freed (an ``munmap``, or a trim
of a thread's heap with ``madvise(MADV_DONTNEED)``) and the next one is
faulted in again, a page at a time, zeroed: measured, four faults per KiB and
more CPU than all the copies. :func:`tune_malloc` raises the thresholds
(``mallopt``) so that freed memory up to :data:`KEEP_FREE` bytes stays in the
process for the next call. ``SNAKEPIT_WORKER_MALLOC=0`` leaves malloc alone;
so does any libc without ``mallopt`` (musl, macOS).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from typing import Final

__all__ = ()  # internal to the worker

#: The environment variable that leaves malloc's defaults ("0", "false", "no", "off").
MALLOC_ENV: Final = "SNAKEPIT_WORKER_MALLOC"
#: Allocations below this come from the heap (glibc's cap for the threshold is 32 MiB).
MMAP_THRESHOLD: Final = 32 * 1024 * 1024
#: Free memory at the top of a heap kept for reuse, not trimmed.
KEEP_FREE: Final = 64 * 1024 * 1024

_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3


def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True if they were set."""
    if os.environ.get(MALLOC_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        mallopt.restype = ctypes.c_int
        return bool(
            mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, KEEP_FREE)
        )
    return False
