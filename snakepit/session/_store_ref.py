"""SessionStoreRef: the session store's API, and the requests it sends its server."""

from __future__ import annotations

import builtins
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import EllipsisType
from typing import TYPE_CHECKING, Any, Final, cast

import anyio

from snakepit.errors import CallTimeout
from snakepit.otp import DEFAULT_TIMEOUT, ServerRef

from ._backend import SessionBackend, SessionRecord
from ._config import (
    DEFAULT_TTL,
    Affinity,
    SessionStoreConfig,
    check_affinity,
    check_seconds,
    check_session_id,
    check_worker_id,
    checked_metadata,
)
from ._memory import MemoryBackend

if TYPE_CHECKING:
    from ._session_variables import SessionVariables

__all__ = ("SessionStoreRef",)


def _expired(record: SessionRecord, now: float) -> bool:
    expires_at = record.expires_at
    return expires_at is not None and expires_at <= now


# -- requests (made by SessionStoreRef only, after it checked the arguments) ---------


@dataclass(frozen=True, slots=True)
class _Create:
    session_id: str | None
    ttl: float | None
    metadata: dict[str, Any]
    affinity: str


@dataclass(frozen=True, slots=True)
class _Get:
    session_id: str


@dataclass(frozen=True, slots=True)
class _Touch:
    session_id: str


@dataclass(frozen=True, slots=True)
class _Pin:
    session_id: str
    worker_id: str | None
    #: Pin only if the session is pinned to this now (``...``: whatever it is pinned to).
    only_if_pinned_to: str | EllipsisType | None = ...


@dataclass(frozen=True, slots=True)
class _Delete:
    session_id: str


_LIST: Final = "list"
_COUNT: Final = "count"
_SWEEP: Final = "sweep"


@dataclass(frozen=True, slots=True)
class _Failed:
    """The reply of a request that raised: the caller raises ``error``."""

    error: Exception


