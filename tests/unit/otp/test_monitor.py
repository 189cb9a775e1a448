"""monitor(): exactly one DOWN with the exit reason."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from snakepit.otp import GenServer, Monitor, Stop, monitor

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


class Server(GenServer[Any, Any, None]):
    async def handle_cast(self, message: Any, state: None) -> None:
        if message == "crash":
            raise Boom("crash")
        if message == "stop":
            raise Stop("normal")


async def test_down_carries_the_reason() -> None:
    async with anyio.create_task_group() as tg:
        ref = await Server.start(tg)
        async with monitor(ref) as mon:
            assert mon.reason is None
            assert mon.ref is ref
            ref.cast("crash")
            with anyio.fail_after(5):
                reason = await mon.down()
        assert isinstance(reason, Boom)
        assert mon.reason is reason


async def test_exactly_one_down_per_monitor() -> None:
    async with anyio.create_task_group() as tg:
        ref = await Server.start(tg)
        monitors = [monitor(ref) for _ in range(3)]
        ref.cast("stop")
        with anyio.fail_after(5):
            reasons = [await m.down() for m in monitors]
        assert reasons == ["normal"] * 3
        # down() again returns the same single notice; nothing else is delivered
        assert await monitors[0].down() == "normal"
        assert ref._links == []


async def test_monitor_of_an_already_dead_ref_fires_at_once() -> None:
    async with anyio.create_task_group() as tg:
        ref = await Server.start(tg)
        await ref.kill()
    mon = monitor(ref)
    assert mon.reason == "killed"
    with anyio.fail_after(5):
        assert await mon.down() == "killed"


async def test_demonitor_stops_the_notice() -> None:
    async with anyio.create_task_group() as tg:
        ref = await Server.start(tg)
        kept = monitor(ref)
        dropped = monitor(ref)
        dropped.demonitor()
        dropped.demonitor()  # idempotent
        await ref.stop()
        assert kept.reason == "normal"
        assert dropped.reason is None
        assert "Monitor of" in repr(kept)


async def test_a_monitor_demonitored_during_the_exit_gets_no_down() -> None:
    # Monitors are links now: one demonitored by an earlier exit callback was
    # still called (found by review of issue #12).
    async with anyio.create_task_group() as tg:
        ref = await Server.start(tg)
        monitors: list[Monitor] = []

        def demonitor_the_later_one(_ref: Any, _reason: Any) -> None:
            monitors[0].demonitor()

        ref.link(demonitor_the_later_one)
        monitors.append(monitor(ref))
        kept = monitor(ref)
        await ref.stop()
        assert monitors[0].reason is None
        assert kept.reason == "normal"
