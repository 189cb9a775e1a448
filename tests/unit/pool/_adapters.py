"""Adapters for the pool's unit tests; they run in the test process (InProcessLauncher).

Each test gets a fresh subclass of :class:`Controlled` (the ``controlled``
fixture) with its own :class:`Control`: the test holds a worker's start at a
gate, makes starts fail, and learns when a ``block`` call is running in the
worker. No state is shared between tests.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from snakepit.testing.adapters import Hang
from snakepit.worker import Context, tool

#: The deadline of a wait that should end at once (it only guards against a hang).
WAIT = 10.0

_names = itertools.count()


def _always(n: int) -> bool:
    return True


def _never(n: int) -> bool:
    return False


@dataclass
class Control:
    """What a test steers of its adapter class, and what it reads back."""

    #: ``setup()`` number n (counting from 1) waits for ``gate`` if ``waits(n)``...
    gate: asyncio.Event | None = None
    waits: Callable[[int], bool] = _always
    #: ...then raises if ``fails(n)``.
    fails: Callable[[int], bool] = _never
    #: ``setup()`` calls begun, ``setup()`` calls that succeeded, ``teardown()`` calls.
    setups: int = 0
    ready: int = 0
    teardowns: int = 0
    #: ``block`` calls that began running in a worker (never decreases).
    blocked: int = 0
    #: ``(worker, session_id)`` for each ``on_session_end`` call, in order.
    ended: list[tuple[str, str]] = field(default_factory=list)
    #: What ends the ``stuck`` calls (set at the test's end): nothing else does.
    unstuck: threading.Event = field(default_factory=threading.Event, repr=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def fail_from_now_on(self) -> None:
        """Make every later ``setup()`` raise."""
        started = self.setups
        self.fails = lambda n: n > started

    def hold_from_now_on(self) -> asyncio.Event:
        """Make every later ``setup()`` wait for the returned event (the gate)."""
        started = self.setups
        self.gate = asyncio.Event()
        self.waits = lambda n: n > started
        return self.gate

    def _note_blocked(self) -> None:
        self.blocked += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_blocked(self, n: int) -> None:
        """Return once ``n`` ``block`` calls in all have begun running in the workers."""
        with anyio.fail_after(WAIT):
            while self.blocked < n:
                await self._changed.wait()

    def _note_ended(self, worker: str, session_id: str) -> None:
        self.ended.append((worker, session_id))
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_ended_in(self, session_id: str, workers: set[str]) -> None:
        """Return once ``on_session_end`` ran for ``session_id`` in each of ``workers``."""
        with anyio.fail_after(WAIT):
            while not workers <= {w for w, ended in self.ended if ended == session_id}:
                await self._changed.wait()

    async def wait_ended(self, session_id: str) -> str:
        """Return the worker whose ``on_session_end`` ran for ``session_id``, once one did."""
        with anyio.fail_after(WAIT):
            while True:
                for worker, ended in self.ended:
                    if ended == session_id:
                        return worker
                await self._changed.wait()


class Controlled(Hang):
    """Echo and Hang tools, and ``block``; ``setup()`` follows the class's :class:`Control`."""

    control = Control()

    async def setup(self) -> None:
        """Wait at the gate and fail as the class's :class:`Control` says."""
        control = type(self).control
        control.setups += 1
        n = control.setups
        if control.gate is not None and control.waits(n):
            await control.gate.wait()
        if control.fails(n):
            raise RuntimeError(f"setup #{n} failed on purpose")
        control.ready += 1

    def teardown(self) -> None:
        """Count the teardown."""
        type(self).control.teardowns += 1

    @tool
    def stuck(self) -> None:
        """Block a tool thread, deaf to cancellation and timeouts, until the test's end.

        What a tool stuck in C code is to its worker: only replacing the
        worker frees its slot.
        """
        type(self).control.unstuck.wait()

    @tool
    async def block(self) -> None:
        """Say it runs (``Control.wait_blocked``), then wait until cancelled."""
        type(self).control._note_blocked()
        await asyncio.Event().wait()

    # -- sessions: each worker (an instance of the class) keeps its sessions' state

    @tool
    def whoami(self) -> str:
        """This worker's identity (in-process workers share a pid: the instance's id)."""
        return f"adapter-{id(self)}"

    @tool
    def remember(self, ctx: Context, value: Any) -> None:
        """Keep ``value`` for the call's session, in this worker."""
        self._sessions()[ctx.session_id] = value

    @tool
    def recall(self, ctx: Context) -> Any:
        """What this worker keeps for the call's session (None if nothing)."""
        return self._sessions().get(ctx.session_id)

    @tool
    def session_info(self, ctx: Context) -> dict[str, Any] | None:
        """The call's ``ctx.session`` as a dict (None outside a session)."""
        if ctx.session is None:
            return None
        return {"session_id": ctx.session.session_id, "metadata": dict(ctx.session.metadata)}

    async def on_session_end(self, session_id: str) -> None:
        """Free the session's state; tell the Control."""
        self._sessions().pop(session_id, None)
        type(self).control._note_ended(self.whoami(), session_id)

    def _sessions(self) -> dict[str, Any]:
        state: dict[str, Any] = self.__dict__.setdefault("_session_state", {})
        return state


class BadSetup(Hang):
    """``setup()`` always raises."""

    def setup(self) -> None:
        """Raise at once."""
        raise RuntimeError("the model file is missing")


def fresh_controlled(control: Control) -> tuple[str, type[Controlled]]:
    """Make a new :class:`Controlled` subclass with ``control``; return its path and it.

    The class is an attribute of this module (where ``load_adapter`` finds it)
    until :func:`forget` removes it.
    """
    name = f"Controlled{next(_names)}"
    cls = type(name, (Controlled,), {"control": control})
    setattr(sys.modules[__name__], name, cls)
    return f"{__name__}:{name}", cls


def forget(cls: type[Controlled]) -> None:
    """Remove a class made by :func:`fresh_controlled`."""
    delattr(sys.modules[__name__], cls.__name__)
