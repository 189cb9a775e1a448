"""Supervisor helpers: assert_strategy, assert_child_count, wait_stable, assert_tree...

Synchronous checks of a supervisor's current view, the event-driven wait that
makes that view final (:func:`wait_stable`), and the checks of a whole tree.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any, TypeAlias

from snakepit.otp import (
    DEFAULT_TIMEOUT,
    GenServer,
    ServerExited,
    Strategy,
    SupervisorRef,
    WaitTimeout,
)

from ._common import _children, _lookup, _not_running, _reason, _sup_label

__all__ = (
    "TreeSpec",
    "assert_all_children_alive",
    "assert_child_count",
    "assert_strategy",
    "assert_tree",
    "check_restart_strategy",
    "wait_stable",
)


#: A supervision tree as :func:`assert_tree` expects it: child id -> ``"worker"``
#: or ``"supervisor"``, a GenServer class, or (a child supervisor) its own TreeSpec.
TreeSpec: TypeAlias = Mapping[Hashable, "str | type[GenServer[Any, Any, Any]] | TreeSpec"]

_STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")


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
