"""Functions the ProcessPoolExecutor and anyio.to_process rows run in their child processes.

They live in their own module, not in ``transport.py``'s ``__main__``, so that a
child process unpickles them by a plain import (``_transport_fns.noop``).
"""

from __future__ import annotations


def noop() -> None:
    """Do nothing (the cheapest call there is)."""


def echo(value: bytes) -> bytes:
    """Return ``value`` unchanged."""
    return value
