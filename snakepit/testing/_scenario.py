"""Concurrent scenarios and model-based tests, replayable from one seed.

:func:`run_scenario` runs a :class:`Scenario`'s actors (and its chaos)
concurrently against a fresh system, each actor with its own
:class:`random.Random` derived from the scenario's seed, then checks the
invariant; a failure names the seed, so the same run replays.
:class:`GenServerMachine` is the base of hypothesis state machines that
drive async code (servers, supervisors, pools) through a blocking portal.
"""

from __future__ import annotations

import contextlib
import inspect
import random
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Generic, TypeVar, overload

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis.stateful import RuleBasedStateMachine

from snakepit.otp import GenServer, ServerRef

from ._seeds import chaos_seed

__all__ = ("GenServerMachine", "Scenario", "ScenarioResult", "run_scenario")

#: Seconds a scenario's actors, chaos and invariant may take together, by default.
DEFAULT_SCENARIO_TIMEOUT: Final = 10.0

S = TypeVar("S")
R = TypeVar("R")
#: An actor: an async function of the system and the actor's own seeded rng.
Actor = Callable[[S, random.Random], Awaitable[object]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario(Generic[S]):
    """A system, actors that use it concurrently, an invariant, and a seed.

    ``setup()`` makes the system: an async context manager (entered for the
    run and exited after it: ``lambda: Supervisor.running(spec)``,
    ``lambda: Pool(...)``) or an awaitable of it. Each actor is
    ``actor(system, rng)``; ``chaos``, when given, runs alongside them the
    same way. ``invariant(system)`` (sync or async) runs after all of them
    finished and must not raise nor return ``False``.

    ::

        Scenario(
            setup=lambda: Counter.running(0),
            actors=[bump] * 4,
            invariant=lambda ref: ...,
            seed=chaos_seed(randomly_seed, request.node.nodeid),
        )
    """

    setup: Callable[[], AbstractAsyncContextManager[S] | Awaitable[S]]
    actors: Sequence[Actor[S]]
    invariant: Callable[[S], object]
    seed: int
    chaos: Actor[S] | None = None
    name: str = "scenario"
    #: Seconds for the actors, the chaos and the invariant together.
    timeout: float = DEFAULT_SCENARIO_TIMEOUT

    def rng_for(self, index: int | None) -> random.Random:
        """The rng of actor ``index`` (``None``: of the chaos), derived from :attr:`seed`."""
        return random.Random(chaos_seed(self.seed, "chaos" if index is None else f"actor {index}"))


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """What :func:`run_scenario` returns when the scenario passed.

    ::

        result = await run_scenario(scenario)
        assert sum(result.results) == 40
    """

    seed: int
    #: Each actor's return value, in the order of ``actors``.
    results: tuple[object, ...]
    #: What the chaos returned (None without chaos).
    chaos_result: object = None


def _label(index: int | None, fn: object) -> str:
    name = getattr(fn, "__name__", None) or repr(fn)
    return "the chaos" if index is None else f"actor {index} ({name})"


async def run_scenario(scenario: Scenario[S]) -> ScenarioResult:
    """Run ``scenario``: set up, run actors and chaos concurrently, check the invariant.

    The actors and the chaos run in one task group: the first one to raise
    cancels the others. The actors, the chaos and the invariant share the
    scenario's ``timeout``. The system is torn down (its context exited) in
    every case.

    ::

        result = await run_scenario(Scenario(setup=..., actors=[...], invariant=..., seed=7))

    :raises AssertionError: an actor or the chaos raised, the invariant
        failed, or the deadline passed; the message names the scenario, the
        seed (``Scenario(..., seed=N)`` replays it) and what failed, and the
        original error is chained.
    """
    seed = scenario.seed
    prefix = f"scenario {scenario.name!r} failed with seed={seed} (replay with seed={seed})"
    async with AsyncExitStack() as stack:
        made = scenario.setup()
        if isinstance(made, AbstractAsyncContextManager):
            system: S = await stack.enter_async_context(made)
        else:
            system = await made
        results: list[object] = [None] * len(scenario.actors)
        chaos_result: list[object] = [None]
        failures: list[tuple[str, BaseException]] = []

        async def play(index: int | None, actor: Actor[S]) -> None:
            try:
                value = await actor(system, scenario.rng_for(index))
            except Exception as exc:
                failures.append((_label(index, actor), exc))
                raise
            if index is None:
                chaos_result[0] = value
            else:
                results[index] = value

        try:
            with anyio.fail_after(scenario.timeout):
                try:
                    async with anyio.create_task_group() as tg:
                        for index, actor in enumerate(scenario.actors):
                            tg.start_soon(play, index, actor)
                        if scenario.chaos is not None:
                            tg.start_soon(play, None, scenario.chaos)
                except Exception:
                    if not failures:
                        raise
                    who, exc = failures[0]
                    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
                    raise AssertionError(
                        f"{prefix}: {who} raised {type(exc).__name__}: {exc}{more}"
                    ) from exc
                try:
                    verdict = scenario.invariant(system)
                    if inspect.isawaitable(verdict):
                        verdict = await verdict
                except Exception as exc:
                    raise AssertionError(
                        f"{prefix}: the invariant failed: {type(exc).__name__}: {exc}"
                    ) from exc
                if verdict is False:
                    raise AssertionError(f"{prefix}: the invariant returned False")
        except TimeoutError as exc:
            raise AssertionError(
                f"{prefix}: not done within {scenario.timeout:g}s (a hang?)"
            ) from exc
    return ScenarioResult(seed, tuple(results), chaos_result[0])


class GenServerMachine(RuleBasedStateMachine):
    """A hypothesis state machine whose rules drive async code through a blocking portal.

    Each example gets its own event loop (in a thread, on :attr:`backend`);
    rules call into it with ``self.portal.call(fn, *args)`` (or
    :meth:`call`), and whatever :meth:`enter` or :meth:`start` opened is
    closed at the end of the example, then the loop. A subclass that
    overrides ``teardown`` must call ``super().teardown()``.

    ::

        class CounterMachine(GenServerMachine):
            @initialize()
            def boot(self) -> None:
                self.ref = self.start(Counter, 0)
                self.expected = 0

            @rule()
            def bump(self) -> None:
                self.portal.call(self.ref.call, "incr")
                self.expected += 1

            @invariant()
            def matches(self) -> None:
                assert self.portal.call(self.ref.call, "get") == self.expected

        TestCounter = CounterMachine.TestCase
    """

    #: The anyio backend of the portal's event loop ("asyncio" or "trio").
    backend: ClassVar[str] = "asyncio"
    #: Options of that backend (e.g. ``{"clock": MockClock()}`` on trio).
    backend_options: ClassVar[dict[str, Any] | None] = None

    def __init__(self) -> None:
        super().__init__()
        self._stack = contextlib.ExitStack()
        #: The portal into this example's event loop.
        self.portal: BlockingPortal = self._stack.enter_context(
            start_blocking_portal(self.backend, backend_options=self.backend_options)
        )

    @overload
    def call(self, fn: Callable[..., Awaitable[R]], *args: Any) -> R: ...

    @overload
    def call(self, fn: Callable[..., R], *args: Any) -> R: ...

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the event loop (awaited if async); return its result.

        The same as ``self.portal.call(fn, *args)``.
        """
        return self.portal.call(fn, *args)

    def enter(self, cm: AbstractAsyncContextManager[R]) -> R:
        """Enter an async context manager in the event loop; it is exited at teardown."""
        return self._stack.enter_context(self.portal.wrap_async_context_manager(cm))

    def start(self, server: type[GenServer[Any, Any, Any]], arg: Any = None) -> ServerRef[Any, Any]:
        """Start ``server`` with ``arg`` (``server.running(arg)``); stopped at teardown."""
        return self.enter(server.running(arg))

    def teardown(self) -> None:
        """Close what :meth:`enter` opened (last first), then the event loop."""
        self._stack.close()
