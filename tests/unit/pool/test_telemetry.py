"""Pool.subscribe(): the pool's telemetry, as streams of events.

Workers starting, ready, failing, exiting, recycled; each call queued,
started and stopped with its outcome; the pool giving up; the stream's own
lifetime (it ends with the pool; a closed one is dropped). In-process
workers (InProcessLauncher); every wait is on an event.
"""

from __future__ import annotations

import gc
import math
import warnings
from typing import Any

import anyio
import pytest

from snakepit.errors import (
    ExecutionTimeout,
    PoolStartError,
    QueueFull,
    RemoteError,
    WorkerCrashed,
    WorkerStartError,
)
from snakepit.pool import (
    PoolEvent,
    PoolGaveUp,
    RequestQueued,
    RequestStarted,
    RequestStopped,
    WorkerExited,
    WorkerReady,
    WorkerRecycled,
    WorkerStartFailed,
    WorkerStarting,
)

from ._adapters import WAIT, Control
from ._helpers import (
    events_until,
    hold_a_slot,
    next_event,
    pending,
    queue_a_call,
    rest_of,
    worker_ref,
)
from .conftest import MakePool, Subscribe

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio


def of(kind: type[Any], events: list[Any]) -> list[Any]:
    """The events of ``kind``, in order."""
    return [e for e in events if isinstance(e, kind)]


class TestWorkerEvents:
    async def test_each_worker_is_starting_then_ready(
        self, make_pool: MakePool, subscribe: Subscribe
    ) -> None:
        pool = make_pool(size=3)
        events = subscribe(pool)  # before entering: the start is seen
        async with pool:
            seen = pending(events)
        starting = {e.worker_id: e for e in of(WorkerStarting, seen)}
        ready = {e.worker_id: e for e in of(WorkerReady, seen)}
        assert sorted(starting) == sorted(ready) == ["w0", "w1", "w2"]
        assert len(seen) == 6
        for worker_id, event in ready.items():
            assert (event.pid, event.generation, starting[worker_id].generation) == (None, 0, 0)
            assert seen.index(starting[worker_id]) < seen.index(event)
            assert event.startup == pytest.approx(event.at - starting[worker_id].at)
        assert [e.at for e in seen] == sorted(e.at for e in seen)

    async def test_a_timeout_is_no_crash_it_has_its_reason_then_a_replacement(
        self, make_pool: MakePool, subscribe: Subscribe
    ) -> None:
        async with make_pool(size=1) as pool:
            events = subscribe(pool)
            with pytest.raises(ExecutionTimeout):
                await pool.execute("stuck", timeout=0.05)
            exited = await next_event(events, WorkerExited)
            assert (exited.worker_id, exited.generation, exited.pid) == ("w0", 0, None)
            assert (exited.crashed, exited.cause) == (False, "timeout")  # the pool's decision
            assert exited.reason == "a call to 'stuck' timed out and did not end within 0.25s"
            assert exited.returncode is not None
            assert exited.returncode < 0  # killed
            starting = await next_event(events, WorkerStarting)
            assert (starting.worker_id, starting.generation) == ("w0", 1)
            ready = await next_event(events, WorkerReady)
            assert (ready.worker_id, ready.generation) == ("w0", 1)

    async def test_shutdown_exits_are_no_crashes(
        self, make_pool: MakePool, subscribe: Subscribe
    ) -> None:
        async with make_pool(size=2) as pool:
            events = subscribe(pool)
            await pool.execute("ping")
            pending(events)
        rest = await rest_of(events)  # it returns: the stream ended with the pool
        assert sorted(e.worker_id for e in rest) == ["w0", "w1"]
        for event in rest:
            assert isinstance(event, WorkerExited)
            assert (event.crashed, event.reason, event.returncode) == (
                False,
                "stopped by the pool",
                0,
            )

    async def test_a_recycled_worker_is_replaced_before_it_stops(
        self, make_pool: MakePool, subscribe: Subscribe
    ) -> None:
        async with make_pool(size=1, max_requests_per_worker=2) as pool:
            events = subscribe(pool)
            await pool.execute("ping")
            await pool.execute("ping")  # its second call: w0 is recycled
            log = await events_until(events, WorkerExited)
        (ready,) = of(WorkerReady, log)
        (recycled,) = of(WorkerRecycled, log)
        (exited,) = of(WorkerExited, log)
        assert (ready.worker_id, recycled.worker_id, exited.worker_id) == ("w1", "w0", "w0")
        assert log.index(ready) < log.index(recycled) < log.index(exited)
        assert recycled.reason == "it was sent 2 calls (max_requests_per_worker=2)"
        assert (exited.crashed, exited.reason) == (False, "stopped by the pool")

    async def test_a_failed_start_is_reported_and_the_stream_ends(
        self, make_pool: MakePool, subscribe: Subscribe
    ) -> None:
        pool = make_pool("tests.unit.pool._adapters:BadSetup", size=1)
        events = subscribe(pool)
        with pytest.raises(PoolStartError):
            async with pool:
                pytest.fail("the pool started")
        seen = await rest_of(events)
        assert isinstance(seen[0], WorkerStarting)
        failed = seen[1]
        assert isinstance(failed, WorkerStartFailed)
        assert (failed.worker_id, failed.generation) == ("w0", 0)
        assert isinstance(failed.error, WorkerStartError)
        assert "the model file is missing" in str(failed.error)
        assert of(WorkerReady, seen) == []

    async def test_the_pool_giving_up(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control
    ) -> None:
        async with make_pool(size=1, max_restarts=1, max_seconds=600) as pool:
            events = subscribe(pool)
            control.fail_from_now_on()
            await worker_ref(pool, "w0").kill()
            log = await events_until(events, PoolGaveUp)
            gave_up = log[-1]
            assert "restart intensity reached (more than 1 restarts in 600s)" in gave_up.reason
            assert "setup #2 failed on purpose" in gave_up.reason  # the last start failure
            (failed,) = of(WorkerStartFailed, log)
            assert (failed.worker_id, failed.generation) == ("w0", 1)
            assert pool.stats().degraded is not None
        assert await rest_of(events) == []  # and then the stream ends


