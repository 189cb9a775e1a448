"""``ctx.session.variables``: a session's typed variables, read and written from inside a tool.

The same operations as the host's :class:`snakepit.session.SessionVariables`,
through the worker's bridge to its host::

    @tool
    async def step(self, ctx: Context) -> int:
        lr = await ctx.session.variables.get("learning_rate")   # cached: no round trip
        return await ctx.session.variables.update("steps", lambda n: n + 1)

    @tool
    def step_sync(self, ctx: Context) -> int:     # a sync tool: the same calls block
        return ctx.session.variables.update("steps", lambda n: n + 1)

In an ``async`` tool every method returns an awaitable; in a sync tool (it
runs in a thread of the worker's) it blocks and returns the result. Values
are checked against their variable's spec here first (an invalid value
costs no round trip) and again by the host, which alone writes.

Reads are cached per worker: the host bumps a counter in a page of memory it
shares with its workers (see :mod:`snakepit._wire._coherence`) after every
write of a variable through the pool and before the write returns, and a
cached value is used only while its counters are what they were before it
was read. So a read of an unchanged variable costs no round trip, and a read
that starts after a write through the pool (the host's ``set()``, or a
tool's) returned sees that value or a newer one. A write by another process
sharing the backend reaches the cache when its change notification reaches
the pool (see :mod:`snakepit.pool._coherence`). Errors are the
``Bridge*`` forms of the session errors (:class:`~snakepit.errors.BridgeError`
subclasses): see :mod:`snakepit.errors`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from snakepit._wire._bridge import from_wire_value, to_wire_value
from snakepit._wire._coherence import CoherencePage, page_path, session_slot, variable_slot
from snakepit._wire._proto.snakepit.v1 import bridge_pb2
from snakepit._wire._variables import Variable, VariableChange, VariableSpec, check_names
from snakepit.errors import (
    ArgumentTypeError,
    BridgeError,
    BridgeSessionNotFound,
    BridgeUnavailable,
    BridgeValidationError,
    BridgeVariableExists,
    BridgeVariableNotFound,
    VariableValidationError,
)

if TYPE_CHECKING:
    from ._context import Context

__all__ = ("Variables",)

Kind = bridge_pb2.BridgeFailure.Kind

#: Attempts of a compare-and-set (update, or a write racing a registration) before giving up.
ATTEMPTS: Final = 10_000
#: Entries a worker's cache holds at most (past it, it starts again empty).
MAX_ENTRIES: Final = 4096


@dataclass(slots=True, frozen=True)
class _Entry:
    variable: Variable
    uid: str
    vslot: int
    vstamp: int
    sslot: int
    sstamp: int


class _VariableCache:
    """A worker's cache of the variables its tools read (one per worker, in its bridge).

    Used only while the host's coherence page says nothing was written since
    a value was read (see the module's docstring); a worker whose page cannot
    be mapped (a host on another machine) does not cache.
    """

    __slots__ = ("_entries", "_page", "_path", "_registrations", "_specs", "hits", "misses")

    def __init__(self, bridge_address: str) -> None:
        path = bridge_address.removeprefix("unix:")
        self._path = page_path(path) if bridge_address.startswith("unix:") else None
        self._page: CoherencePage | None = None
        self._entries: dict[tuple[str, str], _Entry] = {}
        # (session, name) -> the spec and uid last seen: what a write is checked
        # against and expects (the host refuses it, a conflict, if it changed).
        self._registrations: dict[tuple[str, str], tuple[VariableSpec, str]] = {}
        self._specs: dict[str, VariableSpec] = {}
        #: Reads answered from the cache, and reads that asked the host (for tests).
        self.hits = 0
        self.misses = 0

    def page(self) -> CoherencePage | None:
        """The host's page, mapped on first use; None if there is none."""
        if self._page is None and self._path is not None:
            try:
                self._page = CoherencePage.open(self._path)
            except OSError:
                self._path = None  # not on the host's machine: never cache
        return self._page

    def stamp(self, session_id: str, name: str) -> tuple[int, int] | None:
        """The counters of (session, name) now: note them *before* asking the host."""
        page = self.page()
        if page is None:
            return None
        return page.read(variable_slot(session_id, name)), page.read(session_slot(session_id))

    def lookup(self, session_id: str, name: str) -> _Entry | None:
        """The cached entry of (session, name) if it is current, else None."""
        entry = self._entries.get((session_id, name))
        page = self._page
        if entry is None or page is None:
            self.misses += 1
            return None
        if page.read(entry.vslot) != entry.vstamp or page.read(entry.sslot) != entry.sstamp:
            self._entries.pop((session_id, name), None)
            self.misses += 1
            return None
        self.hits += 1
        return entry

    def store(
        self,
        session_id: str,
        name: str,
        stamp: tuple[int, int] | None,
        variable: Variable,
        uid: str,
    ) -> _Entry:
        """Keep what the host answered, with the counters noted before it was asked.

        Its entry (kept only with counters: a worker without a page caches nothing).
        """
        if len(self._registrations) >= MAX_ENTRIES:
            self._registrations.clear()
        self._registrations[session_id, name] = (variable.spec, uid)
        vstamp, sstamp = (0, 0) if stamp is None else stamp
        entry = _Entry(
            variable, uid, variable_slot(session_id, name), vstamp, session_slot(session_id), sstamp
        )
        if stamp is not None:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[session_id, name] = entry
        return entry

    def drop(self, session_id: str, name: str) -> None:
        """Forget the value of (session, name): the worker wrote it."""
        self._entries.pop((session_id, name), None)

    def registration(self, session_id: str, name: str) -> tuple[VariableSpec, str] | None:
        """The spec and uid of (session, name) last seen, or None."""
        return self._registrations.get((session_id, name))

    def forget(self, session_id: str, name: str) -> None:
        """Forget all of (session, name): its registration changed, or it was deleted."""
        self._entries.pop((session_id, name), None)
        self._registrations.pop((session_id, name), None)

    def spec(self, spec_json: str) -> VariableSpec:
        """The spec of this JSON text (parsed once per distinct text)."""
        spec = self._specs.get(spec_json)
        if spec is None:
            if len(self._specs) >= MAX_ENTRIES:
                self._specs.clear()
            spec = self._specs[spec_json] = VariableSpec.from_json(json.loads(spec_json))
        return spec

    def close(self) -> None:
        """Unmap the page and forget everything."""
        self._entries.clear()
        self._registrations.clear()
        page, self._page, self._path = self._page, None, None
        if page is not None:
            page.close()


class Variables:
    """The typed variables of the session a tool's call belongs to: ``ctx.session.variables``.

    See the module's docstring: awaitables in ``async`` tools, blocking
    calls in sync ones; :meth:`watch` is for ``async`` tools only.
    """

    __slots__ = ("_ctx",)

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def __repr__(self) -> str:
        return f"<Variables of session {self._ctx.session_id!r}>"

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def _sid(self) -> str:
        return self._ctx.session_id

    def _cache(self) -> _VariableCache:
        bridge = self._ctx._bridge
        if bridge is None or self._ctx._loop is None:
            raise BridgeUnavailable("this worker has no bridge to its host (started without one)")
        cache: _VariableCache = bridge.cache
        return cache

    def _on_loop(self) -> bool:
        # True in the worker's loop (an async tool), False in a thread of a sync tool.
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if running is not self._ctx._loop:
            raise BridgeUnavailable(
                "session variables used from another event loop than the worker's"
            )
        return True

    def _do(self, make: Callable[[], Coroutine[Any, Any, Any]], on_loop: bool) -> Any:
        return make() if on_loop else self._ctx._run(make)

    async def _ask(self, kind: str, request: Any) -> Any:
        # One bridge call (its kind as the lane names it); its failure raised typed.
        reply = await self._ctx._bridge._request(kind, request, self._ctx.time_remaining())
        if reply.HasField("failure"):
            raise _error(reply.failure, self._sid)
        return reply

    def _variable(self, wire: bridge_pb2.BridgeVariable, cache: _VariableCache) -> Variable:
        spec = cache.spec(wire.spec_json)
        return Variable(
            spec, spec.decode(from_wire_value(wire.value_json, wire.data)), wire.version
        )

    async def _fetch(self, names: list[str]) -> dict[str, _Entry]:
        # Ask the host for ``names``; cache what it answered, with the counters
        # noted before asking.
        cache = self._cache()
        sid = self._sid
        stamps = {name: cache.stamp(sid, name) for name in names}
        request = bridge_pb2.GetVariablesRequest(session_id=sid, names=names)
        reply = await self._ask("get_variables", request)
        return {
            w.name: cache.store(sid, w.name, stamps.get(w.name), self._variable(w, cache), w.uid)
            for w in reply.variables
        }

    async def _fetch_all(self) -> dict[str, Variable]:
        # Every variable, at one instant (not cached: no counters were noted for them).
        cache = self._cache()
        request = bridge_pb2.GetVariablesRequest(session_id=self._sid, all=True)
        reply = await self._ask("get_variables", request)
        return {w.name: self._variable(w, cache) for w in reply.variables}

    async def _entries(self, names: list[str]) -> dict[str, _Entry]:
        # The current entries of names: from the cache if all are there, else one read.
        hits = self._hits(names)
        return hits if hits is not None else await self._fetch(names)

    def _hits(self, names: list[str]) -> dict[str, _Entry] | None:
        cache = self._cache()
        found = {}
        for name in names:
            hit = cache.lookup(self._sid, name)
            if hit is None:
                return None
            found[name] = hit
        return found

    # -- reads -------------------------------------------------------------------------------

    def get(self, name: str) -> Any:
        """The value of ``name`` (cached while nobody writes it).

        :raises BridgeVariableNotFound: the session has no such variable.
        :raises BridgeSessionNotFound: the session is gone, or not this worker's.
        :raises BridgeUnavailable: the host cannot be reached.
        """
        if not isinstance(name, str):
            raise ArgumentTypeError("name", f"a variable's name is a str, got {name!r}")
        on_loop = self._on_loop()
        hit = self._cache().lookup(self._ctx.session_id, name)
        if hit is not None:
            value = hit.variable.value
            return _ready(value) if on_loop else value
        return self._do(lambda: self._get(name), on_loop)

    async def _get(self, name: str) -> Any:
        # (get() looked in the cache already)
        return (await self._fetch([name]))[name].variable.value

    def variable(self, name: str) -> Any:
        """The variable ``name``: a :class:`~snakepit.session.Variable` (spec, value, version)."""
        names = check_names([name])
        on_loop = self._on_loop()
        hits = self._hits(names)
        if hits is not None:
            found = hits[name].variable
            return _ready(found) if on_loop else found
        return self._do(lambda: self._variable_of(name), on_loop)

    async def _variable_of(self, name: str) -> Variable:
        return (await self._fetch([name]))[name].variable

    def get_many(self, names: Iterable[str]) -> Any:
        """The values of ``names``, read at one instant: a dict by name."""
        wanted = check_names(names)
        on_loop = self._on_loop()
        hits = self._hits(wanted)
        if hits is not None:
            values = {name: hits[name].variable.value for name in wanted}
            return _ready(values) if on_loop else values
        return self._do(lambda: self._get_many(wanted), on_loop)

    async def _get_many(self, names: list[str]) -> dict[str, Any]:
        entries = await self._fetch(names)
        return {name: entries[name].variable.value for name in names if name in entries}

    def variables(self, names: Iterable[str] | None = None) -> Any:
        """Several :class:`~snakepit.session.Variable` read at one instant (None: all), by name."""
        wanted = None if names is None else check_names(names)
        on_loop = self._on_loop()
        return self._do(lambda: self._variables(wanted), on_loop)

    async def _variables(self, names: list[str] | None) -> dict[str, Variable]:
        if names is None:
            return await self._fetch_all()
        return {name: entry.variable for name, entry in (await self._fetch(names)).items()}

    def list(self) -> Any:
        """Every variable of the session, sorted by name (a list of Variable)."""
        on_loop = self._on_loop()
        return self._do(self._list, on_loop)

    async def _list(self) -> builtins.list[Variable]:
        found = await self._variables(None)
        return [found[name] for name in sorted(found)]

    # -- writes ------------------------------------------------------------------------------

    def register(self, name: str, type: str, value: Any, /, **constraints: Any) -> Any:
        """Add a variable (version 1); the :class:`~snakepit.session.Variable` registered.

        ``constraints`` as :meth:`VariableSpec.make <snakepit.session.VariableSpec.make>`'s,
        except ``pattern``, which only the host may register (a pattern is
        matched on the host: a worker's could cost it exponential time).

        :raises ConfigError: a bad spec (the field named).
        :raises BridgeValidationError: ``value`` breaks it.
        :raises BridgeVariableExists: the session has a variable of that name.
        """
        spec = VariableSpec.make(name, type, **constraints)
        checked = _validate(spec, value)
        on_loop = self._on_loop()
        return self._do(lambda: self._register(spec, checked), on_loop)

    async def _register(self, spec: VariableSpec, checked: Any) -> Variable:
        value_json, data = to_wire_value(spec.encode(checked))
        wire = bridge_pb2.BridgeVariable(
            name=spec.name, spec_json=json.dumps(spec.to_json()), value_json=value_json, data=data
        )
        request = bridge_pb2.RegisterVariableRequest(session_id=self._sid, variable=wire)
        self._cache().forget(self._sid, spec.name)
        reply = await self._ask("register_variable", request)
        return self._variable(reply.variable, self._cache())

    def set(self, name: str, value: Any) -> Any:
        """Write ``value``; its new version (see :meth:`set_many`)."""
        names = check_names([name])
        on_loop = self._on_loop()
        return self._do(lambda: self._set_one(names[0], value), on_loop)

    async def _set_one(self, name: str, value: Any) -> int:
        return (await self._set_many({name: value}))[name]

    def set_many(self, values: Mapping[str, Any]) -> Any:
        """Write every value, all or none; their new versions by name.

        :raises BridgeValidationError: a value breaks its spec (nothing written).
        :raises BridgeVariableNotFound: a name is not there (nothing written).
        """
        if not isinstance(values, Mapping):
            raise ArgumentTypeError(
                "values", f"must be a mapping of names to values, got {values!r}"
            )
        copy = dict(values)
        check_names(copy)
        on_loop = self._on_loop()
        return self._do(lambda: self._set_many(copy), on_loop)

    async def _set_many(self, values: dict[str, Any]) -> dict[str, int]:
        names = list(values)
        cache = self._cache()
        sid = self._sid
        for _ in range(ATTEMPTS):
            known = [cache.registration(sid, name) for name in names]
            try:
                wires = _wires(names, values, known)
            except BridgeValidationError:
                wires = None  # maybe against a spec replaced since: read the specs
            if wires is None:
                entries = await self._entries(names)
                known = [(entries[n].variable.spec, entries[n].uid) for n in names]
                wires = _wires(names, values, known)
                assert wires is not None  # (every registration is known now)
            written = await self._write(names, wires)
            if written is not None:
                return written
            for name in names:  # registered again meanwhile: read the specs again
                cache.forget(sid, name)
        raise BridgeError(f"set_many({names!r}): the variables kept being registered again")

    async def _write(
        self, names: builtins.list[str], wires: builtins.list[bridge_pb2.BridgeVariable]
    ) -> dict[str, int] | None:
        # One SetVariables; None on a conflict (the caller reads again).
        cache = self._cache()
        request = bridge_pb2.SetVariablesRequest(session_id=self._sid, values=wires)
        try:
            reply = await self._ask("set_variables", request)
        except BridgeVariableNotFound:
            for name in names:  # deleted: what is known of it is wrong
                cache.forget(self._sid, name)
            raise
        finally:
            for name in names:  # its own write: read it again (the host's page moved)
                cache.drop(self._sid, name)
        if reply.conflict:
            return None
        return {wire.name: wire.version for wire in reply.variables}

    def update(self, name: str, fn: Callable[[Any], Any]) -> Any:
        """Write ``fn(current value)``, compare-and-set; the value written (canonical).

        If another write lands between the read and the write, ``fn`` runs
        again on the new value: N concurrent updates adding one add exactly N,
        whoever makes them (host, this worker, other workers). In an ``async``
        tool ``fn`` may be a coroutine function; in a sync tool it runs in the
        tool's thread.

        :raises BridgeValidationError: what ``fn`` returned breaks the spec (nothing written).
        :raises BridgeVariableNotFound: the session has no such variable.
        """
        (name,) = check_names([name])
        if not callable(fn):
            raise ArgumentTypeError("fn", f"must be callable, got {fn!r}")
        if self._on_loop():
            return self._update(name, fn)
        for _ in range(ATTEMPTS):
            hits = self._hits([name])
            entry = (
                hits[name]
                if hits is not None
                else self._ctx._run(functools.partial(self._entries, [name]))[name]
            )
            checked = _validate(entry.variable.spec, fn(entry.variable.value))
            if self._ctx._run(functools.partial(self._cas, name, entry, checked)) is not None:
                return checked
        raise BridgeError(f"update({name!r}) lost the race {ATTEMPTS} times in a row; gave up")

    async def _update(self, name: str, fn: Callable[[Any], Any]) -> Any:
        for _ in range(ATTEMPTS):
            entry = (await self._entries([name]))[name]
            new = fn(entry.variable.value)
            if isinstance(new, Awaitable):
                new = await new
            checked = _validate(entry.variable.spec, new)
            if await self._cas(name, entry, checked) is not None:
                return checked
        raise BridgeError(f"update({name!r}) lost the race {ATTEMPTS} times in a row; gave up")

    async def _cas(self, name: str, entry: _Entry, checked: Any) -> dict[str, int] | None:
        value_json, data = to_wire_value(entry.variable.spec.encode(checked))
        wire = bridge_pb2.BridgeVariable(
            name=name,
            value_json=value_json,
            data=data,
            uid=entry.uid,
            version=entry.variable.version,
        )
        return await self._write([name], [wire])

    def delete(self, name: str) -> Any:
        """Remove the variable ``name``.

        :raises BridgeVariableNotFound: the session has no such variable.
        """
        (name,) = check_names([name])
        on_loop = self._on_loop()
        return self._do(lambda: self._delete(name), on_loop)

    async def _delete(self, name: str) -> None:
        cache = self._cache()
        try:
            await self._ask(
                "delete_variable",
                bridge_pb2.DeleteVariableRequest(session_id=self._sid, name=name),
            )
        finally:
            cache.forget(self._sid, name)

    # -- watch -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def watch(
        self, names: Iterable[str] | None = None
    ) -> AsyncIterator[AsyncIterator[VariableChange]]:
        """The changes of ``names`` (None: all) from now on; for ``async`` tools.

        ::

            async with ctx.session.variables.watch(["target"]) as changes:
                async for change in changes:     # VariableChange(name, old, new, version, source)
                    ...

        In place when the block is entered: a change made after that is
        seen. The iteration ends when the session ends.

        :raises BridgeError: a sync tool called it, or the watch was ended
            (it fell too far behind).
        :raises BridgeUnavailable: the host cannot be reached.
        """
        wanted = [] if names is None else check_names(names)
        if not self._on_loop():
            raise BridgeError("watch() is for async tools (a sync tool cannot iterate a watch)")
        bridge = self._ctx._bridge
        cache = self._cache()
        request = bridge_pb2.WatchVariablesRequest(session_id=self._sid, names=wanted)
        async with bridge._watch_variables(request) as events:
            first = await anext(events, None)
            if first is None:
                raise BridgeUnavailable("the bridge ended a watch before it started")
            if first.HasField("failure"):
                raise _error(first.failure, self._sid)
            yield _changes(events, cache, self._sid)


