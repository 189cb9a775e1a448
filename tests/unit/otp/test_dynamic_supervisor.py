"""DynamicSupervisor: children added and removed at run time, one_for_one restarts, limits."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from trio.testing import MockClock

from snakepit.errors import ConfigError
from snakepit.otp import (
    ChildExited,
    ChildNotFound,
    ChildSpec,
    ChildStartError,
    DynamicSupervisor,
    DynamicSupervisorSpec,
    MaxChildrenReached,
    Registry,
    ServerRef,
    Supervisor,
    SupervisorRef,
    SupervisorSpec,
    monitor,
)

from ._sup_helpers import (
    Boom,
    Journal,
    Opts,
    Subscriptions,
    Worker,
    cast_and_wait,
    child_sup,
    drain,
    gave_up,
    intensity_error,
    kill_and_wait,
    live_threads,
    summary,
    task_count,
)

pytestmark = pytest.mark.anyio


def worker(label: str, journal: Journal | None = None, **kwargs: Any) -> ChildSpec:
    return ChildSpec(label, Worker, arg=Opts(label, journal), **kwargs)


def live(sup: SupervisorRef) -> list[ServerRef[Any, Any]]:
    """The running children, in start order."""
    return [info.ref for info in sup.which_children() if info.ref is not None]


class TestStart:
    async def test_starts_empty(self) -> None:
        with anyio.fail_after(5):
            async with DynamicSupervisor.running() as sup:
                assert isinstance(sup, SupervisorRef)
                assert sup.strategy == "one_for_one"
                assert sup.which_children() == []
                counts = sup.count_children()
                assert (counts.specs, counts.active, counts.supervisors, counts.workers) == (
                    0,
                    0,
                    0,
                    0,
                )

    async def test_a_supervisor_spec_is_a_config_error(self) -> None:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                with pytest.raises(ConfigError) as info:
                    await DynamicSupervisor.start(tg, SupervisorSpec())
        assert info.value.field == "arg"

    async def test_as_a_child_of_a_supervisor(self) -> None:
        spec = SupervisorSpec([ChildSpec("dyn", DynamicSupervisor, arg=DynamicSupervisorSpec())])
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as top:
                info = top.which_children()[0]
                assert info.type == "supervisor"
                dyn = child_sup(top, "dyn")
                ref = await dyn.start_child(worker("w"))
                await kill_and_wait(ref)
                await top.wait_stable()  # reaches the dynamic supervisor below
                assert [r.generation for r in live(dyn)] == [1]


class TestStartChild:
    async def test_start_child_appends_and_returns_the_running_ref(
        self, subscribe: Subscriptions
    ) -> None:
        journal = Journal()
        with anyio.fail_after(5):
            async with DynamicSupervisor.running() as sup:
                events = subscribe(sup)
                a = await sup.start_child(worker("a", journal))
                b = await sup.start_child(worker("b", journal))
                assert a.alive
                assert b.alive
                assert (a.generation, b.generation) == (0, 0)
                assert live(sup) == [a, b]
                assert sup.child("a") is a
                assert await b.call("ping") == "pong"
                got, _ = drain(events)
                assert summary(got) == [("started", "a", 0), ("started", "b", 0)]
                counts = sup.count_children()
                assert (counts.specs, counts.active, counts.workers) == (2, 2, 2)
            assert journal.of("init") == ["a", "b"]
            assert journal.of("terminate") == ["b", "a"]  # stopped in reverse order

    async def test_ids_need_not_be_unique(self) -> None:
        with anyio.fail_after(5):
            async with DynamicSupervisor.running() as sup:
                first = await sup.start_child(worker("w"))
                second = await sup.start_child(worker("w"))
                assert first is not second
                assert live(sup) == [first, second]
                await sup.terminate_child(second)
                assert live(sup) == [first]
                assert first.alive

    async def test_start_child_errors(self) -> None:
        with anyio.fail_after(5):
            async with DynamicSupervisor.running() as sup:
                bad = ChildSpec("bad", Worker, arg=Opts(fail_init=frozenset({0})))
                with pytest.raises(ChildStartError) as failed:
                    await sup.start_child(bad)
                assert failed.value.child_id == "bad"
                assert isinstance(failed.value.cause, Boom)
                with pytest.raises(ConfigError) as info:
                    await sup.start_child(ChildSpec("named", Worker, name="n"))
                assert info.value.field == "registry"
                with pytest.raises(ConfigError) as info:
                    await sup.start_child(Worker)  # type: ignore[arg-type]
                assert info.value.field == "spec"
                assert sup.which_children() == []  # nothing was kept
                assert sup.alive

    async def test_a_supervisor_child_is_counted_as_one(self) -> None:
        with anyio.fail_after(5):
            async with DynamicSupervisor.running() as sup:
                inner = SupervisorSpec([worker("x"), worker("y")])
                ref = await sup.start_child(ChildSpec("sub", Supervisor, arg=inner))
                assert isinstance(ref, SupervisorRef)
                await sup.start_child(worker("w"))
                counts = sup.count_children()
                assert (counts.specs, counts.active, counts.supervisors, counts.workers) == (
                    2,
                    2,
                    1,
                    1,
                )

    async def test_named_children_follow_restarts(self) -> None:
        registry = Registry()
        with anyio.fail_after(5):
            async with DynamicSupervisor.running(DynamicSupervisorSpec(registry=registry)) as sup:
                ref = await sup.start_child(ChildSpec("a", Worker, name="alpha"))
                assert registry.whereis("alpha") is ref
                await kill_and_wait(ref)
                new = await registry.wait_rebound("alpha", ref)
                await sup.wait_stable()
                assert live(sup) == [new]
                assert new.generation == 1
            assert registry.names() == []


class TestMaxChildren:
    async def test_limit(self) -> None:
        spec = DynamicSupervisorSpec(max_children=2)
        with anyio.fail_after(5):
            async with DynamicSupervisor.running(spec) as sup:
                a = await sup.start_child(worker("a"))
                await sup.start_child(worker("b"))
                with pytest.raises(MaxChildrenReached) as info:
                    await sup.start_child(worker("c"))
                assert info.value.max_children == 2
                assert sup.count_children().specs == 2
                # A terminated child frees its slot.
                await sup.terminate_child(a)
                c = await sup.start_child(worker("c"))
                assert [info.id for info in sup.which_children()] == ["b", "c"]
                # A restart does not need a free slot.
                await kill_and_wait(c)
                await sup.wait_stable()
                assert [r.generation for r in live(sup)] == [0, 1]

    async def test_zero(self) -> None:
        with anyio.fail_after(5):
            async with DynamicSupervisor.running(DynamicSupervisorSpec(max_children=0)) as sup:
                with pytest.raises(MaxChildrenReached):
                    await sup.start_child(worker("a"))

    async def test_a_temporary_child_that_exits_frees_its_slot(self) -> None:
        with anyio.fail_after(5):
            async with DynamicSupervisor.running(DynamicSupervisorSpec(max_children=1)) as sup:
                ref = await sup.start_child(worker("a", restart="temporary"))
                await cast_and_wait(ref, "crash")
                await sup.wait_stable()
                assert sup.which_children() == []
                await sup.start_child(worker("b"))


class TestTerminateChild:
    async def test_by_ref_removes_the_child(self, subscribe: Subscriptions) -> None:
        journal = Journal()
        with anyio.fail_after(5):
            async with DynamicSupervisor.running() as sup:
                events = subscribe(sup)
                a = await sup.start_child(worker("a", journal))
                b = await sup.start_child(worker("b", journal))
                await sup.terminate_child(a)
                await sup.wait_stable()
                assert a.exit_reason == "shutdown"
                assert journal.of("terminate") == ["a"]
                assert live(sup) == [b]
                assert [info.id for info in sup.which_children()] == ["b"]
                assert sup.count_children().specs == 1
                got, _ = drain(events)
                assert summary(got)[-1] == ("terminated", "a")
                with pytest.raises(ChildNotFound):
                    await sup.terminate_child(a)  # already gone
                with pytest.raises(ChildNotFound):
                    await sup.restart_child("a")

    async def test_by_id(self) -> None:
        with anyio.fail_after(5):
            async with DynamicSupervisor.running() as sup:
                a = await sup.start_child(worker("a"))
                await sup.terminate_child("a")
                assert not a.alive
                assert sup.which_children() == []

    @pytest.mark.parametrize("restart", ["permanent", "transient", "temporary"])
    async def test_every_restart_type_is_removed(self, restart: Any) -> None:
        with anyio.fail_after(5):
            async with DynamicSupervisor.running() as sup:
                ref = await sup.start_child(worker("a", restart=restart))
                await sup.terminate_child(ref)
                await sup.wait_stable()
                assert sup.which_children() == []

    async def test_errors(self) -> None:
        with anyio.fail_after(5):
            async with DynamicSupervisor.running() as sup:
                with pytest.raises(ChildNotFound):
                    await sup.terminate_child("nope")
                async with Worker.running() as stranger:
                    with pytest.raises(ChildNotFound):
                        await sup.terminate_child(stranger)
                assert sup.alive

    async def test_brutal_kill_and_shutdown_timeout(self) -> None:
        journal = Journal()
        with anyio.fail_after(5):
            async with DynamicSupervisor.running() as sup:
                brutal = await sup.start_child(worker("brutal", journal, shutdown="brutal_kill"))
                slow_opts = Opts("slow", journal, block_terminate=True)
                slow = await sup.start_child(
                    ChildSpec("slow", Worker, arg=slow_opts, shutdown=0.05)
                )
                await sup.terminate_child(brutal)
                await sup.terminate_child(slow)
                assert brutal.exit_reason == "killed"
                assert slow.exit_reason == "killed"
                assert journal.of("terminate") == ["slow"]  # brutal's never ran


class TestRestarts:
    @pytest.mark.parametrize("how", ["kill", "crash"])
    async def test_a_crash_restarts_only_that_child(self, how: str) -> None:
        with anyio.fail_after(5):
            async with DynamicSupervisor.running() as sup:
                a = await sup.start_child(worker("a"))
                b = await sup.start_child(worker("b"))
                c = await sup.start_child(worker("c"))
                if how == "kill":
                    await kill_and_wait(b)
                else:
                    await cast_and_wait(b, "crash")
                await sup.wait_stable()
                now = live(sup)
                assert now[0] is a
                assert now[2] is c
                assert now[1] is not b
                assert now[1].generation == b.generation + 1
                assert [info.id for info in sup.which_children()] == ["a", "b", "c"]

    async def test_restarts_keep_working_as_children_come_and_go(self) -> None:
        with anyio.fail_after(5):
            async with DynamicSupervisor.running(DynamicSupervisorSpec(max_restarts=10)) as sup:
                a = await sup.start_child(worker("a"))
                b = await sup.start_child(worker("b"))
                await sup.terminate_child(a)
                await kill_and_wait(b)
                await sup.wait_stable()
                (b1,) = live(sup)
                assert b1.generation == 1
                c = await sup.start_child(worker("c"))
                await cast_and_wait(c, "crash")
                await kill_and_wait(b1)
                await sup.wait_stable()
                b2, c1 = live(sup)
                assert (b2.generation, c1.generation) == (2, 1)
                await sup.terminate_child(b2)
                await kill_and_wait(c1)
                await sup.wait_stable()
                assert [(i.id, i.generation) for i in sup.which_children()] == [("c", 2)]

    @pytest.mark.parametrize(
        ("restart", "how", "restarted"),
        [
            ("permanent", "crash", True),
            ("permanent", "stop_normal", True),
            ("transient", "crash", True),
            ("transient", "kill", True),
            ("temporary", "crash", False),
            ("temporary", "stop_normal", False),
        ],
    )
    async def test_restart_types(
        self, subscribe: Subscriptions, restart: Any, how: str, restarted: bool
    ) -> None:
        with anyio.fail_after(5):
            async with DynamicSupervisor.running() as sup:
                events = subscribe(sup)
                other = await sup.start_child(worker("other"))
                ref = await sup.start_child(worker("x", restart=restart))
                if how == "kill":
                    await kill_and_wait(ref)
                else:
                    await cast_and_wait(ref, how)
                await sup.wait_stable()
                got, _ = drain(events)
                exited = [e for e in got if isinstance(e, ChildExited)]
                assert [(e.child_id, e.restarting) for e in exited] == [("x", restarted)]
                if restarted:
                    assert [r.generation for r in live(sup)] == [0, 1]
                else:
                    assert live(sup) == [other]
                    assert [i.id for i in sup.which_children()] == ["other"]

    @pytest.mark.parametrize("how", ["stop_normal", "stop_shutdown"])
    async def test_a_transient_child_exiting_normally_is_removed(self, how: str) -> None:
        with anyio.fail_after(5):
            async with DynamicSupervisor.running(DynamicSupervisorSpec(max_children=1)) as sup:
                ref = await sup.start_child(worker("t", restart="transient"))
                assert await cast_and_wait(ref, how) == how.removeprefix("stop_")
                await sup.wait_stable()
                assert sup.which_children() == []
                assert sup.count_children().specs == 0
                await sup.start_child(worker("next"))  # its slot is free again

    async def test_restart_and_delete_need_a_terminated_child(self) -> None:
        with anyio.fail_after(5):
            async with DynamicSupervisor.running() as sup:
                await sup.start_child(worker("a"))
                with pytest.raises(ConfigError):
                    await sup.restart_child("a")
                with pytest.raises(ConfigError):
                    await sup.delete_child("a")
                with pytest.raises(ChildNotFound):
                    await sup.delete_child("nope")


class TestIntensity:
    async def test_fourth_restart_ends_the_supervisor(self, subscribe: Subscriptions) -> None:
        journal = Journal()
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                sup = await DynamicSupervisor.start(tg)
                events = subscribe(sup)
                a = await sup.start_child(worker("a", journal))
                b = await sup.start_child(worker("b", journal))
                c = await sup.start_child(worker("c", journal))
                for _ in range(3):
                    await kill_and_wait(live(sup)[1])
                    await sup.wait_stable()
                assert live(sup)[1].generation == 3
                async with monitor(sup) as down:
                    await kill_and_wait(live(sup)[1])
                    reason = await down.down()
            error = intensity_error(reason)
            assert (error.max_restarts, error.max_seconds) == (3, 5.0)
            assert sup.exit_reason is reason
            assert not a.alive
            assert not c.alive
            assert not b.alive
            assert journal.of("terminate")[-2:] == ["c", "a"]
            got = [event async for event in events]
            assert summary(got)[-4:] == [
                ("exited", "b", False),
                ("intensity", 3, 5.0),
                ("terminated", "c"),
                ("terminated", "a"),
            ]

    async def test_nested_dynamic_supervisor_is_restarted_empty(self) -> None:
        dyn_spec = DynamicSupervisorSpec(max_restarts=0)
        spec = SupervisorSpec([ChildSpec("dyn", DynamicSupervisor, arg=dyn_spec), worker("b")])
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as top:
                b = top.child("b")
                old = child_sup(top, "dyn")
                w = await old.start_child(worker("w"))
                async with monitor(old) as down:
                    await cast_and_wait(w, "crash")
                    assert gave_up(await down.down())
                await top.wait_stable()
                new = child_sup(top, "dyn")
                assert new is not old
                assert new.generation == 1
                assert new.which_children() == []  # dynamic children are not respecified
                assert top.child("b") is b


class TestIntensityVirtualTime:
    """The restart window on trio's MockClock."""

    @pytest.fixture
    def anyio_backend(self, trio_mock_backend: Any) -> Any:
        return trio_mock_backend

    async def test_window(self, mock_clock: MockClock) -> None:
        spec = DynamicSupervisorSpec(max_restarts=3, max_seconds=1800)
        with anyio.fail_after(4000):
            async with DynamicSupervisor.running(spec) as sup:
                for _ in range(3):
                    with anyio.fail_after(5):
                        await cast_and_wait(await sup.start_child(worker("w")), "crash")
                        await sup.wait_stable()
                mock_clock.jump(1801)
                for ref in live(sup):
                    with anyio.fail_after(5):
                        await kill_and_wait(ref)
                        await sup.wait_stable()
                assert sup.alive
                assert [r.generation for r in live(sup)] == [2, 2, 2]
                mock_clock.jump(100)
                with anyio.fail_after(5):
                    async with monitor(sup) as down:
                        await kill_and_wait(live(sup)[0])
                        assert gave_up(await down.down())


class TestNoLeaks:
    async def test_stopped_dynamic_supervisor_leaves_nothing(self) -> None:
        with anyio.fail_after(5):
            async with DynamicSupervisor.running() as sup:
                await sup.start_child(worker("warm-up"))
            tasks, threads = task_count(), live_threads()
            every: list[ServerRef[Any, Any]] = []
            async with DynamicSupervisor.running(DynamicSupervisorSpec(max_children=5)) as sup:
                every.append(sup)
                for label in "abc":
                    every.append(await sup.start_child(worker(label)))
                await cast_and_wait(every[2], "crash")
                await sup.terminate_child(every[1])
                await sup.wait_stable()
                every.extend(live(sup))
                assert task_count() > tasks
            assert task_count() == tasks
            assert live_threads() - threads == set()
            for ref in every:
                assert not ref.alive
                assert ref.mailbox_stats().queued == 0
