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
