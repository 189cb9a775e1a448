"""The adapter the demo runs in its worker processes."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from typing import Any

from snakepit.worker import Adapter, Context, tool


class TextTools(Adapter):
    """A few tools: some quick, one that streams, one that never returns; per-session notes."""

    def __init__(self) -> None:
        super().__init__()
        #: What this process keeps for each session (its notes), by session id.
        self.state: dict[str, list[str]] = {}

    @tool
    def word_count(self, text: str) -> dict[str, int]:
        """Count the words of ``text``."""
        counts: dict[str, int] = {}
        for word in text.lower().split():
            counts[word] = counts.get(word, 0) + 1
        return counts

    @tool
    def fib(self, n: int) -> dict[str, int]:
        """Compute fib(n) the slow way (CPU work, in a worker thread); say which process did."""

        def f(k: int) -> int:
            return k if k < 2 else f(k - 1) + f(k - 2)

        return {"fib": f(n), "pid": os.getpid()}

    @tool
    def words(self, text: str) -> Iterator[str]:
        """Stream the words of ``text`` one by one."""
        yield from text.split()

    @tool
    async def wait_forever(self, ctx: Context) -> None:
        """Tell the host it runs (its ``running`` function), then wait on an event never set.

        A call to kill the worker under: killed before it started, a call
        would run on another worker instead (it never ran here).
        """
        await ctx.call_host("running")
        await asyncio.Event().wait()

    @tool
    def stuck(self, ctx: Context) -> None:
        """Block a worker thread for good, ignoring cancellation (a stuck C extension)."""
        threading.Event().wait()

    # -- sessions: a session's calls come to this process, which keeps its state

    @tool
    def remember(self, ctx: Context, value: str) -> dict[str, Any]:
        """Add ``value`` to the session's notes, kept in this process; return them and the pid."""
        notes = self.state.setdefault(ctx.session_id, [])
        notes.append(value)
        return {"notes": list(notes), "pid": os.getpid()}

    @tool
    def recall(self, ctx: Context) -> dict[str, Any]:
        """The session's notes this process keeps (none if another process served it)."""
        return {"notes": list(self.state.get(ctx.session_id, [])), "pid": os.getpid()}

    @tool
    def session_info(self, ctx: Context) -> dict[str, Any]:
        """What the tool sees of its session: id, metadata, and this process's pid."""
        metadata = {} if ctx.session is None else dict(ctx.session.metadata)
        return {"session_id": ctx.session_id, "metadata": metadata, "pid": os.getpid()}

    @tool
    def classify(self, ctx: Context, score: float) -> dict[str, Any]:
        """Label ``score`` against the session's ``threshold`` variable; count highs; tell the host.

        Reads and writes its session's typed variables (``ctx.session.variables``:
        a read of an unchanged variable comes from this process's cache) and
        calls the host's ``audit`` function (``ctx.call_host``).
        """
        assert ctx.session is not None, "classify is called in a session"
        variables = ctx.session.variables
        threshold = variables.get("threshold")
        label = "high" if score >= threshold else "low"
        if label == "high":
            hits = variables.update("hits", lambda n: n + 1)  # compare-and-set
        else:
            hits = variables.get("hits")
        note = ctx.call_host("audit", {"score": score, "label": label})
        return {"threshold": threshold, "label": label, "hits": hits, "note": note}

    def on_session_end(self, session_id: str) -> None:
        """The session was deleted or expired: free its notes."""
        self.state.pop(session_id, None)
