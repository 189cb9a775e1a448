"""inject_random_failures: calls on a pool of fault-injecting workers, outcomes counted.

The faults are drawn up front by the caller's rng (a ``DirectedFaults`` pool)
or by the workers themselves; retries are counted, so the report checks the
seed's bar (at least 75 % of calls succeed at a 50 % fault rate, with retries).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Final

import anyio

from snakepit.errors import (
    ConfigError,
    InvalidArguments,
    RemoteError,
    ToolNotFound,
    WorkerCrashed,
    WorkerUnavailable,
    check_int,
)
from snakepit.pool import Pool

__all__ = (
    "FaultReport",
    "inject_random_failures",
)


#: The seed of the rng :func:`inject_random_failures` draws the faults with when given none.
DEFAULT_FAULT_SEED: Final = 0


@dataclass(frozen=True, slots=True)
class FaultReport:
    """The counts of :func:`inject_random_failures`.

    ::

        report = await inject_random_failures(pool, rate=0.5, rng=rng, retries=2)
        report.assert_success_rate(0.75)
    """

    calls: int
    #: Calls that succeeded (on some attempt) and those that failed every attempt.
    ok: int
    failed: int
    #: Attempts made, and attempts that failed (injected faults, crashed workers).
    attempts: int
    faults: int
    #: The fault rate asked for (None: the workers' own), and the retries allowed.
    rate: float | None
    retries: int
    #: The seed of the default rng (``random.Random(seed)``) that drew the faults;
    #: None when the caller passed ``rng=``, or the workers decided (``rate=None``).
    seed: int | None = None

    @property
    def success_rate(self) -> float:
        """``ok / calls`` (1.0 for no calls)."""
        return self.ok / self.calls if self.calls else 1.0

    def assert_success_rate(self, at_least: float = 0.75) -> None:
        """Raise ``AssertionError`` unless at least ``at_least`` of the calls succeeded.

        The message has the counts and, for the default rng, its seed.
        """
        if self.success_rate < at_least:
            rate = "the workers' own" if self.rate is None else f"{self.rate:g}"
            raise AssertionError(
                f"only {self.ok} of {self.calls} calls ({self.success_rate:.1%}) succeeded "
                f"at fault rate {rate} with {self.retries} retries; expected >= {at_least:.0%} "
                f"({self.faults} of {self.attempts} attempts failed{_drawn_by(self.seed)})"
            )


def _drawn_by(seed: int | None) -> str:
    if seed is None:
        return ""
    return f"; faults drawn by the default rng, random.Random({seed}): pass rng= to vary them"


async def inject_random_failures(
    pool: Pool,
    *,
    rate: float | None = 0.5,
    rng: random.Random | None = None,
    calls: int = 100,
    tool: str = "maybe_fail",
    retries: int = 2,
    concurrency: int = 8,
    timeout: float = 30.0,
) -> FaultReport:
    """Run ``calls`` calls of ``tool`` on a pool of fault-injecting workers; count outcomes.

    Each call is ``tool(value=i, fail=...)``, tried up to ``1 + retries``
    times; an attempt fails on an injected fault (the tool raised) or a
    crashed worker. With a ``rate``, ``rng`` decides every attempt up front
    (a :class:`~snakepit.testing.adapters.DirectedFaults` pool): the counts
    depend on the seed alone. Without ``rng`` that is ``random.Random(0)``,
    the same faults on every run; its seed is in the report (``seed``) and
    in the failure messages. Pass the
    ``chaos_rng`` fixture to vary them with pytest-randomly's seed. With
    ``rate=None`` the workers decide (stock ``FaultInjecting``, whose rate is
    ``SNAKEPIT_FAULT_RATE``), ``fail`` is not passed, and ``rng`` must not be
    given. Up to ``concurrency`` calls run at once.

    ::

        report = await inject_random_failures(pool, rate=0.5, rng=rng, calls=200, retries=2)
        report.assert_success_rate(0.75)  # the seed's bar

    :raises ConfigError: a bad option, an ``rng`` with ``rate=None``, or a
        ``tool`` the pool's adapter lacks or that takes no ``fail``.
    :raises AssertionError: the calls did not finish within ``timeout``.
    :raises PoolError: the pool stopped or gave up meanwhile.
    """
    if rate is not None and not 0.0 <= rate <= 1.0:
        raise ConfigError("rate", f"must be None or within 0..1, got {rate!r}")
    if rate is None and rng is not None:
        raise ConfigError("rng", "is not used with rate=None (the workers decide the faults)")
    for name, value, low in (
        ("calls", calls, 0),
        ("retries", retries, 0),
        ("concurrency", concurrency, 1),
    ):
        check_int(name, value, low)
    seed: int | None = None
    plan: list[list[bool]] = []
    if rate is not None:
        if rng is None:
            seed = DEFAULT_FAULT_SEED
            rng = random.Random(seed)
        plan = [[rng.random() < rate for _ in range(retries + 1)] for _ in range(calls)]
    counts = {"ok": 0, "failed": 0, "attempts": 0, "faults": 0}
    next_call = iter(range(calls))

    async def one(i: int) -> None:
        for attempt in range(retries + 1):
            args: dict[str, Any] = {"value": i}
            if plan:
                args["fail"] = plan[i][attempt]
            counts["attempts"] += 1
            try:
                result = await pool.execute(tool, args)
            except (ToolNotFound, InvalidArguments) as exc:
                hint = "" if rate is None else "; use adapters.DirectedFaults, or rate=None"
                raise ConfigError("tool", f"{tool!r} cannot be called so: {exc}{hint}") from exc
            except (RemoteError, WorkerCrashed, WorkerUnavailable):
                counts["faults"] += 1
                continue
            assert result == i, f"call {i} of {tool!r} returned {result!r}"
            counts["ok"] += 1
            return
        counts["failed"] += 1

    async def caller() -> None:
        for i in next_call:
            await one(i)

    try:
        with anyio.fail_after(timeout):
            async with anyio.create_task_group() as tg:
                for _ in range(min(concurrency, calls)):
                    tg.start_soon(caller)
    except TimeoutError as exc:
        raise AssertionError(
            f"{calls} calls of {tool!r} did not finish within {timeout:g}s "
            f"({counts}{_drawn_by(seed)})"
        ) from exc
    except ExceptionGroup as group:
        first = group.exceptions[0]
        while isinstance(first, ExceptionGroup):
            first = first.exceptions[0]
        raise first  # noqa: B904 - its own cause (if any) is kept
    return FaultReport(
        calls,
        counts["ok"],
        counts["failed"],
        counts["attempts"],
        counts["faults"],
        rate,
        retries,
        seed,
    )
