"""assert_chaos_resilient and run_chaos_suite (testing/_resilience.py)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from snakepit.otp import Supervisor, SupervisorRef
from snakepit.pool import InProcessLauncher, Pool
from snakepit.testing import (
    ChaosScenario,
    assert_chaos_resilient,
    chaos_kill_children,
    inject_crash,
    run_chaos_suite,
)

from ._chaos_servers import DIRECTED, asyncio_only, in_process_pool, spec

pytestmark = pytest.mark.anyio


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
