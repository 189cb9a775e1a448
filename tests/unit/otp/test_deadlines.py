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


def test_a_closed_loop_is_not_kept_alive_by_its_deadlines() -> None:
    # The backend cached per loop holds an armed timer and the slots of the
    # calls that waited with a timeout: both reach the loop. Once the loop
    # is closed, making the next loop's backend lets it go (it used to stay
    # for the life of the process, with every task and pool it reached).
    import asyncio
    import gc
    import weakref

    from snakepit.otp import GenServer

    class Echo(GenServer[str, str, None]):
        async def init(self, arg: None) -> None:
            return None

        async def handle_call(self, request: str, state: None) -> tuple[str, None]:
            return request, state

    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def run() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        async with Echo.running(None) as ref:
            assert await ref.call("x", timeout=60) == "x"  # a deadline, armed for later

    for _ in range(3):
        asyncio.run(run())
    gc.collect()
    assert [loop() is None for loop in loops] == [True, True, False]  # the last: not yet
