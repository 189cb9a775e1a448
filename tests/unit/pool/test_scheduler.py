"""The pool's Scheduler (pool/_scheduler.py): free slots, the waiting calls, their order and limits.

No pool and no worker here: the slots belong to small fake workers with a ``usable`` flag,
and every wait is on the scheduler's own hand-over (``anyio.wait_all_tasks_blocked``).
Timeouts use ``queue_timeout=0`` or a deadline already reached, so nothing waits on a clock.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from snakepit.errors import PoolClosed, PoolError, QueueFull, QueueTimeout
from snakepit.pool import Scheduler
from snakepit.pool._scheduler import PinnedWorkerGone

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # the scheduler's waiters are asyncio futures, as the pool's


@dataclass(eq=False)
class Fake:
    """A worker as the scheduler sees it: a name, and whether it may take calls."""

    name: str
    usable: bool = True


def scheduler(*, max_queue: int = 10, queue_timeout: float | None = None) -> Scheduler[Fake]:
    return Scheduler(max_queue=max_queue, queue_timeout=queue_timeout)


class Waiters:
    """Calls waiting in a scheduler: what each got, and the depths ``on_wait`` saw."""

    def __init__(self, sched: Scheduler[Fake]) -> None:
        self.sched = sched
        self.got: list[tuple[str, Fake | BaseException]] = []
        self.depths: list[int] = []

    async def wait(self, label: str, **kwargs: Any) -> None:
        try:
            self.got.append((label, await self.sched.checkout(self.depths.append, **kwargs)))
        except Exception as exc:
            self.got.append((label, exc))

    async def start(self, tg: anyio.abc.TaskGroup, *labels: str) -> None:
        """Start one waiting call per label, in order, each queued before the next starts."""
        for label in labels:
            tg.start_soon(self.wait, label)
            await anyio.wait_all_tasks_blocked()


class TestFreeSlots:
    async def test_checkout_takes_free_slots_in_the_order_they_came(self) -> None:
        sched = scheduler()
        a, b = Fake("a"), Fake("b")
        sched.add(a, 1)
        sched.add(b, 1)
        assert (sched.idle, sched.queued, sched.has_idle) == (2, 0, True)
        assert await sched.checkout() is a
        assert await sched.checkout() is b
        assert (sched.idle, sched.has_idle) == (0, False)

    async def test_a_worker_brings_one_slot_per_concurrent_call(self) -> None:
        sched = scheduler()
        a = Fake("a")
        sched.add(a, 3)
        assert sched.idle == 3
        assert [await sched.checkout() for _ in range(3)] == [a, a, a]
        assert sched.idle == 0

    async def test_a_returned_slot_goes_behind_the_free_ones(self) -> None:
        sched = scheduler()
        a, b = Fake("a"), Fake("b")
        sched.add(a, 1)
        sched.add(b, 1)
        taken = await sched.checkout()
        sched.checkin(taken)
        assert [await sched.checkout(), await sched.checkout()] == [b, a]

    async def test_no_on_wait_for_a_call_that_gets_a_slot_at_once(self) -> None:
        sched = scheduler()
        sched.add(Fake("a"), 1)
        depths: list[int] = []
        await sched.checkout(depths.append)
        assert depths == []

    async def test_the_slots_of_an_unusable_worker_are_dropped(self) -> None:
        sched = scheduler()
        dead, alive = Fake("dead"), Fake("alive")
        sched.add(dead, 2)
        sched.add(alive, 1)
        dead.usable = False
        assert sched.idle == 1  # only usable workers' slots count
        assert sched.has_idle
        assert await sched.checkout() is alive  # the dead worker's slots are skipped
        assert (sched.idle, sched.has_idle) == (0, False)  # ...and gone
        sched.checkin(dead)  # a retired worker's slot is not taken back
        sched.add(dead, 1)
        assert (sched.idle, sched.has_idle) == (0, False)


class TestWaiting:
    async def test_waiting_calls_are_served_oldest_first(self) -> None:
        sched = scheduler()
        waiters = Waiters(sched)
        a, b = Fake("a"), Fake("b")
        async with anyio.create_task_group() as tg:
            await waiters.start(tg, "first", "second", "third")
            assert sched.queued == 3
            assert waiters.depths == [1, 2, 3]  # on_wait gets the depth, this call included
            sched.add(a, 1)
            sched.checkin(b)
            await anyio.wait_all_tasks_blocked()
            assert waiters.got == [("first", a), ("second", b)]
            assert sched.queued == 1
            sched.checkin(a)
        assert waiters.got == [("first", a), ("second", b), ("third", a)]
        assert (sched.queued, sched.idle) == (0, 0)  # each slot went to a waiter, none idle

    async def test_a_slot_goes_to_a_waiter_before_the_free_list(self) -> None:
        sched = scheduler()
        waiters = Waiters(sched)
        a = Fake("a")
        async with anyio.create_task_group() as tg:
            await waiters.start(tg, "waiting")
            sched.add(a, 2)  # one slot to the waiter, the other one free
        assert waiters.got == [("waiting", a)]
        assert sched.idle == 1

    async def test_a_waiter_gets_no_slot_of_an_unusable_worker(self) -> None:
        sched = scheduler()
        waiters = Waiters(sched)
        dead, alive = Fake("dead", usable=False), Fake("alive")
        async with anyio.create_task_group() as tg:
            await waiters.start(tg, "waiting")
            sched.checkin(dead)
            await anyio.wait_all_tasks_blocked()
            assert waiters.got == []
            assert sched.queued == 1
            sched.checkin(alive)
        assert waiters.got == [("waiting", alive)]


class TestCancellation:
    async def test_a_cancelled_waiter_leaves_the_queue_and_its_turn_passes_on(self) -> None:
        sched = scheduler()
        waiters = Waiters(sched)
        a = Fake("a")
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()
            tg.start_soon(self._wait_in, scope, waiters, "cancelled")
            await anyio.wait_all_tasks_blocked()
            await waiters.start(tg, "next")
            assert sched.queued == 2
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert sched.queued == 1
            sched.checkin(a)
        assert waiters.got == [("next", a)]
        assert (sched.queued, sched.idle) == (0, 0)

    async def test_a_waiter_cancelled_once_the_slot_is_handed_over_gives_it_back(self) -> None:
        # asyncio's own cancellation (asyncio.timeout, task.cancel) can land between the
        # hand-over and the waiter's wake-up: the slot must go back, not with the task.
        sched = scheduler()
        a = Fake("a")
        task = asyncio.ensure_future(sched.checkout())
        await anyio.wait_all_tasks_blocked()
        assert sched.queued == 1
        sched.checkin(a)  # handed to the waiter, which has not run yet...
        task.cancel()  # ...and is cancelled before it does
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (sched.queued, sched.idle) == (0, 1)  # the slot is free again, not lost
        assert await sched.checkout() is a

    async def test_many_cancelled_waiters_leak_no_slot(self) -> None:
        sched = scheduler(max_queue=100)
        waiters = Waiters(sched)
        a = Fake("a")
        async with anyio.create_task_group() as tg:
            scopes = [anyio.CancelScope() for _ in range(20)]
            for i, scope in enumerate(scopes):
                tg.start_soon(self._wait_in, scope, waiters, f"w{i}")
            await anyio.wait_all_tasks_blocked()
            assert sched.queued == 20
            for scope in scopes[::2]:
                scope.cancel()
            sched.add(a, 1)  # to the first waiter still there
            for scope in scopes[1::2]:
                scope.cancel()  # that one too, right after its hand-over
        # The one slot is either with the call that got it before its cancellation
        # reached it, or free again: never lost with a cancelled waiter.
        assert waiters.got in ([], [("w1", a)])
        assert len(waiters.got) + sched.idle == 1
        assert sched.queued == 0

    @staticmethod
    async def _wait_in(scope: anyio.CancelScope, waiters: Waiters, label: str) -> None:
        with scope:
            await waiters.wait(label)


class TestLimits:
    async def test_a_full_queue_refuses_at_once_without_on_wait(self) -> None:
        sched = scheduler(max_queue=2)
        waiters = Waiters(sched)
        async with anyio.create_task_group() as tg:
            await waiters.start(tg, "first", "second")
            depths: list[int] = []
            with pytest.raises(QueueFull, match=r"\b2\b"):
                await sched.checkout(depths.append)
            assert depths == []
            assert sched.queued == 2  # the refused call did not queue
            sched.add(Fake("a"), 2)

    async def test_max_queue_zero_refuses_every_call_that_would_wait(self) -> None:
        sched = scheduler(max_queue=0)
        a = Fake("a")
        with pytest.raises(QueueFull):
            await sched.checkout()
        sched.add(a, 1)
        assert await sched.checkout() is a  # a free slot needs no queue

    async def test_queue_timeout(self) -> None:
        sched = scheduler(queue_timeout=0)
        depths: list[int] = []
        with pytest.raises(QueueTimeout, match=r"within 0s") as info:
            await sched.checkout(depths.append)
        assert isinstance(info.value, TimeoutError)
        assert depths == [1]  # it did wait
        assert sched.queued == 0  # and left the queue
        a = Fake("a")
        sched.checkin(a)
        assert sched.idle == 1  # the next slot is free, not handed to the gone waiter

    async def test_the_calls_own_deadline_ends_the_wait_when_it_comes_first(self) -> None:
        sched = scheduler(queue_timeout=60)
        with pytest.raises(QueueTimeout, match=r"left of the call's timeout"):
            await sched.checkout(deadline=anyio.current_time())
        assert sched.queued == 0

    async def test_queue_timeout_ends_the_wait_when_it_comes_first(self) -> None:
        sched = scheduler(queue_timeout=0)
        with pytest.raises(QueueTimeout, match=r"within 0s"):
            await sched.checkout(deadline=anyio.current_time() + 60)

    async def test_a_deadline_alone_bounds_the_wait(self) -> None:
        sched = scheduler(queue_timeout=None)
        with pytest.raises(QueueTimeout, match=r"left of the call's timeout"):
            await sched.checkout(deadline=anyio.current_time())
        assert sched.queued == 0

    async def test_a_slot_in_time_beats_the_timeout(self) -> None:
        sched = scheduler(queue_timeout=60)
        waiters = Waiters(sched)
        a = Fake("a")
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: waiters.wait("waiting", deadline=anyio.current_time() + 60))
            await anyio.wait_all_tasks_blocked()
            sched.checkin(a)
        assert waiters.got == [("waiting", a)]


class TestClose:
    @pytest.mark.parametrize(
        ("error", "expected"),
        [
            pytest.param(None, PoolClosed, id="stopped"),
            pytest.param(PoolError("the pool is degraded"), PoolError, id="own-error"),
        ],
    )
    async def test_close_fails_waiting_and_new_calls_and_drops_free_slots(
        self, error: PoolError | None, expected: type[Exception]
    ) -> None:
        sched = scheduler()
        waiters = Waiters(sched)
        async with anyio.create_task_group() as tg:
            await waiters.start(tg, "first", "second")
            sched.close(error)
        assert [label for label, _ in waiters.got] == ["first", "second"]
        assert all(isinstance(got, expected) for _, got in waiters.got)
        if error is not None:
            assert all(got is error for _, got in waiters.got)
        assert sched.queued == 0
        with pytest.raises(expected):
            await sched.checkout()
        sched.add(Fake("late"), 1)
        with pytest.raises(expected):  # a slot offered after the close does not reopen it
            await sched.checkout()

    async def test_close_drops_the_free_slots(self) -> None:
        sched = scheduler()
        sched.add(Fake("a"), 2)
        sched.close()
        assert (sched.idle, sched.has_idle) == (0, False)

    async def test_reopen_takes_calls_again(self) -> None:
        sched = scheduler()
        sched.add(Fake("a"), 1)
        sched.close()
        sched.reopen()
        b = Fake("b")
        sched.add(b, 1)
        assert await sched.checkout() is b  # the slot from before the close is gone


def busy_worker(sched: Scheduler[Fake]) -> Fake:
    """A worker of one slot, added to ``sched`` and taken."""
    worker = Fake("a")
    sched.add(worker, 1)
    assert sched.try_take(worker)
    return worker


async def wait_pinned(sched: Scheduler[Fake], worker: Fake, errors: list[BaseException]) -> None:
    """Wait for a slot of ``worker``; what refuses it goes to ``errors``."""
    try:
        await sched.checkout_pinned(worker)
    except PoolError as exc:  # PinnedWorkerGone too
        errors.append(exc)


class TestPinned:
    """A session's calls: a slot of one given worker (``try_take``, ``checkout_pinned``), O(1)."""

    async def test_try_take_takes_only_that_workers_free_slot(self) -> None:
        sched = scheduler()
        a, b = Fake("a"), Fake("b")
        sched.add(a, 1)
        sched.add(b, 1)
        assert sched.try_take(b)
        assert not sched.try_take(b)  # its one slot is taken
        assert (sched.idle, sched.free_slots(a), sched.free_slots(b)) == (1, 1, 0)
        # The unpinned checkout skips b's stale entry and finds a's slot; then none is left.
        assert await sched.checkout() is a
        assert (sched.idle, sched.has_idle) == (0, False)

    async def test_an_unpinned_checkout_skips_the_entries_a_pinned_one_took(self) -> None:
        sched = scheduler(queue_timeout=0)
        a = Fake("a")
        sched.add(a, 2)
        assert sched.try_take(a)
        assert sched.try_take(a)
        with pytest.raises(QueueTimeout):
            await sched.checkout()  # two entries of a in the free list, both stale
        sched.checkin(a)
        assert await sched.checkout() is a

    async def test_pinned_only_traffic_keeps_the_free_list_bounded(self) -> None:
        sched = scheduler()
        a = Fake("a")
        sched.add(a, 2)
        for _ in range(1000):
            assert sched.try_take(a)
            sched.checkin(a)
        # At most one entry per slot, whatever the traffic.
        assert len(sched._idle) == 2
        assert sched.free_slots(a) == 2

    async def test_a_checked_in_slot_goes_to_the_calls_waiting_for_that_worker_first(
        self,
    ) -> None:
        sched = scheduler()
        a = busy_worker(sched)
        got: list[str] = []

        async def pinned(label: str) -> None:
            assert await sched.checkout_pinned(a) is a
            got.append(label)

        async def anyone(label: str) -> None:
            await sched.checkout()
            got.append(label)

        async with anyio.create_task_group() as tg:
            tg.start_soon(anyone, "any")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(pinned, "p1")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(pinned, "p2")
            await anyio.wait_all_tasks_blocked()
            assert sched.queued == 3
            for _ in range(3):
                sched.checkin(a)
                await anyio.wait_all_tasks_blocked()
        assert got == ["p1", "p2", "any"]  # the pinned ones in order, then the older unpinned

    async def test_a_slot_of_another_worker_does_not_serve_a_pinned_waiter(self) -> None:
        sched = scheduler()
        a, b = Fake("a"), Fake("b")
        sched.add(a, 1)
        assert sched.try_take(a)
        waiters: list[Fake] = []

        async def pinned() -> None:
            waiters.append(await sched.checkout_pinned(a))

        async with anyio.create_task_group() as tg:
            tg.start_soon(pinned)
            await anyio.wait_all_tasks_blocked()
            sched.add(b, 1)  # a slot of b: free, not for the waiter
            await anyio.wait_all_tasks_blocked()
            assert waiters == []
            assert sched.free_slots(b) == 1
            sched.checkin(a)
        assert waiters == [a]

    async def test_lost_fails_the_calls_waiting_for_that_worker(self) -> None:
        sched = scheduler()
        a = busy_worker(sched)
        errors: list[BaseException] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_pinned, sched, a, errors)
            await anyio.wait_all_tasks_blocked()
            a.usable = False
            sched.lost(a, "its process exited with code 1")
        assert [(type(e), str(e)) for e in errors] == [
            (PinnedWorkerGone, "its process exited with code 1")
        ]
        assert sched.queued == 0
        with pytest.raises(PinnedWorkerGone):
            await sched.checkout_pinned(a)  # gone before the call: at once

    async def test_pinned_waiters_count_towards_max_queue_and_time_out(self) -> None:
        sched = scheduler(max_queue=1, queue_timeout=0)
        a = Fake("a")
        sched.add(a, 1)
        assert sched.try_take(a)
        with pytest.raises(QueueTimeout):
            await sched.checkout_pinned(a)
        assert sched.queued == 0  # nothing left behind
        assert not sched._pinned
        sched2 = scheduler(max_queue=1)
        sched2.add(a, 1)
        assert sched2.try_take(a)
        async with anyio.create_task_group() as tg:
            tg.start_soon(sched2.checkout_pinned, a)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(QueueFull):
                await sched2.checkout()
            with pytest.raises(QueueFull):
                await sched2.checkout_pinned(a)
            sched2.checkin(a)

    async def test_a_cancelled_pinned_waiter_passes_its_turn_on(self) -> None:
        sched = scheduler()
        a = busy_worker(sched)
        got: list[str] = []
        scopes: dict[str, anyio.CancelScope] = {}

        async def pinned(label: str) -> None:
            with anyio.CancelScope() as scopes[label]:
                await sched.checkout_pinned(a)
                got.append(label)

        async with anyio.create_task_group() as tg:
            tg.start_soon(pinned, "first")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(pinned, "second")
            await anyio.wait_all_tasks_blocked()
            scopes["first"].cancel()
            await anyio.wait_all_tasks_blocked()
            assert sched.queued == 1
            sched.checkin(a)
        assert got == ["second"]
        assert not sched._pinned

    async def test_close_fails_pinned_waiters(self) -> None:
        sched = scheduler()
        a = busy_worker(sched)
        errors: list[BaseException] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_pinned, sched, a, errors)
            await anyio.wait_all_tasks_blocked()
            sched.close()
        assert [type(e) for e in errors] == [PoolClosed]
        with pytest.raises(PoolClosed):
            sched.try_take(a)


