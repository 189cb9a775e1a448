"""Server helpers: cast_and_sync, get_state, assert_state, assert_handles, stress...

Supertester's GenServer helpers (see ``SUPERTESTER_MAP.md``). Each reads the
server in mailbox order (a ``sync``, a ``get_state``, a call), so no check races
a message sent before it; none polls or sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import anyio

from snakepit.otp import DEFAULT_TIMEOUT, ServerRef

from ._common import _ask, _class_hint, _is_predicate, _name_of, _reason

__all__ = (
    "StressOp",
    "StressReport",
    "assert_alive",
    "assert_dead",
    "assert_handles",
    "assert_responsive",
    "assert_state",
    "cast_and_sync",
    "concurrent_calls",
    "get_state",
    "stress",
)


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
