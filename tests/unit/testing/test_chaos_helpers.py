"""The chaos helpers of snakepit.testing: they pass on a sound system, fail clearly on a broken one.

Supervisors of small in-test servers, and in-process pools (InProcessLauncher,
asyncio only: grpc.aio). No timers: every wait is a server's exit,
``wait_stable()``, ``wait_ready()`` or an event.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from snakepit.errors import ArgumentTypeError, ConfigError, ServerExited
from snakepit.otp import ChildSpec, GenServer, Restart, Strategy, Supervisor, SupervisorRef
from snakepit.otp import SupervisorSpec as Spec
from snakepit.pool import InProcessLauncher, Pool
from snakepit.testing import (
    ChaosScenario,
    FaultReport,
    InjectedCrash,
    assert_chaos_resilient,
    chaos_kill_children,
    chaos_seed,
    exhaust,
    inject_crash,
    inject_random_failures,
    make_chaos_rng,
    run_chaos_suite,
)

pytestmark = pytest.mark.anyio
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])

DIRECTED = "snakepit.testing.adapters:DirectedFaults"
STOCK = "snakepit.testing.adapters:FaultInjecting"


class Quiet(GenServer[str, Any, int]):
    """A child that answers ``"ping"`` and logs its crashes quietly."""

    async def handle_call(self, request: str, state: int) -> tuple[Any, int]:
        return "pong", state

    def log_crash(self, reason: object) -> None:
        pass


def spec(
    *ids: str,
    restart: Restart = "permanent",
    strategy: Strategy = "one_for_one",
    max_restarts: int = 100,
) -> Spec:
    children = [ChildSpec(i, Quiet, 0, restart=restart) for i in ids]
    return Spec(children, strategy=strategy, max_restarts=max_restarts, max_seconds=3600)


@pytest.fixture
def launcher() -> Iterator[InProcessLauncher]:
    launcher = InProcessLauncher()
    yield launcher
    launcher.close()


def in_process_pool(launcher: InProcessLauncher, adapter: str, size: int = 2) -> Pool:
    return Pool(adapter, size=size, launcher=launcher, health_interval=None)


def child_pids() -> set[int]:
    pids: set[int] = set()
    for children in Path("/proc/self/task").glob("*/children"):
        try:
            pids.update(int(p) for p in children.read_text().split())
        except OSError:
            continue
    return pids


class TestSeeds:
    def test_the_seed_is_a_stable_hash_of_seed_and_test_id(self) -> None:
        # A literal: the same in every process, whatever PYTHONHASHSEED says.
        assert chaos_seed(1234, "tests/x.py::test_a") == 15922352466862463147
        assert chaos_seed(1234, "tests/x.py::test_a") != chaos_seed(1234, "tests/x.py::test_b")
        assert chaos_seed(1234, "t") != chaos_seed(1235, "t")
        assert 0 <= chaos_seed(0, "") < 2**64

    def test_the_rng_replays(self) -> None:
        first = [make_chaos_rng(7, "t").random() for _ in range(3)]
        assert first == [make_chaos_rng(7, "t").random() for _ in range(3)]
        assert make_chaos_rng(7, "t").random() != make_chaos_rng(8, "t").random()

    def test_chaos_rng_is_only_the_fixture(self) -> None:
        import snakepit.testing

        with pytest.raises(
            AttributeError, match=r"chaos_rng is a pytest fixture: .*make_chaos_rng"
        ):
            snakepit.testing.chaos_rng  # noqa: B018
        assert "chaos_rng" not in snakepit.testing.__all__
        assert snakepit.testing.make_chaos_rng is make_chaos_rng


class TestInjectCrash:
    async def test_kill_and_crash_end_a_server_abnormally(self) -> None:
        async with Supervisor.running(spec("a")) as sup:
            first = sup.child("a")
            assert first is not None
            assert await inject_crash(first, how="kill") == "killed"
            await sup.wait_stable()
            second = sup.child("a")
            assert second is not None
            assert second.generation == 1
            reason = await inject_crash(second, how="crash")
            assert isinstance(reason, InjectedCrash)
            await sup.wait_stable()
            third = sup.child("a")
            assert third is not None
            assert third.generation == 2

    async def test_a_given_reason_is_the_exit_reason(self) -> None:
        async with Quiet.running(0) as ref:
            boom = ValueError("boom")
            assert await inject_crash(ref, reason=boom) is boom
            with pytest.raises(ServerExited) as info:
                await ref.call("ping")
            assert info.value.reason is boom

    async def test_the_rng_picks_the_way(self) -> None:
        ways = set()
        for seed in range(8):
            async with Quiet.running(0) as ref:
                reason = await inject_crash(ref, how=None, rng=random.Random(seed))
                ways.add("kill" if reason == "killed" else type(reason).__name__)
        assert ways == {"kill", "InjectedCrash"}

    async def test_a_dead_server_is_reported(self) -> None:
        async with Quiet.running(0) as ref:
            await ref.stop()
            with pytest.raises(AssertionError, match="already dead"):
                await inject_crash(ref)

    async def test_an_unknown_way_is_refused(self) -> None:
        async with Quiet.running(0) as ref:
            with pytest.raises(ConfigError, match="how"):
                await inject_crash(ref, how="explode")  # type: ignore[arg-type]
            assert ref.alive


class TestChaosKillChildren:
    async def test_every_killed_child_comes_back_in_a_new_generation(self) -> None:
        async with Supervisor.running(spec("a", "b", "c")) as sup:
            report = await chaos_kill_children(sup, rounds=6, rng=random.Random(1))
            assert report.rounds == 6
            assert len(report.kills) == 6
            assert report.restarted == 6
            for kill in report.kills:
                assert kill.reason == "killed"
                assert kill.restarted_as is not None
                assert kill.restarted_as > kill.generation
            gens = {c.id: c.generation for c in sup.which_children()}
            assert sum(gens.values()) == 6
            assert [c.alive for c in sup.which_children()] == [True] * 3

    async def test_the_same_seed_kills_the_same_children(self) -> None:
        runs = []
        for _ in range(2):
            async with Supervisor.running(spec("a", "b", "c", "d")) as sup:
                report = await chaos_kill_children(sup, rounds=5, rng=random.Random(42), how=None)
                runs.append((report.killed, [type(k.reason) for k in report.kills]))
        assert runs[0] == runs[1]

    async def test_several_per_round_under_one_for_all(self) -> None:
        async with Supervisor.running(spec("a", "b", "c", strategy="one_for_all")) as sup:
            report = await chaos_kill_children(sup, rounds=3, per_round=2, rng=random.Random(3))
            assert len(report.kills) == 6
            assert report.restarted == 6
            assert sup.count_children().active == 3

    async def test_a_temporary_child_that_never_comes_back_is_named(self) -> None:
        async with Supervisor.running(spec("gone", restart="temporary")) as sup:
            with pytest.raises(AssertionError) as info:
                await chaos_kill_children(sup, rounds=2, rng=random.Random(0))
        message = str(info.value)
        assert "child 'gone' (temporary) did not come back in chaos round 1 of 2" in message
        assert "no longer among its children" in message

    async def test_the_check_can_be_turned_off(self) -> None:
        async with Supervisor.running(spec("a", "b", restart="temporary")) as sup:
            report = await chaos_kill_children(
                sup, rounds=2, rng=random.Random(0), expect_restart=False
            )
            assert report.restarted == 0
            assert sup.count_children().specs == 0
            with pytest.raises(AssertionError, match="no running child to kill"):
                await chaos_kill_children(sup, rounds=1, rng=random.Random(0))

    async def test_restart_intensity_is_reported_with_a_hint(self) -> None:
        async with Supervisor.running(spec("a", "b", max_restarts=2)) as sup:
            with pytest.raises(AssertionError) as info:
                await chaos_kill_children(sup, rounds=5, rng=random.Random(0))
            assert not sup.alive
        message = str(info.value)
        assert "exited after chaos round 3 of 5" in message
        assert "restart intensity" in message
        assert "max_restarts" in message

    async def test_bad_options_are_refused(self) -> None:
        async with Supervisor.running(spec("a")) as sup:
            with pytest.raises(ConfigError, match="rounds"):
                await chaos_kill_children(sup, rounds=-1, rng=random.Random(0))
            with pytest.raises(ConfigError, match="per_round"):
                await chaos_kill_children(sup, rounds=1, per_round=0, rng=random.Random(0))
            # A bool is not a count (it was taken as 1 round; regression of issue #12).
            with pytest.raises(ArgumentTypeError, match="rounds"):
                await chaos_kill_children(sup, rounds=True, rng=random.Random(0))
            with pytest.raises(ArgumentTypeError, match="per_round"):
                await chaos_kill_children(sup, rounds=1, per_round=True, rng=random.Random(0))

    @asyncio_only
    async def test_a_pools_workers_are_killed_and_replaced(
        self, launcher: InProcessLauncher
    ) -> None:
        async with in_process_pool(launcher, DIRECTED) as pool:
            report = await chaos_kill_children(pool, rounds=3, rng=random.Random(5))
            assert report.restarted == 3
            assert pool.stats().ready == 2
            assert sum(w.generation for w in pool.workers()) == 3
            assert await pool.execute("echo", {"value": 1}) == 1


class TestExhaust:
    async def test_fds_are_held_then_closed(self) -> None:
        before = set(os.listdir("/proc/self/fd"))
        async with exhaust("fds", 50) as held:
            assert held.kind == "fds"
            assert held.count == 50
            assert len(set(held.fds)) == 50
            assert set(map(str, held.fds)) <= set(os.listdir("/proc/self/fd"))
        assert set(os.listdir("/proc/self/fd")) == before

    async def test_fds_are_closed_when_the_block_raises(self) -> None:
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(KeyError):
            async with exhaust("fds", 10):
                raise KeyError("body")
        assert set(os.listdir("/proc/self/fd")) == before

    async def test_tasks_are_waiting_inside_and_gone_after(self) -> None:
        before = len(anyio.get_running_tasks())
        async with exhaust("tasks", 200) as held:
            assert held.count == 200
            assert len(anyio.get_running_tasks()) == before + 200
        assert len(anyio.get_running_tasks()) == before

    async def test_tasks_end_when_the_block_raises(self) -> None:
        before = len(anyio.get_running_tasks())
        with pytest.raises(KeyError):  # as itself, not in an ExceptionGroup
            async with exhaust("tasks", 20):
                raise KeyError("body")
        assert len(anyio.get_running_tasks()) == before

    async def test_subprocesses_get_their_own_group_and_are_reaped(self) -> None:
        before = child_pids()
        async with exhaust("subprocesses", 3) as held:
            assert held.count == 3
            assert len(held.pids) == 3
            assert set(held.pids) <= child_pids() - before
            for pid in held.pids:
                assert os.getpgid(pid) == pid  # its own process group
        assert child_pids() - before == set()

    async def test_subprocesses_are_reaped_when_the_block_raises(self) -> None:
        before = child_pids()
        with pytest.raises(KeyError):
            async with exhaust("subprocesses", 2):
                raise KeyError("body")
        assert child_pids() - before == set()

    async def test_bad_arguments_are_refused(self) -> None:
        with pytest.raises(ConfigError, match="kind"):
            async with exhaust("sockets", 1):  # type: ignore[arg-type]
                pass
        with pytest.raises(ConfigError, match="n"):
            async with exhaust("fds", -1):
                pass


class TestResilience:
    async def test_a_sound_supervisor_is_resilient(self) -> None:
        async with Supervisor.running(spec("a", "b", "c")) as sup:
            await assert_chaos_resilient(
                sup,
                lambda s: chaos_kill_children(s, rounds=3, rng=random.Random(9)),
                lambda s: s.count_children().active == 3,
            )

    async def test_a_failing_check_is_reported(self) -> None:
        async def wrong(s: SupervisorRef) -> bool:
            await s.sync()
            return s.count_children().active == 4

        async with Supervisor.running(spec("a", "b", "c")) as sup:
            with pytest.raises(AssertionError, match=r"is not resilient.*check wrong.*False"):
                await assert_chaos_resilient(
                    sup, lambda s: chaos_kill_children(s, rounds=1, rng=random.Random(9)), wrong
                )

    async def test_a_supervisor_that_gives_up_is_not_resilient(self) -> None:
        async def kill_a(s: SupervisorRef) -> None:
            ref = s.child("a")
            assert ref is not None
            await inject_crash(ref)

        async with Supervisor.running(spec("a", max_restarts=0)) as sup:
            with pytest.raises(AssertionError, match=r"exited after the chaos.*restart intensity"):
                await assert_chaos_resilient(sup, kill_a)

    async def test_a_suite_runs_every_scenario_on_a_fresh_tree(self) -> None:
        def kills(n: int) -> Any:
            return lambda s: chaos_kill_children(s, rounds=n, rng=random.Random(n))

        scenarios = [
            ChaosScenario("two kills", kills(2), lambda s: s.count_children().active == 2),
            ChaosScenario("a storm", kills(8), expect="gives_up"),
            ChaosScenario("after the storm", kills(1)),
        ]
        report = await run_chaos_suite(
            lambda: Supervisor.running(spec("a", "b", max_restarts=4)), scenarios
        )
        assert [o.passed for o in report.outcomes] == [True, True, True]
        assert report.passed == 3
        assert report.failed == []
        assert str(report).splitlines()[1].startswith("PASS a storm")

    async def test_a_suite_reports_every_failure(self) -> None:
        def kills(n: int) -> Any:
            return lambda s: chaos_kill_children(s, rounds=n, rng=random.Random(n))

        async with Supervisor.running(spec("a", "b", max_restarts=3)) as sup:
            scenarios = [
                ChaosScenario("recovers", kills(1)),
                ChaosScenario("should give up but recovers", kills(1), expect="gives_up"),
                ChaosScenario("too many kills", kills(5)),
                ChaosScenario("on a dead tree", kills(1)),
            ]
            with pytest.raises(AssertionError) as info:
                await run_chaos_suite(sup, scenarios)
        lines = str(info.value).splitlines()
        assert lines[0] == "3 of 4 chaos scenarios failed:"
        assert lines[1].startswith("PASS recovers")
        assert lines[2].startswith("FAIL should give up but recovers")
        assert "did not give up" in lines[2]
        assert lines[3].startswith("FAIL too many kills")
        assert "restart intensity" in lines[3]
        assert lines[4].startswith("FAIL on a dead tree")
        assert "dead before the chaos" in lines[4]

    @asyncio_only
    async def test_a_pool_recovers_from_worker_kills(self, launcher: InProcessLauncher) -> None:
        async def serves(pool: Pool) -> None:
            assert await pool.execute("echo", {"value": 2}) == 2

        async with in_process_pool(launcher, DIRECTED) as pool:
            await assert_chaos_resilient(
                pool, lambda p: chaos_kill_children(p, rounds=2, rng=random.Random(1)), serves
            )


class TestInjectRandomFailures:
    @asyncio_only
    async def test_the_seeds_bar_at_half_faults_with_retries(
        self, launcher: InProcessLauncher
    ) -> None:
        async with in_process_pool(launcher, DIRECTED) as pool:
            report = await inject_random_failures(
                pool, rate=0.5, rng=random.Random(2024), calls=100, retries=2
            )
            report.assert_success_rate(0.75)
            assert report.calls == 100
            assert report.ok + report.failed == 100
            assert report.attempts - report.faults == report.ok
            again = await inject_random_failures(
                pool, rate=0.5, rng=random.Random(2024), calls=100, retries=2
            )
            assert again == report  # the caller's seed decides every fault

    @asyncio_only
    async def test_a_too_low_success_rate_fails_clearly(self, launcher: InProcessLauncher) -> None:
        async with in_process_pool(launcher, DIRECTED, size=1) as pool:
            report = await inject_random_failures(
                pool, rate=1.0, rng=random.Random(0), calls=10, retries=1
            )
        assert (report.ok, report.failed, report.attempts, report.faults) == (0, 10, 20, 20)
        with pytest.raises(AssertionError, match=r"only 0 of 10 calls \(0.0%\) succeeded"):
            report.assert_success_rate(0.75)

    @asyncio_only
    async def test_stock_fault_injecting_workers_decide_with_rate_none(
        self, launcher: InProcessLauncher, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("SNAKEPIT_FAULT_RATE", "0")  # read by setup(), here in-process
        async with in_process_pool(launcher, STOCK, size=1) as pool:
            report = await inject_random_failures(pool, rate=None, calls=20)
            assert report == FaultReport(20, 20, 0, 20, 0, None, 2)
            with pytest.raises(ConfigError, match="DirectedFaults"):
                await inject_random_failures(pool, rate=0.5, rng=random.Random(0), calls=4)

    @asyncio_only
    async def test_without_an_rng_a_seeded_default_draws_the_faults(
        self, launcher: InProcessLauncher
    ) -> None:
        async with in_process_pool(launcher, DIRECTED, size=1) as pool:
            report = await inject_random_failures(pool, calls=20, retries=0)
            assert report.seed == 0
            given = await inject_random_failures(pool, rng=random.Random(0), calls=20, retries=0)
            assert given.seed is None  # the caller's rng: its seed is the caller's to know
            assert (report.ok, report.faults) == (given.ok, given.faults)
            always = await inject_random_failures(pool, rate=1.0, calls=2, retries=0)
        with pytest.raises(AssertionError) as info:
            always.assert_success_rate(0.75)
        assert "faults drawn by the default rng, random.Random(0): pass rng= to vary them" in str(
            info.value
        )

    async def test_bad_options_are_refused(self) -> None:
        pool: Any = None  # refused before the pool is touched
        with pytest.raises(ConfigError, match="rng"):
            await inject_random_failures(pool, rate=None, rng=random.Random(0))
        with pytest.raises(ConfigError, match="rate"):
            await inject_random_failures(pool, rate=1.5, rng=random.Random(0))
        with pytest.raises(ConfigError, match="retries"):
            await inject_random_failures(pool, rng=random.Random(0), retries=-1)
