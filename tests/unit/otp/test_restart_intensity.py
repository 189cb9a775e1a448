"""Restart intensity: past max_restarts in max_seconds a supervisor exits; its parent decides."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from trio.testing import MockClock

from snakepit.otp import (
    ChildExited,
    ChildSpec,
    ServerExited,
    Supervisor,
    SupervisorRef,
    SupervisorSpec,
    monitor,
)

from ._sup_helpers import (
    Journal,
    Opts,
    Subscriptions,
    Worker,
    cast_and_wait,
    child_ref,
    child_sup,
    drain,
    gave_up,
    intensity_error,
    kill_and_wait,
    summary,
    workers,
)

pytestmark = pytest.mark.anyio


class TestRestartIntensity:
    async def test_fourth_restart_in_the_window_ends_the_supervisor(self) -> None:
        journal = Journal()
        spec = SupervisorSpec(workers("a", "b", "c", journal=journal))
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                sup = await Supervisor.start(tg, spec)
                a, c = child_ref(sup, "a"), child_ref(sup, "c")
                for generation in (1, 2, 3):
                    await kill_and_wait(child_ref(sup, "b"))
                    await sup.wait_stable()
                    assert child_ref(sup, "b").generation == generation
                async with monitor(sup) as down:
                    await kill_and_wait(child_ref(sup, "b"))
                    reason = await down.down()
                # The caller's task group is untouched by the supervisor's exit.
                assert not tg.cancel_scope.cancel_called
        error = intensity_error(reason)
        assert sup.exit_reason is reason
        assert error.supervisor is sup
        assert (error.max_restarts, error.max_seconds) == (3, 5.0)
        assert not a.alive
        assert not c.alive
        assert a.exit_reason == c.exit_reason == "shutdown"
        assert journal.of("terminate")[-2:] == ["c", "a"]
        assert journal.of("init").count("b") == 4  # never a 5th start
        with pytest.raises(ServerExited):
            await sup.wait_stable()

    async def test_zero_max_restarts_gives_up_on_the_first_exit(self) -> None:
        spec = SupervisorSpec(workers("a", "b"), max_restarts=0)
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                b = child_ref(sup, "b")
                async with monitor(sup) as down:
                    await cast_and_wait(child_ref(sup, "a"), "crash")
                    assert gave_up(await down.down())
                assert not b.alive

    async def test_restarts_of_all_children_add_up(self) -> None:
        spec = SupervisorSpec(workers("a", "b", "c"))
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                for child_id in ("a", "b", "c"):
                    await kill_and_wait(child_ref(sup, child_id))
                    await sup.wait_stable()
                async with monitor(sup) as down:
                    await kill_and_wait(child_ref(sup, "a"))
                    assert gave_up(await down.down())

    async def test_one_group_restart_counts_once(self) -> None:
        spec = SupervisorSpec(workers("a", "b", "c", "d"), strategy="one_for_all", max_restarts=1)
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                await kill_and_wait(child_ref(sup, "a"))
                await sup.wait_stable()
                assert sup.alive
                assert {info.generation for info in sup.which_children()} == {1}

    async def test_a_failed_restart_counts_and_is_retried(self, subscribe: Subscriptions) -> None:
        opts = Opts("x", fail_init=frozenset({1}))
        spec = SupervisorSpec([ChildSpec("x", Worker, arg=opts)])
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                events = subscribe(sup)
                await kill_and_wait(child_ref(sup, "x"))
                await sup.wait_stable()
                assert child_ref(sup, "x").generation == 2
                got, _ = drain(events)
                assert summary(got) == [
                    ("exited", "x", True),
                    ("start_failed", "x", 1),
                    ("started", "x", 2),
                ]
                # Two restarts so far (the kill, the failed init): one more is allowed.
                await kill_and_wait(child_ref(sup, "x"))
                await sup.wait_stable()
                assert child_ref(sup, "x").generation == 3
                async with monitor(sup) as down:
                    await kill_and_wait(child_ref(sup, "x"))
                    assert gave_up(await down.down())

    async def test_restarts_that_keep_failing_end_the_supervisor(
        self, subscribe: Subscriptions
    ) -> None:
        opts = Opts("x", fail_init=frozenset({1, 2, 3, 4, 5}))
        spec = SupervisorSpec([*workers("a"), ChildSpec("x", Worker, arg=opts)])
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                events = subscribe(sup)
                a = child_ref(sup, "a")
                async with monitor(sup) as down:
                    await kill_and_wait(child_ref(sup, "x"))
                    assert gave_up(await down.down())
                assert not a.alive
                got, ended = drain(events)
                assert ended
                assert summary(got) == [
                    ("exited", "x", True),
                    ("start_failed", "x", 1),
                    ("start_failed", "x", 2),
                    ("start_failed", "x", 3),
                    ("intensity", 3, 5.0),
                    ("terminated", "a"),
                ]

    async def test_nested_supervisor_reaching_intensity_is_restarted_by_its_parent(
        self,
        subscribe: Subscriptions,
    ) -> None:
        journal = Journal()
        inner = SupervisorSpec(workers("x", "y", journal=journal))
        spec = SupervisorSpec(
            [*workers("a"), ChildSpec("inner", Supervisor, arg=inner), *workers("b")]
        )
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                events = subscribe(sup)
                a, b = child_ref(sup, "a"), child_ref(sup, "b")
                old_inner = child_sup(sup, "inner")
                y = child_ref(old_inner, "y")
                for _ in range(3):
                    await kill_and_wait(child_ref(old_inner, "x"))
                    await old_inner.wait_stable()
                async with monitor(old_inner) as inner_down:
                    await kill_and_wait(child_ref(old_inner, "x"))
                    reason = await inner_down.down()
                assert intensity_error(reason).supervisor is old_inner
                assert not y.alive
                await sup.wait_stable()
                new_inner = child_sup(sup, "inner")
                assert new_inner is not old_inner
                assert new_inner.generation == 1
                # A fresh supervisor: fresh children and a fresh restart count.
                assert [info.generation for info in new_inner.which_children()] == [0, 0]
                assert child_ref(sup, "a") is a
                assert child_ref(sup, "b") is b
                assert sup.alive
                got, _ = drain(events)
                assert summary(got) == [("exited", "inner", True), ("started", "inner", 1)]
                exited = got[0]
                assert isinstance(exited, ChildExited)
                assert exited.reason is reason

    async def test_wait_stable_covers_a_nested_supervisor_giving_up(self) -> None:
        inner = SupervisorSpec(workers("x", "y"), max_restarts=0)
        spec = SupervisorSpec([ChildSpec("inner", Supervisor, arg=inner)])
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                old_inner = child_sup(sup, "inner")
                await cast_and_wait(child_ref(old_inner, "x"), "crash")
                # The inner supervisor has been told of x's exit: it will give up, and
                # the parent restart it. wait_stable() covers all of that.
                await sup.wait_stable()
                assert not old_inner.alive
                new_inner = child_sup(sup, "inner")
                assert new_inner.generation == 1
                assert all(info.alive for info in new_inner.which_children())

    async def test_wait_stable_waits_for_a_nested_supervisor_still_stopping(self) -> None:
        gate = anyio.Event()
        inner = SupervisorSpec(
            [*workers("x"), ChildSpec("y", Worker, arg=Opts("y", terminate_gate=gate))],
            max_restarts=0,
        )
        spec = SupervisorSpec([ChildSpec("inner", Supervisor, arg=inner)])
        stable = anyio.Event()

        async def settle(sup: SupervisorRef) -> None:
            await sup.wait_stable()
            stable.set()

        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                old_inner = child_sup(sup, "inner")
                await cast_and_wait(child_ref(old_inner, "x"), "crash")
                async with anyio.create_task_group() as tg:
                    tg.start_soon(settle, sup)
                    # The inner supervisor is giving up, stuck in y's terminate; the
                    # waiter has reached it and must keep waiting.
                    await anyio.wait_all_tasks_blocked()
                    assert not stable.is_set()
                    assert old_inner.alive
                    gate.set()
                assert stable.is_set()
                assert gave_up(old_inner.exit_reason)
                assert child_sup(sup, "inner").generation == 1


class TestVirtualTime:
    """Restart windows on trio's MockClock (instant, exact)."""

    @pytest.fixture
    def anyio_backend(self, trio_mock_backend: Any) -> Any:
        return trio_mock_backend

    async def _kill_and_settle(self, sup: SupervisorRef, child_id: str, times: int) -> None:
        for _ in range(times):
            with anyio.fail_after(5):
                await kill_and_wait(child_ref(sup, child_id))
                await sup.wait_stable()

    async def test_restarts_older_than_the_window_are_forgotten(
        self, mock_clock: MockClock
    ) -> None:
        spec = SupervisorSpec(workers("a", "b"), max_restarts=3, max_seconds=1800)
        with anyio.fail_after(4000):
            async with Supervisor.running(spec) as sup:
                a = child_ref(sup, "a")
                await self._kill_and_settle(sup, "b", 3)
                mock_clock.jump(1801)
                await self._kill_and_settle(sup, "b", 3)
                assert sup.alive
                assert child_ref(sup, "b").generation == 6
                assert child_ref(sup, "a") is a

    async def test_a_fourth_restart_inside_the_window_ends_the_supervisor(
        self, mock_clock: MockClock
    ) -> None:
        spec = SupervisorSpec(workers("a", "b"), max_restarts=3, max_seconds=1800)
        with anyio.fail_after(4000):
            async with Supervisor.running(spec) as sup:
                await self._kill_and_settle(sup, "b", 3)
                mock_clock.jump(1799)
                with anyio.fail_after(5):
                    async with monitor(sup) as down:
                        await kill_and_wait(child_ref(sup, "b"))
                        assert gave_up(await down.down())

    async def test_the_window_slides(self, mock_clock: MockClock) -> None:
        spec = SupervisorSpec(workers("b"), max_restarts=2, max_seconds=100)
        with anyio.fail_after(4000):
            async with Supervisor.running(spec) as sup:
                await self._kill_and_settle(sup, "b", 1)  # t=0
                mock_clock.jump(60)
                await self._kill_and_settle(sup, "b", 1)  # t=60
                mock_clock.jump(60)
                await self._kill_and_settle(sup, "b", 1)  # t=120: the t=0 one expired
                assert sup.alive
                mock_clock.jump(30)
                with anyio.fail_after(5):  # t=150: t=60, t=120, t=150 are 3 > 2
                    async with monitor(sup) as down:
                        await kill_and_wait(child_ref(sup, "b"))
                        assert gave_up(await down.down())
