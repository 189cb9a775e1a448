"""MemoryBackend: the in-process SessionBackend (dicts and a heap of expiry times)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from types import EllipsisType
from typing import Any, Final

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from snakepit.errors import (
    SessionLimitReached,
    SessionNotFound,
    VariableError,
    VariableExists,
    VariableNotFound,
)

from ._backend import SessionRecord
from ._variable_backend import Expectations, VariableEvent, VariableRecord

__all__ = ("MemoryBackend",)

# Rebuild the heap when it holds more than this many entries per live session
# (touches leave stale entries behind; they are dropped lazily).
_STALE_FACTOR: Final = 2
_STALE_SLACK: Final = 64


class MemoryBackend:
    """A :class:`~snakepit.session.SessionBackend` that keeps sessions in this process.

    The default backend of a :class:`~snakepit.session.SessionStore`. Its data
    lives in this object, not in the store's server, so a restart of the
    server (the same backend in its config) keeps every session; it is lost
    with the process. Every method runs without an await point, so each is
    atomic on its own.

    :meth:`due` is cheap: the records that expire are kept in a heap by
    expiry time, so a sweep that finds nothing looks at one entry, and one
    that finds ``k`` records costs ``O(k log n)``, not a scan of every
    session. A :meth:`touch` (every call of a session) does not touch the
    heap: it moves the expiry later, and :meth:`due` re-seats an entry it
    meets before its record's expiry. A :meth:`replace` that moves the
    expiry leaves its old heap entry behind, skipped when met and dropped
    when the heap is rebuilt (whenever stale entries outnumber the live
    sessions).
    """

    def __init__(self) -> None:
        self._records: dict[str, SessionRecord] = {}
        # (expires_at, seq, session_id); an entry is current while _seq[id] is its seq.
        self._heap: list[tuple[float, int, str]] = []
        self._seq: dict[str, int] = {}
        self._counter = itertools.count()
        # Variables by session, then name; watchers by session.
        self._variables: dict[str, dict[str, VariableRecord]] = {}
        self._watchers: dict[str, set[_Watcher]] = {}

    def __repr__(self) -> str:
        return f"<MemoryBackend sessions={len(self._records)}>"

    def _schedule(self, record: SessionRecord) -> None:
        expires_at = record.expires_at
        session_id = record.session_id
        if expires_at is None:
            self._seq.pop(session_id, None)
            return
        seq = next(self._counter)
        self._seq[session_id] = seq
        heapq.heappush(self._heap, (expires_at, seq, session_id))
        self._drop_stale()

    def _drop_stale(self) -> None:
        # Rebuilt when stale entries outnumber the live ones (amortized O(1) per update).
        if len(self._heap) > _STALE_FACTOR * len(self._seq) + _STALE_SLACK:
            self._heap = [e for e in self._heap if self._seq.get(e[2]) == e[1]]
            heapq.heapify(self._heap)

    async def create(self, record: SessionRecord, *, limit: int | None) -> bool:
        """Store ``record`` if its id is free and fewer than ``limit`` sessions exist.

        :returns: False if its id is taken (nothing is written).
        :raises SessionLimitReached: ``limit`` sessions exist already (nothing is written).
        """
        if record.session_id in self._records:
            return False
        if limit is not None and len(self._records) >= limit:
            raise SessionLimitReached(limit)
        self._records[record.session_id] = record
        self._schedule(record)
        return True

    async def get(self, session_id: str) -> SessionRecord | None:
        """The record of ``session_id``, or None."""
        return self._records.get(session_id)

    async def replace(self, record: SessionRecord) -> bool:
        """Store ``record`` over the one with its id; False (nothing written) if there is none."""
        old = self._records.get(record.session_id)
        if old is None:
            return False
        self._records[record.session_id] = record
        if old.expires_at != record.expires_at:
            self._schedule(record)
        return True

    def _live(self, session_id: str, now: float) -> SessionRecord | None:
        record = self._records.get(session_id)
        if record is None:
            return None
        expires_at = record.expires_at
        if expires_at is not None and expires_at <= now:
            return None
        return record

    async def touch(self, session_id: str, now: float) -> SessionRecord | None:
        """Set ``last_used`` to ``now`` unless the session is gone or expired; the new record."""
        record = self._live(session_id, now)
        if record is None:
            return None
        # Built directly (dataclasses.replace is slower) and not scheduled
        # again: a touch moves the expiry later, and due() re-seats an entry
        # it finds early (the hot path of every session call pays no heap push).
        record = SessionRecord(
            session_id,
            record.created_at,
            max(now, record.last_used),  # a clock set back does not move it back
            record.ttl,
            record.metadata,
            record.worker_id,
            record.affinity,
        )
        self._records[session_id] = record
        return record

    async def pin(
        self,
        session_id: str,
        worker_id: str | None,
        now: float,
        *,
        only_if_pinned_to: str | EllipsisType | None = ...,
    ) -> SessionRecord | None:
        """Set ``worker_id`` (if pinned to ``only_if_pinned_to``); the record, or None if gone."""
        record = self._live(session_id, now)
        if record is None:
            return None
        if only_if_pinned_to is not ... and record.worker_id != only_if_pinned_to:
            return record
        record = replace(record, worker_id=worker_id)
        self._records[session_id] = record
        return record

    async def delete(
        self, session_id: str, *, expired_at: float | None = None
    ) -> SessionRecord | None:
        """Remove ``session_id`` (with ``expired_at``: only if expired then); the record removed."""
        if expired_at is not None:
            record = self._records.get(session_id)
            expires_at = None if record is None else record.expires_at
            if expires_at is None or expires_at > expired_at:
                return None
        if self._seq.pop(session_id, None) is not None:  # its heap entry is stale now
            self._drop_stale()
        record = self._records.pop(session_id, None)
        self._variables.pop(session_id, None)  # its variables go with it
        for watcher in self._watchers.pop(session_id, ()):
            watcher.send.close()  # the watch ends with the session
        return record

    async def records(self) -> list[SessionRecord]:
        """Every record, in no particular order."""
        return list(self._records.values())

    async def count(self) -> int:
        """How many sessions there are."""
        return len(self._records)

    async def due(self, now: float) -> list[SessionRecord]:
        """The records whose ``expires_at`` is <= ``now`` (they stay stored)."""
        heap = self._heap
        found: list[tuple[float, int, str]] = []
        later: list[tuple[float, int, str]] = []
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            _, seq, session_id = entry
            if self._seq.get(session_id) != seq:
                continue  # stale: replaced, or deleted
            expires_at = self._records[session_id].expires_at
            if expires_at is not None and expires_at > now:
                later.append((expires_at, seq, session_id))  # touched since: re-seated
            else:
                found.append(entry)
        for entry in found + later:  # still current: the store decides what to do with them
            heapq.heappush(heap, entry)
        return [self._records[entry[2]] for entry in found]

    async def aclose(self) -> None:
        """Nothing to release: the sessions stay in this object."""

    # -- variables (VariableBackend) ------------------------------------------------------

    def _live_variables(self, session_id: str, now: float) -> dict[str, VariableRecord]:
        if self._live(session_id, now) is None:
            raise SessionNotFound(session_id)
        return self._variables.setdefault(session_id, {})

    def _publish(self, session_id: str, event: VariableEvent) -> None:
        for watcher in list(self._watchers.get(session_id, ())):
            if watcher.names is None or event.name in watcher.names:
                try:
                    watcher.send.send_nowait(event)
                except anyio.WouldBlock:  # ended, said so, rather than a change dropped
                    watcher.behind = True
                    watcher.send.close()
                    self._watchers.get(session_id, set()).discard(watcher)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    self._watchers.get(session_id, set()).discard(watcher)

    async def register_variable(self, session_id: str, record: VariableRecord, now: float) -> None:
        """Add ``record`` to the session (SessionNotFound, VariableExists)."""
        variables = self._live_variables(session_id, now)
        if record.name in variables:
            raise VariableExists(session_id, record.name)
        variables[record.name] = record
        self._publish(session_id, VariableEvent(record.name, None, record, record.source))

    async def get_variables(
        self, session_id: str, names: Sequence[str] | None, now: float
    ) -> dict[str, VariableRecord]:
        """The records of ``names`` (None: all) (SessionNotFound, VariableNotFound)."""
        variables = self._live_variables(session_id, now)
        if names is None:
            return dict(variables)
        found = {}
        for name in names:
            record = variables.get(name)
            if record is None:
                raise VariableNotFound(session_id, name)
            found[name] = record
        return found

    async def set_variables(
        self,
        session_id: str,
        values: Mapping[str, Any],
        expect: Expectations,
        now: float,
        source: str,
    ) -> dict[str, VariableRecord] | None:
        """Write ``values`` all or none if ``expect`` holds; the new records, or None."""
        variables = self._live_variables(session_id, now)
        for name in values:
            if name not in variables:
                raise VariableNotFound(session_id, name)
        for name, (uid, version) in expect.items():
            record = variables.get(name)
            if record is None or record.uid != uid:
                return None
            if version is not None and record.version != version:
                return None
        written = {}
        events = []
        for name, value in values.items():
            old = variables[name]
            new = VariableRecord(name, old.spec, value, old.version + 1, old.uid, now, source)
            variables[name] = written[name] = new
            events.append(VariableEvent(name, old, new, source))
        for event in events:  # after all are written: no watcher sees half
            self._publish(session_id, event)
        return written

    async def delete_variable(
        self, session_id: str, name: str, now: float, source: str
    ) -> VariableRecord:
        """Remove ``name``; its last record (SessionNotFound, VariableNotFound)."""
        variables = self._live_variables(session_id, now)
        record = variables.pop(name, None)
        if record is None:
            raise VariableNotFound(session_id, name)
        self._publish(session_id, VariableEvent(name, record, None, source))
        return record

    @asynccontextmanager
    async def watch_variables(
        self, session_id: str, names: frozenset[str] | None, buffer: int
    ) -> AsyncIterator[AsyncIterator[VariableEvent]]:
        """Changes of ``names`` (None: all) of the session from now on (see the protocol)."""
        if session_id not in self._records:
            raise SessionNotFound(session_id)
        send, receive = anyio.create_memory_object_stream[VariableEvent](buffer)
        watcher = _Watcher(names, send)
        self._watchers.setdefault(session_id, set()).add(watcher)

        try:
            yield _Events(receive, watcher, session_id, buffer)
        finally:
            watchers = self._watchers.get(session_id)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self._watchers[session_id]
            send.close()
            receive.close()


class _Events:
    """A watch's events (an iterator, not a generator: nothing to finalize if left early)."""

    __slots__ = ("_buffer", "_receive", "_session_id", "_watcher")

    def __init__(
        self,
        receive: MemoryObjectReceiveStream[VariableEvent],
        watcher: _Watcher,
        session_id: str,
        buffer: int,
    ) -> None:
        self._receive = receive
        self._watcher = watcher
        self._session_id = session_id
        self._buffer = buffer

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> VariableEvent:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            if self._watcher.behind:
                raise VariableError(
                    f"a watch of session {self._session_id!r} fell more than"
                    f" {self._buffer} changes behind and was ended"
                ) from None
            raise StopAsyncIteration from None


class _Watcher:
    """One watch of a memory backend: which names, where its events go."""

    __slots__ = ("behind", "names", "send")

    def __init__(
        self, names: frozenset[str] | None, send: MemoryObjectSendStream[VariableEvent]
    ) -> None:
        self.names = names
        self.send = send
        self.behind = False
