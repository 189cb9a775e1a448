"""monitor(): exactly one DOWN with the exit reason."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from snakepit.otp import GenServer, Stop, monitor

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
