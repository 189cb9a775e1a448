"""Adapters that show what a call knows of its session and record the sessions that ended.

Both record each id ``on_session_end`` is called with (in :attr:`Ended.ended`)
and tell the ``wait_ended`` tool (an event on the worker's loop, never a
sleep); a hook frees what the session's calls stored in :attr:`state` (the
``remember`` tools) before it records the id. An id starting with ``boom``
makes the hook raise after recording it; ``hang`` makes it block until
:meth:`Ended.release` (the sync hook on a threading event, the async one on
the loop), then free the state, and records ``hang`` in :attr:`Ended.cancelled`
when the async one is cancelled. The ``gated_*`` tools block until
:meth:`open_gate` (or the ``open_gate`` tool), then store their value.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

from snakepit.worker import Adapter, Context, tool


class _SessionTools(Adapter):
    """The tools both adapters share; the hook is the subclass's."""

    def setup(self) -> None:
        # Made in the worker's loop (setup runs there; in-process tests call it in theirs).
        self.loop = asyncio.get_running_loop()
        self.ended: list[str] = []
        self.cancelled: list[str] = []
        self.threads: list[str] = []  # where each sync hook ran
        self.changed = asyncio.Event()
        self.started = asyncio.Event()  # a "hang" hook is running
        self.released = threading.Event()  # what a sync "hang" hook waits for
        self.async_released = asyncio.Event()  # what an async one waits for
        self.state: dict[str, Any] = {}  # per session, freed by the hook
        self.gate_entered = asyncio.Event()  # a gated tool is waiting at the gate
        self.gate = threading.Event()  # what a sync gated tool waits for
        self.async_gate = asyncio.Event()  # what an async one waits for

    def release(self) -> None:
        """Let a ``hang`` hook return (from the worker's loop)."""
        self.released.set()
        self.async_released.set()

    def open_gate(self) -> None:
        """Let the gated tools go on (from the worker's loop)."""
        self.gate.set()
        self.async_gate.set()

    def _record(self, session_id: str) -> None:
        # On the loop: an asyncio event may be set here.
        self.ended.append(session_id)
        self.changed.set()

    @tool
    def session_view(self, ctx: Context) -> dict[str, Any]:
        """What the call knows of its session (``metadata`` read, so decoded)."""
        session = ctx.session
        return {
            "session_id": ctx.session_id,
            "has_session": session is not None,
            "id_matches": session is not None and session.session_id == ctx.session_id,
            "metadata": None if session is None else dict(session.metadata),
        }

    @tool
    def session_id_only(self, ctx: Context) -> str:
        """The session's id; never reads the metadata (so never decodes it)."""
        assert ctx.session is not None
        return ctx.session.session_id

    @tool
    async def async_session_metadata(self, ctx: Context) -> dict[str, Any]:
        """The metadata, read by an async tool."""
        assert ctx.session is not None
        return dict(ctx.session.metadata)

    @tool
    def session_stream(self, ctx: Context) -> Iterator[Any]:
        """Yield the session's metadata items (a streaming tool)."""
        assert ctx.session is not None
        yield from sorted(ctx.session.metadata.items())

    @tool
    async def wait_ended(self, n: int) -> list[str]:
        """Return the ended sessions' ids once there are at least ``n``."""
        while len(self.ended) < n:
            self.changed.clear()
            await self.changed.wait()
        return list(self.ended)

    @tool
    async def wait_hook_started(self) -> None:
        """Return once a ``hang`` hook is running."""
        await self.started.wait()

    @tool
    def ended_sessions(self) -> list[str]:
        """The ended sessions' ids so far."""
        return list(self.ended)

    @tool
    def remember(self, ctx: Context, value: Any) -> None:
        """Store ``value`` for the call's session."""
        self.state[ctx.session_id] = value

    @tool
    def held(self) -> dict[str, Any]:
        """What is stored per session now."""
        return dict(self.state)

    @tool
    async def gated_remember(self, ctx: Context, value: Any) -> None:
        """Wait at the gate, then store ``value`` for the call's session (async)."""
        self.gate_entered.set()
        await self.async_gate.wait()
        self.state[ctx.session_id] = value

    @tool
    def sync_gated_remember(self, ctx: Context, value: Any) -> None:
        """Wait at the gate (in its thread, whatever a cancel says), then store ``value``."""
        self.loop.call_soon_threadsafe(self.gate_entered.set)
        self.gate.wait()
        self.state[ctx.session_id] = value

    @tool
    def gated_stream(self, ctx: Context, value: Any) -> Iterator[int]:
        """Yield 1, wait at the gate, store ``value``, yield 2 (a sync generator)."""
        yield 1
        self.loop.call_soon_threadsafe(self.gate_entered.set)
        self.gate.wait()
        self.state[ctx.session_id] = value
        yield 2

    @tool
    async def wait_gate_entered(self) -> None:
        """Return once a gated tool is waiting at the gate."""
        await self.gate_entered.wait()

    @tool(name="open_gate")
    async def open_gate_tool(self) -> None:
        """Let the gated tools go on."""
        self.open_gate()

    @tool
    async def release_hooks(self) -> None:
        """Let the ``hang`` hooks return."""
        self.release()


class SyncSessionEnds(_SessionTools):
    """A sync ``on_session_end`` (it runs on a tool thread)."""

    def on_session_end(self, session_id: str) -> None:
        """Record ``session_id``; raise for "boom...", block for "hang"."""
        self.threads.append(threading.current_thread().name)
        if session_id != "hang":
            self.state.pop(session_id, None)
        self.loop.call_soon_threadsafe(self._record, session_id)
        if session_id.startswith("boom"):
            raise RuntimeError(f"cannot free {session_id}\nsecond line")
        if session_id == "hang":
            self.loop.call_soon_threadsafe(self.started.set)
            self.released.wait()
            self.state.pop(session_id, None)


class AsyncSessionEnds(_SessionTools):
    """An ``async`` ``on_session_end`` (it runs on the worker's loop)."""

    async def on_session_end(self, session_id: str) -> None:
        """Record ``session_id``; raise for "boom...", wait for "hang"."""
        if session_id != "hang":
            self.state.pop(session_id, None)
        self._record(session_id)
        if session_id.startswith("boom"):
            raise KeyError(session_id)
        if session_id == "hang":
            self.started.set()
            try:
                await self.async_released.wait()
            except asyncio.CancelledError:
                self.cancelled.append(session_id)
                raise
            self.state.pop(session_id, None)


class NoHook(_SessionTools):
    """Keeps the default ``on_session_end`` (which does nothing)."""
