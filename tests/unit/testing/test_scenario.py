"""snakepit.testing's scenarios: run_scenario and the GenServerMachine base.

A sound counter passes; a racy one (read, then write) fails with its seed in
the message. No timers: the one deadline test runs on trio's MockClock.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import anyio
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule, run_state_machine_as_test
from trio.testing import MockClock

from snakepit.errors import ServerExited
from snakepit.otp import ChildSpec, GenServer, ServerRef, Supervisor, SupervisorRef, SupervisorSpec
from snakepit.testing import chaos_kill_children
from snakepit.testing._scenario import GenServerMachine, Scenario, ScenarioResult, run_scenario

pytestmark = pytest.mark.anyio

Counter = ServerRef[Any, int]


class CounterServer(GenServer[Any, int, int]):
    """``"incr"`` (atomic), ``"get"``, ``("set", n)``; ``lossy`` drops increments of odd values."""

    lossy = False

    async def handle_call(self, request: Any, state: int) -> tuple[int, int]:
        if request == "incr":
            state += 0 if self.lossy and state % 2 == 1 else 1
            return state, state
        if request == "get":
            return state, state
        _, value = request
        return value, value

    def log_crash(self, reason: object) -> None:
        pass


class LossyCounter(CounterServer):
    lossy = True


async def atomic_bumps(ref: Counter, rng: random.Random) -> int:
    n = rng.randint(1, 20)
    for _ in range(n):
        await ref.call("incr")
    return n


async def racy_bumps(ref: Counter, rng: random.Random) -> int:
    n = rng.randint(5, 20)
    for _ in range(n):
        value = await ref.call("get")
        await ref.call(("set", value + 1))  # another actor may have written meanwhile
    return n


def counter_scenario(actor: Any, seed: int, done: list[int]) -> Scenario[Counter]:
    async def bump(ref: Counter, rng: random.Random) -> int:
        n: int = await actor(ref, rng)
        done.append(n)
        return n

    async def total_matches(ref: Counter) -> None:
        total = await ref.call("get")
        assert total == sum(done), f"counter {total} != {sum(done)} increments"

    return Scenario(
        setup=lambda: CounterServer.running(0),
        actors=[bump] * 4,
        invariant=total_matches,
        seed=seed,
        name="counter",
    )


class TestRunScenario:
    async def test_a_sound_system_passes_and_replays(self) -> None:
        runs: list[ScenarioResult] = []
        for _ in range(2):
            result = await run_scenario(counter_scenario(atomic_bumps, 99, []))
            runs.append(result)
        assert runs[0] == runs[1]  # same seed: the same rngs, the same results
        assert runs[0].seed == 99
        assert len(runs[0].results) == 4
        assert runs[0].results != (runs[0].results[0],) * 4  # each actor has its own rng

    async def test_a_broken_invariant_reports_the_seed(self) -> None:
        with pytest.raises(AssertionError) as info:
            await run_scenario(counter_scenario(racy_bumps, 1234, []))
        message = str(info.value)
        assert message.startswith("scenario 'counter' failed with seed=1234")
        assert "the invariant failed: AssertionError: counter" in message
        assert isinstance(info.value.__cause__, AssertionError)

    async def test_an_invariant_returning_false_fails(self) -> None:
        scenario = Scenario(
            setup=lambda: CounterServer.running(0),
            actors=[atomic_bumps],
            invariant=lambda ref: False,
            seed=5,
        )
        with pytest.raises(AssertionError, match=r"seed=5.*the invariant returned False"):
            await run_scenario(scenario)

    async def test_an_actor_that_raises_is_named_and_the_others_are_cancelled(self) -> None:
        cancelled = anyio.Event()

        async def waits(ref: Counter, rng: random.Random) -> None:
            try:
                await anyio.Event().wait()
            finally:
                cancelled.set()

        async def fails(ref: Counter, rng: random.Random) -> None:
            await ref.sync()
            raise KeyError("lost")

        scenario = Scenario(
            setup=lambda: CounterServer.running(0),
            actors=[waits, fails],
            invariant=lambda ref: True,
            seed=77,
        )
        with pytest.raises(AssertionError, match=r"seed=77.*actor 1 \(fails\) raised KeyError"):
            await run_scenario(scenario)
        assert cancelled.is_set()

    async def test_setup_may_be_a_plain_awaitable(self) -> None:
        async def make() -> list[int]:
            return []

        async def append(items: list[int], rng: random.Random) -> None:
            items.append(rng.randint(0, 9))

        scenario: Scenario[list[int]] = Scenario(
            setup=make, actors=[append] * 3, invariant=lambda items: len(items) == 3, seed=1
        )
        assert (await run_scenario(scenario)).results == (None, None, None)

    async def test_a_hang_fails_at_the_deadline_with_the_seed(self, mock_clock: MockClock) -> None:
        async def hangs(ref: Counter, rng: random.Random) -> None:
            await anyio.Event().wait()

        scenario = Scenario(
            setup=lambda: CounterServer.running(0),
            actors=[hangs],
            invariant=lambda ref: True,
            seed=3,
            timeout=30,
        )
        with pytest.raises(AssertionError, match=r"seed=3.*not done within 30s"):
            await run_scenario(scenario)

    async def test_actors_survive_chaos_on_a_supervisor(self) -> None:
        spec = SupervisorSpec(
            [ChildSpec("c", CounterServer, 0)], max_restarts=100, max_seconds=3600
        )

        async def caller(sup: SupervisorRef, rng: random.Random) -> int:
            ok = 0
            for _ in range(rng.randint(5, 15)):
                ref = sup.child("c")
                try:
                    if ref is None:
                        raise ServerExited(sup, "killed")
                    await ref.call("incr")
                    ok += 1
                except ServerExited:
                    await sup.wait_stable()  # killed under us: wait for its replacement
            return ok

        async def storm(sup: SupervisorRef, rng: random.Random) -> int:
            report = await chaos_kill_children(sup, rounds=4, rng=rng)
            return report.restarted

        async def intact(sup: SupervisorRef) -> bool:
            await sup.wait_stable()
            return sup.count_children().active == 1

        scenario = Scenario(
            setup=lambda: Supervisor.running(spec),
            actors=[caller] * 3,
            chaos=storm,
            invariant=intact,
            seed=11,
        )
        result = await run_scenario(scenario)
        assert result.chaos_result == 4
        assert all(isinstance(n, int) for n in result.results)


class CounterMachine(GenServerMachine):
    """A model-based test of the counter: the model is an int."""

    server: ClassVar[type[CounterServer]] = CounterServer

    @initialize()
    def boot(self) -> None:
        self.ref = self.start(self.server, 0)
        self.model = 0

    @rule()
    def incr(self) -> None:
        assert self.portal.call(self.ref.call, "incr") == self.model + 1
        self.model += 1

    @rule(value=st.integers(0, 100))
    def set_to(self, value: int) -> None:
        self.call(self.ref.call, ("set", value))
        self.model = value

    @invariant()
    def matches_the_model(self) -> None:
        assert self.call(self.ref.call, "get") == self.model


@asynccontextmanager
async def _noop() -> AsyncIterator[None]:
    yield


SMALL = settings(
    max_examples=5,
    stateful_step_count=6,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class TestGenServerMachine:
    @pytest.mark.parametrize("backend", ["asyncio", "trio"])
    def test_a_sound_server_matches_its_model(self, backend: str) -> None:
        machine = type("Machine", (CounterMachine,), {"backend": backend})
        run_state_machine_as_test(machine, settings=SMALL)

    def test_a_lossy_server_is_caught(self) -> None:
        machine = type("Lossy", (CounterMachine,), {"server": LossyCounter})
        with pytest.raises(AssertionError):  # found, not shrunk (fast)
            run_state_machine_as_test(
                machine, settings=settings(SMALL, phases=[Phase.generate], derandomize=True)
            )

    def test_the_portal_runs_the_machines_own_loop_and_teardown_closes_it(self) -> None:
        machine = CounterMachine()
        machine.enter(_noop())
        assert machine.call(anyio.current_time) >= 0
        machine.teardown()
        with pytest.raises(RuntimeError):
            machine.portal.call(anyio.current_time)
