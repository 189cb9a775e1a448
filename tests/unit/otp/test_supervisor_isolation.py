"""A crash stays inside its supervisor, and a stopped tree leaves no task, thread or message."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

from snakepit.otp import (
    ChildSpec,
    DynamicSupervisor,
    DynamicSupervisorSpec,
    ServerExited,
    ServerRef,
    Supervisor,
    SupervisorRef,
    SupervisorSpec,
    monitor,
)

from ._sup_helpers import (
    Boom,
    Opts,
    Subscriptions,
    Worker,
    cast_and_wait,
    child_ref,
    child_sup,
    drain,
    gave_up,
    kill_and_wait,
    live_threads,
    task_count,
    workers,
)

pytestmark = pytest.mark.anyio


class _Canary:
    def __init__(self) -> None:
        self.release = anyio.Event()
        self.cancelled = False

    async def run(self) -> None:
        try:
            await self.release.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise


class TestIsolation:
    async def test_a_child_crash_cancels_neither_siblings_nor_the_caller(self) -> None:
        opts = Opts("b", fail_init=frozenset({2}))  # its second restart fails once
        spec = SupervisorSpec([*workers("a"), ChildSpec("b", Worker, arg=opts), *workers("c")])
        canary = _Canary()
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(canary.run)
                sup = await Supervisor.start(tg, spec)
                a, c = child_ref(sup, "a"), child_ref(sup, "c")
                await cast_and_wait(child_ref(sup, "b"), "crash")  # a handler raises
                await sup.wait_stable()
                await cast_and_wait(child_ref(sup, "b"), "crash")  # then init raises
                await sup.wait_stable()
                assert child_ref(sup, "b").generation == 3
                assert child_ref(sup, "a") is a
                assert child_ref(sup, "c") is c
                assert await a.call("ping") == "pong"
                assert not canary.cancelled
                assert not tg.cancel_scope.cancel_called
                # Even the supervisor giving up stays inside it.
                async with monitor(sup) as down:
                    await cast_and_wait(child_ref(sup, "b"), "crash")
                    assert gave_up(await down.down())
                assert not canary.cancelled
                canary.release.set()
        assert not canary.cancelled

    async def test_a_failed_call_does_not_hurt_the_caller(self) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("a"))) as sup:
                old = child_ref(sup, "a")
                with pytest.raises(ServerExited) as info:
                    await old.call("explode")
                assert isinstance(info.value.reason, Boom)
                await sup.wait_stable()
                assert child_ref(sup, "a").generation == 1


class TestNoLeaks:
    async def test_a_stopped_tree_leaves_no_task_thread_or_mailbox(
        self, subscribe: Subscriptions
    ) -> None:
        dyn_children = [ChildSpec(f"d{i}", Worker) for i in range(2)]
        inner = SupervisorSpec(workers("x", "y"), strategy="rest_for_one")
        spec = SupervisorSpec(
            [
                *workers("a"),
                ChildSpec("inner", Supervisor, arg=inner),
                ChildSpec("dyn", DynamicSupervisor, arg=DynamicSupervisorSpec()),
                *workers("b"),
            ]
        )
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("warm-up"))):
                pass  # the backend's one-off helpers (trio's timer task) exist from here
            tasks, threads = task_count(), live_threads()
            all_threads = set(threading.enumerate())
            every: list[ServerRef[Any, Any]] = []
            async with Supervisor.running(spec) as sup:
                events = subscribe(sup)
                every.append(sup)
                dyn = child_sup(sup, "dyn")
                for child in dyn_children:
                    await dyn.start_child(child)
                await kill_and_wait(child_ref(child_sup(sup, "inner"), "x"))
                await cast_and_wait(child_ref(dyn, "d0"), "crash")
                await sup.wait_stable()
                assert task_count() > tasks
                stack: list[SupervisorRef] = [sup]
                while stack:
                    for info in stack.pop().which_children():
                        assert info.ref is not None
                        every.append(info.ref)
                        if isinstance(info.ref, SupervisorRef):
                            stack.append(info.ref)
                for ref in every:
                    ref.send("noise")  # messages left queued must not survive either
            assert len(every) == 9
            assert task_count() == tasks
            assert live_threads() - threads == set()
            assert set(threading.enumerate()) - all_threads == set()
            for ref in every:
                assert not ref.alive
                assert ref.mailbox_stats().queued == 0
            assert drain(events)[1]

    async def test_a_supervisor_that_gave_up_leaves_no_task(self) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("warm-up"))):
                pass
            tasks = task_count()
            async with anyio.create_task_group() as tg:
                sup = await Supervisor.start(tg, SupervisorSpec(workers("a", "b"), max_restarts=0))
                a = child_ref(sup, "a")
                async with monitor(sup) as down:
                    await kill_and_wait(child_ref(sup, "b"))
                    await down.down()
                assert not a.alive
            assert task_count() == tasks
