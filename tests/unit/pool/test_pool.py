"""Pool: calls and their results, errors, the queue, timeouts, scaling, recycling, config.

Every pool here runs its adapter in-process (InProcessLauncher): the real
gRPC channel and supervision tree, no subprocess, a start in milliseconds.
Nothing waits on a timer: a busy slot is a ``block`` call that says when it
runs, and the tests wait for the pool's events (``Pool.subscribe()``) or
``wait_ready()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from snakepit.errors import (
    ArgumentTypeError,
    ConfigError,
    ExecutionTimeout,
    InvalidArguments,
    PoolClosed,
    QueueFull,
    QueueTimeout,
    RemoteError,
    ToolNotFound,
    WaitTimeout,
    WorkerCrashed,
    WorkerError,
    WrongEventLoop,
)
from snakepit.pool import (
    InProcessLauncher,
    ParameterSpec,
    Pool,
    PoolConfig,
    PoolEvent,
    PoolStats,
    RequestQueued,
    RequestStarted,
    RequestStopped,
    WorkerDescription,
    WorkerExited,
    WorkerReady,
    WorkerRecycled,
)

from ._adapters import WAIT, Control
from ._helpers import hold_a_slot, next_event, pending, queue_a_call, worker_ref
from .conftest import MakePool, Subscribe

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

HANG = "snakepit.testing.adapters:Hang"


class TestCalls:
    async def test_execute_returns_the_tools_results(self, make_pool: MakePool) -> None:
        async with make_pool() as pool:
            assert await pool.execute("ping") == {"status": "pong"}
            value = {"a": [1, 2.5, None, True], "b": {"c": "ü"}}
            assert await pool.execute("echo", {"value": value}) == value
            assert await pool.execute("aecho", {"value": "x"}) == "x"
            assert await pool.execute("add", {"a": 2, "b": 3}) == 5
            assert await pool.execute("noop") is None
            assert await pool.execute("echo") is None  # no args: the tool's defaults
            assert [x async for x in pool.stream("acount", {"n": 3})] == [0, 1, 2]
            assert pool.stats().requests == 7

    @pytest.mark.parametrize("max_concurrency", [1, 4])
    async def test_concurrent_calls_all_complete(
        self, make_pool: MakePool, subscribe: Subscribe, max_concurrency: int
    ) -> None:
        pool = make_pool(size=2, max_concurrency=max_concurrency)
        events = subscribe(pool)
        async with pool:
            results: dict[int, Any] = {}

            async def call(i: int) -> None:
                results[i] = await pool.execute("aecho", {"value": i})

            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(call, i)
            assert results == {i: i for i in range(50)}
            stats = pool.stats()
            assert (stats.requests, stats.errors, stats.queued) == (50, 0, 0)
            assert stats.idle == 2 * max_concurrency  # every slot came back

            # Both workers ran calls, none more than max_concurrency at once.
            running: dict[str, int] = {}
            peak: dict[str, int] = {}
            for event in pending(events):
                if isinstance(event, RequestStarted):
                    n = running[event.worker_id] = running.get(event.worker_id, 0) + 1
                    peak[event.worker_id] = max(peak.get(event.worker_id, 0), n)
                elif isinstance(event, RequestStopped):
                    assert event.outcome == "ok"
                    running[event.worker_id] -= 1
            assert set(peak) == {"w0", "w1"}
            # Sent: at most max_concurrency running, and prefetch more waiting there.
            assert max(peak.values()) <= max_concurrency + pool.config.prefetch
            assert set(running.values()) == {0}

    async def test_remote_errors_are_typed_and_the_worker_stays(self, make_pool: MakePool) -> None:
        async with make_pool(size=1) as pool:
            before = pool.workers()
            with pytest.raises(ToolNotFound, match="no tool 'no_such_tool'"):
                await pool.execute("no_such_tool")
            with pytest.raises(InvalidArguments, match="missing required argument"):
                await pool.execute("add", {"a": 1})
            with pytest.raises(InvalidArguments, match="unexpected argument"):
                await pool.execute("add", {"a": 1, "b": 2, "c": 3})
            with pytest.raises(RemoteError) as info:
                await pool.execute("fail", {"message": "boom"})
            assert type(info.value) is RemoteError
            assert (info.value.type_name, info.value.message) == ("ValueError", "boom")
            assert "ValueError" in info.value.traceback

            assert pool.workers() == before  # the same worker, same generation, in service
            assert await pool.execute("ping") == {"status": "pong"}
            stats = pool.stats()
            assert (stats.requests, stats.errors, stats.crashes, stats.restarts) == (5, 4, 0, 0)
            assert (stats.ready, stats.idle) == (1, 1)

    async def test_describe(self, make_pool: MakePool) -> None:
        async with make_pool(HANG, max_concurrency=3) as pool:
            described = await pool.describe()
            assert isinstance(described, WorkerDescription)
            assert described.adapter == HANG
            assert described.worker_id in {"w0", "w1"}
            assert described.max_concurrency == 3
            tools = {t.name: t for t in described.tools}
            assert {"ping", "echo", "add", "hang", "acount"} <= set(tools)
            assert tools["acount"].streaming
            assert not tools["add"].streaming
            assert tools["add"].parameters == (
                ParameterSpec("a", "float", True, ""),
                ParameterSpec("b", "float", True, ""),
            )
            assert tools["ping"].doc
            assert pool.stats().idle == 6  # its slot came back


class TestStats:
    async def test_counters_follow_the_calls(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control
    ) -> None:
        pool = make_pool(size=2, prefetch=0)
        events = subscribe(pool)
        async with pool:
            assert pool.stats() == PoolStats(
                size=2,
                ready=2,
                idle=2,
                queued=0,
                requests=0,
                errors=0,
                timeouts=0,
                crashes=0,
                restarts=0,
                recycled=0,
                degraded=None,
            )
            await pool.execute("ping")
            with pytest.raises(RemoteError):
                await pool.execute("fail")
            with pytest.raises(ExecutionTimeout):
                await pool.execute("stuck", timeout=0.05)
            await next_event(events, WorkerExited)  # its tool did not end: replaced
            await pool.wait_ready(timeout=WAIT)
            stats = pool.stats()
            assert (stats.requests, stats.errors, stats.timeouts) == (3, 1, 1)
            assert (stats.crashes, stats.restarts, stats.recycled) == (0, 1, 0)
            assert (stats.ready, stats.idle, stats.queued) == (2, 2, 0)

            async with anyio.create_task_group() as tg:
                first, _ = await hold_a_slot(tg, pool, events, control)
                assert (pool.stats().idle, pool.stats().queued) == (1, 0)
                second, _ = await hold_a_slot(tg, pool, events, control)
                assert (pool.stats().idle, pool.stats().queued) == (0, 0)
                results: list[Any] = []
                await queue_a_call(tg, pool, events, 1, results)
                assert (pool.stats().idle, pool.stats().queued) == (0, 1)
                first.cancel()  # its slot goes to the queued call, once the worker says so
                await next_event(events, RequestStopped, lambda e: e.tool == "echo")
                assert results == [1]
                assert (pool.stats().idle, pool.stats().queued) == (1, 0)
                second.cancel()
            await next_event(events, RequestStopped, lambda e: e.outcome == "cancelled")
            stats = pool.stats()
            assert (stats.idle, stats.queued, stats.ready) == (2, 0, 2)
            assert (stats.requests, stats.errors, stats.timeouts) == (6, 1, 1)  # cancels: no error


class TestQueue:
    async def test_queue_full_beyond_max_queue(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control
    ) -> None:
        async with make_pool(size=1, max_queue=2, prefetch=0) as pool:
            events = subscribe(pool)
            results: list[Any] = []
            async with anyio.create_task_group() as tg:
                holder, _ = await hold_a_slot(tg, pool, events, control)
                await queue_a_call(tg, pool, events, 1, results)
                await queue_a_call(tg, pool, events, 2, results)
                with pytest.raises(QueueFull, match="2 calls are already waiting") as info:
                    await pool.execute("ping")
                assert info.value.max_queue == 2
                assert pool.stats().queued == 2  # the refused call never queued
                holder.cancel()
            assert results == [1, 2]
            assert await pool.execute("ping") == {"status": "pong"}

    async def test_queue_timeout(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control
    ) -> None:
        async with make_pool(size=1, queue_timeout=0.02, prefetch=0) as pool:
            events = subscribe(pool)
            async with anyio.create_task_group() as tg:
                holder, started = await hold_a_slot(tg, pool, events, control)
                with pytest.raises(QueueTimeout, match=r"within 0\.02s") as info:
                    await pool.execute("ping")
                assert isinstance(info.value, TimeoutError)
                assert info.value.timeout == 0.02
                assert pool.stats().queued == 0
                (worker,) = pool.workers()
                assert (worker.worker_id, worker.in_flight) == (started.worker_id, 1)  # untouched
                holder.cancel()
            # The slot is back once the worker reports the cancelled call ended.
            await next_event(events, RequestStopped, lambda e: e.outcome == "cancelled")
            assert pool.stats().idle == 1
            assert await pool.execute("ping") == {"status": "pong"}

    async def test_queued_calls_get_slots_in_fifo_order(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control
    ) -> None:
        async with make_pool(size=1, prefetch=0) as pool:
            events = subscribe(pool)
            results: list[Any] = []
            async with anyio.create_task_group() as tg:
                holder, _ = await hold_a_slot(tg, pool, events, control)
                queued_ids = []
                for i in range(6):
                    _, queued = await queue_a_call(tg, pool, events, i, results)
                    assert queued.queue_depth == i + 1
                    queued_ids.append(queued.request_id)
                assert pool.stats().queued == 6
                holder.cancel()
            assert results == list(range(6))
            started = [e.request_id for e in pending(events) if isinstance(e, RequestStarted)]
            assert started == queued_ids

    async def test_a_cancelled_queued_call_leaves_the_queue(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control
    ) -> None:
        async with make_pool(size=1, prefetch=0) as pool:
            events = subscribe(pool)
            results: list[Any] = []
            async with anyio.create_task_group() as tg:
                holder, _ = await hold_a_slot(tg, pool, events, control)
                waiter, cancelled = await queue_a_call(tg, pool, events, "cancelled", results)
                _, kept = await queue_a_call(tg, pool, events, "kept", results)
                assert pool.stats().queued == 2
                waiter.cancel()
                await anyio.wait_all_tasks_blocked()  # its task ran its cancellation
                assert pool.stats().queued == 1
                holder.cancel()  # the slot skips the cancelled call
            assert results == ["kept"]
            started = [e.request_id for e in pending(events) if isinstance(e, RequestStarted)]
            assert started == [kept.request_id]
            assert cancelled.request_id not in started
            stats = pool.stats()
            assert (stats.queued, stats.idle) == (0, 1)

    async def test_a_cancelled_running_call_returns_its_slot(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control
    ) -> None:
        async with make_pool(size=1) as pool:
            events = subscribe(pool)
            before = pool.workers()
            async with anyio.create_task_group() as tg:
                holder, started = await hold_a_slot(tg, pool, events, control)
                assert pool.stats().idle == 0
                assert pool.workers()[0].in_flight == 1
                holder.cancel()
            stopped = await next_event(events, RequestStopped)
            assert (stopped.request_id, stopped.outcome) == (started.request_id, "cancelled")
            assert pool.stats().idle == 1
            assert pool.workers() == before  # not replaced: a cancel is no failure
            assert await pool.execute("ping") == {"status": "pong"}
            stats = pool.stats()
            assert (stats.errors, stats.timeouts, stats.crashes, stats.restarts) == (0, 0, 0, 0)

    async def test_cancelling_a_call_the_worker_has_not_begun_warns_nothing(
        self, make_pool: MakePool, subscribe: Subscribe
    ) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            async with make_pool(HANG, size=1) as pool:
                events = subscribe(pool)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(pool.execute, "hang")
                    await next_event(events, RequestStarted)  # sent, not yet run
                    tg.cancel_scope.cancel()
                assert await pool.execute("ping") == {"status": "pong"}
            gc.collect()
        assert [str(w.message) for w in caught] == []


class TestTimeoutsAndCrashes:
    async def test_a_timed_out_tool_that_ends_keeps_its_worker(
        self, make_pool: MakePool, subscribe: Subscribe
    ) -> None:
        # hang is cancelled at the worker's deadline and ends: the worker is
        # not stuck; it stays, and what follows runs there.
        async with make_pool(size=1) as pool:
            events = subscribe(pool)
            with pytest.raises(ExecutionTimeout):
                await pool.execute("hang", timeout=0.01)
            stopped = await next_event(events, RequestStopped)
            assert stopped.outcome == "timeout"
            (worker,) = pool.workers()
            assert (worker.generation, worker.ready) == (0, True)
            assert await pool.execute("ping") == {"status": "pong"}
            stats = pool.stats()
            assert (stats.timeouts, stats.restarts) == (1, 0)

    async def test_a_timeout_replaces_the_worker(
        self, make_pool: MakePool, subscribe: Subscribe
    ) -> None:
        # Its tool does not end (deaf to ctx.cancelled): the worker is stuck.
        async with make_pool(size=1) as pool:
            events = subscribe(pool)
            with pytest.raises(ExecutionTimeout) as info:
                await pool.execute("stuck", timeout=0.05)
            assert isinstance(info.value, TimeoutError)
            assert (info.value.tool, info.value.worker_id) == ("stuck", "w0")
            assert info.value.timeout is not None
            assert 0 < info.value.timeout <= 0.05  # what was left of it after the checkout
            exited = await next_event(events, WorkerExited)
            assert exited.cause == "timeout"
            await pool.wait_ready(timeout=WAIT)
            (worker,) = pool.workers()
            assert (worker.worker_id, worker.generation, worker.ready) == ("w0", 1, True)
            assert await pool.execute("ping") == {"status": "pong"}
            stats = pool.stats()
            assert (stats.timeouts, stats.restarts, stats.errors, stats.ready) == (1, 1, 0, 1)

    async def test_wait_ready_raises_wait_timeout(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control
    ) -> None:
        async with make_pool(size=1) as pool:
            events = subscribe(pool)
            gate = control.hold_from_now_on()  # the replacement's setup() waits
            with pytest.raises(ExecutionTimeout):
                await pool.execute("stuck", timeout=0.05)
            await next_event(events, WorkerExited)
            with anyio.fail_after(WAIT), pytest.raises(WaitTimeout) as info:
                await pool.wait_ready(timeout=0.02)
            assert not isinstance(info.value, QueueTimeout)  # not a call's wait for a worker
            assert isinstance(info.value, TimeoutError)
            assert info.value.timeout == 0.02
            assert "only 0 workers ready after 0.02s" in str(info.value)
            gate.set()
            await pool.wait_ready(timeout=WAIT)

    async def test_a_timeout_spares_the_other_workers(
        self, make_pool: MakePool, subscribe: Subscribe
    ) -> None:
        async with make_pool(size=2) as pool:
            events = subscribe(pool)
            with pytest.raises(ExecutionTimeout):
                await pool.execute("stuck", timeout=0.05)
            timed_out = await next_event(events, RequestStopped)
            assert timed_out.outcome == "timeout"
            await pool.wait_ready(timeout=WAIT)
            generations = {w.worker_id: w.generation for w in pool.workers()}
            other = ({"w0", "w1"} - {timed_out.worker_id}).pop()
            assert generations == {timed_out.worker_id: 1, other: 0}

    async def test_a_crashed_call_is_not_retried_by_default(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control
    ) -> None:
        async with make_pool(size=2) as pool:
            events = subscribe(pool)
            crashed: list[WorkerCrashed] = []

            async def call() -> None:
                try:
                    await pool.execute("block")
                except WorkerCrashed as exc:
                    crashed.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                started = await next_event(events, RequestStarted)
                await control.wait_blocked(1)
                await worker_ref(pool, started.worker_id).kill()
            (error,) = crashed
            assert error.worker_id == started.worker_id
            stopped = await next_event(events, RequestStopped)
            assert (stopped.request_id, stopped.outcome) == (started.request_id, "crashed")
            assert not any(isinstance(e, RequestStarted) for e in pending(events))
            assert pool.stats().crashes == 1
            await pool.wait_ready(timeout=WAIT)
            assert await pool.execute("ping") == {"status": "pong"}

    async def test_retries_run_a_crashed_call_on_another_worker(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control
    ) -> None:
        async with make_pool(size=2) as pool:
            events = subscribe(pool)
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: pool.execute("block", retries=1))
                first = await next_event(events, RequestStarted)
                await control.wait_blocked(1)
                await worker_ref(pool, first.worker_id).kill()
                stopped = await next_event(events, RequestStopped)
                assert (stopped.request_id, stopped.outcome) == (first.request_id, "crashed")
                again = await next_event(events, RequestStarted)
                assert again.tool == "block"
                assert again.request_id > first.request_id
                assert again.worker_id != first.worker_id  # the free one, not the replacement
                await control.wait_blocked(2)  # it runs there
                tg.cancel_scope.cancel()
            assert pool.stats().crashes == 1

    @pytest.mark.parametrize("retries", [-1, True, 1.5, "1", None])
    async def test_bad_retries_name_the_argument(self, make_pool: MakePool, retries: Any) -> None:
        async with make_pool(size=1) as pool:
            with pytest.raises(ConfigError) as info:
                await pool.execute("ping", retries=retries)
            assert info.value.field == "retries"
            assert pool.stats().requests == 0  # refused before it took a slot


class TestScale:
    async def test_scale_up_and_down(self, make_pool: MakePool) -> None:
        async with make_pool(size=2) as pool:
            await pool.scale(4)
            stats = pool.stats()
            assert (stats.size, stats.ready, stats.idle) == (4, 4, 4)
            assert [w.worker_id for w in pool.workers()] == ["w0", "w1", "w2", "w3"]
            await pool.scale(1)
            stats = pool.stats()
            assert (stats.size, stats.ready, stats.idle) == (1, 1, 1)
            assert len(pool.workers()) == 1
            assert await pool.execute("ping") == {"status": "pong"}
            await pool.scale(1)  # no change
            assert pool.stats().size == 1
            await pool.scale(2)
            stats = pool.stats()
            assert (stats.size, stats.ready, stats.restarts) == (2, 2, 0)

    async def test_shrinking_takes_idle_workers_first(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control
    ) -> None:
        async with make_pool(size=2) as pool:
            events = subscribe(pool)
            async with anyio.create_task_group() as tg:
                holder, started = await hold_a_slot(tg, pool, events, control)
                await pool.scale(1)  # returns at once: the idle worker went
                (left,) = pool.workers()
                assert (left.worker_id, left.in_flight) == (started.worker_id, 1)
                holder.cancel()
            assert await pool.execute("ping") == {"status": "pong"}

    @pytest.mark.parametrize("size", [0, -1, True, 1.5, "2"])
    async def test_bad_size(self, make_pool: MakePool, size: Any) -> None:
        async with make_pool(size=1) as pool:
            with pytest.raises(ConfigError) as info:
                await pool.scale(size)
            assert info.value.field == "size"
            assert pool.stats().size == 1


class TestRecycling:
    async def test_max_requests_recycling_keeps_capacity(
        self, make_pool: MakePool, subscribe: Subscribe
    ) -> None:
        pool = make_pool(size=2, max_requests_per_worker=1)
        events = subscribe(pool)
        async with pool:
            ready: set[str] = set()  # the workers taking calls, as the events tell it
            lowest: int | None = None  # of len(ready), once the pool started
            exits = 0

            async def follow_until(done: Callable[[PoolEvent], bool]) -> None:
                nonlocal lowest, exits
                with anyio.fail_after(WAIT):
                    async for event in events:
                        if isinstance(event, WorkerReady):
                            ready.add(event.worker_id)
                        elif isinstance(event, WorkerRecycled):
                            ready.discard(event.worker_id)  # out of rotation from here
                        elif isinstance(event, WorkerExited):
                            assert event.worker_id not in ready
                            exits += 1
                        if lowest is not None:
                            lowest = min(lowest, len(ready))
                            # A worker sent its last call takes no more (the limit is
                            # exact) until its replacement is ready; the other serves.
                            assert pool.stats().ready >= 1
                        if done(event):
                            return

            await follow_until(lambda _: len(ready) == 2)
            lowest = 2
            first = set(ready)
            for i in range(3):
                assert await pool.execute("echo", {"value": i}) == i
                await follow_until(lambda _, n=i + 1: exits == n)  # type: ignore[misc]
                assert pool.stats().ready == 2
            assert lowest == 2
            stats = pool.stats()
            assert (stats.recycled, stats.restarts, stats.ready, stats.size) == (3, 0, 2, 2)
            now = {w.worker_id for w in pool.workers()}
            assert len(now) == 2
            assert now - first  # new workers, with new ids
            assert await pool.execute("ping") == {"status": "pong"}

    async def test_a_worker_scaled_away_while_recycled_is_not_replaced(
        self, make_pool: MakePool, control: Control, subscribe: Subscribe
    ) -> None:
        # scale() could take out a worker whose replacement was booting; the
        # recycler then added the replacement anyway: one worker too many per
        # such race (found by review of issue #12, already so before it).
        pool = make_pool(size=2, max_requests_per_worker=1)
        events = subscribe(pool)
        async with pool:
            gate = control.hold_from_now_on()  # the replacement's setup waits here
            await pool.execute("ping")  # its one call: its worker is recycled
            (old,) = (w for w in pool._tree.workers.values() if w.state == "recycling")
            await anyio.wait_all_tasks_blocked()  # the replacement waits at the gate
            victims = sorted(pool._tree.workers.values(), key=lambda w: (w.in_flight, w.worker_id))
            keep = next(w for w in victims if w is not old)
            if victims[0] is not old:  # make the recycled one scale()'s choice
                keep.call_started()
            await pool.scale(1)
            assert old.worker_id not in pool._tree.workers
            if keep.in_flight:
                keep.call_ended()
            gate.set()
            with anyio.fail_after(WAIT):
                async for event in events:
                    if isinstance(event, WorkerRecycled):
                        break  # the bug: the replacement went into service
                    if isinstance(event, WorkerExited) and event.worker_id not in (
                        old.worker_id,
                        keep.worker_id,
                    ):
                        break  # the replacement, stopped: the pool stays at one
            assert pool.stats().recycled == 0
            assert [w.worker_id for w in pool.workers()] == [keep.worker_id]
            assert await pool.execute("ping") == {"status": "pong"}


class TestClosed:
    async def test_closed_before_entering_and_after_leaving(self, make_pool: MakePool) -> None:
        pool = make_pool(size=1)
        with pytest.raises(PoolClosed):
            await pool.execute("ping")
        with pytest.raises(PoolClosed):
            _ = pool.supervisor
        async with pool:
            assert await pool.execute("ping") == {"status": "pong"}
        with pytest.raises(PoolClosed):
            await pool.execute("ping")
        with pytest.raises(PoolClosed):
            await anext(pool.stream("acount", {"n": 1}))
        with pytest.raises(PoolClosed):
            await pool.describe()
        with pytest.raises(PoolClosed):
            await pool.scale(2)
        with pytest.raises(PoolClosed):
            await pool.wait_ready()
        with pytest.raises(PoolClosed):
            _ = pool.supervisor
        with pytest.raises(PoolClosed, match="entered once"):
            async with pool:
                pass
        stats = pool.stats()
        assert (stats.ready, stats.idle, stats.queued) == (0, 0, 0)
        assert not any(w.ready for w in pool.workers())

    async def test_leaving_fails_the_queued_calls(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control
    ) -> None:
        # The pool's exit waits shutdown_timeout for the call in flight, then
        # stops its worker; the call queued behind it gets PoolClosed.
        pool = make_pool(size=1, shutdown_timeout=0.01, prefetch=0)
        events = subscribe(pool)
        results: list[Any] = []
        errors: list[BaseException] = []

        async def block() -> None:
            try:
                await pool.execute("block")
            except (WorkerError, PoolClosed) as exc:
                errors.append(exc)

        async def queued() -> None:
            with pytest.raises(PoolClosed):
                results.append(await pool.execute("ping"))

        async with anyio.create_task_group() as tg, pool:
            tg.start_soon(block)
            await control.wait_blocked(1)
            tg.start_soon(queued)
            await next_event(events, RequestQueued)
            assert pool.stats().queued == 1
        assert results == []
        # The call in flight was cut off by the pool's exit: PoolClosed, not a crash.
        assert [type(e) for e in errors] == [PoolClosed]
        assert pool.stats().queued == 0
        assert pool.stats().crashes == 0
        outcomes = sorted(e.outcome for e in pending(events) if isinstance(e, RequestStopped))
        assert outcomes == ["cancelled", "rejected"]


class TestConfig:
    @pytest.mark.parametrize(
        ("options", "field"),
        [
            ({"size": 0}, "size"),
            ({"size": 2.5}, "size"),
            ({"size": True}, "size"),
            ({"max_concurrency": 0}, "max_concurrency"),
            ({"max_queue": 0}, "max_queue"),
            ({"queue_timeout": 0}, "queue_timeout"),
            ({"queue_timeout": float("inf")}, "queue_timeout"),
            ({"startup_timeout": -1}, "startup_timeout"),
            ({"shutdown_timeout": 0}, "shutdown_timeout"),
            ({"max_restarts": -1}, "max_restarts"),
            ({"max_seconds": 0}, "max_seconds"),
            ({"health_interval": 0}, "health_interval"),
            ({"health_timeout": float("nan")}, "health_timeout"),
            ({"max_missed_pings": 0}, "max_missed_pings"),
            ({"max_requests_per_worker": 0}, "max_requests_per_worker"),
            ({"worker_ttl": -5}, "worker_ttl"),
            ({"max_worker_memory_mb": 0}, "max_worker_memory_mb"),
            ({"max_message_mb": 0}, "max_message_mb"),
            ({"env": {"A": 1}}, "env"),
            ({"start_method": "fork"}, "start_method"),
            ({"no_such_option": 1}, "no_such_option"),
        ],
    )
    def test_a_bad_option_names_its_field(
        self, make_pool: MakePool, control: Control, options: dict[str, Any], field: str
    ) -> None:
        # Raised by the constructor, before anything started.
        with pytest.raises(ConfigError) as info:
            make_pool(**options)
        assert info.value.field == field
        assert str(info.value).startswith(f"{field}: ")
        assert control.setups == 0

    @pytest.mark.parametrize("adapter", ["no_colon", ":Cls", "mod:", "", None, 3])
    def test_a_bad_adapter_string(self, adapter: Any) -> None:
        with pytest.raises(ConfigError) as info:
            Pool(adapter)
        assert info.value.field == "adapter"

    def test_config_and_options_are_exclusive(self) -> None:
        config = PoolConfig(adapter=HANG, size=1)
        with pytest.raises(ConfigError) as info:
            Pool(config=config, size=2)
        assert info.value.field == "config"
        with pytest.raises(ConfigError) as info:
            Pool(HANG, config=config)
        assert info.value.field == "config"
        assert Pool(config=config).config is config

    async def test_a_config_object_runs(self, launcher: InProcessLauncher) -> None:
        config = PoolConfig(adapter=HANG, size=1, max_concurrency=2)
        async with Pool(config=config, launcher=launcher) as pool:
            assert pool.stats().idle == 2
            assert await pool.execute("ping") == {"status": "pong"}


class TestCallDeadline:
    """``timeout=`` covers the wait for a worker too (issue #11, defect 4)."""

    async def test_a_worker_free_with_no_time_left_to_run_is_not_sent_the_call(
        self,
        make_pool: MakePool,
        subscribe: Subscribe,
        control: Control,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # A call that waited and is handed a slot with (almost) none of its
        # timeout left would time out at once and get its healthy worker
        # killed: it is refused unrun instead (the floor is 60 s here).
        from snakepit.pool import _calls

        monkeypatch.setattr(_calls, "MIN_RUN_TIME", 60.0)
        async with make_pool(size=1, prefetch=0) as pool:
            events = subscribe(pool)
            (before,) = pool.workers()
            async with anyio.create_task_group() as tg:
                holder, _ = await hold_a_slot(tg, pool, events, control)

                async def call() -> None:
                    with pytest.raises(QueueTimeout, match="did not run"):
                        await pool.execute("echo", {"value": 1}, timeout=10)

                tg.start_soon(call)
                await next_event(events, RequestQueued, lambda e: e.tool == "echo")
                holder.cancel()  # the slot comes free, with 10 s < 60 s left
            with anyio.fail_after(WAIT):
                await next_event(events, RequestStopped, lambda e: e.tool == "echo")
            stats = pool.stats()
            assert (stats.timeouts, stats.restarts) == (0, 0)
            assert [w.pid for w in pool.workers()] == [before.pid]  # not killed
            # a slot free at once: sent as it is
            assert await pool.execute("echo", {"value": 2}, timeout=10) == 2

    @pytest.mark.parametrize("api", ["execute", "stream"])
    async def test_a_call_queued_past_its_timeout_raises_queue_timeout_unrun(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control, api: str
    ) -> None:
        async with make_pool(size=1, prefetch=0) as pool:

            async def call() -> None:
                if api == "execute":
                    await pool.execute("echo", {"value": 1}, timeout=0.05)
                    return
                async with contextlib.aclosing(pool.stream("count", {"n": 2}, timeout=0.05)) as s:
                    [x async for x in s]

            events = subscribe(pool)
            async with anyio.create_task_group() as tg:
                holder, _ = await hold_a_slot(tg, pool, events, control)
                with anyio.fail_after(WAIT), pytest.raises(QueueTimeout) as info:
                    await call()
                holder.cancel()
            assert isinstance(info.value, TimeoutError)
            assert info.value.timeout is not None
            assert 0 < info.value.timeout <= 0.05
            assert "the call's timeout (the tool did not run)" in str(info.value)
            stats = pool.stats()
            assert (stats.timeouts, stats.restarts) == (0, 0)  # nobody was killed


class TestArgumentTypes:
    """Bad argument types are typed errors naming the argument (issue #11, defect 9)."""

    @pytest.mark.parametrize(
        ("call", "field", "kind"),
        [
            ({"tool": 123}, "tool", ArgumentTypeError),
            ({"tool": ""}, "tool", ConfigError),
            ({"args": [1, 2]}, "args", ArgumentTypeError),
            ({"args": "x=1"}, "args", ArgumentTypeError),
            ({"args": {1: "a"}}, "args", ArgumentTypeError),
            ({"timeout": "5"}, "timeout", ArgumentTypeError),
            ({"timeout": True}, "timeout", ArgumentTypeError),
            ({"timeout": -1}, "timeout", ConfigError),
            ({"timeout": 0}, "timeout", ConfigError),
            ({"timeout": float("nan")}, "timeout", ConfigError),
            ({"timeout": float("inf")}, "timeout", ConfigError),
            ({"session_id": 5}, "session_id", ArgumentTypeError),
            ({"session_id": None}, "session_id", ArgumentTypeError),
            ({"retries": True}, "retries", ArgumentTypeError),
            ({"retries": 1.0}, "retries", ArgumentTypeError),
        ],
    )
    async def test_execute_names_the_bad_argument(
        self, make_pool: MakePool, call: dict[str, Any], field: str, kind: type[ConfigError]
    ) -> None:
        async with make_pool(size=1) as pool:
            kwargs: dict[str, Any] = {"tool": "echo", "args": {"value": 1}, **call}
            with pytest.raises(kind) as info:
                await pool.execute(**kwargs)
            assert info.value.field == field
            assert str(info.value).startswith(f"{field}: ")
            assert isinstance(info.value, ConfigError)
            assert isinstance(info.value, TypeError) == (kind is ArgumentTypeError)
            assert pool.stats().requests == 0  # refused at the call
            assert await pool.execute("echo", {"value": 2}) == 2

    @pytest.mark.parametrize(
        ("call", "field"),
        [
            ({"tool": 123}, "tool"),
            ({"args": [1]}, "args"),
            ({"timeout": "1"}, "timeout"),
            ({"timeout": -2.5}, "timeout"),
            ({"session_id": b"s"}, "session_id"),
        ],
    )
    async def test_stream_names_the_bad_argument(
        self, make_pool: MakePool, call: dict[str, Any], field: str
    ) -> None:
        async with make_pool(size=1) as pool:
            kwargs: dict[str, Any] = {"tool": "count", "args": {"n": 1}, **call}
            with pytest.raises(ConfigError) as info:
                pool.stream(**kwargs)  # at the call, before any iteration
            assert info.value.field == field
            assert pool.stats().idle == 1

    async def test_scale_wait_ready_and_subscribe_name_the_bad_argument(
        self, make_pool: MakePool
    ) -> None:
        async with make_pool(size=1) as pool:
            with pytest.raises(ArgumentTypeError, match=r"^size: "):
                await pool.scale("3")  # type: ignore[arg-type]
            with pytest.raises(ArgumentTypeError, match=r"^size: "):
                await pool.scale(True)
            with pytest.raises(ArgumentTypeError, match=r"^timeout: "):
                await pool.wait_ready(timeout="1")  # type: ignore[arg-type]
            with pytest.raises(ConfigError, match=r"^timeout: "):
                await pool.wait_ready(timeout=-1)
            with pytest.raises(ConfigError, match=r"^max_buffer: "):
                pool.subscribe(max_buffer=0)
            with pytest.raises(ArgumentTypeError, match=r"^max_buffer: "):
                pool.subscribe(max_buffer=1.5)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("options", "field", "kind"),
        [
            ({"max_restarts": True}, "max_restarts", ArgumentTypeError),
            ({"max_restarts": 1.5}, "max_restarts", ArgumentTypeError),
            ({"max_message_mb": 2048}, "max_message_mb", ConfigError),
            ({"max_message_mb": 4096.0}, "max_message_mb", ConfigError),
            ({"max_message_mb": 0.0001}, "max_message_mb", ConfigError),
            ({"max_message_mb": "64"}, "max_message_mb", ArgumentTypeError),
            ({"size": "4"}, "size", ArgumentTypeError),
            ({"queue_timeout": "1"}, "queue_timeout", ArgumentTypeError),
            ({"health_interval": True}, "health_interval", ArgumentTypeError),
            ({"cap_threads": "no"}, "cap_threads", ArgumentTypeError),
            ({"python": 3}, "python", ArgumentTypeError),
            ({"python": ""}, "python", ConfigError),
            ({"cwd": 3}, "cwd", ArgumentTypeError),
            ({"env": [("A", "B")]}, "env", ArgumentTypeError),
            ({"env": {"A": 1}}, "env", ArgumentTypeError),
            ({"transport": 1}, "transport", ArgumentTypeError),
            ({"start_method": None}, "start_method", ArgumentTypeError),
            ({"run_dir": 5}, "run_dir", ArgumentTypeError),
            ({"run_dir": ""}, "run_dir", ConfigError),
        ],
    )
    def test_every_config_field_is_checked_with_its_type(
        self, make_pool: MakePool, options: dict[str, Any], field: str, kind: type[ConfigError]
    ) -> None:
        with pytest.raises(kind) as info:
            make_pool(**options)
        assert info.value.field == field
        assert type(info.value) is kind

    def test_the_default_max_restarts_is_3_per_worker(self) -> None:
        assert PoolConfig(adapter=HANG).max_restarts is None
        assert PoolConfig(adapter=HANG).restart_limit(4) == 12
        assert PoolConfig(adapter=HANG, size=32).restart_limit(32) == 96
        assert PoolConfig(adapter=HANG, max_restarts=0).restart_limit(32) == 0
        assert PoolConfig(adapter=HANG, max_message_mb=2047.5).max_message_bytes < 2**31


class TestWrongEventLoop:
    """A pool used from another event loop says so with a typed error, and serves on."""

    async def test_a_call_from_another_loop_raises_wrong_event_loop(
        self, make_pool: MakePool
    ) -> None:
        async with make_pool(size=1) as pool:

            def from_another_thread() -> BaseException | None:
                async def call() -> None:
                    await pool.execute("ping")

                try:
                    asyncio.run(call())
                except BaseException as exc:
                    return exc
                return None

            with anyio.fail_after(WAIT):
                error = await anyio.to_thread.run_sync(from_another_thread)
            assert isinstance(error, WrongEventLoop), error
            assert "another event loop" in str(error)
            assert pool.stats().idle == 1
            assert await pool.execute("ping") == {"status": "pong"}


async def race_with_aclose(
    pool: Pool, operation: Callable[[], Awaitable[object]], done: str, steps: int
) -> list[str]:
    """Run ``operation`` in a task, close ``pool`` from this one after ``steps`` checkpoints.

    Returns what ``operation`` did: ``[done]``, or ``["PoolClosed"]`` if it raised that.
    """
    outcome: list[str] = []

    async def run() -> None:
        try:
            await operation()
            outcome.append(done)
        except PoolClosed:
            outcome.append("PoolClosed")

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            for _ in range(steps):
                await anyio.lowlevel.checkpoint()
            await pool.aclose()
    return outcome


class TestCloseFromAnyTask:
    """aclose() works from a task other than the one that entered (issue #11, defect 10)."""

    async def test_another_task_closes_the_pool_the_owner_then_leaves(
        self, make_pool: MakePool, control: Control
    ) -> None:
        async with make_pool(size=2) as pool:
            with anyio.fail_after(WAIT):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(pool.aclose)
            stats = pool.stats()
            assert (stats.ready, stats.idle) == (0, 0)
            with pytest.raises(PoolClosed):
                await pool.execute("ping")
            with pytest.raises(PoolClosed):
                _ = pool.supervisor
        assert control.teardowns == control.ready == 2

    @pytest.mark.parametrize("steps", [0, 1, 2, 3, 6])
    async def test_a_pool_closed_while_it_starts_says_so_and_nothing_hangs(
        self, make_pool: MakePool, steps: int
    ) -> None:
        # aclose() from another task at each early step of __aenter__: the
        # entering task gets PoolClosed, aclose() returns, nothing is left.
        pool = make_pool(size=1)
        outcome = await race_with_aclose(pool, pool.__aenter__, "entered", steps)
        assert outcome == ["PoolClosed"] if steps <= 3 else outcome in (["PoolClosed"], ["entered"])
        assert pool.stats().ready == 0
        with pytest.raises(PoolClosed):
            await pool.execute("ping")

    async def test_a_restart_racing_aclose_leaves_nothing_running(
        self, make_pool: MakePool
    ) -> None:
        # The top supervisor was killed (degraded); restart() starts a new tree
        # while another task closes the pool: the close waits for the restart,
        # which says PoolClosed, and stops what it started.
        pool = make_pool(size=1)
        await pool.__aenter__()
        await pool.supervisor.kill()
        outcome = await race_with_aclose(pool, pool.restart, "restarted", steps=1)
        assert outcome in (["PoolClosed"], ["restarted"])
        assert not pool._tree.supervisor.alive  # type: ignore[union-attr]
        assert pool.stats().ready == 0

    async def test_scale_up_does_not_wait_for_good_when_the_pool_closes(
        self, make_pool: MakePool, control: Control
    ) -> None:
        async with make_pool(size=1) as pool:
            control.hold_from_now_on()  # the new worker's setup() waits
            with anyio.fail_after(WAIT):
                async with anyio.create_task_group() as tg:

                    async def scale() -> None:
                        with pytest.raises(PoolClosed):
                            await pool.scale(2)

                    tg.start_soon(scale)
                    await anyio.wait_all_tasks_blocked()
                    await pool.aclose()

    async def test_a_pool_entered_in_a_task_that_ended_is_closed_from_another(
        self, make_pool: MakePool, control: Control
    ) -> None:
        pool = make_pool(size=2)
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(pool.__aenter__)  # a startup hook, say
            assert await pool.execute("echo", {"value": 3}) == 3
            async with anyio.create_task_group() as tg:
                tg.start_soon(pool.aclose)  # a shutdown hook
                tg.start_soon(pool.aclose)  # twice at once: both return when it is done
        assert control.teardowns == control.ready == 2
        with pytest.raises(PoolClosed):
            await pool.execute("ping")

    async def test_a_call_in_flight_when_another_task_closes_gets_pool_closed(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control
    ) -> None:
        # shutdown_timeout: how long the stop waits for the call, which never ends
        async with make_pool(size=1, shutdown_timeout=0.05) as pool:
            events = subscribe(pool)
            errors: list[BaseException] = []

            async def block() -> None:
                try:
                    await pool.execute("block")
                except (PoolClosed, WorkerError) as exc:
                    errors.append(exc)

            with anyio.fail_after(WAIT):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(block)
                    await control.wait_blocked(1)
                    await next_event(events, RequestStarted)
                    tg.start_soon(pool.aclose)
            assert [type(e) for e in errors] == [PoolClosed]
