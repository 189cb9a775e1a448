"""Supervisor's API: which_children, count_children, child management, wait_stable.

The rest of the Supervisor's tests are in the test_supervisor_*.py files beside this one,
one per concern; its specs in test_spec.py, its restart intensity in test_restart_intensity.py.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from snakepit.errors import ConfigError
from snakepit.otp import (
    ChildNotFound,
    ChildSpec,
    ChildStartError,
    ChildTerminated,
    DuplicateChild,
    DynamicSupervisor,
    GenServer,
    Registry,
    ServerExited,
    Strategy,
    Supervisor,
    SupervisorRef,
    SupervisorSpec,
)

from ._sup_helpers import (
    Boom,
    Journal,
    Opts,
    Subscriptions,
    Worker,
    cast_and_wait,
    child_ref,
    child_sup,
    drain,
    kill_and_wait,
    refs,
    summary,
    workers,
)

pytestmark = pytest.mark.anyio


class TestIntrospection:
    async def test_which_children(self) -> None:
        spec = SupervisorSpec(
            [
                ChildSpec("a", Worker),
                ChildSpec("inner", Supervisor, arg=SupervisorSpec(workers("x"))),
                ChildSpec("t", Worker, restart="transient"),
            ]
        )
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                infos = sup.which_children()
                assert [(i.id, i.type, i.restart, i.generation) for i in infos] == [
                    ("a", "worker", "permanent", 0),
                    ("inner", "supervisor", "permanent", 0),
                    ("t", "worker", "transient", 0),
                ]
                assert all(i.alive for i in infos)
                assert isinstance(infos[1].ref, SupervisorRef)
                await kill_and_wait(child_ref(sup, "a"))
                await sup.wait_stable()
                await sup.terminate_child("t")
                infos = sup.which_children()
                assert [(i.id, i.generation, i.alive) for i in infos] == [
                    ("a", 1, True),
                    ("inner", 0, True),
                    ("t", 0, False),
                ]
                assert infos[2].ref is None

    async def test_which_children_has_each_childs_last_exit(self) -> None:
        spec = SupervisorSpec(
            [
                ChildSpec("a", Worker),
                ChildSpec("t", Worker, restart="transient"),
                ChildSpec("s", Worker),
            ]
        )
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                assert [i.last_exit for i in sup.which_children()] == [None, None, None]
                await kill_and_wait(child_ref(sup, "a"))
                await cast_and_wait(child_ref(sup, "t"), "stop_normal")
                await sup.wait_stable()
                await sup.terminate_child("s")
                a, t, s = sup.which_children()
                assert (a.alive, a.generation, a.last_exit) == (
                    True,
                    1,
                    "killed",
                )  # its predecessor's
                assert (t.alive, t.generation, t.last_exit) == (False, 0, "normal")
                assert (s.alive, s.last_exit) == (False, "shutdown")  # stopped by the supervisor
                await cast_and_wait(child_ref(sup, "a"), "crash")
                await sup.wait_stable()
                assert isinstance(sup.which_children()[0].last_exit, Boom)

    async def test_count_children(self) -> None:
        spec = SupervisorSpec(
            [
                ChildSpec("a", Worker),
                ChildSpec("inner", Supervisor, arg=SupervisorSpec(workers("x", "y"))),
                ChildSpec("dyn", DynamicSupervisor),
                ChildSpec("tmp", Worker, restart="temporary"),
            ]
        )
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                counts = sup.count_children()
                assert (counts.specs, counts.active, counts.supervisors, counts.workers) == (
                    4,
                    4,
                    2,
                    2,
                )
                await sup.terminate_child("a")
                await sup.terminate_child("tmp")  # temporary: removed
                counts = sup.count_children()
                assert (counts.specs, counts.active, counts.supervisors, counts.workers) == (
                    3,
                    2,
                    2,
                    1,
                )

    @pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one"])
    async def test_strategy(self, strategy: Strategy) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(strategy=strategy)) as sup:
                assert sup.strategy == strategy

    async def test_child(self) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("a"))) as sup:
                ref = sup.child("a")
                assert ref is not None
                assert ref.alive
                with pytest.raises(ChildNotFound) as info:
                    sup.child("nope")
                assert info.value.child == "nope"
                await sup.terminate_child("a")
                assert sup.child("a") is None


class TestChildManagement:
    async def test_terminate_child_by_id_or_ref_does_not_restart(
        self, subscribe: Subscriptions
    ) -> None:
        journal = Journal()
        spec = SupervisorSpec(workers("a", "b", "c", journal=journal))
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                events = subscribe(sup)
                a, b, c = (child_ref(sup, i) for i in "abc")
                await sup.terminate_child("a")
                await sup.terminate_child(b)
                await sup.wait_stable()
                assert a.exit_reason == b.exit_reason == "shutdown"
                assert refs(sup) == {"a": None, "b": None, "c": c}
                assert journal.of("terminate") == ["a", "b"]
                got, _ = drain(events)
                assert summary(got) == [("terminated", "a"), ("terminated", "b")]
                terminated = got[0]
                assert isinstance(terminated, ChildTerminated)
                assert terminated.ref is a
                assert terminated.reason == "shutdown"
                assert terminated.supervisor is sup
                # Terminating a stopped child again is a no-op.
                await sup.terminate_child("a")

    async def test_terminate_child_errors(self) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("a"))) as sup:
                with pytest.raises(ChildNotFound):
                    await sup.terminate_child("nope")
                async with Worker.running() as stranger:
                    with pytest.raises(ChildNotFound):
                        await sup.terminate_child(stranger)
                assert sup.alive

    async def test_terminate_child_removes_a_temporary_child(self) -> None:
        spec = SupervisorSpec([*workers("a"), ChildSpec("tmp", Worker, restart="temporary")])
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                await sup.terminate_child("tmp")
                assert [i.id for i in sup.which_children()] == ["a"]
                with pytest.raises(ChildNotFound):
                    await sup.restart_child("tmp")

    async def test_restart_child(self) -> None:
        journal = Journal()
        spec = SupervisorSpec(workers("a", "b", journal=journal))
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                old = child_ref(sup, "a")
                await sup.terminate_child("a")
                new = await sup.restart_child("a")
                assert new is not old
                assert new.generation == 1
                assert sup.child("a") is new
                assert [i.id for i in sup.which_children()] == ["a", "b"]  # keeps its place
                assert journal.entries[-1] == ("init", "a", 1)

    async def test_restart_child_errors(self) -> None:
        opts = Opts("x", fail_init=frozenset({1}))
        spec = SupervisorSpec([*workers("a"), ChildSpec("x", Worker, arg=opts)])
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                with pytest.raises(ConfigError) as info:
                    await sup.restart_child("a")
                assert info.value.field == "child_id"
                with pytest.raises(ChildNotFound):
                    await sup.restart_child("nope")
                await sup.terminate_child("x")
                with pytest.raises(ChildStartError) as failed:
                    await sup.restart_child("x")
                assert failed.value.child_id == "x"
                assert isinstance(failed.value.cause, Boom)
                assert sup.child("x") is None
                assert (await sup.restart_child("x")).generation == 2
                assert sup.alive

    async def test_delete_child(self) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("a", "b"))) as sup:
                with pytest.raises(ConfigError) as info:
                    await sup.delete_child("a")
                assert info.value.field == "child_id"
                with pytest.raises(ChildNotFound):
                    await sup.delete_child("nope")
                await sup.terminate_child("a")
                await sup.delete_child("a")
                assert [i.id for i in sup.which_children()] == ["b"]
                with pytest.raises(ChildNotFound):
                    await sup.restart_child("a")
                with pytest.raises(ChildNotFound):
                    sup.child("a")
                again = await sup.start_child(ChildSpec("a", Worker))
                assert again.generation == 0
                assert [i.id for i in sup.which_children()] == ["b", "a"]

    async def test_start_child(self, subscribe: Subscriptions) -> None:
        journal = Journal()
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("a", journal=journal))) as sup:
                events = subscribe(sup)
                ref = await sup.start_child(ChildSpec("b", Worker, arg=Opts("b", journal)))
                assert ref.alive
                assert ref.generation == 0
                assert sup.child("b") is ref
                assert [i.id for i in sup.which_children()] == ["a", "b"]
                got, _ = drain(events)
                assert summary(got) == [("started", "b", 0)]
                # A started child is supervised like the others.
                await kill_and_wait(ref)
                await sup.wait_stable()
                assert child_ref(sup, "b").generation == 1
            assert journal.of("terminate") == ["b", "a"]

    async def test_start_child_errors(self) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("a"))) as sup:
                with pytest.raises(DuplicateChild) as dup:
                    await sup.start_child(ChildSpec("a", Worker))
                assert dup.value.child_id == "a"
                bad = ChildSpec("bad", Worker, arg=Opts(fail_init=frozenset({0})))
                with pytest.raises(ChildStartError) as failed:
                    await sup.start_child(bad)
                assert failed.value.child_id == "bad"
                assert isinstance(failed.value.cause, Boom)
                with pytest.raises(ConfigError) as info:
                    await sup.start_child("not a spec")  # type: ignore[arg-type]
                assert info.value.field == "spec"
                with pytest.raises(ConfigError) as info:
                    await sup.start_child(ChildSpec("named", Worker, name="n"))
                assert info.value.field == "registry"
                assert [i.id for i in sup.which_children()] == ["a"]  # nothing was kept
                assert sup.alive
                assert sup.count_children().active == 1

    async def test_start_child_with_a_name(self) -> None:
        registry = Registry()
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(registry=registry)) as sup:
                ref = await sup.start_child(ChildSpec("a", Worker, name="alpha"))
                assert registry.whereis("alpha") is ref
                await kill_and_wait(ref)
                new = await registry.wait_rebound("alpha", ref)
                await sup.wait_stable()
                assert new is child_ref(sup, "a")


# --- wait_stable and events ----------------------------------------------------------


class TestWaitStable:
    async def test_covers_nested_supervisors(self) -> None:
        deepest = SupervisorSpec(workers("x", "y"), strategy="one_for_all")
        middle = SupervisorSpec([ChildSpec("deepest", Supervisor, arg=deepest)])
        spec = SupervisorSpec([*workers("a"), ChildSpec("middle", Supervisor, arg=middle)])
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                bottom = child_sup(child_sup(sup, "middle"), "deepest")
                await kill_and_wait(child_ref(bottom, "x"))
                await sup.wait_stable()
                # Both restarts (x, and y by one_for_all) are done, two levels down.
                assert [i.generation for i in bottom.which_children()] == [1, 1]
                assert all(i.alive for i in bottom.which_children())

    async def test_returns_at_once_when_idle(self) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("a"))) as sup:
                await sup.wait_stable()
                await sup.wait_stable(timeout=None)

    async def test_errors(self) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("a"))) as sup:
                with pytest.raises(ConfigError):
                    await sup.wait_stable(timeout=-1)
            with pytest.raises(ServerExited) as info:
                await sup.wait_stable()
            assert info.value.reason == "shutdown"


class _Plain(GenServer[Any, Any, Any]):
    """A GenServer with no callbacks of its own: a supervisor runs it as-is."""


async def test_any_genserver_can_be_a_child() -> None:
    with anyio.fail_after(5):
        async with Supervisor.running(SupervisorSpec([ChildSpec("p", _Plain, arg=7)])) as sup:
            assert await child_ref(sup, "p").get_state() == 7