class TestRequestEvents:
    async def test_each_call_starts_and_stops_with_its_outcome(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control
    ) -> None:
        async with make_pool(size=1) as pool:
            events = subscribe(pool)  # read by the helpers
            everything = subscribe(pool)
            assert await pool.execute("ping") == {"status": "pong"}
            with pytest.raises(RemoteError):
                await pool.execute("fail")
            with pytest.raises(ExecutionTimeout):
                await pool.execute("stuck", timeout=0.05)
            await next_event(events, WorkerReady, lambda e: e.generation == 1)  # its replacement
            async with anyio.create_task_group() as tg:
                holder, _ = await hold_a_slot(tg, pool, events, control)
                holder.cancel()
            # stopped once the worker reports the cancelled call ended: its slot is free
            await next_event(events, RequestStopped, lambda e: e.outcome == "cancelled")
            crashed: list[BaseException] = []
            async with anyio.create_task_group() as tg:

                async def crashes() -> None:
                    with pytest.raises(WorkerCrashed) as info:
                        await pool.execute("block")
                    crashed.append(info.value)

                tg.start_soon(crashes)
                await control.wait_blocked(2)
                await worker_ref(pool, "w0").kill()
            assert len(crashed) == 1
            log = pending(everything)

        started = of(RequestStarted, log)
        stopped = of(RequestStopped, log)
        assert [e.tool for e in started] == ["ping", "fail", "stuck", "block", "block"]
        assert [e.outcome for e in stopped] == ["ok", "error", "timeout", "cancelled", "crashed"]
        ids = [e.request_id for e in started]
        assert ids == sorted(set(ids))  # increasing
        assert [e.request_id for e in stopped] == ids
        for begin, end in zip(started, stopped, strict=True):
            assert begin.worker_id == end.worker_id == "w0"
            assert begin.waited >= 0
            assert end.duration == pytest.approx(end.at - begin.at)
            assert log.index(begin) < log.index(end)
        assert stopped[2].duration >= 0.01  # the timeout
        assert of(RequestQueued, log) == []  # a free slot every time

    async def test_calls_queue_with_their_depth(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control
    ) -> None:
        async with make_pool(size=1, prefetch=0) as pool:
            events = subscribe(pool)
            results: list[Any] = []
            async with anyio.create_task_group() as tg:
                holder, blocking = await hold_a_slot(tg, pool, events, control)
                queued = [(await queue_a_call(tg, pool, events, i, results))[1] for i in range(3)]
                assert [q.queue_depth for q in queued] == [1, 2, 3]
                assert [q.tool for q in queued] == ["echo"] * 3
                ids = [q.request_id for q in queued]
                assert blocking.request_id < ids[0] < ids[1] < ids[2]
                holder.cancel()
            assert results == [0, 1, 2]
            started = {e.request_id: e for e in of(RequestStarted, pending(events))}
            for q in queued:
                assert started[q.request_id].waited > 0
                assert started[q.request_id].at >= q.at

    async def test_a_call_refused_by_a_full_queue_is_not_queued(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control
    ) -> None:
        async with make_pool(size=1, max_queue=1, prefetch=0) as pool:
            events = subscribe(pool)
            results: list[Any] = []
            async with anyio.create_task_group() as tg:
                holder, _ = await hold_a_slot(tg, pool, events, control)
                await queue_a_call(tg, pool, events, 1, results)
                with pytest.raises(QueueFull):
                    await pool.execute("ping")
                queued = of(RequestQueued, pending(events))
                holder.cancel()
            assert queued == []  # today: [RequestQueued(queue_depth=2)] for the refused call


