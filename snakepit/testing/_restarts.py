"""Restart helpers: wait_for_restart, assert_process_restarted, check_crash_recovery.

A child of a supervisor is named by ``(supervisor, child_id)``: its ref changes
on each restart, and the new ref has a higher :attr:`ServerRef.generation`, so
"the same child" and "its replacement" are never confused. The waits read the
supervisor's event stream (or a registry's rebindings); none polls.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from snakepit.otp import (
    DEFAULT_TIMEOUT,
    ChildExited,
    ChildStarted,
    ChildStartFailed,
    ExitReason,
    Registry,
    RestartIntensityReached,
    ServerRef,
    SupervisorEvent,
    SupervisorRef,
)

from ._common import _ask, _children, _deadline, _lookup, _reason, _sup_label

__all__ = (
    "Recovery",
    "assert_process_restarted",
    "check_crash_recovery",
    "wait_for_restart",
)


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
