"""Adapters for the session tests with real worker processes: per-session state in the worker.

:class:`SessionCounter` keeps a counter per session in ``self.state[session_id]``
(the seed's ``initialize_session`` / ``set`` / ``get`` workflow, before variables
exist), reports its pid with every answer (so a test sees which process served a
call), and frees a session's state in ``on_session_end``. ``wait_session_end``
lets a test wait, without a timer, for that hook to have run in this process: it
returns once the hook ran for the given session (at once if it already did).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from snakepit.testing.adapters import Echo
from snakepit.worker import Context, tool


class SessionCounter(Echo):
    """Echo's tools, and a counter per session kept in this worker process."""

    def setup(self) -> None:
        """Start with no session state and no ended session."""
        #: Per-session state, by session id: ``{"counter": int}``.
        self.state: dict[str, dict[str, Any]] = {}
        #: Sessions whose ``on_session_end`` ran in this process.
        self.ended: set[str] = set()
        self._end_waiters: dict[str, asyncio.Event] = {}

    def _session(self, ctx: Context) -> str:
        if ctx.session is None:
            raise ValueError("this tool runs in a session only")
        return ctx.session.session_id

    @tool
    def initialize_session(self, ctx: Context) -> dict[str, Any]:
        """Make the session's state here: a counter at 0; the pid and the session's metadata."""
        session_id = self._session(ctx)
        self.state[session_id] = {"counter": 0}
        assert ctx.session is not None
        return {"pid": os.getpid(), "metadata": dict(ctx.session.metadata)}

    @tool
    async def set_counter(self, ctx: Context, value: int) -> int:
        """Set the session's counter; return the pid (KeyError: no state here for it)."""
        self.state[self._session(ctx)]["counter"] = value
        return os.getpid()

    @tool
    def get_counter(self, ctx: Context) -> dict[str, Any]:
        """The session's counter (None when this process keeps no state for it) and the pid."""
        state = self.state.get(self._session(ctx))
        return {"value": None if state is None else state["counter"], "pid": os.getpid()}

    @tool
    def where(self, ctx: Context) -> dict[str, Any]:
        """The pid, and the session id the call carried ("" outside a session)."""
        return {"pid": os.getpid(), "session_id": ctx.session_id}

    @tool
    async def wait_session_end(self, session_id: str) -> dict[str, Any]:
        """Return once ``on_session_end(session_id)`` ran in this process (at once if it did).

        The pid, and whether the session's state is gone from this process.
        """
        if session_id not in self.ended:
            await self._end_waiters.setdefault(session_id, asyncio.Event()).wait()
        return {"pid": os.getpid(), "state_freed": session_id not in self.state}

    async def on_session_end(self, session_id: str) -> None:
        """Free the session's state; wake whoever waits for this session's end."""
        self.state.pop(session_id, None)
        self.ended.add(session_id)
        event = self._end_waiters.pop(session_id, None)
        if event is not None:
            event.set()