class TestStreams:
    async def test_the_stream_ends_when_the_pool_stops(
        self, make_pool: MakePool, subscribe: Subscribe
    ) -> None:
        pool = make_pool(size=2)
        events = subscribe(pool)
        seen: list[PoolEvent] = []

        async def read() -> None:
            async for event in events:
                seen.append(event)

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                async with pool:
                    await pool.execute("ping")
            # the reader's loop ended: the task group could exit
        assert [type(e) for e in seen[-2:]] == [WorkerExited, WorkerExited]
        assert len(of(RequestStopped, seen)) == 1

    async def test_subscribing_to_a_stopped_pool_gives_an_ended_stream(
        self, make_pool: MakePool, subscribe: Subscribe
    ) -> None:
        pool = make_pool(size=1)
        async with pool:
            pass
        assert await rest_of(subscribe(pool)) == []

    # The dropped send end is not closed (ResourceWarning): see TestKnownBugs.
    @pytest.mark.filterwarnings("ignore:Unclosed <MemoryObjectSendStream:ResourceWarning")
    async def test_a_closed_subscriber_is_dropped(
        self, make_pool: MakePool, subscribe: Subscribe
    ) -> None:
        pool = make_pool(size=2)
        gone = subscribe(pool)
        kept = subscribe(pool)
        gone.close()  # before the pool even starts
        async with pool:
            late = subscribe(pool)
            await pool.execute("ping")
            late.close()  # while the pool runs
            replaced = subscribe(pool)
            with pytest.raises(ExecutionTimeout):
                await pool.execute("stuck", timeout=0.05)
            await next_event(replaced, WorkerReady, lambda e: e.generation == 1)
            assert await pool.execute("ping") == {"status": "pong"}
        gc.collect()  # the dropped streams go here, under this test's filter
        seen = await rest_of(kept)
        assert len(of(WorkerReady, seen)) == 3
        assert [e.outcome for e in of(RequestStopped, seen)] == ["ok", "timeout", "ok"]

    async def test_a_reader_that_never_reads_does_not_slow_the_pool(
        self, make_pool: MakePool, subscribe: Subscribe
    ) -> None:
        async with make_pool(size=2) as pool:
            events = subscribe(pool)  # unbounded: the pool never waits for its reader
            async with anyio.create_task_group() as tg:
                for i in range(100):
                    tg.start_soon(pool.execute, "aecho", {"value": i})
            assert pool.stats().requests == 100
            assert len(of(RequestStopped, pending(events))) == 100

    async def test_without_a_subscriber_everything_works(
        self, make_pool: MakePool, subscribe: Subscribe
    ) -> None:
        async with make_pool(size=2, max_requests_per_worker=3) as pool:
            assert await pool.execute("ping") == {"status": "pong"}
            with pytest.raises(RemoteError):
                await pool.execute("fail")
            with pytest.raises(ExecutionTimeout):
                await pool.execute("hang", timeout=0.01)  # it ends: its worker stays
            await pool.scale(3)
            await pool.scale(2)
            for i in range(10):  # recycling on the way
                assert await pool.execute("echo", {"value": i}) == i
            stats = pool.stats()
            # A call sent ahead to a worker being recycled is handed back
            # unstarted and sent again: each sending counts in requests.
            assert (stats.requests - stats.resent, stats.errors, stats.timeouts) == (13, 1, 1)
            assert stats.recycled >= 1
            # A late subscriber sees what happens from then on, nothing before.
            since = anyio.current_time()
            events = subscribe(pool)
            assert pending(events) == []
            await pool.execute("ping")
            log = await events_until(events, RequestStopped)
            assert all(e.at >= since for e in log)
            requests = [e for e in log if isinstance(e, RequestStarted | RequestStopped)]
            assert [(type(e), e.tool) for e in requests] == [
                (RequestStarted, "ping"),
                (RequestStopped, "ping"),
            ]


