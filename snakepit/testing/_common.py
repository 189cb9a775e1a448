"""What the helpers share: the wording of their failures, deadlines, lookups.

A helper that checks something raises :class:`AssertionError` saying what it
expected and what it found (child ids, generations, exit reasons). Every wait
is event-driven and bounded: ``timeout`` seconds, 5 by default for server and
supervisor helpers (OTP's call timeout), :data:`DEFAULT_DEADLINE` for chaos.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import anyio

from snakepit.otp import (
    CallTimeout,
    ChildInfo,
    ChildNotFound,
    ExitReason,
    ServerExited,
    ServerRef,
    SupervisorRef,
)

__all__ = ()

#: Seconds any one wait of the chaos helpers may take by default.
DEFAULT_DEADLINE: Final = 10.0


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


def _lookup(sup: SupervisorRef, child_id: Hashable) -> ServerRef[Any, Any] | None:
    try:
        return sup.child(child_id)
    except ChildNotFound:
        raise AssertionError(
            f"{_sup_label(sup)} has no child {child_id!r} (a temporary child, and any "
            f"child of a DynamicSupervisor, is removed when it exits); "
            f"{_children(sup)}"
        ) from None
