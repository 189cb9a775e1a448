"""The server helpers (testing/_servers.py): state, liveness, responsiveness, stress."""

from __future__ import annotations

import random
from typing import Any

import pytest
from trio.testing import MockClock

from snakepit.otp import ServerExited
from snakepit.testing import (
    assert_alive,
    assert_dead,
    assert_handles,
    assert_responsive,
    assert_state,
    cast_and_sync,
    concurrent_calls,
    get_state,
    stress,
)

from ._otp_servers import Holder, counter

pytestmark = pytest.mark.anyio


class TestServerHelpers:
    async def test_cast_and_sync_then_get_state(self) -> None:
        async with counter() as ref:
            await cast_and_sync(ref, "incr")
            await cast_and_sync(ref, "incr")
            assert await get_state(ref) == 2

    async def test_cast_and_sync_raises_the_exit_a_cast_caused(self) -> None:
        async with counter() as ref:
            with pytest.raises(ServerExited, match="Boom"):
                await cast_and_sync(ref, "explode")

    async def test_alive_and_dead(self) -> None:
        async with counter() as ref:
            assert_alive(ref)
            with pytest.raises(
                AssertionError, match=r"expected <Counter.*> to have exited; it is alive"
            ):
                assert_dead(ref)
            await ref.kill()
            assert_dead(ref)
            with pytest.raises(AssertionError, match=r"to be alive; it exited \(killed\)"):
                assert_alive(ref)

    async def test_assert_state_by_value_and_predicate(self) -> None:
        def even(n: int) -> bool:
            return n % 2 == 0

        async with counter(4) as ref:
            assert await assert_state(ref, 4) == 4
            await assert_state(ref, even)
            ref.cast("incr")
            with pytest.raises(AssertionError, match=r"state of <Counter.*> to be 4, found 5"):
                await assert_state(ref, 4)
            with pytest.raises(AssertionError, match=r"to satisfy .*even, found 5"):
                await assert_state(ref, even)

    async def test_a_class_is_a_value_not_a_predicate(self) -> None:
        class Idle:
            """A state of a state-pattern server: the class itself."""

        class Box:
            pass

        async with Holder.running(Idle) as ref:
            assert await assert_state(ref, Idle) is Idle  # not called: Idle(state) would raise
            with pytest.raises(
                AssertionError, match=r"to be <class .*Box'>, found <class .*Idle'>"
            ):
                await assert_state(ref, Box)
            await assert_handles(ref, "get", Idle)
            box = Box()
            await cast_and_sync(ref, ("set", box))
            with pytest.raises(AssertionError) as info:
                await assert_state(ref, Box)
            assert "(an instance of Box: a class is compared with ==; to check the type, " in str(
                info.value
            )
            await assert_state(ref, lambda s: isinstance(s, Box))
            with pytest.raises(AssertionError, match=r"with <class .*Box'>, got <.*Box object"):
                await assert_handles(ref, "get", Box)

    async def test_assert_state_of_a_dead_server(self) -> None:
        async with counter() as ref:
            await ref.kill()
            with pytest.raises(AssertionError, match=r"answer get_state; it exited \(killed\)"):
                await assert_state(ref, 0)

    async def test_assert_responsive(self) -> None:
        async with counter() as ref:
            await assert_responsive(ref)
            ref.cast("explode")
            with pytest.raises(
                AssertionError, match=r"answer a sync; it exited \(Boom\('explode'\)\)"
            ):
                await assert_responsive(ref)

    async def test_a_server_that_never_answers_is_not_responsive(
        self, mock_clock: MockClock
    ) -> None:
        async with counter() as ref:
            ref.cast("hang")
            with pytest.raises(
                AssertionError, match=r"answer a sync within 1s; it did not \(1 messages queued\)"
            ):
                await assert_responsive(ref, timeout=1)

    async def test_assert_handles(self) -> None:
        async with counter(3) as ref:
            assert await assert_handles(ref, "ping", "pong") == "pong"
            await assert_handles(ref, "get", lambda n: n == 3)
            with pytest.raises(AssertionError, match=r"answer 'ping' with 'pang', got 'pong'"):
                await assert_handles(ref, "ping", "pang")
            with pytest.raises(AssertionError, match=r"answer call 'nope'; it exited \(Boom"):
                await assert_handles(ref, "nope", None)

    async def test_concurrent_calls(self) -> None:
        async with counter(7) as ref:
            replies = await concurrent_calls(ref, ["get", "ping"], 5)
            assert replies == [[7] * 5, ["pong"] * 5]
            assert ref.mailbox_stats().high_water >= 10  # they were all queued at once

    async def test_concurrent_calls_report_failures(self) -> None:
        async with counter() as ref:
            with pytest.raises(
                AssertionError, match=r"of 6 concurrent calls to .* failed: "
            ) as info:
                await concurrent_calls(ref, ["ping", "explode", "ping"], 2)
            assert isinstance(info.value.__cause__, ServerExited)

    async def test_stress_is_replayable(self) -> None:
        ops: list[Any] = [("cast", "incr"), ("call", "get"), ("send", "tick")]
        async with counter() as first, counter() as second:
            one = await stress(first, ops, 300, rng=random.Random(5))
            two = await stress(second, ops, 300, rng=random.Random(5))
            assert one.calls + one.casts + one.sends == 300
            assert (one.calls, one.casts, one.sends) == (two.calls, two.casts, two.sends)
            assert await get_state(first) == one.casts

    async def test_stress_finds_the_crash(self) -> None:
        ops: list[Any] = [("cast", "incr"), ("call", "get"), ("cast", "explode")]
        async with counter() as ref:
            with pytest.raises(AssertionError, match=r"it exited \(Boom\('explode'\)\)"):
                await stress(ref, ops, 50, rng=random.Random(1))