class TestAhead:
    """Slots ahead (``prefetch``): calls sent to busy workers once no slot is free."""

    @staticmethod
    def ahead(prefetch: int = 2, **kwargs: Any) -> Scheduler[Fake]:
        return Scheduler(max_queue=10, queue_timeout=None, prefetch=prefetch, **kwargs)

    async def test_free_slots_go_first_then_the_ahead_ones_then_calls_wait(self) -> None:
        sched = self.ahead(prefetch=2)
        a, b = Fake("a"), Fake("b")
        sched.add(a, 1)
        sched.add(b, 1)
        assert sched.idle == 2
        # one call on each worker before any is sent ahead
        assert {(await sched.checkout()).name for _ in range(2)} == {"a", "b"}
        assert sched.idle == 0
        taken = [(await sched.checkout()).name for _ in range(4)]
        assert sorted(taken) == ["a", "a", "b", "b"]  # prefetch 2 each
        assert sched.busy == {a: 3, b: 3}
        waiters = Waiters(sched)
        async with anyio.create_task_group() as tg:
            await waiters.start(tg, "w")
            assert sched.queued == 1
            sched.checkin(a)  # a call of a ended: its slot goes to the waiting call
        assert waiters.got == [("w", a)]
        assert sched.busy == {a: 3, b: 3}

    async def test_a_slot_given_back_is_free_once_the_worker_is_under_its_slots(self) -> None:
        sched = self.ahead(prefetch=1)
        a = Fake("a")
        sched.add(a, 2)
        for _ in range(3):
            assert await sched.checkout() is a
        assert (sched.idle, sched.busy[a]) == (0, 3)
        sched.checkin(a)  # 2 in flight: as many as its slots, the freed one is ahead
        assert (sched.idle, sched.busy[a]) == (0, 2)
        sched.checkin(a)  # 1 in flight: a free slot
        assert (sched.idle, sched.busy[a]) == (1, 1)
        sched.checkin(a)
        assert (sched.idle, sched.busy[a]) == (2, 0)
        for _ in range(3):  # and round again: two free, one ahead
            assert await sched.checkout() is a
        assert sched.busy[a] == 3

    async def test_a_call_that_must_not_go_ahead_waits(self) -> None:
        sched = self.ahead(prefetch=1)
        a = Fake("a")
        sched.add(a, 1)
        assert await sched.checkout() is a
        waiters = Waiters(sched)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: waiters.wait("session", ahead=False))
            await anyio.wait_all_tasks_blocked()
            assert sched.queued == 1  # it waits, though a slot ahead is there
            assert await sched.checkout() is a  # that one is taken by an unpinned call
            sched.checkin(a)  # the first ends; the one ahead runs: still busy
            await anyio.wait_all_tasks_blocked()
            assert waiters.got == []
            sched.checkin(a)  # a free slot
        assert waiters.got == [("session", a)]

    async def test_pinned_calls_take_free_slots_only(self) -> None:
        sched = self.ahead(prefetch=3)
        a = Fake("a")
        sched.add(a, 1)
        assert sched.try_take(a)
        assert not sched.try_take(a)  # busy: a pinned call never goes ahead

    async def test_a_worker_that_left_service_takes_nothing_ahead(self) -> None:
        sched = self.ahead(prefetch=2)
        a, b = Fake("a"), Fake("b")
        sched.add(a, 1)
        sched.add(b, 1)
        assert {(await sched.checkout()).name for _ in range(2)} == {"a", "b"}
        a.usable = False
        sched.lost(a, "gone")
        assert [(await sched.checkout()).name for _ in range(2)] == ["b", "b"]
        assert sched.busy == {b: 3}

    async def test_without_prefetch_nothing_goes_ahead(self) -> None:
        sched = self.ahead(prefetch=0)
        a = Fake("a")
        sched.add(a, 1)
        assert await sched.checkout() is a
        with pytest.raises(QueueTimeout):
            await sched.checkout(deadline=0.0)

    async def test_a_slot_ahead_goes_only_to_a_call_that_may_go_ahead(self) -> None:
        # Found by a review: a slot given back while its worker was still busy
        # went to the oldest waiting call, one that waits for a free slot
        # (sent again after a crash, a session's) or a pinned one: it was
        # sent ahead all the same.
        sched = self.ahead(prefetch=1)
        a = Fake("a")
        sched.add(a, 1)
        assert await sched.checkout() is a
        assert await sched.checkout() is a  # ahead: busy 2
        waiters = Waiters(sched)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: waiters.wait("free-only", ahead=False))
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(lambda: waiters.wait("any"))
            await anyio.wait_all_tasks_blocked()
            pinned: list[Fake] = []

            async def pin() -> None:
                pinned.append(await sched.checkout_pinned(a))

            tg.start_soon(pin)
            await anyio.wait_all_tasks_blocked()
            sched.checkin(a)  # the running call ended; the one ahead runs: busy stays 2
            await anyio.wait_all_tasks_blocked()
            assert waiters.got == [("any", a)]  # not the older free-only one
            assert (pinned, sched.busy) == ([], {a: 2})
            sched.checkin(a)  # still busy (1 = its slots): a slot ahead, nobody takes it
            await anyio.wait_all_tasks_blocked()
            assert (waiters.got, pinned, sched.busy) == ([("any", a)], [], {a: 1})
            sched.checkin(a)  # a free slot: the pinned call first
            await anyio.wait_all_tasks_blocked()
            assert (waiters.got, pinned, sched.busy) == ([("any", a)], [a], {a: 1})
            sched.checkin(a)  # and the next free one: the call that waits for one
            await anyio.wait_all_tasks_blocked()
            assert waiters.got == [("any", a), ("free-only", a)]
            assert sched.busy == {a: 1}

    async def test_a_worker_sent_no_call_ahead_serves_its_free_slots_only(self) -> None:
        # A worker being recycled (for its age or memory): its calls ahead are
        # withdrawn, and none follows them; its ahead slots are dropped as
        # they come back, its free ones still serve.
        sched = self.ahead(prefetch=2)
        a = Fake("a")
        sched.add(a, 1)
        assert [await sched.checkout() for _ in range(3)] == [a, a, a]  # 1 free, 2 ahead
        sched.stop_ahead(a)
        sched.checkin(a)  # an ahead slot back: dropped, nobody waits
        waiters = Waiters(sched)
        async with anyio.create_task_group() as tg:
            await waiters.start(tg, "w")
            assert sched.queued == 1  # not sent ahead to it
            sched.checkin(a)  # another ahead slot back: still not for the waiting call
            await anyio.wait_all_tasks_blocked()
            assert (waiters.got, sched.busy) == ([], {a: 1})
            sched.checkin(a)  # its free slot: the waiting call takes it
        assert waiters.got == [("w", a)]
        assert sched.busy == {a: 1}
        with pytest.raises(QueueTimeout):
            await sched.checkout(deadline=0.0)  # nothing ahead, ever


