"""inject_crash and chaos_kill_children (testing/_crashes.py): crashes that come back."""

from __future__ import annotations

import random

import pytest

from snakepit.errors import ArgumentTypeError, ConfigError, ServerExited
from snakepit.otp import Supervisor
from snakepit.pool import InProcessLauncher
from snakepit.testing import InjectedCrash, chaos_kill_children, inject_crash

from ._chaos_servers import DIRECTED, Quiet, asyncio_only, in_process_pool, spec

pytestmark = pytest.mark.anyio


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