class TestKnownBugs:
    async def test_dropping_a_closed_subscriber_warns_nothing(
        self, make_pool: MakePool, subscribe: Subscribe
    ) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            async with make_pool(size=1) as pool:
                subscribe(pool).close()
                assert await pool.execute("ping") == {"status": "pong"}  # publishes: drops it
            gc.collect()
        assert [str(w.message) for w in caught] == []

    async def test_a_killed_worker_exits_as_a_crash(
        self, make_pool: MakePool, subscribe: Subscribe
    ) -> None:
        async with make_pool(size=1) as pool:
            events = subscribe(pool)
            await worker_ref(pool, "w0").kill()
            exited = await next_event(events, WorkerExited)
            await pool.wait_ready(timeout=WAIT)
            assert pool.stats().restarts == 1
            assert exited.crashed
            assert exited.reason != "stopped by the pool"


class TestSubscriptionBound:
    """A subscription nobody reads is bounded (issue #11, defect 10)."""

    async def test_an_unread_subscription_holds_at_most_max_buffer_events(
        self, make_pool: MakePool
    ) -> None:
        async with make_pool(size=1) as pool:
            with pool.subscribe(max_buffer=4) as events:
                for _ in range(10):
                    await pool.execute("ping")  # a RequestStarted and a RequestStopped each
                assert events.statistics().current_buffer_used == 4
                assert pool.stats().events_dropped == 16
                kept = pending(events)  # the oldest four: the stream stops at full
                assert [type(e) for e in kept] == [RequestStarted, RequestStopped] * 2
                await pool.execute("ping")  # room again: delivered
                assert [type(e) for e in pending(events)] == [RequestStarted, RequestStopped]
                assert pool.stats().events_dropped == 16

    async def test_the_default_bound_and_the_unbounded_opt_in(self, make_pool: MakePool) -> None:
        async with make_pool(size=1) as pool:
            with pool.subscribe() as bounded, pool.subscribe(max_buffer=None) as unbounded:
                assert bounded.statistics().max_buffer_size == 10_000
                assert unbounded.statistics().max_buffer_size == math.inf
