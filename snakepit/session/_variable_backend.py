"""Where a session's variables are kept: the VariableBackend protocol and its records.

A backend stores each variable of a session as a :class:`VariableRecord`:
its spec and value in their JSON forms (``VariableSpec.to_json()``,
``VariableSpec.encode()``), a version (1 when registered, +1 per write) and
a ``uid`` that tells one registration of a name from a later one. It
checks nothing about values: the caller validates against the spec it read
and writes with an expectation (the ``uid``, and the version for a
compare-and-set), so a write meant for one registration never lands on
another, and concurrent updates are linearizable.

Every method is atomic on its own and takes the store's ``now``: a session
that expired at ``now`` has no variables any more (``SessionNotFound``),
even before the store's sweep deletes it. A session's variables go with it.
Watches see every change of the watched session, in order, after it is made.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ("VariableBackend", "VariableEvent", "VariableRecord")


@dataclass(frozen=True, slots=True)
class VariableRecord:
    """One variable of a session as a backend stores it."""

    #: Its name.
    name: str
    #: Its spec, ``VariableSpec.to_json()``.
    spec: Mapping[str, Any]
    #: Its value, ``VariableSpec.encode(value)`` (JSON-able).
    value: Any
    #: 1 when registered, +1 per write.
    version: int
    #: Tells this registration of the name from any other.
    uid: str
    #: When it was last written, on the store's clock.
    updated_at: float
    #: Who wrote it last: ``"host"`` or a worker's id.
    source: str


@dataclass(frozen=True, slots=True)
class VariableEvent:
    """A change of a session's variable, as a watch sees it (records, not decoded)."""

    #: The variable's name.
    name: str
    #: Its record before (None: registered by this change).
    old: VariableRecord | None
    #: Its record after (None: deleted by this change, or with its session).
    new: VariableRecord | None
    #: Who made the change.
    source: str


#: Expectations of a write, by name: the registration's uid, and the version
#: it must be at (None: any version, a plain set).
Expectations = Mapping[str, tuple[str, int | None]]


@runtime_checkable
class VariableBackend(Protocol):
    """Storage of sessions' variables (see the module's docstring)."""

    async def register_variable(self, session_id: str, record: VariableRecord, now: float) -> None:
        """Add ``record`` to the session.

        :raises SessionNotFound: no such session, or it expired at ``now``.
        :raises VariableExists: the session has a variable of that name.
        """
        ...

    async def get_variables(
        self, session_id: str, names: Sequence[str] | None, now: float
    ) -> dict[str, VariableRecord]:
        """The records of ``names`` (None: every variable of the session).

        :raises SessionNotFound: no such session, or it expired at ``now``.
        :raises VariableNotFound: one of ``names`` is not there.
        """
        ...

    async def set_variables(
        self,
        session_id: str,
        values: Mapping[str, Any],
        expect: Expectations,
        now: float,
        source: str,
    ) -> dict[str, VariableRecord] | None:
        """Write every encoded value of ``values``, all or none, each version +1.

        :returns: the new records; None (nothing written) if an expectation
            in ``expect`` does not hold (another registration, or another version).
        :raises SessionNotFound: no such session, or it expired at ``now``.
        :raises VariableNotFound: a name of ``values`` is not there (nothing written).
        """
        ...

    async def delete_variable(
        self, session_id: str, name: str, now: float, source: str
    ) -> VariableRecord:
        """Remove ``name``; return its last record.

        :raises SessionNotFound: no such session, or it expired at ``now``.
        :raises VariableNotFound: it is not there.
        """
        ...

    def watch_variables(
        self, session_id: str, names: frozenset[str] | None, buffer: int
    ) -> AbstractAsyncContextManager[AsyncIterator[VariableEvent]]:
        """Changes of ``names`` (None: all) of the session, from now on, in order.

        The iterator ends when the session ends. A watcher more than
        ``buffer`` changes behind is ended with
        :class:`~snakepit.errors.VariableError` (a change is never dropped
        silently).
        """
        ...
