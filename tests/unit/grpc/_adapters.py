"""Adapters for the worker's own tests (imported inside worker processes)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator

from snakepit.worker import Adapter, Context, tool


class BadSetup(Adapter):
    def setup(self) -> None:
        raise RuntimeError("the model file is missing")


class AsyncSetup(Adapter):
    async def setup(self) -> None:
        self.ready = "yes"

    @tool
    async def ready_flag(self) -> str:
        """Return what setup() stored."""
        return self.ready


class NotAnAdapter:
    pass


class Typed(Adapter):
    @tool(name="scale")
    def scale_values(
        self, values: list[float], factor: float = 2.0, label: str | None = None
    ) -> list[float]:
        """Multiply every value by factor.

        A second paragraph.
        """
        return [v * factor for v in values]


from snakepit.testing.adapters import Crash, Gated, Hang  # noqa: E402


class All(Hang, Crash, Gated):
    """Every test tool in one adapter."""

    @tool
    def record(self, path: str, call_id: int) -> int:
        """Append ``call_id`` to the file ``path`` (one O_APPEND line) first; return it.

        The file says which calls started, and how often (pipelining's chaos test).
        """
        import os

        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"%d\n" % call_id)
        finally:
            os.close(fd)
        return call_id

    @tool
    def record_pid(self, path: str, call_id: int) -> int:
        """Append ``call_id pid`` to the file ``path`` (one O_APPEND line) first; return the pid.

        The file says which calls ran on which worker, and how often (recycling's tests).
        """
        return _record_pid(path, call_id)

    @tool
    async def arecord_pid(self, path: str, call_id: int) -> int:
        """``record_pid`` as an async tool (it runs on the worker's event loop)."""
        return _record_pid(path, call_id)


def _record_pid(path: str, call_id: int) -> int:
    import os

    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"%d %d\n" % (call_id, os.getpid()))
    finally:
        os.close(fd)
    return os.getpid()


class FailsWhenFlagged(All):
    """Starts normally until the file named by SNAKEPIT_TEST_FAIL_FLAG exists."""

    def setup(self) -> None:
        import os

        flag = os.environ.get("SNAKEPIT_TEST_FAIL_FLAG", "")
        if flag and os.path.exists(flag):
            raise RuntimeError("flagged to fail at start")

    @tool
    def exit_once(self, flag: str) -> str:
        """Crash this worker the first time (creating ``flag``); answer "ok" after."""
        import os

        if not os.path.exists(flag):
            open(flag, "w").close()
            os._exit(1)
        return "ok"


class _BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


class _BrokenEverything(Exception):
    def __str__(self) -> str:
        raise KeyboardInterrupt

    def __repr__(self) -> str:
        raise SystemExit(9)


class _Custom(BaseException):
    """A user's own BaseException (not an Exception)."""


def _hostile(kind: str) -> BaseException:
    import asyncio

    made: dict[str, BaseException] = {
        "keyboard_interrupt": KeyboardInterrupt("stop"),
        "system_exit": SystemExit(3),
        "cancelled": asyncio.CancelledError("not a real cancellation"),
        "base": _Custom("custom base exception"),
        "generator_exit": GeneratorExit(),
        "broken_str": _BrokenStr(),
        "broken_everything": _BrokenEverything(),
        "huge": ValueError("x" * (8 * 1024 * 1024)),
    }
    return made[kind]


class Hostile(All):
    """Tools that end in every way a tool can (issue #11, defect 6), and slot introspection."""

    @tool
    def raise_sync(self, kind: str) -> None:
        """Raise the named exception from a sync tool."""
        raise _hostile(kind)

    @tool
    async def raise_async(self, kind: str) -> None:
        """Raise the named exception from an async tool."""
        raise _hostile(kind)

    @tool
    def raise_in_generator(self, kind: str) -> Iterator[int]:
        """Yield one item, then raise the named exception (a sync generator)."""
        yield 0
        raise _hostile(kind)

    @tool
    async def raise_in_async_generator(self, kind: str) -> AsyncIterator[int]:
        """Yield one item, then raise the named exception (an async generator)."""
        yield 0
        raise _hostile(kind)

    @tool
    def stubborn_stream(self) -> Iterator[int]:
        """Yield forever, ignoring the first GeneratorExit (its close() raises RuntimeError)."""
        ignored = False
        while True:
            try:
                yield 0
            except GeneratorExit:
                if ignored:  # the garbage collector's close: give in
                    raise
                ignored = True

    @tool
    async def astubborn_stream(self) -> AsyncIterator[int]:
        """Yield forever, ignoring the first GeneratorExit (its aclose() raises RuntimeError)."""
        ignored = False
        while True:
            try:
                yield 0
            except GeneratorExit:
                if ignored:  # the garbage collector's close: give in
                    raise
                ignored = True

    @tool
    async def slot_state(self, ctx: Context) -> dict[str, int]:
        """The worker's slots now (this call holds one of them)."""
        state: dict[str, int] = ctx._service.slot_state()
        return state

    @tool
    def linger_sync(self, ctx: Context, work: int = 100_000) -> int:
        """Wait for the cancellation, then compute on for a while (it cannot stop at once)."""
        ctx.cancel_event.wait()
        return sum(i * i for i in range(work))

    @tool
    def hold(self, key: str, ctx: Context) -> str:
        """Run on after a cancellation, until ``release(key)`` (in-process tests only)."""
        gate = _gate(key)
        gate.started.set()
        gate.release.wait()
        return "released"

    @tool
    def hold_stream(self, key: str, ctx: Context) -> Iterator[int]:
        """Yield one item, then block in the next step until ``release(key)``."""
        yield 0
        gate = _gate(key)
        gate.started.set()
        gate.release.wait()
        yield 1


class _Gate:
    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()


#: In-process tests' gates, by a key unique to each test (its tmp path).
_GATES: dict[str, _Gate] = {}
_GATES_LOCK = threading.Lock()


def _gate(key: str) -> _Gate:
    with _GATES_LOCK:
        return _GATES.setdefault(key, _Gate())


def gate(key: str) -> _Gate:
    """The gate of ``key`` (for the test that drives the ``hold`` tools)."""
    return _gate(key)


def drop_gate(key: str) -> None:
    """Release and forget the gate of ``key``."""
    with _GATES_LOCK:
        found = _GATES.pop(key, None)
    if found is not None:
        found.release.set()
