"""Ready-made adapters for tests: start them with ``--adapter snakepit.testing.adapters:Echo``.

They run inside worker processes. None of them sleeps to pass time: what must
block waits on an event that is never set (or on the call's cancellation).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import random
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from snakepit.errors import BridgeSessionNotFound
from snakepit.worker import Adapter, Context, Session, tool
from snakepit.worker._main import loop_name

__all__ = (
    "Crash",
    "DirectedFaults",
    "Echo",
    "FaultInjecting",
    "Gated",
    "Hang",
    "HostCaller",
    "Sessions",
    "SlowStart",
    "VariableTools",
)


class Echo(Adapter):
    """Answers at once: echo, ping, arithmetic, streams, errors, large payloads."""

    @tool
    def ping(self) -> dict[str, str]:
        """Reply ``{"status": "pong"}``."""
        return {"status": "pong"}

    @tool
    async def noop(self) -> None:
        """Do nothing, on the event loop (the cheapest call there is)."""

    @tool
    def noop_sync(self) -> None:
        """Do nothing, in a worker thread."""

    @tool
    async def event_loop(self) -> str:
        """The kind of event loop the worker runs: "uvloop" or "asyncio"."""
        return loop_name(asyncio.get_running_loop())

    @tool
    def echo(self, value: Any = None) -> Any:
        """Return ``value`` unchanged."""
        return value

    @tool
    async def aecho(self, value: Any = None) -> Any:
        """Return ``value`` unchanged, from an async tool."""
        return value

    @tool
    def add(self, a: float, b: float) -> float:
        """Return ``a + b``."""
        return a + b

    @tool
    def count(self, n: int) -> Iterator[int]:
        """Yield 0 .. n-1 (a sync streaming tool)."""
        yield from range(n)

    @tool
    async def acount(self, n: int) -> AsyncIterator[int]:
        """Yield 0 .. n-1 (an async streaming tool)."""
        for i in range(n):
            yield i

    @tool
    def fail(self, message: str = "requested failure") -> None:
        """Raise ``ValueError(message)``."""
        raise ValueError(message)

    @tool
    def fail_midstream(self, after: int) -> Iterator[int]:
        """Yield ``after`` items, then raise ``RuntimeError``."""
        yield from range(after)
        raise RuntimeError(f"failed after {after} items")

    @tool
    def blob(self, size: int) -> bytes:
        """Return ``size`` bytes."""
        return b"x" * size

    @tool
    def unserializable(self) -> object:
        """Return a value JSON cannot carry (a set)."""
        return {1, 2, 3}

    @tool
    def info(self, ctx: Context) -> dict[str, Any]:
        """Return the call's context, the worker's pid and the thread the tool runs on."""
        return {
            "request_id": ctx.request_id,
            "session_id": ctx.session_id,
            "has_deadline": ctx.deadline is not None,
            "pid": os.getpid(),
            "thread": threading.current_thread().name,
        }


def _session_of(ctx: Context, tool_name: str) -> str:
    if not ctx.session_id:
        raise ValueError(
            f"{tool_name} keeps state per session: call it in a session "
            "(pool.session(), or session_id=...)"
        )
    return ctx.session_id


class Sessions(Echo):
    """Echo, plus per-session state kept in the worker: what a session's affinity is for.

    ``remember(value)`` keeps ``value`` for the call's session in this worker
    (in :attr:`state`, keyed by session id), ``recall()`` returns it (None
    when this worker keeps nothing for the session: another worker served it,
    or this one was replaced). ``session_info()`` tells what the tool sees of
    its session, and which process ran it. :meth:`on_session_end` frees the
    session's state when the session is deleted or expires. ``remember`` and
    ``recall`` outside a session raise ``ValueError`` (a ``RemoteError`` for
    the caller).
    """

    def __init__(self) -> None:
        super().__init__()
        #: What this worker keeps for each session, by session id.
        self.state: dict[str, Any] = {}

    @tool
    def remember(self, ctx: Context, value: Any = None) -> None:
        """Keep ``value`` for the call's session, in this worker (replacing what was kept)."""
        self.state[_session_of(ctx, "remember")] = value

    @tool
    def recall(self, ctx: Context) -> Any:
        """Return what this worker keeps for the call's session (None if nothing)."""
        return self.state.get(_session_of(ctx, "recall"))

    @tool
    def held_sessions(self) -> list[str]:
        """The ids of the sessions this worker keeps state for, sorted."""
        return sorted(self.state)

    @tool
    def session_info(self, ctx: Context) -> dict[str, Any]:
        """The call's session as its tool sees it, and this worker's pid.

        ``{"session_id": ..., "metadata": {...}, "pid": ...}``; outside a
        session the id is "" and the metadata ``None``.
        """
        session = ctx.session
        return {
            "session_id": ctx.session_id,
            "metadata": None if session is None else dict(session.metadata),
            "pid": os.getpid(),
        }

    def on_session_end(self, session_id: str) -> None:
        """Free what this worker kept for ``session_id`` (it was deleted or expired)."""
        self.state.pop(session_id, None)


