"""The pool's worker registry: ``Pool.workers()``, one WorkerInfo per slot.

Ids, generations (a replacement of a slot counts up), readiness, calls in
flight; replacements after a timeout or a kill, and workers gone after a
scale-down. In-process workers (InProcessLauncher); no timers.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from snakepit.errors import ExecutionTimeout
from snakepit.pool import RequestStopped, WorkerExited, WorkerInfo, WorkerReady, WorkerStarting

from ._adapters import WAIT, Control
from ._helpers import hold_a_slot, next_event, worker_ref, workers_supervisor
from .conftest import MakePool, Subscribe

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio


async def test_one_info_per_slot_at_start(make_pool: MakePool) -> None:
    async with make_pool(size=3) as pool:
        assert pool.workers() == [
            WorkerInfo(worker_id=f"w{i}", pid=None, generation=0, ready=True, in_flight=0)
            for i in range(3)
        ]  # pid None: in-process workers have no process of their own
        ids = [w.worker_id for w in pool.workers()]
        assert [c.id for c in workers_supervisor(pool).which_children()] == ids


async def test_in_flight_counts_the_calls_running_on_a_worker(
    make_pool: MakePool, subscribe: Subscribe, control: Control
) -> None:
    async with make_pool(size=2, max_concurrency=2) as pool:
        events = subscribe(pool)
        async with anyio.create_task_group() as tg:
            first, started = await hold_a_slot(tg, pool, events, control)
            in_flight = {w.worker_id: w.in_flight for w in pool.workers()}
            assert in_flight[started.worker_id] == 1
            assert sum(in_flight.values()) == 1
            second, _ = await hold_a_slot(tg, pool, events, control)
            assert sum(w.in_flight for w in pool.workers()) == 2
            first.cancel()
            second.cancel()
        for _ in range(2):  # in flight until the worker reports the call ended
            await next_event(events, RequestStopped, lambda e: e.outcome == "cancelled")
        assert [w.in_flight for w in pool.workers()] == [0, 0]


async def test_a_timed_out_worker_is_replaced_by_the_next_generation(
    make_pool: MakePool, subscribe: Subscribe
) -> None:
    async with make_pool(size=2) as pool:
        events = subscribe(pool)
        with pytest.raises(ExecutionTimeout):
            await pool.execute("stuck", timeout=0.05)
        await next_event(events, WorkerReady, lambda e: e.generation == 1)
        workers = pool.workers()
        assert [w.worker_id for w in workers] == ["w0", "w1"]  # the slot keeps its id
        assert sorted(w.generation for w in workers) == [0, 1]
        assert all(w.ready and w.in_flight == 0 for w in workers)


async def test_a_killed_worker_is_replaced_each_time(make_pool: MakePool) -> None:
    async with make_pool(size=2) as pool:
        for generation in (1, 2, 3):
            await worker_ref(pool, "w1").kill()
            await pool.wait_ready(timeout=WAIT)
            assert pool.workers() == [
                WorkerInfo("w0", None, 0, True, 0),
                WorkerInfo("w1", None, generation, True, 0),
            ]
        assert pool.stats().restarts == 3
        assert await pool.execute("ping") == {"status": "pong"}


async def test_a_slot_shows_not_ready_until_its_replacement_is(
    make_pool: MakePool, subscribe: Subscribe, control: Control
) -> None:
    async with make_pool(size=2) as pool:
        events = subscribe(pool)
        gate = control.hold_from_now_on()  # the replacement's setup waits
        await worker_ref(pool, "w0").kill()
        await next_event(events, WorkerStarting, lambda e: e.generation == 1)
        assert pool.workers() == [
            WorkerInfo("w0", None, 0, False, 0),  # the dead one, out of service
            WorkerInfo("w1", None, 0, True, 0),
        ]
        assert (pool.stats().ready, pool.stats().idle) == (1, 1)
        assert await pool.execute("ping") == {"status": "pong"}  # w1 serves meanwhile
        gate.set()
        ready = await next_event(events, WorkerReady)
        assert (ready.worker_id, ready.generation) == ("w0", 1)
        assert pool.workers()[0] == WorkerInfo("w0", None, 1, True, 0)
        assert pool.stats().ready == 2


async def test_stopped_workers_disappear_after_a_scale_down(make_pool: MakePool) -> None:
    async with make_pool(size=4) as pool:
        before = {w.worker_id for w in pool.workers()}
        await pool.scale(2)
        after = [w.worker_id for w in pool.workers()]
        assert len(after) == 2
        assert set(after) < before
        assert [c.id for c in workers_supervisor(pool).which_children()] == after
        await pool.scale(1)
        (left,) = pool.workers()
        assert left.worker_id in after
        assert workers_supervisor(pool).count_children().active == 1


async def test_ids_are_unique_and_never_reused(make_pool: MakePool) -> None:
    async with make_pool(size=2) as pool:
        seen = {w.worker_id for w in pool.workers()}
        for size in (4, 1, 3, 2, 5):
            before = {w.worker_id for w in pool.workers()}
            await pool.scale(size)
            ids = [w.worker_id for w in pool.workers()]
            assert len(ids) == len(set(ids)) == size
            added = set(ids) - before
            assert not added & seen  # a new worker gets an id never used before
            seen |= added
        await worker_ref(pool, pool.workers()[0].worker_id).kill()
        await pool.wait_ready(timeout=WAIT)
        ids = [w.worker_id for w in pool.workers()]
        assert len(ids) == len(set(ids)) == 5  # a replacement keeps its slot's id


async def test_recycled_workers_get_new_ids(make_pool: MakePool, subscribe: Subscribe) -> None:
    pool = make_pool(size=1, max_requests_per_worker=1)
    events = subscribe(pool)
    async with pool:
        assert [w.worker_id for w in pool.workers()] == ["w0"]
        for old, new in (("w0", "w1"), ("w1", "w2")):
            # Its one call: it takes no more, its replacement starts at once and
            # it exits once that call ended (the two events in either order).
            # (On a loaded machine the call may not have started on the old
            # one when its replacement is ready: it is withdrawn and runs on
            # the new one, which is then full in turn.)
            await pool.execute("ping")
            await _exited_and_ready(events, old, new)
            (info,) = pool.workers()
            assert (info.worker_id, info.generation) == (new, 0)  # a new slot
            if not info.ready:
                await _exited_and_ready(events, new, f"w{int(new[1:]) + 1}")
                return  # (ids went on: w0, w1, w2)


async def _exited_and_ready(events: Any, old: str, new: str) -> None:
    waiting = {("exited", old), ("ready", new)}
    while waiting:
        event = await next_event(
            events, object, lambda e: isinstance(e, (WorkerExited, WorkerReady))
        )
        assert isinstance(event, (WorkerExited, WorkerReady))
        waiting.discard(("exited" if isinstance(event, WorkerExited) else "ready", event.worker_id))


async def test_scaling_down_during_a_restart_keeps_the_size(
    make_pool: MakePool, subscribe: Subscribe, control: Control
) -> None:
    async with make_pool(size=2) as pool:
        events = subscribe(pool)
        gate = control.hold_from_now_on()
        await worker_ref(pool, "w0").kill()
        await next_event(events, WorkerStarting, lambda e: e.generation == 1)
        await pool.scale(1)  # returns when the pool has shrunk
        try:
            assert workers_supervisor(pool).count_children().active == 1
        finally:
            gate.set()
        # (Today: the restarted w0 comes up next to w1; stats().ready == 2, size == 1.)
