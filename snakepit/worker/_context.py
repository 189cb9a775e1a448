"""Context: what a tool knows about the call it serves."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ("Context",)


@dataclass(slots=True)
class Context:
    """The call a tool is serving; a tool receives it through a ``ctx`` parameter.

    Cancellation: an ``async`` tool is cancelled outright (its ``await`` raises
    ``CancelledError``); a sync tool cannot be interrupted, so it should look at
    :attr:`cancelled` (or wait on :attr:`cancel_event`) between steps of long work.
    Its worker slot stays taken until it returns (the host does not send it
    another call meanwhile); the host replaces a worker whose cancelled call
    has not ended within the pool's ``cancel_grace``.
    """

    #: The caller's id for this request.
    request_id: int
    #: The session the call belongs to ("" outside a session).
    session_id: str
    #: ``time.monotonic()`` by which the caller stops waiting, or None.
    deadline: float | None
    #: A logger named after the tool; records go to the worker's stderr.
    logger: logging.Logger
    #: Set when the call is cancelled or its deadline passes.
    cancel_event: threading.Event = field(default_factory=threading.Event)
    #: The worker's service (private: an introspection hook for snakepit's own tests).
    _service: Any = field(default=None, repr=False, compare=False)

    @property
    def cancelled(self) -> bool:
        """True once the caller cancelled the call or its deadline passed."""
        return self.cancel_event.is_set()

    def time_remaining(self) -> float | None:
        """Seconds until the deadline (never negative), or None without one."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())
