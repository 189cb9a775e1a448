"""SessionVariables: a session's typed variables, from the host.

``pool.session()``'s ``PoolSession.variables``, or
``SessionStoreRef.variables(session_id)``. Every operation goes to the
store's backend from the caller's task (each backend method is atomic), with
the values checked against their variable's :class:`VariableSpec` first::

    async with pool.session() as s:
        await s.variables.register("counter", "integer", 0, min=0)
        await s.variables.set("counter", 5)
        await s.variables.update("counter", lambda n: n + 1)   # compare-and-set: 6
        assert await s.variables.get("counter") == 6
        async with s.variables.watch(["counter"]) as changes:
            async for change in changes:   # VariableChange(name, old, new, version, source)
                ...
"""

from __future__ import annotations

import asyncio
import builtins
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import sniffio

from snakepit._wire._variables import Variable, VariableChange, VariableSpec, check_names
from snakepit.errors import (
    ArgumentTypeError,
    ConfigError,
    SessionBackendError,
    SessionNotFound,
    VariableError,
)

from ._variable_backend import VariableBackend, VariableEvent, VariableRecord

if TYPE_CHECKING:
    from ._store_ref import SessionStoreRef

__all__ = ("SessionVariables",)

T = TypeVar("T")

#: Changes a watch may fall behind by before it is ended (VariableError).
WATCH_BUFFER = 1024
#: Attempts of :meth:`SessionVariables.update` under contention before it gives up.
UPDATE_ATTEMPTS = 10_000


class _UpdateLock:
    """The lock the updates of one variable in this process take turns on.

    asyncio's own Lock on asyncio (a tenth of the cost of anyio's, which was
    a quarter of an update's on the memory backend), anyio's elsewhere. Both
    hand it to their waiters in order, take it at once when it is free (no
    yield), and are left unlocked when a holder or a waiter is cancelled.
    """

    __slots__ = ("lock", "owner", "task", "users")

    def __init__(self) -> None:
        self.lock: asyncio.Lock | anyio.Lock
        #: The current task (to tell its holder).
        self.task: Callable[[], object]
        if sniffio.current_async_library() == "asyncio":
            self.lock, self.task = asyncio.Lock(), asyncio.current_task
        else:
            self.lock, self.task = anyio.Lock(fast_acquire=True), _task_id
        self.owner: object = None  # the task that holds it
        self.users = 0  # updates holding it or waiting for it


def _task_id() -> object:
    return anyio.get_current_task().id


#: The locks of the variables being updated now, by (id of the backend, session id,
#: name). An entry lives while an update holds or waits for its lock (so the id is
#: not reused meanwhile: the update holds the backend), then is dropped.
_UPDATE_LOCKS: dict[tuple[int, str, str], _UpdateLock] = {}


