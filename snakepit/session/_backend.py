"""Where sessions are kept: the SessionBackend protocol and the record it stores.

A backend is storage only: it keeps :class:`SessionRecord` values by id and
answers which ones are due to expire at a given time. Every decision (ids,
TTLs, limits, what "now" is) is the :class:`~snakepit.session.SessionStore`'s,
so the same contract tests run against every backend, and a MockClock drives
expiry whatever the backend. Times are the store's clock (its config's
``clock``: ``time.time()`` by default), in seconds.

Every method is a coroutine, atomic on its own (a Redis backend uses one
transaction or script per method), and may be called by many tasks at once
(the store's ref reads, touches and pins through the backend in the caller's
task); none is called concurrently with ``aclose()``. A backend that
persists outside the process (Redis) keeps its sessions across a restart
of the store's server; the memory backend keeps its data in the backend
object, outside the server's state, for the same reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any, Protocol, runtime_checkable

__all__ = ("SessionBackend", "SessionRecord")


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One session as a backend stores it (immutable: an update stores a new record)."""

    #: The session's id: a non-empty str chosen by the store or the caller.
    session_id: str
    #: When it was created and last used, on the store's clock (seconds).
    created_at: float
    last_used: float
    #: Seconds of disuse after which it expires; None: never.
    ttl: float | None
    #: Small JSON-able data of the caller's (a dict with str keys).
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: The worker the session is pinned to (its ``worker_id``), or None.
    worker_id: str | None = None
    #: The affinity mode: ``"hint"``, ``"strict_queue"`` or ``"strict_fail_fast"``.
    affinity: str = "hint"

    @property
    def expires_at(self) -> float | None:
        """When it expires if not used again (None: never)."""
        return None if self.ttl is None else self.last_used + self.ttl


@runtime_checkable
class SessionBackend(Protocol):
    """Storage of :class:`SessionRecord` values by id (see the module's docstring)."""

    async def create(self, record: SessionRecord, *, limit: int | None) -> bool:
        """Store ``record`` if no session has its id and fewer than ``limit`` exist.

        :returns: False if its id is taken (nothing is written).
        :raises SessionLimitReached: ``limit`` sessions exist already (nothing is written).
        """
        ...

    async def get(self, session_id: str) -> SessionRecord | None:
        """The record of ``session_id``, or None."""
        ...

    async def replace(self, record: SessionRecord) -> bool:
        """Store ``record`` over the one with its id; False (nothing written) if there is none."""
        ...

    async def touch(self, session_id: str, now: float) -> SessionRecord | None:
        """Set ``last_used`` of a session that has not expired at ``now`` to ``now``, atomically.

        :returns: the new record; None (nothing written) if there is no such
            session or it expired at ``now`` (``expires_at <= now``).
        """
        ...

    async def pin(
        self,
        session_id: str,
        worker_id: str | None,
        now: float,
        *,
        only_if_pinned_to: str | EllipsisType | None = ...,
    ) -> SessionRecord | None:
        """Set ``worker_id`` of a session that has not expired at ``now``, atomically.

        With ``only_if_pinned_to`` (a worker id, or None for none), only if
        the session is pinned to that now (a compare-and-set); ``...``:
        whatever it is pinned to. ``last_used`` is unchanged.

        :returns: the record after the call (the new one, or the current one
            if the condition did not hold); None (nothing written) if there
            is no such session or it expired at ``now``.
        """
        ...

    async def delete(
        self, session_id: str, *, expired_at: float | None = None
    ) -> SessionRecord | None:
        """Remove ``session_id``; return the record removed, or None if there was none.

        With ``expired_at``, only if it has expired then (``expires_at <=
        expired_at``), atomically: the store's sweep, which must not remove
        a session another caller has just used.
        """
        ...

    async def records(self) -> list[SessionRecord]:
        """Every record, in no particular order."""
        ...

    async def count(self) -> int:
        """How many sessions there are."""
        ...

    async def due(self, now: float) -> list[SessionRecord]:
        """The records whose :attr:`~SessionRecord.expires_at` is <= ``now``."""
        ...

    async def aclose(self) -> None:
        """Release what the backend holds (a connection); the data stays where it lives."""
        ...