class SessionStoreRef(ServerRef[Any, Any]):
    """The ref of a running :class:`SessionStore`, with the store's API.

    Every method checks its arguments in the caller's task (a typed error,
    nothing sent), then goes through the store's mailbox: the operations are
    linearizable, each one atomic. A session whose TTL has passed is gone for
    every method, whether or not the sweep has removed it yet.

    Every method takes ``timeout`` (seconds, None: no limit) and raises, as
    :meth:`~snakepit.otp.ServerRef.call` does, :class:`~snakepit.errors.CallTimeout`
    after it and :class:`~snakepit.errors.ServerExited` if the store is dead
    or dies meanwhile. An error of the backend (a lost Redis connection) is
    raised to the caller as it is; the store keeps running.
    """

    __slots__ = ()

    async def _ask(self, request: object, timeout: float | None) -> Any:
        reply = await self.call(request, timeout=timeout)
        if type(reply) is _Failed:
            raise reply.error
        return reply

    def now(self) -> float:
        """The store's time (its config's ``clock()``): what its records' times are on.

        ``time.time()`` when the store is not running.
        """
        config = self._store_config()
        return time.time() if config is None else config.clock()

    def _store_config(self) -> SessionStoreConfig | None:
        """The store's config while it runs (None: not running)."""
        if not self.alive:
            return None
        config: SessionStoreConfig | None = getattr(self.server, "config", None)
        return config

    async def _direct(
        self,
        what: str,
        operation: Callable[[SessionBackend, float], Awaitable[SessionRecord | None]],
        timeout: float | None,
    ) -> SessionRecord | None:
        """``operation(backend, now)`` in the caller's task (None: ask the server instead).

        None too when the server is not running: the caller asks it, and gets
        its ServerExited.

        Each backend method is atomic on its own, so a read, a touch or a pin
        needs no turn in the server's mailbox: calls of many tasks run at
        once (Redis), and a memory backend's cost no message. Only what the
        store must decide (a session that expired, or does not exist) goes
        through the server.
        """
        config = self._store_config()
        if config is None:
            return None
        backend = config.backend
        if timeout is None or type(backend) is MemoryBackend:  # no await point in it
            return await operation(backend, config.clock())
        with anyio.move_on_after(timeout):
            return await operation(backend, config.clock())
        raise CallTimeout(
            f"{self!r}: no reply to {what} within {timeout}s", server=self, timeout=timeout
        )

    async def create(
        self,
        session_id: str | None = None,
        *,
        ttl: float | None = DEFAULT_TTL,
        metadata: Mapping[str, Any] | None = None,
        affinity: Affinity = "hint",
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> SessionRecord:
        """Create a session and return its record (created and last used now, not pinned).

        :param session_id: its id; None (default): the store makes a random one.
        :param ttl: seconds of disuse after which it expires (default an hour);
            None: never.
        :param metadata: a small JSON-able dict with str keys (None: empty),
            stored as a copy; JSON must carry it unchanged (no tuples, NaN, or
            non-str keys at any depth), so every backend gives back the same.
        :param affinity: ``"hint"`` (default), ``"strict_queue"`` or ``"strict_fail_fast"``.
        :raises ArgumentTypeError: an argument has the wrong type (an id that is
            not a str, a bool ttl, metadata with a non-str key or a value JSON
            cannot carry). Nothing is written.
        :raises ConfigError: an argument's value is wrong (an empty id, a ttl
            <= 0, an unknown affinity, metadata JSON would change). Nothing is written.
        :raises SessionExists: ``session_id`` is taken.
        :raises SessionLimitReached: ``max_sessions`` sessions exist.
        """
        check_session_id(session_id, allow_none=True)
        check_seconds("ttl", ttl)
        check_affinity(affinity)
        request = _Create(
            session_id, None if ttl is None else float(ttl), checked_metadata(metadata), affinity
        )
        return cast(SessionRecord, await self._ask(request, timeout))

    async def get(
        self, session_id: str, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> SessionRecord:
        """Return the record of ``session_id`` (a read: it does not count as a use).

        :raises SessionNotFound: no such session (never made, deleted, or expired).
        :raises ArgumentTypeError, ConfigError: ``session_id`` is not a non-empty str.
        """
        check_session_id(session_id)
        record = await self._direct("get", lambda b, now: b.get(session_id), timeout)
        if record is not None and not _expired(record, self.now()):
            return record
        return cast(SessionRecord, await self._ask(_Get(session_id), timeout))

    async def touch(
        self, session_id: str, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> SessionRecord:
        """Mark ``session_id`` used now (its TTL starts again); return the new record.

        :raises SessionNotFound: no such session (never made, deleted, or expired).
        :raises ArgumentTypeError, ConfigError: ``session_id`` is not a non-empty str.
        """
        check_session_id(session_id)
        record = await self._direct("touch", lambda b, now: b.touch(session_id, now), timeout)
        if record is not None:
            return record
        # Gone, or expired (the server ends it, unless a call of it runs).
        return cast(SessionRecord, await self._ask(_Touch(session_id), timeout))

    async def pin(
        self,
        session_id: str,
        worker_id: str | None,
        *,
        only_if_pinned_to: str | EllipsisType | None = ...,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> SessionRecord:
        """Record the worker ``session_id`` is pinned to (None: unpin); return its record.

        Pinning is not a use: ``last_used`` is unchanged (call :meth:`touch`).
        A pool pins a session to the ``pin_id`` of a worker (see
        :attr:`~snakepit.pool.WorkerInfo.pin_id`).

        :param only_if_pinned_to: pin only if the session is pinned to this
            worker now (None: to none), atomically; otherwise nothing is
            written and the record returned is the current one (compare its
            ``worker_id``). ``...`` (default): whatever it is pinned to.
        :raises SessionNotFound: no such session (never made, deleted, or expired).
        :raises ArgumentTypeError, ConfigError: an id is not a non-empty str.
        """
        check_session_id(session_id)
        check_worker_id(worker_id)
        if only_if_pinned_to is not ...:
            check_worker_id(only_if_pinned_to)
        record = await self._direct(
            "pin",
            lambda b, now: b.pin(session_id, worker_id, now, only_if_pinned_to=only_if_pinned_to),
            timeout,
        )
        if record is not None:
            return record
        request = _Pin(session_id, worker_id, only_if_pinned_to)
        return cast(SessionRecord, await self._ask(request, timeout))

    async def delete(
        self, session_id: str, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> SessionRecord | None:
        """Delete ``session_id``; return its last record, or None if there was no such session.

        Deleting what is not there is no error, so a cleanup may run twice or
        race an expiry. The record returned is the session's state at its end
        (the worker it was pinned to, its metadata), taken atomically with the
        delete. ``on_end`` is called with ``"deleted"``, or with ``"expired"``
        (and None is returned) if its TTL had passed already.

        :raises ArgumentTypeError, ConfigError: ``session_id`` is not a non-empty str.
        """
        check_session_id(session_id)
        return cast("SessionRecord | None", await self._ask(_Delete(session_id), timeout))

    async def list(
        self, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> builtins.list[SessionRecord]:
        """Return the record of every session, oldest first (by ``created_at``, then id)."""
        return cast("builtins.list[SessionRecord]", await self._ask(_LIST, timeout))

    @property
    def known_count(self) -> int:
        """How many sessions the store knows of now, without asking it (0 if it is not running).

        Exact for a backend only this store writes (memory); with a shared
        backend (Redis), sessions other stores create or delete are seen at
        the next :meth:`count` or :meth:`list`. Expired sessions the sweep
        has not removed yet are counted.
        """
        count: int = getattr(self.server, "known_count", 0) if self.alive else 0
        return count

    async def count(self, *, timeout: float | None = DEFAULT_TIMEOUT) -> int:
        """Return how many sessions there are (expired ones not counted)."""
        return cast(int, await self._ask(_COUNT, timeout))

    def variables(self, session_id: str) -> SessionVariables:
        """The typed variables of the session ``session_id``, from the host (no I/O here).

        :raises ArgumentTypeError: ``session_id`` is not a str.
        """
        from ._session_variables import SessionVariables

        return SessionVariables(self, session_id)
