"""The shared call-deadline queue: expiry order and bounded memory."""

from __future__ import annotations

from snakepit.otp._lowlevel import TIMED_OUT, Deadlines


class FakeSlot:
    def __init__(self) -> None:
        self.value: object = None
        self.is_done = False

    def set(self, value: object) -> None:
        if not self.is_done:
            self.is_done, self.value = True, value

    def done(self) -> bool:
        return self.is_done

    async def wait(self, timeout: float | None) -> object:  # pragma: no cover - unused
        return self.value


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.armed: list[float] = []


def make() -> tuple[Deadlines, Clock]:
    clock = Clock()
    return Deadlines(lambda: clock.now, clock.armed.append), clock


def test_due_slots_expire_and_the_timer_rearms_for_the_next() -> None:
    deadlines, clock = make()
    short, long_ = FakeSlot(), FakeSlot()
    deadlines.add(5.0, long_)
    deadlines.add(1.0, short)  # earlier: re-arms
    assert clock.armed == [5.0, 1.0]
    clock.now = 1.0
    deadlines.fire()
    assert short.value is TIMED_OUT
    assert long_.value is None
    assert clock.armed[-1] == 5.0
    clock.now = 5.0
    deadlines.fire()
    assert long_.value is TIMED_OUT


def test_answered_slots_are_not_expired() -> None:
    deadlines, clock = make()
    slot = FakeSlot()
    deadlines.add(1.0, slot)
    slot.set("reply")
    clock.now = 2.0
    deadlines.fire()
    assert slot.value == "reply"


def test_a_slow_call_does_not_pin_answered_ones_behind_it() -> None:
    deadlines, _clock = make()
    slow = FakeSlot()
    deadlines.add(5.0, slow)
    for _ in range(100_000):
        fast = FakeSlot()
        deadlines.add(5.0, fast)
        fast.set("reply")
    group = deadlines._groups[5.0]
    assert len(group.entries) <= 2 * 1024
    assert group.entries[0][1] is slow
