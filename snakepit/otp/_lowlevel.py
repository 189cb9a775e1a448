"""The wake-up primitives the mailbox and the reply path are built on.

A :class:`Slot` is a one-shot reply cell (one waiter, one value); a
:class:`Parker` lets the server task sleep until a message arrives;
:class:`Deadlines` expires the slots of calls that wait too long.

anyio's portable primitives (``Event``, memory object streams, a cancel scope
per call for the timeout) cost more than the whole call path may (see
``benchmarks/otp_call.py``: a trio cancel scope alone is ~15 µs), so each
backend gets the native form: an asyncio future and ``loop.call_at``, or
trio's ``wait_task_rescheduled``/``reschedule`` and one system task per run for
the timers. Nothing outside this module knows which backend runs. Timers
read the loop's clock, which is ``anyio.current_time()`` (a trio ``MockClock``
drives them).
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeVar

#: What a slot holds when the caller's timeout expired first.
TIMED_OUT: Final = object()


class Failure:
    """A slot value that the waiter raises instead of returning."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Slot(Protocol):
    """A one-shot reply cell: the first ``set`` wins, later ones are dropped."""

    def set(self, value: object) -> None: ...

    def done(self) -> bool: ...

    async def wait(self, timeout: float | None) -> object:
        """Wait for the value, or return :data:`TIMED_OUT` after ``timeout`` seconds."""
        ...


class Parker(Protocol):
    """Lets one task sleep until another wakes it (the server's mailbox wait)."""

    async def park(self) -> None: ...

    def unpark(self) -> None: ...


class Backend(Protocol):
    """Factories for the primitives of one event loop."""

    name: str
    new_slot: Callable[[], Slot]
    new_parker: Callable[[], Parker]
    #: The running task, as the event loop knows it (cheap; for identity checks).
    current_task: Callable[[], object]


_COMPACT_AT: Final = 1024


class _Group:
    """The pending deadlines of one timeout length, oldest first."""

    __slots__ = ("entries", "limit")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, Slot]] = deque()
        self.limit = _COMPACT_AT


class Deadlines:
    """The timeouts of the calls waiting on one event loop.

    Slots are grouped by their timeout length, so within a group deadlines
    arrive in order and a deque suffices: adding is O(1), answered slots are
    dropped from the front as new ones come, and only the earliest deadline
    of all has a timer (re-armed only when an earlier one arrives).
    """

    __slots__ = ("_arm", "_armed_at", "_clock", "_groups")

    def __init__(self, clock: Callable[[], float], arm: Callable[[float], None]) -> None:
        self._clock = clock
        self._arm = arm
        self._armed_at = math.inf
        self._groups: dict[float, _Group] = {}

    def add(self, timeout: float, slot: Slot) -> None:
        deadline = self._clock() + timeout
        group = self._groups.get(timeout)
        if group is None:
            group = self._groups[timeout] = _Group()
        entries = group.entries
        while entries and entries[0][1].done():
            entries.popleft()
        entries.append((deadline, slot))
        if len(entries) > group.limit:
            # A slow call at the front pins the answered ones behind it: drop
            # those now and then (amortized O(1): the limit doubles with the
            # live count).
            group.entries = entries = deque(e for e in entries if not e[1].done())
            group.limit = max(_COMPACT_AT, 2 * len(entries))
        if deadline < self._armed_at:
            self._armed_at = deadline
            self._arm(deadline)

    def fire(self) -> None:
        """Expire every due slot and arm the timer for the next deadline."""
        now = self._clock()
        earliest = math.inf
        for timeout, group in list(self._groups.items()):
            entries = group.entries
            while entries:
                deadline, slot = entries[0]
                if slot.done():
                    entries.popleft()
                elif deadline <= now:
                    entries.popleft()
                    slot.set(TIMED_OUT)
                else:
                    earliest = min(earliest, deadline)
                    break
            if not entries:
                del self._groups[timeout]
        self._armed_at = earliest
        if earliest < math.inf:
            self._arm(earliest)


# --- asyncio ---------------------------------------------------------------


class _AsyncioSlot:
    __slots__ = ("_deadlines", "_fut")

    def __init__(self, loop: asyncio.AbstractEventLoop, deadlines: Deadlines) -> None:
        self._fut: asyncio.Future[object] = loop.create_future()
        self._deadlines = deadlines

    def set(self, value: object) -> None:
        fut = self._fut
        if not fut.done():
            fut.set_result(value)

    def done(self) -> bool:
        return self._fut.done()

    async def wait(self, timeout: float | None) -> object:
        if timeout is not None:
            self._deadlines.add(timeout, self)
        return await self._fut