class HostCaller(Echo):
    """Echo, plus tools that call a host tool (``pool.register_host_tool``) through the bridge."""

    @tool
    async def call_host(self, ctx: Context, name: str, args: dict[str, Any] | None = None) -> Any:
        """Return what the host tool ``name`` returned for ``args``."""
        return await ctx.call_host(name, args)

    @tool
    def call_host_sync(self, ctx: Context, name: str, args: dict[str, Any] | None = None) -> Any:
        """:meth:`call_host`, from a sync tool (in a worker thread; it blocks)."""
        return ctx.call_host(name, args)


class VariableTools(HostCaller):
    """HostCaller, plus tools that use their session's variables (``ctx.session.variables``).

    Called in a session (outside one they raise ``BridgeSessionNotFound``).
    """

    @tool
    async def get_variable(self, ctx: Context, name: str) -> Any:
        """The value of the session's variable ``name``."""
        return await _in_session(ctx).variables.get(name)

    @tool
    def get_variable_sync(self, ctx: Context, name: str) -> Any:
        """:meth:`get_variable`, from a sync tool."""
        return _in_session(ctx).variables.get(name)

    @tool
    async def set_variable(self, ctx: Context, name: str, value: Any) -> int:
        """Write ``value`` to ``name``; its new version."""
        version: int = await _in_session(ctx).variables.set(name, value)
        return version

    @tool
    def set_variable_sync(self, ctx: Context, name: str, value: Any) -> int:
        """:meth:`set_variable`, from a sync tool."""
        version: int = _in_session(ctx).variables.set(name, value)
        return version

    @tool
    async def add_to_variable(self, ctx: Context, name: str, n: int = 1) -> Any:
        """``update(name, lambda v: v + n)`` (compare-and-set); the value written."""
        return await _in_session(ctx).variables.update(name, lambda v: v + n)

    @tool
    def add_to_variable_sync(self, ctx: Context, name: str, n: int = 1) -> Any:
        """:meth:`add_to_variable`, from a sync tool."""
        return _in_session(ctx).variables.update(name, lambda v: v + n)


def _in_session(ctx: Context) -> Session:
    if ctx.session is None:
        raise BridgeSessionNotFound("", "the call belongs to no session")
    return ctx.session


class Hang(Echo):
    """Echo, plus tools that never return until cancelled."""

    @tool
    async def hang(self) -> None:
        """Wait on an event that is never set (an async tool: cancellable)."""
        await asyncio.Event().wait()

    @tool
    def hang_sync(self, ctx: Context) -> str:
        """Block a worker thread until the call is cancelled; return "cancelled"."""
        ctx.cancel_event.wait()
        return "cancelled"

    @tool
    def stuck_sync(self) -> None:
        """Block a worker thread for good, deaf to cancellation and timeouts.

        What a tool stuck in C code is to its worker: only killing the
        worker ends it (its pool does, after a timeout or a cancel).
        """
        threading.Event().wait()

    @tool
    async def hang_stream(self) -> AsyncIterator[int]:
        """Yield one item, then wait forever."""
        yield 0
        await asyncio.Event().wait()


