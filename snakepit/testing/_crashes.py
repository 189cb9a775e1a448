"""Crashes: inject_crash, and chaos_kill_children's rounds of kills checked for restarts.

Randomness comes from an ``rng``, so a failing run replays from its seed;
between rounds the wait is event-driven (``wait_stable()``, a pool's
``wait_ready()``) and has a deadline. A failure raises ``AssertionError``
saying what broke, in which round, and why.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from snakepit.errors import (
    ConfigError,
    PoolDegraded,
    ReachedMaxRestartIntensity,
    ServerExited,
    WaitTimeout,
    check_int,
)
from snakepit.otp import ExitReason, ServerRef, Shutdown, SupervisorRef
from snakepit.pool import Pool

from ._common import DEFAULT_DEADLINE

__all__ = (
    "ChaosReport",
    "ChildKill",
    "InjectedCrash",
    "chaos_kill_children",
    "inject_crash",
)


#: How :func:`inject_crash` ends a server.
CrashHow: TypeAlias = Literal["kill", "crash"]


class InjectedCrash(Exception):
    """The exit reason of a server crashed by :func:`inject_crash` (``how="crash"``).

    ::

        reason = await inject_crash(ref, how="crash")
        assert isinstance(reason, InjectedCrash)
    """


async def inject_crash(
    ref: ServerRef[Any, Any],
    *,
    how: CrashHow | None = None,
    rng: random.Random | None = None,
    reason: BaseException | None = None,
    timeout: float = DEFAULT_DEADLINE,
) -> ExitReason:
    """End a live server abnormally; return its exit reason once it is dead.

    ``how="kill"``: :meth:`ServerRef.kill` (no ``terminate``, reason
    ``"killed"``). ``how="crash"``: it stops with ``reason`` (default an
    :class:`InjectedCrash`) as its exit reason, after ``terminate``; killed if
    that takes over ``timeout`` seconds. Both are abnormal exits, so a
    supervisor restarts a permanent or transient child. Without ``how``:
    ``"crash"`` when ``reason`` is given, else drawn from ``rng``, else ``"kill"``.

    ::

        reason = await inject_crash(sup.child("db"), rng=rng)
        await sup.wait_stable()

    :raises AssertionError: ``ref`` is already dead.
    :raises ConfigError: an unknown ``how``.
    """
    if not ref.alive:
        raise AssertionError(f"cannot inject a crash into {ref!r}: it is already dead")
    if how is None:
        how = "crash" if reason is not None else rng.choice(("kill", "crash")) if rng else "kill"
    if how == "kill":
        await ref.kill()
    elif how == "crash":
        crash = reason if reason is not None else InjectedCrash(f"crash injected into {ref!r}")
        await ref.stop(crash, timeout=timeout)
    else:
        raise ConfigError("how", f"must be 'kill' or 'crash', got {how!r}")
    assert ref.exit_reason is not None
    return ref.exit_reason


@dataclass(frozen=True, slots=True)
class ChildKill:
    """One child killed by :func:`chaos_kill_children`.

    ::

        (kill,) = report.kills
        assert kill.restarted_as == kill.generation + 1
    """

    #: The round it was killed in (1-based).
    round: int
    child_id: Hashable
    #: The generation of the instance that was killed.
    generation: int
    reason: ExitReason
    #: The generation running once the supervisor was stable again, or None.
    restarted_as: int | None


@dataclass(frozen=True, slots=True)
class ChaosReport:
    """What :func:`chaos_kill_children` did, round by round.

    ::

        report = await chaos_kill_children(sup, rounds=5, rng=rng)
        assert len(report.kills) == 5 and report.restarted == 5
    """

    rounds: int
    kills: tuple[ChildKill, ...]

    @property
    def killed(self) -> list[Hashable]:
        """The ids of the killed children, in kill order (repeats included)."""
        return [k.child_id for k in self.kills]

    @property
    def restarted(self) -> int:
        """How many of the killed children were running again after their round."""
        return sum(1 for k in self.kills if k.restarted_as is not None)


def _supervisor_of(target: SupervisorRef | Pool) -> SupervisorRef:
    if isinstance(target, SupervisorRef):
        return target
    workers = target.supervisor.child("workers")
    assert isinstance(workers, SupervisorRef), f"{target!r} has no worker supervisor"
    return workers


def _describe(reason: object) -> str:
    if isinstance(reason, Shutdown):  # a supervisor that gave up: Shutdown(ReachedMax...)
        reason = reason.detail
    if isinstance(reason, ReachedMaxRestartIntensity):
        return (
            f"{reason} (its restart intensity: raise max_restarts/max_seconds, "
            "or inject less chaos)"
        )
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"
    return repr(reason)


async def _settle(target: SupervisorRef | Pool, timeout: float, when: str) -> None:
    """Wait until ``target`` is stable (a pool: its workers ready); AssertionError if not."""
    sup = _supervisor_of(target)
    try:
        await sup.wait_stable(timeout=timeout)
        if isinstance(target, Pool):
            await target.wait_ready(timeout=timeout)
    except ServerExited as exc:
        raise AssertionError(f"{sup!r} exited {when}: {_describe(exc.reason)}") from exc
    except WaitTimeout as exc:
        raise AssertionError(f"{target!r} did not settle {when} within {timeout:g}s") from exc
    except PoolDegraded as exc:
        raise AssertionError(f"{target!r} gave up {when}: {exc}") from exc


async def chaos_kill_children(
    target: SupervisorRef | Pool,
    *,
    rounds: int,
    rng: random.Random,
    per_round: int = 1,
    how: CrashHow | None = "kill",
    expect_restart: bool = True,
    timeout: float = DEFAULT_DEADLINE,
) -> ChaosReport:
    """Kill random running children, round after round; check each one comes back.

    Each round picks ``per_round`` of the running children with ``rng``,
    crashes them with :func:`inject_crash` (``how=None``: kill or crash, drawn
    from ``rng``), and waits for :meth:`SupervisorRef.wait_stable` (a pool:
    also :meth:`Pool.wait_ready`) before the next round. For a :class:`Pool`
    the children are its workers. With ``expect_restart`` every killed child
    must be running again, in a newer generation, once the round is stable.

    ::

        report = await chaos_kill_children(sup, rounds=10, rng=rng)
        assert report.restarted == 10

    :raises AssertionError: the supervisor exited (e.g. its restart
        intensity), did not settle within ``timeout``, had no child to kill,
        or a killed child did not come back (named, with its restart type).
    """
    check_int("rounds", rounds, 0)
    check_int("per_round", per_round, 1)
    sup = _supervisor_of(target)
    await _settle(target, timeout, "before the chaos")
    kills: list[ChildKill] = []
    for n in range(1, rounds + 1):
        where = f"in chaos round {n} of {rounds}"
        running = [c for c in sup.which_children() if c.alive]
        if not running:
            ids = [c.id for c in sup.which_children()]
            raise AssertionError(f"{sup!r} has no running child to kill {where} (children: {ids})")
        victims = rng.sample(running, min(per_round, len(running)))
        done: list[tuple[Hashable, str, int, ExitReason]] = []
        for info in victims:
            ref = info.ref
            assert ref is not None
            if ref.alive:
                reason = await inject_crash(ref, how=how, rng=rng, timeout=timeout)
            else:  # its supervisor's strategy stopped it after an earlier victim
                reason = await ref.wait()
            done.append((info.id, info.restart, ref.generation, reason))
        await _settle(target, timeout, f"after chaos round {n} of {rounds}")
        now = {c.id: c for c in sup.which_children()}
        for child_id, restart, generation, reason in done:
            after = now.get(child_id)
            restarted_as = (
                after.generation
                if after is not None and after.alive and after.generation > generation
                else None
            )
            back = restarted_as is not None
            kills.append(ChildKill(n, child_id, generation, reason, restarted_as))
            if expect_restart and not back:
                state = (
                    "is no longer among its children"
                    if after is None
                    else f"is not running (generation {after.generation})"
                )
                raise AssertionError(
                    f"child {child_id!r} ({restart}) did not come back {where}: killed at "
                    f"generation {generation} ({_describe(reason)}), it {state}"
                )
    return ChaosReport(rounds, tuple(kills))