class SessionVariables:
    """The typed variables of one session, read and written from the host.

    Each write is checked against the variable's spec (a
    :class:`~snakepit.errors.VariableValidationError` leaves the old value and
    version), and bumps its version by one. ``source`` is who the writes are
    from (``"host"``), as watches report it.
    """

    __slots__ = ("_ref", "session_id", "source")

    def __init__(self, ref: SessionStoreRef, session_id: str, *, source: str = "host") -> None:
        if not isinstance(session_id, str):
            raise ArgumentTypeError("session_id", f"must be a str, got {session_id!r}")
        self._ref = ref
        #: The session's id.
        self.session_id = session_id
        #: Who the writes are from, as watches see it.
        self.source = source

    def __repr__(self) -> str:
        return f"<SessionVariables of {self.session_id!r}>"

    async def _backend(self) -> tuple[VariableBackend, float]:
        config = self._ref._store_config()
        if config is None:  # not running: its error (ServerExited), or SessionNotFound
            await self._ref.get(self.session_id)
            raise SessionNotFound(self.session_id)
        backend = config.backend
        if not isinstance(backend, VariableBackend):
            raise SessionBackendError(
                type(backend).__name__, "this backend keeps no session variables"
            )
        return backend, config.clock()

    def _written(self, names: Sequence[str]) -> None:
        # After a write, before it returns: the pool's workers' caches learn of it.
        config = self._ref._store_config()
        hook = None if config is None else config.on_variables_written
        if hook is not None:
            hook(self.session_id, names)

    async def register(self, name: str, type: str, value: Any, /, **constraints: Any) -> Variable:
        """Add a variable of ``type`` with its first ``value`` (version 1).

        ``constraints`` are :class:`VariableSpec`'s (``min``, ``max``,
        ``choices``, ``max_length``, ``pattern``, ``dimension``, ``shape``,
        ``dtype``, ``description``).

        :raises ConfigError: a bad spec (the field named).
        :raises VariableValidationError: ``value`` breaks it.
        :raises VariableExists: the session has a variable of that name.
        :raises SessionNotFound: the session is gone.
        """
        spec = VariableSpec.make(name, type, **constraints)
        checked = spec.validate(value)
        backend, now = await self._backend()
        record = VariableRecord(
            name, spec.to_json(), spec.encode(checked), 1, secrets.token_hex(8), now, self.source
        )
        try:
            await backend.register_variable(self.session_id, record, now)
        finally:  # (a cancelled or failed write may have landed)
            self._written([name])
        return Variable(spec, checked, 1)

    async def variable(self, name: str) -> Variable:
        """The variable ``name``: its spec, value and version.

        :raises VariableNotFound: the session has no such variable.
        :raises SessionNotFound: the session is gone.
        """
        return (await self.variables([name]))[name]

    async def variables(self, names: Iterable[str] | None = None) -> dict[str, Variable]:
        """Several variables read at one instant (None: all of them), by name.

        :raises VariableNotFound: one of ``names`` is not there.
        :raises SessionNotFound: the session is gone.
        """
        wanted = None if names is None else check_names(names)
        backend, now = await self._backend()
        records = await backend.get_variables(self.session_id, wanted, now)
        return {name: _variable(record) for name, record in records.items()}

    async def _records(self, names: Iterable[str] | None) -> dict[str, VariableRecord]:
        """The stored records of ``names`` (None: all), read at one instant (the bridge's)."""
        wanted = None if names is None else check_names(names)
        backend, now = await self._backend()
        return await backend.get_variables(self.session_id, wanted, now)

    async def _write_stored(
        self, values: Mapping[str, Any], expect: Mapping[str, tuple[str, int | None]]
    ) -> dict[str, VariableRecord] | None:
        """Write values given in their stored form, checked against their specs (the bridge's).

        ``expect`` as the backend's; a name without one is written to the
        registration read here. None if an expectation did not hold.
        """
        return await self._write(values, VariableSpec.decode, expect)

    async def _write(
        self,
        values: Mapping[str, Any],
        check: Callable[[VariableSpec, Any], Any],
        expect: Mapping[str, tuple[str, int | None]],
    ) -> dict[str, VariableRecord] | None:
        # One read of the specs, each value made canonical by ``check(spec,
        # value)``, one write; a name without an expectation is written to the
        # registration read (at any version). None if an expectation failed.
        names = check_names(values)
        backend, now = await self._backend()
        records = await backend.get_variables(self.session_id, names, now)
        encoded = {}
        for name in names:
            spec = VariableSpec.from_json(records[name].spec)
            encoded[name] = spec.encode(check(spec, values[name]))
        full = {name: expect.get(name, (records[name].uid, None)) for name in names}
        try:
            return await backend.set_variables(self.session_id, encoded, full, now, self.source)
        finally:
            self._written(names)

    async def get(self, name: str) -> Any:
        """The value of ``name`` (see :meth:`variable`)."""
        return (await self.variable(name)).value

    async def get_many(self, names: Iterable[str]) -> dict[str, Any]:
        """The values of ``names`` read at one instant (see :meth:`variables`)."""
        wanted = check_names(names)  # (None is not "all" here)
        return {name: v.value for name, v in (await self.variables(wanted)).items()}

    async def list(self) -> builtins.list[Variable]:
        """Every variable of the session, by name."""
        found = await self.variables()
        return [found[name] for name in sorted(found)]

    async def set(self, name: str, value: Any) -> int:
        """Write ``value``; return its new version (see :meth:`set_many`)."""
        return (await self.set_many({name: value}))[name]

    async def set_many(self, values: Mapping[str, Any]) -> dict[str, int]:
        """Write every value of ``values``, all or none; their new versions.

        :raises VariableValidationError: a value breaks its spec (nothing written).
        :raises VariableNotFound: a name is not there (nothing written).
        :raises SessionNotFound: the session is gone.
        """
        if not isinstance(values, Mapping):
            raise ArgumentTypeError(
                "values", f"must be a mapping of names to values, got {values!r}"
            )
        for _ in range(UPDATE_ATTEMPTS):
            # None: a name was registered again meanwhile (another spec): check again.
            written = await self._write(values, VariableSpec.validate, {})
            if written is not None:
                return {name: record.version for name, record in written.items()}
        raise VariableError(
            f"set_many({list(values)!r}): the variables kept being registered again"
        )

    async def update(self, name: str, fn: Callable[[Any], Any]) -> Any:
        """Write ``fn(current value)``, compare-and-set; return the value written (canonical).

        If another write lands between the read and the write, ``fn`` runs
        again on the new value: N concurrent ``update(name, lambda n: n + 1)``
        add exactly N. The updates of one variable from this process (of
        the same backend) take turns, each from its read to its write, so
        they seldom need to run ``fn`` again: only for a write from
        elsewhere (another host, a worker, a ``set``). ``fn`` may be a
        coroutine function; what it raises is raised here, and nothing is
        written. ``fn`` must not update the same variable (it would wait for
        itself: from its own task, that is a ``VariableError``).

        :raises VariableValidationError: what ``fn`` returned breaks the spec.
        :raises VariableNotFound: the session has no such variable.
        :raises SessionNotFound: the session is gone.
        """
        (name,) = check_names([name])
        backend, now = await self._backend()
        key = (id(backend), self.session_id, name)
        entry = _UPDATE_LOCKS.get(key)
        if entry is None:
            entry = _UPDATE_LOCKS[key] = _UpdateLock()
        task = entry.task()
        if entry.owner == task:
            raise VariableError(f"update({name!r}) from its own fn: it would wait for itself")
        waits = entry.users > 0  # else it is free, and taken at once: ``now`` holds
        entry.users += 1
        try:
            async with entry.lock:
                entry.owner = task
                try:
                    if waits:
                        backend, now = await self._backend()
                    return await self._update(name, fn, backend, now)
                finally:
                    entry.owner = None
        finally:
            entry.users -= 1
            if not entry.users:
                del _UPDATE_LOCKS[key]

    async def _update(
        self, name: str, fn: Callable[[Any], Any], backend: VariableBackend, now: float
    ) -> Any:
        """:meth:`update`'s compare-and-set loop, with the variable's lock held.

        Its first attempt with ``backend`` and ``now`` as given.
        """
        for attempt in range(UPDATE_ATTEMPTS):
            if attempt:
                backend, now = await self._backend()
            record = (await backend.get_variables(self.session_id, [name], now))[name]
            spec = VariableSpec.from_json(record.spec)
            new = fn(spec.decode(record.value))
            if isinstance(new, Awaitable):
                new = await new
            checked = spec.validate(new)
            try:
                written = await backend.set_variables(
                    self.session_id,
                    {name: spec.encode(checked)},
                    {name: (record.uid, record.version)},
                    now,
                    self.source,
                )
            finally:
                self._written([name])
            if written is not None:
                return checked
        raise VariableError(
            f"update({name!r}) lost the race {UPDATE_ATTEMPTS} times in a row; gave up"
        )

    async def delete(self, name: str) -> None:
        """Remove the variable ``name``.

        :raises VariableNotFound: the session has no such variable.
        :raises SessionNotFound: the session is gone.
        """
        (name,) = check_names([name])
        backend, now = await self._backend()
        try:
            await backend.delete_variable(self.session_id, name, now, self.source)
        finally:
            self._written([name])

    @asynccontextmanager
    async def watch(
        self, names: Iterable[str] | None = None, *, buffer: int = WATCH_BUFFER
    ) -> AsyncIterator[AsyncIterator[VariableChange]]:
        """The changes of ``names`` (None: every variable) from now on, as they are made.

        ::

            async with s.variables.watch(["counter"]) as changes:
                async for change in changes:
                    print(change.name, change.old, change.new, change.version, change.source)

        The iteration ends when the session ends (deleted or expired). A
        registration has ``old`` None; a deletion ``new`` None.

        :raises VariableError: (from the iteration) the watch fell more than
            ``buffer`` changes behind and was ended.
        :raises SessionNotFound: the session is gone.
        """
        wanted = None if names is None else frozenset(check_names(names))
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise ConfigError("buffer", f"must be an int >= 1, got {buffer!r}")
        backend, _ = await self._backend()
        async with backend.watch_variables(self.session_id, wanted, buffer) as events:
            yield _Changes(events)


class _Changes:
    """A watch's changes, decoded (an iterator, not a generator: nothing to finalize)."""

    __slots__ = ("_events",)

    def __init__(self, events: AsyncIterator[VariableEvent]) -> None:
        self._events = events

    def __aiter__(self) -> _Changes:
        return self

    async def __anext__(self) -> VariableChange:
        event = await self._events.__anext__()
        return _change(event.name, event.old, event.new, event.source)


def _variable(record: VariableRecord) -> Variable:
    spec = VariableSpec.from_json(record.spec)
    return Variable(spec, spec.decode(record.value), record.version)


def _change(
    name: str, old: VariableRecord | None, new: VariableRecord | None, source: str
) -> VariableChange:
    some = new if new is not None else old
    assert some is not None
    spec = VariableSpec.from_json(some.spec)
    return VariableChange(
        name,
        None if old is None else spec.decode(old.value),
        None if new is None else spec.decode(new.value),
        some.version,
        source,
    )