class Crash(Echo):
    """Echo, plus tools that end the worker process abruptly."""

    @tool
    def exit(self, code: int = 1) -> None:
        """``os._exit(code)``: no cleanup, no reply."""
        os._exit(code)

    @tool
    def kill_self(self, signum: int = int(signal.SIGKILL)) -> None:
        """Send ``signum`` to this process (SIGKILL by default)."""
        os.kill(os.getpid(), signum)

    @tool
    def segfault(self) -> None:
        """Dereference a null pointer."""
        ctypes.string_at(0)


class SlowStart(Echo):
    """Echo whose ``setup()`` blocks until a gate opens.

    The gate is the FIFO named by the ``SNAKEPIT_SLOWSTART_GATE`` environment
    variable: setup blocks opening it until the test opens the other end (no
    timer involved). Without the variable it starts at once.
    """

    def setup(self) -> None:
        """Block until the gate FIFO is opened for writing."""
        gate = os.environ.get("SNAKEPIT_SLOWSTART_GATE")
        if gate:
            with open(gate, "rb") as fifo:
                fifo.read()


class FaultInjecting(Echo):
    """Echo whose calls fail at random, reproducibly.

    ``SNAKEPIT_FAULT_RATE`` (0..1, default 0.5) is the chance a call of
    :meth:`maybe_fail` or :meth:`flaky` fails; ``SNAKEPIT_FAULT_SEED`` seeds
    the generator, mixed with the process id (each worker draws its own).
    """

    def setup(self) -> None:
        """Read the rate and seed from the environment."""
        self.rate = float(os.environ.get("SNAKEPIT_FAULT_RATE", "0.5"))
        # Mixed with the pid: a replacement must not replay its predecessor's
        # draws (the first call of every new worker would fail alike).
        seed = os.environ.get("SNAKEPIT_FAULT_SEED", "0")
        self.rng = random.Random(f"{seed}:{os.getpid()}")

    @tool
    def maybe_fail(self, value: Any = None) -> Any:
        """Return ``value``, or raise ``RuntimeError`` with probability ``rate``."""
        if self.rng.random() < self.rate:
            raise RuntimeError("injected fault")
        return value

    @tool
    def flaky(self, value: Any = None, kind: str = "exit") -> Any:
        """Return ``value``, or fail with probability ``rate`` as ``kind`` says.

        ``"exit"``: the worker process dies (``os._exit(70)``), as on a lost
        connection: the caller gets ``WorkerCrashed`` and ``retries=`` may run
        the call again elsewhere. ``"raise"``: ``RuntimeError`` (a
        ``RemoteError``, never retried).
        """
        if self.rng.random() < self.rate:
            if kind == "exit":
                os._exit(70)
            raise RuntimeError("injected fault")
        return value


class DirectedFaults(FaultInjecting):
    """FaultInjecting whose caller may decide each fault: the adapter of ``inject_random_failures``.

    ``maybe_fail(value, fail=True)`` raises, ``fail=False`` returns ``value``;
    without ``fail`` the worker draws, as FaultInjecting does. The caller's
    decision makes a run reproducible from the caller's seed alone, whichever
    worker serves which call::

        Pool("snakepit.testing.adapters:DirectedFaults", size=2)
    """

    @tool
    async def maybe_fail(self, value: Any = None, fail: bool | None = None) -> Any:
        """Return ``value``, or raise ``RuntimeError("injected fault")`` (told to, or by chance)."""
        if fail is None:
            fail = self.rng.random() < self.rate
        if fail:
            raise RuntimeError("injected fault")
        return value


class Gated(Echo):
    """Echo, plus a tool that runs until the test opens a FIFO gate.

    ``wait_gate(path)`` opens the FIFO at ``path`` for reading: the test's
    ``open(path, "wb")`` returns exactly when the tool is running (a readiness
    signal without a timer), and closing it lets the tool return.
    """

    @tool
    def wait_gate(self, path: str) -> str:
        """Block until the writer of the FIFO ``path`` closes it; return "opened"."""
        with open(path, "rb") as fifo:
            fifo.read()
        return "opened"

    def teardown(self) -> None:
        """Say so on stderr, so a test can see that teardown ran."""
        import sys

        print("snakepit-test: teardown ran", file=sys.stderr, flush=True)
