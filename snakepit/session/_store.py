"""SessionStore: the GenServer that owns the sessions' rules."""

from __future__ import annotations

import inspect
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from typing import Any, Final

import anyio
from anyio.abc import TaskGroup

from snakepit.errors import (
    ArgumentTypeError,
    ServerExited,
    SessionExists,
    SessionNotFound,
)
from snakepit.otp import GenServer, Registry, unwrapped_task_group

from ._backend import SessionRecord
from ._config import (
    DEFAULT_TTL,
    EndReason,
    SessionStoreConfig,
    derived_sweep_interval,
)
from ._store_ref import (
    _COUNT,
    _LIST,
    _SWEEP,
    SessionStoreRef,
    _Create,
    _Delete,
    _expired,
    _Failed,
    _Get,
    _Pin,
    _Touch,
)

__all__ = ("SessionStore",)

logger = logging.getLogger("snakepit.session")

# Bytes of randomness in an id the store chooses (32 hex digits).
_ID_BYTES: Final = 16


class SessionStore(GenServer[Any, Any, None]):
    """The server that owns the sessions: ids, TTLs, limits, expiry, and their end.

    Start it with a :class:`SessionStoreConfig`::

        async with SessionStore.running(SessionStoreConfig(max_sessions=100)) as store:
            session = await store.create(metadata={"user": "ada"})
            await store.touch(session.session_id)

    or under a supervisor: ``ChildSpec("sessions", SessionStore, arg=config)``
    (the child's ref is a :class:`SessionStoreRef`). The sessions live in the
    config's backend, never in the server: a restarted store (the same config)
    finds them all. With no config each start makes a new
    :class:`MemoryBackend`, which a restart does not keep.

    Expiry: a session expires ``ttl`` seconds after its last use. An expired
    session is gone for every request at once (read at the request, on
    :meth:`now`); a sweep on a timer in the server's own task group removes
    them meanwhile, and so does a start (what expired while no store ran).
    Each ended session gets one ``on_end`` call (see the config).

    Times (``created_at``, ``last_used``, expiry) are the config's ``clock``
    (:meth:`now`): ``time.time()`` by default, seconds since the epoch, so
    that stores on several hosts, or one that starts again after a reboot,
    sharing a backend agree on them as far as their clocks agree. Tests pass
    ``clock=anyio.current_time`` to drive expiry with trio's ``MockClock``
    (the sweep's timer is on the event loop's clock either way).
    """

    ref_class = SessionStoreRef
    ref: SessionStoreRef
    #: Its config (set by ``init``); the ref reads its backend.
    config: SessionStoreConfig

    def __init__(self) -> None:
        self._tg: TaskGroup | None = None
        self._sweeper: anyio.CancelScope | None = None
        self._rearm: anyio.Event | None = None
        self._interval = derived_sweep_interval(DEFAULT_TTL)
        #: How many sessions there are, as far as this server knows (see SessionStoreRef).
        self.known_count = 0

    @classmethod
    async def start(
        cls,
        tg: TaskGroup,
        arg: SessionStoreConfig | None = None,
        *,
        name: str | None = None,
        registry: Registry | None = None,
    ) -> SessionStoreRef:
        """Start a store in ``tg``; return its ref once expired sessions are swept.

        :param arg: its :class:`SessionStoreConfig`; None for the defaults.
        :raises ArgumentTypeError: ``arg`` is not a SessionStoreConfig.
        :raises Exception: an error of the backend during the first sweep.
        """
        ref = await super().start(tg, arg, name=name, registry=registry)
        assert isinstance(ref, SessionStoreRef)
        return ref

    @classmethod
    @asynccontextmanager
    async def running(
        cls,
        arg: SessionStoreConfig | None = None,
        *,
        name: str | None = None,
        registry: Registry | None = None,
    ) -> AsyncIterator[SessionStoreRef]:
        """Run a store for an ``async with`` block (own task group); stopped on exit."""
        async with super().running(arg, name=name, registry=registry) as ref:
            assert isinstance(ref, SessionStoreRef)  # GenServer.running, typed
            yield ref

    # -- GenServer callbacks ----------------------------------------------------------

    def lifespan(self) -> AbstractAsyncContextManager[object]:
        """Hold the task group of the sweep and of the ``on_end`` calls."""
        return self._helpers()

    @asynccontextmanager
    async def _helpers(self) -> AsyncIterator[None]:
        async with unwrapped_task_group() as tg:
            self._tg = tg
            try:
                yield
            finally:
                if self._sweeper is not None:
                    self._sweeper.cancel()
                # on_end calls still running get terminate_timeout to finish.
                scope = tg.cancel_scope
                scope.deadline = min(scope.deadline, anyio.current_time() + self.terminate_timeout)

    async def init(self, arg: Any) -> None:
        """Check the config, remove what expired while no store ran, start the sweep."""
        config = SessionStoreConfig() if arg is None else arg
        if not isinstance(config, SessionStoreConfig):
            raise ArgumentTypeError(
                "arg", f"a SessionStore takes a SessionStoreConfig, got {arg!r}"
            )
        self.config = config
        if config.sweep_interval is not None:
            self._interval = config.sweep_interval
        await self._expire_due(self.now())
        self.known_count = await config.backend.count()
        assert self._tg is not None
        self._rearm = anyio.Event()
        self._tg.start_soon(self._sweep_forever)

    async def handle_call(self, request: Any, state: None) -> tuple[Any, None]:
        """Answer one request; its error is the caller's (a :class:`_Failed` reply)."""
        try:
            reply = await self._handle(request, self.now())
        except Exception as exc:
            reply = _Failed(exc)
        return reply, state

    def now(self) -> float:
        """The store's time: its config's ``clock()``."""
        return self.config.clock()

    # -- the rules ----------------------------------------------------------------------

    async def _handle(self, request: Any, now: float) -> Any:
        backend = self.config.backend
        if type(request) is _Get:
            return await self._live(request.session_id, now)
        if type(request) is _Touch:
            record = await self._live(request.session_id, now)
            return await self._replace(replace(record, last_used=now))
        if type(request) is _Pin:
            record = await self._live(request.session_id, now)
            expected = request.only_if_pinned_to
            if expected is not ... and record.worker_id != expected:
                return record
            return await self._replace(replace(record, worker_id=request.worker_id))
        if type(request) is _Delete:
            return await self._delete(request.session_id, now)
        if type(request) is _Create:
            return await self._create(request, now)
        if request == _LIST:
            await self._expire_due(now)
            records = await backend.records()
            self.known_count = len(records)
            return sorted(records, key=lambda r: (r.created_at, r.session_id))
        if request == _COUNT:
            await self._expire_due(now)
            self.known_count = count = await backend.count()
            return count
        if request == _SWEEP:
            return await self._expire_due(now)
        raise ValueError(f"unknown request {request!r}")

    def _in_use(self, session_id: str) -> bool:
        in_use = self.config.in_use
        return in_use is not None and in_use(session_id)

    async def _live(self, session_id: str, now: float) -> SessionRecord:
        record = await self.config.backend.get(session_id)
        if record is None:
            raise SessionNotFound(session_id)
        if _expired(record, now) and not self._in_use(session_id):
            await self._end(session_id, "expired", expired_at=now)
            raise SessionNotFound(session_id, "it expired")
        return record

    async def _replace(self, record: SessionRecord) -> SessionRecord:
        if not await self.config.backend.replace(record):
            raise SessionNotFound(record.session_id)  # removed behind our back (another host)
        return record

    async def _create(self, request: _Create, now: float) -> SessionRecord:
        # Expired sessions neither hold their ids nor count against max_sessions.
        await self._expire_due(now)
        backend = self.config.backend
        while True:
            session_id = request.session_id or secrets.token_hex(_ID_BYTES)
            record = SessionRecord(
                session_id=session_id,
                created_at=now,
                last_used=now,
                ttl=request.ttl,
                metadata=request.metadata,
                affinity=request.affinity,
            )
            if await backend.create(record, limit=self.config.max_sessions):
                self.known_count += 1
                break
            if request.session_id is not None:
                raise SessionExists(session_id)
            # A random id that is taken: draw another.
        if request.ttl is not None and self.config.sweep_interval is None:
            interval = derived_sweep_interval(request.ttl)
            if interval < self._interval:
                self._interval = interval
                assert self._rearm is not None
                self._rearm.set()
        return record

    async def _delete(self, session_id: str, now: float) -> SessionRecord | None:
        record = await self.config.backend.delete(session_id)
        if record is None:
            return None
        self.known_count = max(0, self.known_count - 1)
        if _expired(record, now) and not self._in_use(session_id):
            self._notify(record, "expired")
            return None
        self._notify(record, "deleted")
        return record

    async def _end(
        self, session_id: str, why: EndReason, *, expired_at: float | None = None
    ) -> SessionRecord | None:
        # With expired_at: only if it has expired then (another caller may have just used it).
        record = await self.config.backend.delete(session_id, expired_at=expired_at)
        if record is not None:
            self.known_count = max(0, self.known_count - 1)
            self._notify(record, why)
        return record

    async def _expire_due(self, now: float) -> int:
        ended = 0
        for record in await self.config.backend.due(now):
            if self._in_use(record.session_id):
                continue  # a call of it runs: it expires once idle for its TTL
            if await self._end(record.session_id, "expired", expired_at=now) is not None:
                ended += 1
        return ended

    # -- helpers in the server's task group ----------------------------------------------

    def _notify(self, record: SessionRecord, why: EndReason) -> None:
        written = self.config.on_variables_written
        if written is not None:  # its variables went with it (before the delete returns)
            written(record.session_id, None)
        if self.config.on_end is not None:
            assert self._tg is not None
            self._tg.start_soon(self._call_on_end, record, why)

    async def _call_on_end(self, record: SessionRecord, why: EndReason) -> None:
        on_end = self.config.on_end
        assert on_end is not None
        try:
            result = on_end(record, why)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("%r: on_end(%r, %r) raised", self.ref, record.session_id, why)

    async def _sweep_forever(self) -> None:
        with anyio.CancelScope() as self._sweeper:
            next_at = anyio.current_time() + self._interval
            while True:
                self._rearm = rearm = anyio.Event()
                with anyio.CancelScope(deadline=next_at):
                    await rearm.wait()
                now = anyio.current_time()
                if now < next_at:  # a shorter interval: wake up sooner
                    next_at = min(next_at, now + self._interval)
                    continue
                try:
                    reply = await self.ref.call(_SWEEP, timeout=None)
                except ServerExited:
                    return
                if type(reply) is _Failed:
                    logger.warning("%r: the sweep failed: %r", self.ref, reply.error)
                next_at = anyio.current_time() + self._interval