async def _changes(
    events: AsyncIterator[bridge_pb2.VariableChangeEvent], cache: _VariableCache, sid: str
) -> AsyncIterator[VariableChange]:
    async for event in events:
        if event.HasField("failure"):
            raise _error(event.failure, sid)
        some = event.new if event.HasField("new") else event.old
        spec = cache.spec(some.spec_json)
        old = (
            spec.decode(from_wire_value(event.old.value_json, event.old.data))
            if event.HasField("old")
            else None
        )
        new = (
            spec.decode(from_wire_value(event.new.value_json, event.new.data))
            if event.HasField("new")
            else None
        )
        yield VariableChange(event.name, old, new, some.version, event.source)


def _wires(
    names: list[str],
    values: Mapping[str, Any],
    known: list[tuple[VariableSpec, str] | None],
) -> list[bridge_pb2.BridgeVariable] | None:
    """The values checked and encoded for a write to the registrations known; None if one is not.

    :raises BridgeValidationError: a value breaks its spec.
    """
    wires = []
    for name, registration in zip(names, known, strict=True):
        if registration is None:
            return None
        spec, uid = registration
        value_json, data = to_wire_value(spec.encode(_validate(spec, values[name])))
        wires.append(
            bridge_pb2.BridgeVariable(name=name, value_json=value_json, data=data, uid=uid)
        )
    return wires


async def _ready(value: Any) -> Any:
    return value


def _validate(spec: VariableSpec, value: Any) -> Any:
    try:
        return spec.validate(value)
    except BridgeValidationError:
        raise
    except VariableValidationError as exc:
        raise BridgeValidationError(exc.variable, exc.constraint, exc.problem) from None


def _error(failure: bridge_pb2.BridgeFailure, session_id: str) -> BridgeError:
    """The tool-side error of a failure the host answered with."""
    kind = failure.kind
    if kind == Kind.SESSION_NOT_FOUND:
        detail = failure.message.removeprefix(f"no session {session_id!r}").lstrip(": ")
        return BridgeSessionNotFound(session_id, detail)
    if kind == Kind.VARIABLE_NOT_FOUND:
        return BridgeVariableNotFound(session_id, failure.variable)
    if kind == Kind.VARIABLE_EXISTS:
        return BridgeVariableExists(session_id, failure.variable)
    if kind == Kind.VALIDATION:
        prefix = f"variable {failure.variable!r}: {failure.constraint}: "
        problem = failure.message.removeprefix(prefix)
        return BridgeValidationError(failure.variable, failure.constraint, problem)
    return BridgeError(failure.message)