class _AsyncioParker:
    __slots__ = ("_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None

    async def park(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def unpark(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _AsyncioBackend:
    name = "asyncio"

    # Cached per loop in a WeakKeyDictionary. What it holds may reach its
    # loop (a slot's future, the armed timer handle): a value that holds its
    # key keeps both alive, so the entries of closed loops are dropped when
    # the next loop's backend is made (see current_backend).
    def __init__(self) -> None:
        handle: asyncio.TimerHandle | None = None
        running_loop = asyncio.get_running_loop

        def arm(deadline: float) -> None:
            nonlocal handle
            if handle is not None:
                handle.cancel()
            handle = running_loop().call_at(deadline, deadlines.fire)

        deadlines = Deadlines(lambda: running_loop().time(), arm)
        self.new_slot: Callable[[], Slot] = lambda: _AsyncioSlot(running_loop(), deadlines)
        self.new_parker: Callable[[], Parker] = lambda: _AsyncioParker(running_loop())
        self.current_task: Callable[[], object] = asyncio.current_task


_asyncio_backends: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncioBackend] = (
    weakref.WeakKeyDictionary()
)
#: Held to add a loop's backend (loops of several threads) and drop closed ones.
_asyncio_backends_lock = threading.Lock()


def _asyncio_backend_of(loop: asyncio.AbstractEventLoop) -> _AsyncioBackend:
    # The first use in this loop. The backends of closed loops go: each may
    # hold its loop, which would keep the loop and all it reaches (the tasks
    # of a test, a closed pool) alive for as long as the process runs.
    with _asyncio_backends_lock:
        backend = _asyncio_backends.get(loop)
        if backend is None:
            for closed in [other for other in _asyncio_backends if other.is_closed()]:
                del _asyncio_backends[closed]
            backend = _asyncio_backends[loop] = _AsyncioBackend()
        return backend


# --- trio ------------------------------------------------------------------


def _make_trio_backend_factory() -> Callable[[], Backend]:
    import trio
    from outcome import Value

    lowlevel = trio.lowlevel
    abort_succeeded = lowlevel.Abort.SUCCEEDED
    run_var: Any = lowlevel.RunVar("snakepit_otp_backend")

    class TrioSlot:
        __slots__ = ("_deadlines", "_done", "_task", "_value")

        def __init__(self, deadlines: Deadlines) -> None:
            self._deadlines = deadlines
            self._done = False
            self._value: object = None
            self._task: Any = None

        def set(self, value: object) -> None:
            if self._done:
                return
            self._done = True
            self._value = value
            task = self._task
            if task is not None:
                self._task = None
                lowlevel.reschedule(task, Value(value))

        def done(self) -> bool:
            return self._done

        def _abort(self, _raise_cancel: object) -> Any:
            self._task = None
            self._done = True  # the waiter is gone: a late set() is dropped
            return abort_succeeded

        async def wait(self, timeout: float | None) -> object:
            if self._done:
                await lowlevel.checkpoint()
                return self._value
            if timeout is not None:
                self._deadlines.add(timeout, self)
            self._task = lowlevel.current_task()
            return await lowlevel.wait_task_rescheduled(self._abort)

    class TrioParker:
        __slots__ = ("_task",)

        def __init__(self) -> None:
            self._task: Any = None

        def _abort(self, _raise_cancel: object) -> Any:
            self._task = None
            return abort_succeeded

        async def park(self) -> None:
            self._task = lowlevel.current_task()
            await lowlevel.wait_task_rescheduled(self._abort)

        def unpark(self) -> None:
            task = self._task
            if task is not None:
                self._task = None
                lowlevel.reschedule(task)

    class TrioBackend:
        name = "trio"
        new_parker: Callable[[], Parker] = TrioParker
        current_task: Callable[[], object] = staticmethod(lowlevel.current_task)

        def __init__(self) -> None:
            self._scope: trio.CancelScope | None = None
            self._deadlines = Deadlines(trio.current_time, self._arm)
            deadlines = self._deadlines
            self.new_slot: Callable[[], Slot] = lambda: TrioSlot(deadlines)
            lowlevel.spawn_system_task(self._timer, name="snakepit.otp timers")

        def _arm(self, deadline: float) -> None:
            if self._scope is not None:
                self._scope.deadline = deadline

        async def _timer(self) -> None:
            # One task per trio run sleeps until the earliest call deadline.
            while True:
                with trio.CancelScope(deadline=self._deadlines._armed_at) as scope:
                    self._scope = scope
                    await trio.sleep_forever()
                self._scope = None
                self._deadlines.fire()

    def backend() -> Backend:
        current: Backend | None = run_var.get(None)
        if current is None:
            current = TrioBackend()
            run_var.set(current)
        return current

    return backend


_trio_backend: Callable[[], Backend] | None = None


def current_backend() -> Backend:
    """Return the primitives for the event loop running this task.

    :raises RuntimeError: when called outside an asyncio or trio event loop.
    """
    global _trio_backend
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            if _trio_backend is None:
                _trio_backend = _make_trio_backend_factory()
            return _trio_backend()
    loop = asyncio.get_running_loop()
    backend = _asyncio_backends.get(loop)
    if backend is None:
        backend = _asyncio_backend_of(loop)
    return backend


_T = TypeVar("_T")


class NoPublicConstructor(type):
    """The metaclass of a public class that only snakepit makes (a ref, a reply handle).

    Users get instances from snakepit (``GenServer.start`` returns a ref) and
    never build one: calling the class raises ``TypeError``, so its
    constructor, which takes the loop's low-level parts, is not API.
    snakepit builds them with ``Class._create(...)``.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"{cls.__module__.split('._')[0]}.{cls.__qualname__} is made by snakepit, "
            "not constructed directly"
        )

    def _create(cls: type[_T], *args: Any, **kwargs: Any) -> _T:
        return super().__call__(*args, **kwargs)  # type: ignore[misc, no-any-return]
