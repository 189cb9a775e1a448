"""Broadcast: the fan-out under supervisor events and pool telemetry."""

from __future__ import annotations

import pytest

from snakepit.otp import Broadcast

pytestmark = pytest.mark.anyio


async def test_each_subscriber_gets_the_events_after_it_subscribed() -> None:
    events: Broadcast[int] = Broadcast()
    assert not events.active
    events.publish(0)  # nobody listens: dropped
    first = events.subscribe()
    events.publish(1)
    second = events.subscribe()
    events.publish(2)
    events.close()
    async with first, second:
        assert [e async for e in first] == [1, 2]
        assert [e async for e in second] == [2]


async def test_a_closed_subscriber_is_dropped_and_later_ones_get_an_ended_stream() -> None:
    events: Broadcast[str] = Broadcast()
    gone = events.subscribe()
    gone.close()
    events.publish("x")  # finds it closed: dropped, its send end closed (no ResourceWarning)
    assert not events.active
    events.close()
    async with events.subscribe() as late:
        assert [e async for e in late] == []


async def test_a_bounded_subscriber_drops_what_finds_it_full_and_counts_it() -> None:
    events: Broadcast[int] = Broadcast()
    slow = events.subscribe(max_buffer=2)
    fast = events.subscribe()
    for n in range(5):
        events.publish(n)
    assert events.dropped == 3
    assert slow.receive_nowait() == 0  # room for one more
    events.publish(5)
    events.close()
    async with slow, fast:
        assert [e async for e in slow] == [1, 5]
        assert [e async for e in fast] == [0, 1, 2, 3, 4, 5]
    assert events.dropped == 3


@pytest.mark.parametrize("max_buffer", [0, -1, 1.5, True, "3"])
def test_a_bad_max_buffer_is_a_config_error(max_buffer: object) -> None:
    from snakepit.errors import ConfigError

    events: Broadcast[int] = Broadcast()
    with pytest.raises(ConfigError) as info:
        events.subscribe(max_buffer)  # type: ignore[arg-type]
    assert info.value.field == "max_buffer"
    assert not events.active
