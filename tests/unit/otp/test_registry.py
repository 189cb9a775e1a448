"""Registry: unique names that follow the current instance across restarts."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from snakepit.errors import (
    ConfigError,
    NameNotFound,
    NameTaken,
    ServerExited,
    WaitTimeout,
)
from snakepit.otp import ChildSpec, GenServer, Registry, Supervisor, SupervisorSpec, monitor

pytestmark = pytest.mark.anyio


class Echo(GenServer[Any, Any, list[Any]]):
    async def init(self, arg: Any) -> list[Any]:
        return []

    async def handle_call(self, request: Any, state: list[Any]) -> tuple[Any, list[Any]]:
        return request, state

    async def handle_cast(self, message: Any, state: list[Any]) -> list[Any]:
        return [*state, message]


async def test_register_lookup_and_unregister_on_exit() -> None:
    registry = Registry()
    async with anyio.create_task_group() as tg:
        ref = await Echo.start(tg, name="echo", registry=registry)
        assert registry.whereis("echo") is ref
        assert registry.lookup("echo") is ref
        assert registry.names() == ["echo"]
        assert len(registry) == 1
        assert await registry.call("echo", 42) == 42
        registry.cast("echo", "hello")
        assert await ref.get_state() == ["hello"]
        await ref.stop()
    assert registry.whereis("echo") is None
    assert registry.names() == []
    with pytest.raises(NameNotFound) as info:
        registry.lookup("echo")
    assert info.value.name == "echo"
    with pytest.raises(NameNotFound):
        await registry.call("echo", 1)
    registry.cast("echo", "dropped")  # no error, as in OTP


async def test_names_are_unique_among_live_servers() -> None:
    registry = Registry()
    async with anyio.create_task_group() as tg:
        first = await Echo.start(tg, name="x", registry=registry)
        with pytest.raises(NameTaken) as info:
            await Echo.start(tg, name="x", registry=registry)
        assert info.value.holder is first
        await first.stop()
        second = await Echo.start(tg, name="x", registry=registry)  # free again
        assert registry.whereis("x") is second
        await second.stop()


async def test_bad_names_and_dead_refs_are_rejected() -> None:
    registry = Registry()
    async with anyio.create_task_group() as tg:
        ref = await Echo.start(tg)
        for bad in ("", 3):
            with pytest.raises(ConfigError) as info:
                registry.register(bad, ref)  # type: ignore[arg-type]
            assert info.value.field == "name"
        await ref.stop()
        with pytest.raises(ServerExited):
            registry.register("late", ref)


async def test_unregister_keeps_the_server_running() -> None:
    registry = Registry()
    async with Echo.running(name="a", registry=registry) as ref:
        registry.unregister("a")
        registry.unregister("never-registered")
        assert registry.whereis("a") is None
        assert ref.alive


async def test_name_follows_the_restarted_child() -> None:
    registry = Registry()
    spec = SupervisorSpec([ChildSpec("echo", Echo, name="echo")], registry=registry)
    async with Supervisor.running(spec) as sup:
        old = registry.lookup("echo")
        async with monitor(old) as mon:
            await old.kill()
            await mon.down()
        with anyio.fail_after(5):
            new = await registry.wait_rebound("echo", old)
        assert new is not old
        assert new.alive
        assert new.generation == old.generation + 1
        assert sup.child("echo") is new
        assert await registry.call("echo", "reaches the replacement") == ("reaches the replacement")


async def test_wait_registered() -> None:
    registry = Registry()
    async with anyio.create_task_group() as tg:
        found: list[Any] = []

        async def waiter() -> None:
            found.append(await registry.wait_registered("late", timeout=5))

        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        ref = await Echo.start(tg, name="late", registry=registry)
        await anyio.wait_all_tasks_blocked()
        assert found == [ref]
        await ref.stop()


async def test_wait_rebound_times_out_in_virtual_time(mock_clock: Any) -> None:
    registry = Registry()
    async with Echo.running(name="stuck", registry=registry) as ref:
        start = anyio.current_time()
        with pytest.raises(WaitTimeout):
            await registry.wait_rebound("stuck", ref, timeout=1800)
        assert anyio.current_time() - start == pytest.approx(1800)


async def test_timed_out_waiters_leave_nothing_behind() -> None:
    registry = Registry()
    for _ in range(50):
        with pytest.raises(WaitTimeout):
            await registry.wait_registered("never", timeout=0)
    with anyio.move_on_after(0):
        await registry.wait_registered("never", timeout=None)
    assert registry._waiters == {}