class TestBudget:
    """A worker's budget of calls (``max_requests_per_worker``): exact, prefetch included."""

    async def test_a_worker_is_handed_no_more_calls_than_its_budget(self) -> None:
        exhausted: list[Fake] = []

        def exhaust(worker: Fake) -> None:
            exhausted.append(worker)
            worker.usable = False  # as WorkerServer.exhaust makes it

        sched = Scheduler(max_queue=10, queue_timeout=None, prefetch=4, on_exhausted=exhaust)
        a, b = Fake("a"), Fake("b")
        sched.add(a, 1, budget=3)
        sched.add(b, 1)
        taken = [await sched.checkout() for _ in range(8)]
        assert taken.count(a) == 3  # its free slot, then two ahead: its budget
        assert taken.count(b) == 5  # its free slot and 4 ahead
        assert exhausted == [a]
        with pytest.raises(QueueTimeout):
            await sched.checkout(deadline=0.0)  # a has room ahead, but no budget

    async def test_a_slot_handed_to_a_waiting_call_counts(self) -> None:
        exhausted: list[Fake] = []
        sched = Scheduler(max_queue=10, queue_timeout=None, on_exhausted=exhausted.append)
        a = Fake("a")
        sched.add(a, 1, budget=2)
        assert await sched.checkout() is a
        waiters = Waiters(sched)
        async with anyio.create_task_group() as tg:
            await waiters.start(tg, "w")
            sched.checkin(a)  # to the waiting call: its second, the last
            assert exhausted == [a]
        assert waiters.got == [("w", a)]
