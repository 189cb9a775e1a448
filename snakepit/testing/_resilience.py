"""Resilience: assert_chaos_resilient and run_chaos_suite, each scenario with its criterion.

A target (a supervisor, or a pool) must recover from the chaos applied to it,
or give up as expected; every step has a deadline and waits by event.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

import anyio

from snakepit.errors import ReachedMaxRestartIntensity, ServerExited, WaitTimeout
from snakepit.otp import SupervisorRef, exit_detail, is_abnormal
from snakepit.pool import Pool

from ._common import DEFAULT_DEADLINE
from ._crashes import _settle

__all__ = (
    "ChaosOutcome",
    "ChaosScenario",
    "ChaosSuiteReport",
    "assert_chaos_resilient",
    "run_chaos_suite",
)


#: What the chaos helpers work on: a supervisor, or a pool (its worker supervisor).
T = TypeVar("T", SupervisorRef, Pool)


def _is_alive(target: SupervisorRef | Pool) -> bool:
    if isinstance(target, SupervisorRef):
        return target.alive
    try:
        return target.supervisor.alive and target.stats().degraded is None
    except Exception:  # closed
        return False


async def _check(check: Callable[[T], object] | None, target: T, timeout: float) -> None:
    if check is None:
        return
    with anyio.fail_after(timeout):
        result = check(target)
        if inspect.isawaitable(result):
            result = await result
    if result is False:
        raise AssertionError(f"the check {_name(check)}() returned False")


def _name(fn: object) -> str:
    return getattr(fn, "__name__", None) or repr(fn)


async def assert_chaos_resilient(
    target: T,
    chaos: Callable[[T], Awaitable[object]],
    check: Callable[[T], object] | None = None,
    *,
    timeout: float = DEFAULT_DEADLINE,
) -> None:
    """Apply ``chaos`` to ``target``, then assert it recovered and ``check`` holds.

    Recovered means: a supervisor is alive, stable, and every permanent child
    is running; a pool is not degraded and all its workers are ready. Then
    ``check(target)`` (sync or async) must not raise nor return ``False``.
    ``chaos`` and ``check`` each get ``timeout`` seconds, and so does each wait.

    ::

        await assert_chaos_resilient(
            sup,
            lambda s: chaos_kill_children(s, rounds=3, rng=rng),
            lambda s: s.count_children().active == 3,
        )

    :raises AssertionError: what broke: the chaos itself (its message), the
        target's exit or timeout, a permanent child left down, the check.
    """
    label = f"{target!r} is not resilient to the chaos {_name(chaos)}()"
    try:
        with anyio.fail_after(timeout):
            await chaos(target)
    except AssertionError as exc:
        raise AssertionError(f"{label}: {exc}") from exc
    except TimeoutError as exc:
        raise AssertionError(f"{label}: the chaos did not finish within {timeout:g}s") from exc
    try:
        await _settle(target, timeout, "after the chaos")
        if isinstance(target, SupervisorRef):
            down = [
                c.id for c in target.which_children() if c.restart == "permanent" and not c.alive
            ]
            if down:
                raise AssertionError(f"permanent children not running after the chaos: {down}")
        await _check(check, target, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{label}: {exc}") from exc
    except TimeoutError as exc:
        raise AssertionError(f"{label}: the check did not finish within {timeout:g}s") from exc


async def _assert_gives_up(
    target: T, chaos: Callable[[T], Awaitable[object]], timeout: float
) -> None:
    sup = target if isinstance(target, SupervisorRef) else target.supervisor
    with contextlib.suppress(AssertionError):  # a helper's "the supervisor exited"
        with anyio.fail_after(timeout):
            await chaos(target)
    try:
        await sup.wait_stable(timeout=timeout)
    except ServerExited:
        pass
    except WaitTimeout as exc:
        raise AssertionError(f"{sup!r} neither gave up nor settled within {timeout:g}s") from exc
    if sup.alive:
        raise AssertionError(f"{target!r} did not give up: it is alive and stable after the chaos")
    reason = await sup.wait()
    if not is_abnormal(reason) and not isinstance(exit_detail(reason), ReachedMaxRestartIntensity):
        raise AssertionError(f"{sup!r} exited normally ({reason!r}), it did not give up")


@dataclass(frozen=True, slots=True)
class ChaosScenario(Generic[T]):
    """One scenario of :func:`run_chaos_suite`: its chaos and its pass criterion.

    ``expect="recovers"`` (the default) passes when
    :func:`assert_chaos_resilient` does: the target recovers and ``check``
    holds. ``expect="gives_up"`` passes when the target's supervisor exits
    abnormally (e.g. restart intensity reached; a pool is degraded); the
    chaos may raise ``AssertionError`` on the way (it is expected to break).

    ::

        ChaosScenario("three kills", lambda s: chaos_kill_children(s, rounds=3, rng=rng))
    """

    name: str
    chaos: Callable[[T], Awaitable[object]]
    check: Callable[[T], object] | None = None
    expect: Literal["recovers", "gives_up"] = "recovers"


@dataclass(frozen=True, slots=True)
class ChaosOutcome:
    """How one scenario of :func:`run_chaos_suite` went.

    ::

        assert report.outcomes[0].passed, report.outcomes[0].error
    """

    name: str
    passed: bool
    #: Why it failed, or None.
    error: str | None
    #: Seconds it took.
    seconds: float


@dataclass(frozen=True, slots=True)
class ChaosSuiteReport:
    """The outcome of every scenario of :func:`run_chaos_suite`, in order.

    ::

        report = await run_chaos_suite(sup, scenarios)
        assert report.passed == len(scenarios)
    """

    outcomes: tuple[ChaosOutcome, ...]

    @property
    def passed(self) -> int:
        """How many scenarios passed."""
        return sum(1 for o in self.outcomes if o.passed)

    @property
    def failed(self) -> list[ChaosOutcome]:
        """The scenarios that failed."""
        return [o for o in self.outcomes if not o.passed]

    def __str__(self) -> str:
        """One line per scenario: PASS/FAIL, name, seconds, the error."""
        return "\n".join(
            f"{'PASS' if o.passed else 'FAIL'} {o.name} ({o.seconds:.3f}s)"
            + (f": {o.error}" if o.error else "")
            for o in self.outcomes
        )


async def run_chaos_suite(
    target: T | Callable[[], AbstractAsyncContextManager[T]],
    scenarios: Sequence[ChaosScenario[T]],
    *,
    timeout: float = DEFAULT_DEADLINE,
) -> ChaosSuiteReport:
    """Run every scenario against ``target`` and judge each by its ``expect``.

    ``target`` is a running supervisor or pool, shared by the scenarios in
    order (one that ends it fails every later one: put ``gives_up`` last), or
    a factory of an async context manager (``lambda: Supervisor.running(spec)``,
    ``lambda: Pool(...)``) that gives each scenario a fresh one. Every
    scenario runs, even after a failure; then the failures are raised together.

    ::

        report = await run_chaos_suite(
            lambda: Supervisor.running(spec),
            [ChaosScenario("kills", kill_three), ChaosScenario("storm", storm, expect="gives_up")],
        )

    :raises AssertionError: one or more scenarios failed (the report is in
        the message, the first failure chained).
    """
    outcomes: list[ChaosOutcome] = []
    first: BaseException | None = None
    for scenario in scenarios:
        started = anyio.current_time()
        error: BaseException | None = None
        try:
            async with AsyncExitStack() as stack:
                if isinstance(target, SupervisorRef | Pool):
                    subject = target
                else:
                    subject = await stack.enter_async_context(target())
                if not _is_alive(subject):
                    raise AssertionError(f"{subject!r} was dead before the chaos")
                if scenario.expect == "gives_up":
                    await _assert_gives_up(subject, scenario.chaos, timeout)
                else:
                    await assert_chaos_resilient(
                        subject, scenario.chaos, scenario.check, timeout=timeout
                    )
        except Exception as exc:  # a scenario's failure, or a bug in its code: reported
            error = exc
            first = first or exc
        message = None if error is None else str(error) or type(error).__name__
        outcomes.append(
            ChaosOutcome(scenario.name, error is None, message, anyio.current_time() - started)
        )
    report = ChaosSuiteReport(tuple(outcomes))
    if first is not None:
        failed = len(report.failed)
        raise AssertionError(
            f"{failed} of {len(outcomes)} chaos scenarios failed:\n{report}"
        ) from first
    return report
