"""The OTP core's public extension points: GenServer.lifespan with unwrapped_task_group,
Supervisor.restart_counts, SupervisorRef.set_max_restarts, ServerRef.link/unlink."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup

from snakepit.errors import ConfigError
from snakepit.otp import (
    ChildSpec,
    ExitReason,
    GenServer,
    ServerRef,
    Shutdown,
    Stop,
    Supervisor,
    SupervisorRef,
    SupervisorSpec,
    monitor,
    unwrapped_task_group,
)

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


class Helpers(GenServer[str, Any, list[str]]):
    """A server with a helper task group held by its lifespan; it journals its life."""

    def __init__(self) -> None:
        self.journal: list[str] = []
        self.tg: TaskGroup | None = None

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        self.journal.append("enter")
        try:
            async with unwrapped_task_group() as self.tg:
                try:
                    yield
                finally:
                    self.tg.cancel_scope.cancel()
        finally:
            self.journal.append("left")

    async def init(self, arg: Any) -> list[str]:
        self.journal.append("init")
        return self.journal

    async def handle_cast(self, message: str, state: list[str]) -> list[str]:
        assert self.tg is not None
        if message == "fail in a helper":
            self.tg.start_soon(self._fail)
        elif message == "helper":
            self.tg.start_soon(anyio.sleep_forever)
        return state

    async def _fail(self) -> None:
        raise Boom("helper")

    async def terminate(self, reason: ExitReason, state: list[str]) -> None:
        self.journal.append("terminate")


async def test_lifespan_wraps_init_the_messages_and_terminate() -> None:
    async with anyio.create_task_group() as tg:
        ref = await Helpers.start(tg)
        server = ref.server
        assert isinstance(server, Helpers)
        journal = server.journal
        ref.cast("helper")  # a helper that runs until the server ends
        await ref.sync()
        assert journal == ["enter", "init"]
        await ref.stop()
    assert journal == ["enter", "init", "terminate", "left"]


async def test_a_helper_that_raises_ends_the_server_with_its_error_not_its_owner() -> None:
    async with anyio.create_task_group() as tg:
        ref = await Helpers.start(tg)
        ref.cast("fail in a helper")
        with anyio.fail_after(5):
            reason = await ref.wait()
        sibling = await Helpers.start(tg)  # the owner's task group was not cancelled
        assert sibling.alive
        await sibling.stop()
    assert isinstance(reason, Boom)


class FailsToEnter(GenServer[Any, Any, None]):
    def lifespan(self) -> Any:
        raise Boom("lifespan")


async def test_an_error_of_lifespan_before_init_is_raised_by_start() -> None:
    async with anyio.create_task_group() as tg:
        with pytest.raises(Boom, match="lifespan"):
            await FailsToEnter.start(tg)


async def test_unwrapped_task_group_raises_a_single_error_plain() -> None:
    async def fail() -> None:
        raise Boom("task")

    async def body() -> None:
        async with unwrapped_task_group() as tg:
            tg.start_soon(fail)
            await anyio.sleep_forever()

    with pytest.raises(Boom, match="task"):
        await body()


async def test_unwrapped_task_group_keeps_several_errors_in_a_group() -> None:
    async def fail(n: int) -> None:
        raise Boom(f"task {n}")

    async def body() -> None:
        async with unwrapped_task_group() as tg:
            tg.start_soon(fail, 1)
            tg.start_soon(fail, 2)

    with pytest.raises(BaseExceptionGroup):
        await body()


class Child(GenServer[str, Any, None]):
    async def handle_cast(self, message: str, state: None) -> None:
        raise Stop(Boom(message))  # abnormal: a permanent child is restarted


class Lenient(Supervisor):
    """Does not count the restarts of children that exited with ``Boom("mine")``."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[ServerRef[Any, Any], ExitReason]] = []

    def restart_counts(self, ref: ServerRef[Any, Any], reason: ExitReason) -> bool:
        self.asked.append((ref, reason))
        return not (isinstance(reason, Boom) and str(reason) == "mine")


async def crash(sup: SupervisorRef, message: str) -> None:
    """Make child "c" of ``sup`` exit with ``Boom(message)``; wait until ``sup`` handled it."""
    child = sup.child("c")
    assert child is not None
    child.cast(message)
    with anyio.fail_after(5):
        await child.wait()
        await sup.sync()


async def test_restart_counts_false_restarts_without_counting() -> None:
    spec = SupervisorSpec([ChildSpec("c", Child)], max_restarts=0)
    async with Lenient.running(spec) as sup:
        server = sup.server
        assert isinstance(server, Lenient)
        for _ in range(3):
            await crash(sup, "mine")  # not counted: restarted each time
        assert sup.alive
        old = sup.child("c")
        assert old is not None
        assert old.generation == 3
        assert [str(reason) for _, reason in server.asked] == ["mine"] * 3
        old.cast("other")  # counted: max_restarts=0 is exceeded
        with anyio.fail_after(5):
            assert isinstance(await sup.wait(), Shutdown)
        assert server.asked[-1][0] is old


async def test_set_max_restarts_changes_the_intensity_from_now_on() -> None:
    spec = SupervisorSpec([ChildSpec("c", Child)], max_restarts=0)
    async with Supervisor.running(spec) as sup:
        await sup.set_max_restarts(2)
        await crash(sup, "one")
        await crash(sup, "two")
        assert sup.alive  # two restarts allowed now
        await sup.set_max_restarts(0)
        child = sup.child("c")
        assert child is not None
        child.cast("three")
        with anyio.fail_after(5):
            assert isinstance(await sup.wait(), Shutdown)


@pytest.mark.parametrize("bad", [-1, True, 1.5, None])
async def test_set_max_restarts_refuses_what_a_spec_refuses(bad: Any) -> None:
    async with Supervisor.running() as sup:
        with pytest.raises(ConfigError, match="max_restarts"):
            await sup.set_max_restarts(bad)


async def test_unlink_removes_a_link_and_ignores_unknown_callbacks() -> None:
    seen: list[str] = []

    def first(ref: ServerRef[Any, Any], reason: ExitReason) -> None:
        seen.append("first")

    def second(ref: ServerRef[Any, Any], reason: ExitReason) -> None:
        seen.append("second")

    def removes_first(ref: ServerRef[Any, Any], reason: ExitReason) -> None:
        ref.unlink(first)  # while the exit calls the links: first is not called
        seen.append("removes_first")

    async with anyio.create_task_group() as tg:
        ref = await Child.start(tg)
        ref.link(removes_first)
        ref.link(first)
        ref.link(second)
        ref.unlink(second)
        ref.unlink(second)  # not there any more: nothing
        async with monitor(ref) as mon:
            await ref.stop()
            assert await mon.down() == "normal"
    assert seen == ["removes_first"]  # as a monitor demonitored during the exit: no DOWN


async def test_a_link_to_a_dead_server_is_called_at_once() -> None:
    seen: list[ExitReason] = []
    async with anyio.create_task_group() as tg:
        ref = await Child.start(tg)
        await ref.stop()
    ref.link(lambda _ref, reason: seen.append(reason))
    assert seen == ["normal"]
