"""OTP test helpers: servers, restarts, supervisors and call tracing.

Supertester's GenServer and Supervisor helpers (see ``SUPERTESTER_MAP.md``) on
snakepit's own primitives. A helper that checks something raises
:class:`AssertionError` saying what it expected and what it found (child ids,
generations, exit reasons). Every wait is event-driven (a ``sync`` through the
mailbox, a supervisor event, a registry rebinding) and bounded by ``timeout``
seconds, 5 by default; none polls or sleeps.

A child of a supervisor is named by ``(supervisor, child_id)``: its ref changes
on each restart, and the new ref has a higher :attr:`ServerRef.generation`, so
"the same child" and "its replacement" are never confused.
"""

from __future__ import annotations

import random
from collections.abc import (
    AsyncIterator,
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from snakepit.otp import (
    DEFAULT_TIMEOUT,
    CallTimeout,
    ChildExited,
    ChildInfo,
    ChildNotFound,
    ChildStarted,
    ChildStartFailed,
    ChildTerminated,
    ExitReason,
    GenServer,
    MessageKind,
    Registry,
    RestartIntensityReached,
    ServerExited,
    ServerRef,
    Strategy,
    SupervisorEvent,
    SupervisorRef,
    WaitTimeout,
)

__all__ = (
    "CallMonitor",
    "CallRecord",
    "MessageLog",
    "Recovery",
    "StressOp",
    "StressReport",
    "SupervisionLog",
    "TracedMessage",
    "TreeSpec",
    "assert_alive",
    "assert_all_children_alive",
    "assert_child_count",
    "assert_dead",
    "assert_handles",
    "assert_process_restarted",
    "assert_responsive",
    "assert_state",
    "assert_strategy",
    "assert_tree",
    "cast_and_sync",
    "check_crash_recovery",
    "check_restart_strategy",
    "concurrent_calls",
    "get_state",
    "monitor_call",
    "stress",
    "trace_messages",
    "trace_supervision",
    "wait_for_restart",
    "wait_stable",
)

E = TypeVar("E", ChildStarted, ChildExited, ChildTerminated, ChildStartFailed)

#: A supervision tree as :func:`assert_tree` expects it: child id -> ``"worker"``
#: or ``"supervisor"``, a GenServer class, or (a child supervisor) its own TreeSpec.
TreeSpec: TypeAlias = Mapping[Hashable, "str | type[GenServer[Any, Any, Any]] | TreeSpec"]

_STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")


# -- wording ---------------------------------------------------------------------------


def _reason(reason: ExitReason | None) -> str:
    if reason is None:
        return "still alive"
    return reason if isinstance(reason, str) else repr(reason)


def _sup_label(sup: SupervisorRef) -> str:
    return f"supervisor {sup.name!r}" if sup.name is not None else f"supervisor {sup!r}"


def _child(info: ChildInfo) -> str:
    if info.alive:
        if info.last_exit is None:
            return f"{info.id!r} (gen {info.generation})"
        return f"{info.id!r} (gen {info.generation}; last exit: {_reason(info.last_exit)})"
    return f"{info.id!r} is {_not_running(info)}"


def _not_running(info: ChildInfo) -> str:
    exited = "" if info.last_exit is None else f"; it exited: {_reason(info.last_exit)}"
    return f"not running (last gen {info.generation}, {info.restart}{exited})"


def _children(sup: SupervisorRef) -> str:
    if not sup.alive:
        return f"the supervisor exited ({_reason(sup.exit_reason)})"
    infos = sup.which_children()
    running = ", ".join(_child(i) for i in infos if i.alive) or "none"
    stopped = "; ".join(_child(i) for i in infos if not i.alive)
    text = f"running: {running}" + (f"; {stopped}" if stopped else "")
    if not sup.idle:
        text += " (the supervisor is still handling messages: await wait_stable(sup) first?)"
    return text


def _name_of(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


@contextmanager
def _deadline(timeout: float, failure: Callable[[], str]) -> Iterator[None]:
    """Cancel the block after ``timeout`` seconds and raise AssertionError(failure())."""
    with anyio.move_on_after(timeout) as scope:
        yield
    if scope.cancelled_caught:
        raise AssertionError(failure())


async def _ask(ref: ServerRef[Any, Any], what: str, request: Any, timeout: float | None) -> Any:
    """Await ``request`` (a call on ``ref``); its failures become AssertionErrors."""
    try:
        return await request
    except CallTimeout as exc:
        queued = ref.mailbox_stats().queued
        raise AssertionError(
            f"expected {ref!r} to answer {what} within {timeout}s; it did not "
            f"({queued} messages queued)"
        ) from exc
    except ServerExited as exc:
        raise AssertionError(
            f"expected {ref!r} to answer {what}; it exited ({_reason(exc.reason)})"
        ) from exc


# -- servers ---------------------------------------------------------------------------


async def cast_and_sync(
    ref: ServerRef[Any, Any], message: Any, *, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Cast ``message`` and return once the server has handled it.

    ``await cast_and_sync(ref, "incr")`` is ``ref.cast("incr"); await ref.sync()``.

    :raises ServerExited: the server was dead, or the cast made it exit.
    :raises CallTimeout: not handled within ``timeout`` seconds.
    """
    ref.cast(message)
    await ref.sync(timeout=timeout)


async def get_state(ref: ServerRef[Any, Any], *, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Return the server's state, read after every message queued before.

    ``assert (await get_state(counter)) == 3``.

    :raises ServerExited, CallTimeout: as :meth:`ServerRef.get_state`.
    """
    return await ref.get_state(timeout=timeout)


def assert_alive(ref: ServerRef[Any, Any]) -> None:
    """Assert that the server is running.

    ``assert_alive(sup.child("a"))`` fails with the exit reason if it is not.
    """
    if not ref.alive:
        raise AssertionError(
            f"expected {ref!r} to be alive; it exited ({_reason(ref.exit_reason)})"
        )


def assert_dead(ref: ServerRef[Any, Any]) -> None:
    """Assert that the server has exited.

    ``await ref.kill(); assert_dead(ref)``.
    """
    if ref.alive:
        raise AssertionError(f"expected {ref!r} to have exited; it is alive")


async def assert_state(
    ref: ServerRef[Any, Any], expected: Any, *, timeout: float = DEFAULT_TIMEOUT
) -> Any:
    """Assert that the server's state equals ``expected`` or satisfies it; return the state.

    ``expected`` is a predicate when it is a function (or any callable that
    is not a class): it is called with the state and must return true.
    Anything else, a class included, is compared with ``==``: a class is a
    value (the state of a state-pattern server may be one), never a type
    check; for that, pass ``lambda s: isinstance(s, Cls)``. The state is
    read in mailbox order::

        ref.cast("incr")
        await assert_state(ref, 1)
        await assert_state(ref, lambda n: n > 0)

    :raises AssertionError: the state differs, or the server did not answer.
    """
    state = await _ask(ref, "get_state", ref.get_state(timeout=timeout), timeout)
    if _is_predicate(expected):
        if not expected(state):
            raise AssertionError(
                f"expected the state of {ref!r} to satisfy {_name_of(expected)}, found {state!r}"
            )
    elif state != expected:
        raise AssertionError(
            f"expected the state of {ref!r} to be {expected!r}, found {state!r}"
            + _class_hint(expected, state)
        )
    return state


def _is_predicate(expected: object) -> bool:
    """A callable that is not a class: classes are values, compared with ``==``."""
    return callable(expected) and not isinstance(expected, type)


def _class_hint(expected: object, found: object) -> str:
    """A hint for ``expected`` a class and ``found`` an instance of it."""
    if isinstance(expected, type) and isinstance(found, expected):
        return (
            f" (an instance of {expected.__name__}: a class is compared with ==; "
            f"to check the type, pass lambda x: isinstance(x, {expected.__name__}))"
        )
    return ""


async def assert_responsive(ref: ServerRef[Any, Any], *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Assert that the server handles its mailbox: a ``sync`` returns within ``timeout``.

    ``await assert_responsive(worker, timeout=1)`` fails for a server stuck in a handler.
    """
    await _ask(ref, "a sync", ref.sync(timeout=timeout), timeout)


async def assert_handles(
    ref: ServerRef[Any, Any], request: Any, expected: Any, *, timeout: float = DEFAULT_TIMEOUT
) -> Any:
    """Assert that ``call(request)`` replies ``expected`` (or a reply satisfying it); return it.

    As in :func:`assert_state`, a callable that is not a class is a
    predicate; anything else, a class included, is compared with ``==``::

        await assert_handles(ref, "ping", "pong")
        await assert_handles(ref, "get", lambda n: n >= 0)

    :raises AssertionError: another reply, or the server did not answer.
    """
    reply = await _ask(ref, f"call {request!r}", ref.call(request, timeout=timeout), timeout)
    if _is_predicate(expected):
        if not expected(reply):
            raise AssertionError(
                f"expected {ref!r} to answer {request!r} with a reply satisfying "
                f"{_name_of(expected)}, got {reply!r}"
            )
    elif reply != expected:
        raise AssertionError(
            f"expected {ref!r} to answer {request!r} with {expected!r}, got {reply!r}"
            + _class_hint(expected, reply)
        )
    return reply


async def concurrent_calls(
    ref: ServerRef[Any, Any],
    requests: Iterable[Any],
    count: int = 1,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[list[Any]]:
    """Make ``count`` calls of each request, all at once; return the replies per request.

    ``replies[i]`` holds the ``count`` replies to ``requests[i]``, in the order
    the calls were issued::

        replies = await concurrent_calls(ref, ["get", "ping"], 10)
        assert replies[1] == ["pong"] * 10

    :param timeout: each call's timeout.
    :raises AssertionError: a call failed; the message counts and lists the failures.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count!r}")
    reqs = list(requests)
    replies: list[list[Any]] = [[None] * count for _ in reqs]
    failures: list[tuple[Any, Exception]] = []

    async def one(i: int, k: int) -> None:
        try:
            replies[i][k] = await ref.call(reqs[i], timeout=timeout)
        except Exception as exc:
            failures.append((reqs[i], exc))

    async with anyio.create_task_group() as tg:
        for i in range(len(reqs)):
            for k in range(count):
                tg.start_soon(one, i, k)
    if failures:
        shown = "; ".join(f"{req!r}: {exc!r}" for req, exc in failures[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        raise AssertionError(
            f"{len(failures)} of {len(reqs) * count} concurrent calls to {ref!r} failed: "
            f"{shown}{more}"
        ) from failures[0][1]
    return replies


#: One operation of :func:`stress`: how to send, and what.
StressOp: TypeAlias = tuple[Literal["call", "cast", "send"], Any]


@dataclass(frozen=True, slots=True)
class StressReport:
    """What :func:`stress` did: operation counts, wall time, mailbox high-water mark.

    ``report = await stress(ref, ops, 1000, rng=rng); assert report.calls > 0``.
    """

    calls: int
    casts: int
    sends: int
    #: Seconds the run took (``anyio.current_time``, so virtual under MockClock).
    seconds: float
    #: ``ref.mailbox_stats().high_water`` after the run (since the server started).
    high_water: int


async def stress(
    ref: ServerRef[Any, Any],
    ops: Sequence[StressOp],
    n: int,
    *,
    rng: random.Random | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> StressReport:
    """Send ``n`` operations drawn from ``ops`` with ``rng``; assert the server survives.

    Casts and sends are queued without waiting, calls wait for their reply, and
    a final ``sync`` waits for the rest. The sequence depends only on ``rng``
    (``random.Random(0)`` if None), so a failure replays with the same seed::

        ops = [("call", "get"), ("cast", "incr"), ("send", "tick")]
        report = await stress(ref, ops, 500, rng=chaos_rng)

    :param timeout: each call's (and the final sync's) timeout.
    :raises AssertionError: the server exited or stopped answering; the message
        names the operation at which that was seen.
    """
    if not ops:
        raise ValueError("ops must not be empty")
    for kind, _ in ops:
        if kind not in ("call", "cast", "send"):
            raise ValueError(f"an op is ('call' | 'cast' | 'send', message), got kind {kind!r}")
    rng = random.Random(0) if rng is None else rng
    plan = [rng.choice(ops) for _ in range(n)]
    counts = {"call": 0, "cast": 0, "send": 0}
    started = anyio.current_time()
    for index, (kind, message) in enumerate(plan, 1):
        counts[kind] += 1
        if kind == "cast":
            ref.cast(message)
        elif kind == "send":
            ref.send(message)
        else:
            what = f"call {message!r} (operation {index} of {n})"
            await _ask(ref, what, ref.call(message, timeout=timeout), timeout)
    await _ask(ref, f"a sync after {n} operations", ref.sync(timeout=timeout), timeout)
    return StressReport(
        counts["call"],
        counts["cast"],
        counts["send"],
        anyio.current_time() - started,
        ref.mailbox_stats().high_water,
    )


# -- restarts --------------------------------------------------------------------------


def _lookup(sup: SupervisorRef, child_id: Hashable) -> ServerRef[Any, Any] | None:
    try:
        return sup.child(child_id)
    except ChildNotFound:
        raise AssertionError(
            f"{_sup_label(sup)} has no child {child_id!r} (a temporary child, and any "
            f"child of a DynamicSupervisor, is removed when it exits); "
            f"{_children(sup)}"
        ) from None


def _last_exit(sup: SupervisorRef, child_id: Hashable) -> str:
    """``", the child's last exit: REASON"`` from the supervisor's view, or nothing."""
    info = next((i for i in sup.which_children() if i.id == child_id), None) if sup.alive else None
    if info is None or info.last_exit is None:
        return ""
    return f", the child's last exit: {_reason(info.last_exit)}"


def _not_restarting(
    sup: SupervisorRef,
    exited: ChildExited,
    events: MemoryObjectReceiveStream[SupervisorEvent],
) -> AssertionError:
    # The supervisor publishes RestartIntensityReached right after this exit.
    try:
        gave_up = isinstance(events.receive_nowait(), RestartIntensityReached)
    except (anyio.WouldBlock, anyio.EndOfStream):
        gave_up = False
    restart = next((i.restart for i in sup.which_children() if i.id == exited.child_id), None)
    if gave_up:
        why = "the supervisor reached its restart intensity"
    elif restart is not None:
        why = f"its restart type is {restart!r}"
    else:
        why = "it was removed (a temporary child, or a DynamicSupervisor's)"
    return AssertionError(
        f"expected {_sup_label(sup)} to restart child {exited.child_id!r}; it exited "
        f"({_reason(exited.reason)}) and is not restarted: {why}"
    )


async def _await_restart(
    events: MemoryObjectReceiveStream[SupervisorEvent],
    sup: SupervisorRef,
    child_id: Hashable,
    old_ref: ServerRef[Any, Any],
    timeout: float,
) -> ServerRef[Any, Any]:
    """Read ``events`` until ``child_id`` starts with a generation above ``old_ref``'s."""
    current = _lookup(sup, child_id)
    if current is not None and current.generation > old_ref.generation:
        return current
    failed: list[ChildStartFailed] = []

    def timed_out() -> str:
        text = (
            f"expected {_sup_label(sup)} to restart child {child_id!r} (a generation above "
            f"{old_ref.generation}) within {timeout}s; {old_ref!r} is "
            f"{'alive' if old_ref.alive else 'dead'}{_last_exit(sup, child_id)}; "
            f"{_children(sup)}"
        )
        if failed:
            text += "; failed starts: " + ", ".join(repr(f.error) for f in failed)
        return text

    with _deadline(timeout, timed_out):
        async for event in events:
            if isinstance(event, RestartIntensityReached):
                raise AssertionError(
                    f"expected {_sup_label(sup)} to restart child {child_id!r}; it reached "
                    f"its restart intensity ({event.max_restarts} in {event.max_seconds}s)"
                )
            if event.child_id != child_id:
                continue
            if isinstance(event, ChildStarted) and event.generation > old_ref.generation:
                return event.ref
            if isinstance(event, ChildExited) and event.ref is old_ref and not event.restarting:
                raise _not_restarting(sup, event, events)
            if isinstance(event, ChildStartFailed):
                failed.append(event)
        reason = await sup.wait()
        raise AssertionError(
            f"expected {_sup_label(sup)} to restart child {child_id!r}; the supervisor "
            f"exited first ({_reason(reason)})"
        )
    raise AssertionError("unreachable")  # _deadline raised


async def _await_rebound(
    registry: Registry, name: str, old_ref: ServerRef[Any, Any], timeout: float
) -> ServerRef[Any, Any]:
    def timed_out() -> str:
        return (
            f"expected name {name!r} to be taken by a restart of {old_ref!r} (a generation "
            f"above {old_ref.generation}) within {timeout}s; it is held by "
            f"{registry.whereis(name)!r}"
        )

    with _deadline(timeout, timed_out):
        holder = old_ref
        while True:
            holder = await registry.wait_rebound(name, holder, timeout=None)
            if holder.generation > old_ref.generation:
                return holder
    raise AssertionError("unreachable")  # _deadline raised


async def wait_for_restart(
    where: SupervisorRef | Registry,
    key: Hashable,
    old_ref: ServerRef[Any, Any],
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> ServerRef[Any, Any]:
    """Wait until the child that ``old_ref`` was is running again; return the new ref.

    The child is ``(supervisor, child_id)``, or ``(registry, name)`` for a
    registered child; the new ref is the first with a generation above
    ``old_ref.generation``. Event-driven: reads the supervisor's event stream
    (or wakes on each rebinding of the name)::

        old = sup.child("db")
        await old.kill()
        new = await wait_for_restart(sup, "db", old)

    Fails fast when the supervisor reports that no restart will come (a
    temporary child, a transient one that exited normally, the restart
    intensity reached, the supervisor gone).

    :raises AssertionError: no restart within ``timeout`` seconds, or none coming.
    """
    if isinstance(where, Registry):
        if not isinstance(key, str):
            raise TypeError(f"a registered name is a str, got {key!r}")
        return await _await_rebound(where, key, old_ref, timeout)
    with where.subscribe() as events:
        return await _await_restart(events, where, key, old_ref, timeout)


async def assert_process_restarted(
    where: SupervisorRef | Registry,
    key: Hashable,
    old_ref: ServerRef[Any, Any],
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> ServerRef[Any, Any]:
    """Assert that ``old_ref`` is dead and replaced by a live restart; return the new ref.

    :func:`wait_for_restart`, then checks that the old instance is gone and the
    new one is alive::

        new = await assert_process_restarted(sup, "db", old)
    """
    new = await wait_for_restart(where, key, old_ref, timeout=timeout)
    if old_ref.alive:
        raise AssertionError(f"expected {old_ref!r} to be dead; it is alive next to {new!r}")
    if not new.alive:
        raise AssertionError(
            f"expected the restart {new!r} of {old_ref!r} to be alive; it exited "
            f"({_reason(new.exit_reason)})"
        )
    return new


@dataclass(frozen=True, slots=True)
class Recovery:
    """What :func:`check_crash_recovery` saw: the crash and the replacement.

    ``r = await check_crash_recovery(sup, "db"); assert r.new_generation == 1``.
    """

    child_id: Hashable
    old: ServerRef[Any, Any]
    new: ServerRef[Any, Any]
    old_generation: int
    new_generation: int
    #: The old instance's exit reason.
    reason: ExitReason
    #: From the crash to the replacement's start (``anyio.current_time``).
    seconds: float


async def check_crash_recovery(
    sup: SupervisorRef,
    child_id: Hashable,
    *,
    reason: ExitReason = "killed",
    timeout: float = DEFAULT_TIMEOUT,
) -> Recovery:
    """Crash a running child, wait for its restart, check the new one answers.

    ``reason="killed"`` kills it (no ``terminate``); any other reason stops it
    with that reason (an exception is a crash)::

        recovery = await check_crash_recovery(sup, "db", reason=RuntimeError("boom"))
        assert recovery.new_generation == recovery.old_generation + 1

    :raises AssertionError: the child is not running, is not restarted, or its
        replacement does not answer a ``sync``.
    """
    old = _lookup(sup, child_id)
    if old is None:
        raise AssertionError(
            f"expected child {child_id!r} of {_sup_label(sup)} to be running before the "
            f"crash; {_children(sup)}"
        )
    with sup.subscribe() as events:
        started = anyio.current_time()
        if reason == "killed":
            await old.kill()
        else:
            await old.stop(reason, timeout=timeout)
        new = await _await_restart(events, sup, child_id, old, timeout)
        seconds = anyio.current_time() - started
    await _ask(new, "a sync after its restart", new.sync(timeout=timeout), timeout)
    assert old.exit_reason is not None
    return Recovery(child_id, old, new, old.generation, new.generation, old.exit_reason, seconds)


# -- supervisors -----------------------------------------------------------------------


def assert_strategy(sup: SupervisorRef, strategy: Strategy) -> None:
    """Assert the supervisor's restart strategy.

    ``assert_strategy(sup, "rest_for_one")``.
    """
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
    if sup.strategy != strategy:
        raise AssertionError(
            f"expected {_sup_label(sup)} to use strategy {strategy!r}, found {sup.strategy!r}"
        )


def assert_child_count(sup: SupervisorRef, n: int) -> None:
    """Assert that ``n`` children of the supervisor are running now.

    Reads the supervisor's current view; after a crash, ``await wait_stable(sup)``
    first. ``assert_child_count(sup, 3)``.
    """
    running = sup.count_children().active if sup.alive else 0
    if running != n:
        raise AssertionError(
            f"expected {n} running children of {_sup_label(sup)}, found {running}: {_children(sup)}"
        )


def assert_all_children_alive(sup: SupervisorRef) -> None:
    """Assert that every child the supervisor has is running.

    ``await wait_stable(sup); assert_all_children_alive(sup)``.
    """
    if not sup.alive or not all(info.alive for info in sup.which_children()):
        raise AssertionError(
            f"expected every child of {_sup_label(sup)} to be running; {_children(sup)}"
        )


async def wait_stable(sup: SupervisorRef, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Wait until the supervisor tree has handled every exit and restart.

    :meth:`SupervisorRef.wait_stable` (event-driven), with failures as
    AssertionErrors that list the children. ``await wait_stable(sup)``.

    :raises AssertionError: not stable within ``timeout``, or the supervisor exited.
    """
    try:
        await sup.wait_stable(timeout=timeout)
    except WaitTimeout as exc:
        raise AssertionError(
            f"expected {_sup_label(sup)} to be stable within {timeout}s; {_children(sup)}"
        ) from exc
    except ServerExited as exc:
        raise AssertionError(
            f"expected {_sup_label(sup)} to become stable; it exited ({_reason(exc.reason)})"
        ) from exc


def _group(strategy: Strategy, ids: list[Hashable], killed: Sequence[Hashable]) -> set[Hashable]:
    if strategy == "one_for_one":
        return set(killed)
    if strategy == "one_for_all":
        return set(ids)
    return set(ids[min(ids.index(k) for k in killed) :])


async def check_restart_strategy(
    sup: SupervisorRef,
    *,
    kill: Sequence[Hashable],
    strategy: Strategy | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[Hashable]:
    """Kill children, wait until stable, assert the restarts fit the strategy.

    A child counts as restarted when its generation went up. Expected:
    ``one_for_one`` the killed children, ``one_for_all`` all, ``rest_for_one``
    the first killed and every child after it; temporary children are never
    expected back. Returns the restarted ids in start order::

        assert await check_restart_strategy(sup, kill=["b"]) == ["b", "c"]

    :param strategy: the strategy to expect (default: the supervisor's own).
    :raises AssertionError: other children were restarted, or a killed child
        was not running to begin with.
    """
    strategy = sup.strategy if strategy is None else strategy
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
    if not kill:
        raise ValueError("kill must name at least one child")
    before = sup.which_children()
    ids = [info.id for info in before]
    victims = []
    for child_id in kill:
        ref = _lookup(sup, child_id)
        if ref is None:
            raise AssertionError(
                f"expected child {child_id!r} of {_sup_label(sup)} to be running before "
                f"the kill; {_children(sup)}"
            )
        victims.append(ref)
    for ref in victims:
        await ref.kill()
    await wait_stable(sup, timeout=timeout)
    after = {info.id: info for info in sup.which_children()}
    restarted = [i.id for i in before if i.id in after and after[i.id].generation > i.generation]
    group = _group(strategy, ids, kill)
    expected = [i.id for i in before if i.id in group and i.restart != "temporary"]
    if restarted != expected:
        gens = ", ".join(
            f"{i.id!r} {i.generation} -> "
            + (str(after[i.id].generation) if i.id in after else "removed")
            for i in before
        )
        own = "" if strategy == sup.strategy else f" (its own strategy is {sup.strategy!r})"
        raise AssertionError(
            f"expected killing {list(kill)!r} under {strategy!r} to restart {expected!r} "
            f"of {_sup_label(sup)}{own}; it restarted {restarted!r} (generations: {gens})"
        )
    return restarted


def _tree_errors(sup: SupervisorRef, spec: TreeSpec, path: str) -> Iterator[str]:
    infos = sup.which_children()
    found = [info.id for info in infos]
    if found != list(spec):
        yield f"{path}: expected children {list(spec)!r}, found {found!r}"
    for info in infos:
        node = spec.get(info.id)
        here = f"{path} > {info.id!r}"
        if node is None:
            continue
        if info.ref is None:
            yield f"{here}: {_not_running(info)}"
            continue
        if isinstance(node, str):
            if node != info.type:
                yield f"{here}: expected a {node}, found a {info.type}"
        elif isinstance(node, type):
            if not isinstance(info.ref.server, node):
                yield (
                    f"{here}: expected a {node.__name__}, found a {type(info.ref.server).__name__}"
                )
        elif isinstance(info.ref, SupervisorRef):
            yield from _tree_errors(info.ref, node, here)
        else:
            yield f"{here}: expected a supervisor, found a {type(info.ref.server).__name__}"


def assert_tree(sup: SupervisorRef, spec: TreeSpec) -> None:
    """Assert the shape of a running supervision tree.

    ``spec`` maps each child id, in start order, to what that child must be:
    ``"worker"`` or ``"supervisor"`` (its child type), a GenServer class (the
    child's server is an instance of it), or a mapping (the child is a
    supervisor whose children match that mapping, recursively). Every child
    named must be running::

        assert_tree(sup, {"cache": Cache, "workers": {"w1": "worker", "w2": "worker"}})

    :raises AssertionError: listing every mismatch, with its path of ids.
    """
    errors = list(_tree_errors(sup, spec, _sup_label(sup)))
    if errors:
        raise AssertionError("the supervision tree does not match:\n  " + "\n  ".join(errors))


# -- tracing ---------------------------------------------------------------------------


def _short(event: SupervisorEvent) -> tuple[Any, ...]:
    if isinstance(event, ChildStarted):
        return ("started", event.child_id, event.generation)
    if isinstance(event, ChildExited):
        return ("exited", event.child_id, _reason(event.reason), event.restarting)
    if isinstance(event, ChildTerminated):
        return ("terminated", event.child_id, _reason(event.reason))
    if isinstance(event, ChildStartFailed):
        return ("start_failed", event.child_id, event.generation, repr(event.error))
    return ("intensity", event.max_restarts, event.max_seconds)


class SupervisionLog:
    """The events one supervisor published during a :func:`trace_supervision` block.

    Only this supervisor's own events (not those of supervisors below it). The
    queries read every event published so far::

        async with trace_supervision(sup) as log:
            await sup.child("b").kill()
            await log.wait_for(ChildStarted, "b")
        assert log.summary() == [("exited", "b", "killed", True), ("started", "b", 1)]
    """

    def __init__(
        self, sup: SupervisorRef, events: MemoryObjectReceiveStream[SupervisorEvent]
    ) -> None:
        #: The traced supervisor.
        self.supervisor = sup
        self._stream = events
        self._events: list[SupervisorEvent] = []
        self._ended = False

    def __repr__(self) -> str:
        return f"<SupervisionLog of {self.supervisor!r}: {len(self.events)} events>"

    def _drain(self) -> None:
        while not self._ended:
            try:
                self._events.append(self._stream.receive_nowait())
            except anyio.WouldBlock:
                return
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                self._ended = True

    def _close(self) -> None:
        self._drain()
        self._ended = True
        self._stream.close()

    @property
    def events(self) -> list[SupervisorEvent]:
        """Every event so far, in order."""
        self._drain()
        return list(self._events)

    def _of(self, kind: type[E], child_id: Hashable | None) -> list[E]:
        return [
            e
            for e in self.events
            if isinstance(e, kind) and (child_id is None or e.child_id == child_id)
        ]

    def restarts(self, child_id: Hashable | None = None) -> list[ChildStarted]:
        """The restarts (starts with a generation above 0), of one child or all."""
        return [e for e in self._of(ChildStarted, child_id) if e.generation > 0]

    def exits(self, child_id: Hashable | None = None) -> list[ChildExited]:
        """The exits children made on their own (with reasons), of one child or all."""
        return self._of(ChildExited, child_id)

    def terminations(self, child_id: Hashable | None = None) -> list[ChildTerminated]:
        """The children the supervisor stopped (strategy, terminate_child, shutdown)."""
        return self._of(ChildTerminated, child_id)

    def start_failures(self, child_id: Hashable | None = None) -> list[ChildStartFailed]:
        """The (re)starts whose ``init`` raised."""
        return self._of(ChildStartFailed, child_id)

    @property
    def intensity_reached(self) -> RestartIntensityReached | None:
        """The event of the supervisor giving up on restarts, if it did."""
        found = [e for e in self.events if isinstance(e, RestartIntensityReached)]
        return found[0] if found else None

    def summary(self) -> list[tuple[Any, ...]]:
        """The events as short tuples, reasons as text, for ``==`` assertions.

        ``("started", id, gen)``, ``("exited", id, reason, restarting)``,
        ``("terminated", id, reason)``, ``("start_failed", id, gen, error)``,
        ``("intensity", max_restarts, max_seconds)``.
        """
        return [_short(e) for e in self.events]

    async def wait_for(
        self,
        kind: type[E],
        child_id: Hashable | None = None,
        *,
        count: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> E:
        """Wait for ``count`` events of ``kind`` (for ``child_id``); return the last of them.

        Counts the events logged before the call too::

            exit = await log.wait_for(ChildExited, "b")

        :raises AssertionError: not within ``timeout``, or the supervisor exited first.
        """

        def missing(why: str) -> str:
            return (
                f"expected {count} {kind.__name__} event(s) for "
                f"{'any child' if child_id is None else repr(child_id)} from "
                f"{_sup_label(self.supervisor)}; {why}; log: {self.summary()!r}"
            )

        with _deadline(timeout, lambda: missing(f"none within {timeout}s")):
            while True:
                found = self._of(kind, child_id)
                if len(found) >= count:
                    return found[count - 1]
                if self._ended:
                    raise AssertionError(missing(f"the log ended with {len(found)}"))
                try:
                    self._events.append(await self._stream.receive())
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    self._ended = True
        raise AssertionError("unreachable")  # _deadline raised


@asynccontextmanager
async def trace_supervision(sup: SupervisorRef) -> AsyncIterator[SupervisionLog]:
    """Record the supervisor's events (exits with reasons, restarts, intensity) in a block.

    The log keeps what was published until the block ends::

        async with trace_supervision(sup) as log:
            await check_crash_recovery(sup, "b")
        assert [e.generation for e in log.restarts("b")] == [1]
    """
    log = SupervisionLog(sup, sup.subscribe())
    try:
        yield log
    finally:
        log._close()


@dataclass(frozen=True, slots=True)
class TracedMessage:
    """One message a server received, recorded by :func:`trace_messages`.

    ``assert log.messages[0] == TracedMessage("cast", "incr", log.messages[0].at)``.
    """

    #: ``"call"``, ``"cast"`` or ``"info"``: the callback it is for.
    kind: MessageKind
    message: Any
    #: ``anyio.current_time()`` when it was queued.
    at: float


_ANY: Any = object()


def _fits(traced: TracedMessage, kind: MessageKind | None, message: Any) -> bool:
    if kind is not None and traced.kind != kind:
        return False
    if message is _ANY:
        return True
    if _is_predicate(message):
        return bool(message(traced.message))
    return bool(traced.message == message)


class MessageLog:
    """The messages one server received during a :func:`trace_messages` block, in order.

    Calls, casts and infos, as they were queued (mailbox order), whether or
    not the server handled them yet; not ``sync()`` nor ``get_state()``::

        async with trace_messages(ref) as log:
            ref.cast("incr")
            await ref.call("get")
        assert log.summary() == [("cast", "incr"), ("call", "get")]
    """

    def __init__(self, ref: ServerRef[Any, Any]) -> None:
        #: The traced server.
        self.server = ref
        self._messages: list[TracedMessage] = []
        self._changed = anyio.Event()
        self._ended = False

    def __repr__(self) -> str:
        return f"<MessageLog of {self.server!r}: {len(self._messages)} messages>"

    def _record(self, kind: MessageKind, message: Any) -> None:
        self._messages.append(TracedMessage(kind, message, anyio.current_time()))
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    @property
    def messages(self) -> list[TracedMessage]:
        """Every message so far, in the order they were queued."""
        return list(self._messages)

    def of(self, kind: MessageKind) -> list[Any]:
        """The messages (payloads only) of one kind: ``log.of("cast") == ["incr"]``."""
        return [m.message for m in self._messages if m.kind == kind]

    def summary(self) -> list[tuple[MessageKind, Any]]:
        """``(kind, message)`` for each message, for ``==`` assertions."""
        return [(m.kind, m.message) for m in self._messages]

    async def wait_for(
        self,
        kind: MessageKind | None = None,
        message: Any = _ANY,
        *,
        count: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> TracedMessage:
        """Wait until ``count`` messages match; return the last of them.

        ``kind`` None matches any kind; ``message`` is compared with ``==``,
        or called when it is a predicate (a callable that is not a class), or
        left out to match any. Counts what was logged before the call too.
        Woken by each new message and by the server's exit::

            await log.wait_for("info", lambda m: m[0] == "tick", count=3)

        :raises AssertionError: not within ``timeout``, the server exited
            first, or the block has ended; the message lists the log.
        """
        what = f"{count} {kind or 'message'}(s)" + (
            "" if message is _ANY else f" matching {_name_of(message)}"
        )

        def missing(why: str) -> str:
            return f"expected {what} to {self.server!r}; {why}; log: {self.summary()!r}"

        with _deadline(timeout, lambda: missing(f"none within {timeout}s")):
            while True:
                found = [m for m in self._messages if _fits(m, kind, message)]
                if len(found) >= count:
                    return found[count - 1]
                if self._ended:
                    raise AssertionError(missing(f"the trace ended with {len(found)}"))
                if not self.server.alive:
                    reason = _reason(self.server.exit_reason)
                    raise AssertionError(missing(f"it exited ({reason}) with {len(found)}"))
                await self._next_change()
        raise AssertionError("unreachable")  # _deadline raised

    async def _next_change(self) -> None:
        """Wait for the next message, the end of the block, or the server's exit."""
        changed = self._changed
        async with anyio.create_task_group() as tg:

            async def on_exit() -> None:
                await self.server.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(on_exit)
            await changed.wait()
            tg.cancel_scope.cancel()


@asynccontextmanager
async def trace_messages(ref: ServerRef[Any, Any]) -> AsyncIterator[MessageLog]:
    """Record the calls, casts and infos the server receives in a block, in order.

    Each is recorded as it is queued (:meth:`ServerRef.add_tracer`), so the
    log is in mailbox order and complete as soon as a ``cast`` returns; a
    supervisor's log shows its children's exits as infos. The log stays
    readable after the block::

        async with trace_messages(ref) as log:
            ref.cast("incr")
            ref.send("tick")
            assert await ref.call("get") == 1
        assert log.summary() == [("cast", "incr"), ("info", "tick"), ("call", "get")]
    """
    log = MessageLog(ref)
    ref.add_tracer(log._record)
    try:
        yield log
    finally:
        ref.remove_tracer(log._record)
        log._ended = True
        log._wake()


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call made through a :class:`CallMonitor`.

    ``assert obs.records[0].outcome == "ok"``.
    """

    request: Any
    #: ``"ok"``, ``"timeout"`` (CallTimeout), ``"exited"`` (ServerExited),
    #: ``"error"`` (another exception) or ``"cancelled"``.
    outcome: Literal["ok", "timeout", "exited", "error", "cancelled"]
    #: ``anyio.current_time()`` at the start and at the end of the call.
    started: float
    ended: float
    reply: Any = None
    error: BaseException | None = None

    @property
    def duration(self) -> float:
        """Seconds the call took."""
        return self.ended - self.started


def _outcome(exc: BaseException) -> Literal["timeout", "exited", "error", "cancelled"]:
    if isinstance(exc, CallTimeout):
        return "timeout"
    if isinstance(exc, ServerExited):
        return "exited"
    if isinstance(exc, Exception):
        return "error"
    return "cancelled"


class CallMonitor:
    """A proxy for ``ref.call`` that records each call; made by :func:`monitor_call`.

    ``reply = await obs.call("get")``, then ``obs.records``.
    """

    def __init__(self, ref: ServerRef[Any, Any]) -> None:
        #: The server the calls go to.
        self.ref = ref
        self._records: list[CallRecord] = []
        self._in_flight = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"<CallMonitor of {self.ref!r}: {len(self._records)} calls>"

    @property
    def records(self) -> list[CallRecord]:
        """The finished calls, in the order they ended."""
        return list(self._records)

    @property
    def in_flight(self) -> int:
        """Calls started and not yet ended."""
        return self._in_flight

    async def call(self, request: Any, *, timeout: float | None = DEFAULT_TIMEOUT) -> Any:
        """``ref.call(request, timeout=timeout)``, recorded; raises what it raises.

        :raises anyio.ClosedResourceError: the ``monitor_call`` block has ended.
        """
        if self._closed:
            raise anyio.ClosedResourceError("the monitor_call block has ended")
        started = anyio.current_time()
        self._in_flight += 1
        try:
            reply = await self.ref.call(request, timeout=timeout)
        except BaseException as exc:
            outcome = _outcome(exc)
            self._add(CallRecord(request, outcome, started, anyio.current_time(), error=exc))
            raise
        self._add(CallRecord(request, "ok", started, anyio.current_time(), reply=reply))
        return reply

    def _add(self, record: CallRecord) -> None:
        self._in_flight -= 1
        self._records.append(record)

    def assert_all_ok(self) -> None:
        """Assert that every recorded call replied (none timed out, failed or was cut off)."""
        bad = [r for r in self._records if r.outcome != "ok"]
        if bad:
            shown = "; ".join(f"{r.request!r}: {r.outcome} ({r.error!r})" for r in bad[:5])
            raise AssertionError(
                f"expected every call to {self.ref!r} to succeed; {len(bad)} of "
                f"{len(self._records)} did not: {shown}"
            )


@asynccontextmanager
async def monitor_call(ref: ServerRef[Any, Any]) -> AsyncIterator[CallMonitor]:
    """Record each call made through the yielded proxy: start, end, outcome, duration.

    Calls go through ``obs.call`` (the ref itself is not changed, so calls made
    on it directly are not recorded)::

        async with monitor_call(ref) as obs:
            await obs.call("get")
        assert obs.records[0].outcome == "ok"
        assert obs.records[0].duration < 1
    """
    obs = CallMonitor(ref)
    try:
        yield obs
    finally:
        obs._closed = True
