"""The pool's supervision tree: a Supervisor over a DynamicSupervisor of WorkerServers.

Killed workers are restarted by their supervisor; workers start in parallel;
a worker that keeps failing at start makes the pool degraded (restart
intensity); a pool that cannot start raises PoolStartError and leaves
nothing running. In-process workers (InProcessLauncher); no timers.
"""

from __future__ import annotations

import asyncio
import logging
import re

import anyio
import pytest

from snakepit.errors import (
    ExecutionTimeout,
    PoolClosed,
    PoolDegraded,
    PoolStartError,
    ReachedMaxRestartIntensity,
    WorkerCrashed,
    WorkerStartError,
)
from snakepit.otp import (
    ChildExited,
    ChildStarted,
    DynamicSupervisor,
    RestartIntensityReached,
    monitor,
)
from snakepit.pool import (
    Pool,
    PoolGaveUp,
    RequestQueued,
    WorkerExited,
    WorkerReady,
    WorkerServer,
    WorkerStartFailed,
    WorkerStarting,
)

from ._adapters import WAIT, Control
from ._helpers import events_until, next_event, pending, worker_ref, workers_supervisor
from .conftest import MakePool, Subscribe

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

BAD_SETUP = "tests.unit.pool._adapters:BadSetup"


class TestTree:
    async def test_a_supervisor_over_a_dynamic_supervisor_of_workers(
        self, make_pool: MakePool
    ) -> None:
        async with make_pool(size=3, max_restarts=7, max_seconds=9) as pool:
            store, bridge, top = pool.supervisor.which_children()  # in start order
            assert (store.id, store.type, store.alive) == ("sessions", "worker", True)
            assert (bridge.id, bridge.type, bridge.alive) == ("bridge", "worker", True)
            assert (top.id, top.type, top.alive) == ("workers", "supervisor", True)
            counts = pool.supervisor.count_children()
            assert (counts.specs, counts.active, counts.supervisors, counts.workers) == (3, 3, 1, 2)

            workers = workers_supervisor(pool)
            assert isinstance(workers.server, DynamicSupervisor)
            assert workers is top.ref
            counts = workers.count_children()
            assert (counts.specs, counts.active, counts.supervisors, counts.workers) == (3, 3, 0, 3)
            children = workers.which_children()
            assert [c.id for c in children] == ["w0", "w1", "w2"]
            for child in children:
                assert (child.type, child.restart, child.generation) == ("worker", "permanent", 0)
                assert child.ref is not None
                server = child.ref.server
                assert isinstance(server, WorkerServer)
                assert server.worker_id == child.id
                assert server.usable

    async def test_a_killed_worker_server_is_restarted_by_its_supervisor(
        self, make_pool: MakePool
    ) -> None:
        async with make_pool(size=2) as pool:
            workers = workers_supervisor(pool)
            with workers.subscribe() as tree:
                old = worker_ref(pool, "w1")
                await old.kill()
                exited = await next_event(tree, ChildExited)
                assert (exited.child_id, exited.ref, exited.reason) == ("w1", old, "killed")
                assert exited.restarting
                started = await next_event(tree, ChildStarted)
                assert (started.child_id, started.generation) == ("w1", 1)
            await pool.wait_ready(timeout=WAIT)
            assert worker_ref(pool, "w1") is started.ref
            assert workers.count_children().active == 2
            stats = pool.stats()
            assert (stats.ready, stats.idle, stats.restarts) == (2, 2, 1)
            assert await pool.execute("ping") == {"status": "pong"}

    async def test_a_worker_killed_for_a_timeout_is_restarted_by_its_supervisor(
        self, make_pool: MakePool
    ) -> None:
        async with make_pool(size=1) as pool:
            with workers_supervisor(pool).subscribe() as tree:
                with pytest.raises(ExecutionTimeout):
                    await pool.execute("stuck", timeout=0.05)
                exited = await next_event(tree, ChildExited)
                assert exited.child_id == "w0"
                assert exited.restarting
                assert isinstance(exited.reason, Exception)
                assert "replaced: a call to 'stuck' timed out" in str(exited.reason)
                started = await next_event(tree, ChildStarted)
                assert started.generation == 1
            await pool.wait_ready(timeout=WAIT)
            assert await pool.execute("ping") == {"status": "pong"}

    async def test_workers_start_in_parallel(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control
    ) -> None:
        # Every setup() waits for the gate, opened only once all 4 workers are
        # starting: with workers started one after another, this would hang.
        pool = make_pool(size=4)
        events = subscribe(pool)
        gate = control.hold_from_now_on()

        async def open_the_gate_when_all_start() -> None:
            starting = [(await next_event(events, WorkerStarting)).worker_id for _ in range(4)]
            assert sorted(starting) == ["w0", "w1", "w2", "w3"]
            assert (control.setups, control.ready) == (4, 0)  # all four wait at once
            gate.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(open_the_gate_when_all_start)
            with anyio.fail_after(WAIT):
                async with pool:
                    assert pool.stats().ready == 4
                    assert control.ready == 4

    async def test_the_tree_stops_with_the_pool(self, make_pool: MakePool) -> None:
        async with make_pool(size=2) as pool:
            top = pool.supervisor
            workers = workers_supervisor(pool)
            refs = [c.ref for c in workers.which_children()]
        assert not top.alive
        assert not workers.alive
        assert all(r is not None and not r.alive for r in refs)
        assert top.exit_reason == "shutdown"


class TestRestartIntensity:
    async def test_a_worker_that_keeps_failing_to_start_degrades_the_pool(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control
    ) -> None:
        pool = make_pool(size=2, max_restarts=2, max_seconds=600)
        events = subscribe(pool)
        async with pool:
            control.fail_from_now_on()
            async with monitor(workers_supervisor(pool)) as tree:
                await worker_ref(pool, "w0").kill()
                with anyio.fail_after(WAIT):
                    reason = await tree.down()
            # ReachedMaxRestartIntensity, or a shutdown-like reason carrying it
            assert isinstance(getattr(reason, "detail", reason), ReachedMaxRestartIntensity)

            with pytest.raises(PoolDegraded, match="kept crashing") as info:
                await pool.execute("ping")
            assert info.value.reason is reason
            stats = pool.stats()
            assert stats.degraded is not None
            assert "restart intensity" in stats.degraded
            assert (stats.ready, stats.idle) == (0, 0)
            assert pool.supervisor.alive  # the top outlives its workers' supervisor
            # The workers' supervisor, a temporary child, is gone; the store and bridge stay.
            assert [c.id for c in pool.supervisor.which_children()] == ["sessions", "bridge"]

            failed = [e for e in pending(events) if isinstance(e, WorkerStartFailed)]
            assert [(e.worker_id, e.generation) for e in failed] == [("w0", 1), ("w0", 2)]
            assert all(isinstance(e.error, WorkerStartError) for e in failed)
        with pytest.raises(PoolClosed):
            await pool.execute("ping")
        assert control.teardowns == control.ready  # every adapter that set up was torn down

    async def test_the_workers_supervisor_reports_the_intensity(
        self, make_pool: MakePool, control: Control
    ) -> None:
        async with make_pool(size=1, max_restarts=3, max_seconds=600) as pool:
            workers = workers_supervisor(pool)
            with workers.subscribe() as tree:
                control.fail_from_now_on()
                await worker_ref(pool, "w0").kill()
                reached = await next_event(tree, RestartIntensityReached)
                assert (reached.max_restarts, reached.max_seconds) == (3, 600)
                assert control.setups - control.ready == 3  # 3 restarts failed, then it gave up

    async def test_calls_waiting_when_the_pool_gives_up_get_pool_degraded(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control
    ) -> None:
        # prefetch=0: the second call waits in the host (not sent ahead to the busy worker).
        async with make_pool(size=1, max_restarts=1, max_seconds=600, prefetch=0) as pool:
            events = subscribe(pool)
            errors: list[BaseException] = []

            async def call(tool: str) -> None:
                try:
                    await pool.execute(tool)
                except (WorkerCrashed, PoolDegraded) as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "block")
                await control.wait_blocked(1)
                tg.start_soon(call, "ping")
                await next_event(events, RequestQueued)
                control.fail_from_now_on()
                await worker_ref(pool, "w0").kill()
                await next_event(events, PoolGaveUp)
            crashed, degraded = errors
            assert isinstance(crashed, WorkerCrashed)  # the call in flight
            assert isinstance(degraded, PoolDegraded)  # the queued one
            assert "last start failure" in str(degraded)
            assert "failed on purpose" in str(degraded)

    async def test_restarts_within_the_limit_do_not_degrade(
        self, make_pool: MakePool, subscribe: Subscribe
    ) -> None:
        async with make_pool(size=1, max_restarts=3, max_seconds=600) as pool:
            events = subscribe(pool)
            for generation in (1, 2, 3):
                await worker_ref(pool, "w0").kill()
                ready = await next_event(events, WorkerReady)
                assert ready.generation == generation
            stats = pool.stats()
            assert (stats.degraded, stats.restarts, stats.ready) == (None, 3, 1)
            assert await pool.execute("ping") == {"status": "pong"}

    async def test_degraded_names_the_workers_restart_limit(
        self, make_pool: MakePool, control: Control
    ) -> None:
        async with make_pool(size=1, max_restarts=2, max_seconds=600) as pool:
            control.fail_from_now_on()
            async with monitor(workers_supervisor(pool)) as tree:
                await worker_ref(pool, "w0").kill()
                with anyio.fail_after(WAIT):
                    await tree.down()
            degraded = pool.stats().degraded
            assert degraded is not None
            assert "2 restarts in 600s" in degraded


class TestStartFailures:
    async def test_a_bad_adapter_path_is_a_pool_start_error(self, make_pool: MakePool) -> None:
        pool = make_pool("tests.unit.pool._no_such_module:Adapter", size=2)
        with pytest.raises(PoolStartError) as info:
            async with pool:
                pytest.fail("the pool started")
        message = str(info.value)
        assert re.search(r"worker 'w[01]' failed to start", message)
        assert "cannot import module 'tests.unit.pool._no_such_module'" in message
        cause = info.value.__cause__
        assert isinstance(cause, WorkerStartError)
        assert cause.worker_id in {"w0", "w1"}
        assert info.value.worker_id == cause.worker_id
        assert_nothing_runs(pool)

    async def test_a_missing_class_is_a_pool_start_error(self, make_pool: MakePool) -> None:
        pool = make_pool("tests.unit.pool._adapters:NoSuchClass", size=1)
        with pytest.raises(PoolStartError, match="has no attribute 'NoSuchClass'"):
            async with pool:
                pytest.fail("the pool started")
        assert_nothing_runs(pool)

    async def test_setup_raising_is_a_pool_start_error_naming_the_worker(
        self, make_pool: MakePool, subscribe: Subscribe
    ) -> None:
        pool = make_pool(BAD_SETUP, size=1)
        events = subscribe(pool)
        with pytest.raises(PoolStartError, match="the model file is missing") as info:
            async with pool:
                pytest.fail("the pool started")
        assert "worker 'w0' failed to start" in str(info.value)
        assert info.value.worker_id == "w0"
        cause = info.value.__cause__
        assert isinstance(cause, WorkerStartError)
        assert cause.worker_id == "w0"
        assert "RuntimeError: the model file is missing" in cause.stderr_tail
        assert_nothing_runs(pool)
        failed = [e for e in pending(events) if isinstance(e, WorkerStartFailed)]
        assert (failed[0].worker_id, failed[0].generation) == ("w0", 0)
        assert {e.worker_id for e in failed} == {"w0"}  # (its supervisor may have retried)

    async def test_a_failed_start_stops_the_workers_that_started(
        self, make_pool: MakePool, control: Control
    ) -> None:
        control.fails = lambda n: n == 2  # the second setup raises
        pool = make_pool(size=3)
        with pytest.raises(PoolStartError, match=r"setup #2 failed on purpose"):
            async with pool:
                pytest.fail("the pool started")
        assert control.ready >= 1
        assert control.teardowns == control.ready  # each one that set up was torn down
        assert_nothing_runs(pool)

    async def test_a_failed_start_cancels_the_workers_still_starting(
        self, make_pool: MakePool, control: Control
    ) -> None:
        # w0 fails at once while the others wait in setup() for a gate that
        # never opens: the pool must not wait for them, and must stop them.
        control.gate = asyncio.Event()
        control.waits = lambda n: n != 1
        control.fails = lambda n: n == 1
        pool = make_pool(size=3)
        with anyio.fail_after(WAIT), pytest.raises(PoolStartError, match="setup #1"):
            async with pool:
                pytest.fail("the pool started")
        assert (control.ready, control.teardowns) == (0, 0)
        assert_nothing_runs(pool)


def assert_nothing_runs(pool: Pool) -> None:
    """The pool is closed: no tree, no call taken."""
    with pytest.raises(PoolClosed):
        _ = pool.supervisor
    stats = pool.stats()
    assert (stats.ready, stats.idle) == (0, 0)


class TestRestartBudget:
    """Timeouts spend no restart budget; the budget follows the size (issue #11, defect 4)."""

    async def test_timeouts_do_not_spend_the_restart_budget(
        self, make_pool: MakePool, subscribe: Subscribe
    ) -> None:
        # max_restarts=0: a single crash would degrade the pool; timeouts do not.
        async with make_pool(size=2, max_restarts=0, max_seconds=600) as pool:
            events = subscribe(pool)
            for n in range(1, 4):
                with pytest.raises(ExecutionTimeout):
                    await pool.execute("stuck", timeout=0.05)
                log = await events_until(events, WorkerReady)  # its replacement is ready
                (exited,) = [e for e in log if isinstance(e, WorkerExited)]
                assert (exited.cause, exited.crashed) == ("timeout", False)
                await pool.wait_ready(timeout=WAIT)
                stats = pool.stats()
                assert (stats.degraded, stats.timeouts, stats.restarts) == (None, n, n)
            assert await pool.execute("ping") == {"status": "pong"}

    async def test_a_timeout_exit_says_timeout_and_a_crash_still_counts(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control
    ) -> None:
        async with make_pool(size=1, max_restarts=0, max_seconds=600) as pool:
            events = subscribe(pool)
            with pytest.raises(ExecutionTimeout):
                await pool.execute("stuck", timeout=0.05)
            exited = await next_event(events, WorkerExited)
            assert (exited.cause, exited.crashed) == ("timeout", False)
            await pool.wait_ready(timeout=WAIT)
            await worker_ref(pool, "w0").kill()  # a crash: over the budget of 0
            gave_up = await next_event(events, PoolGaveUp)
            assert "more than 0 restarts in 600s" in gave_up.reason

    async def test_the_default_budget_is_3_per_worker_and_follows_scale(
        self, make_pool: MakePool, control: Control
    ) -> None:
        async with make_pool(size=2, max_seconds=600) as pool:
            await pool.scale(3)
            with workers_supervisor(pool).subscribe() as tree:
                control.fail_from_now_on()
                await worker_ref(pool, "w0").kill()
                reached = await next_event(tree, RestartIntensityReached)
            assert reached.max_restarts == 9  # 3 x 3 workers
            assert control.setups - control.ready == 9


class TestDegradedRestart:
    """A degraded pool comes back with restart(); it says so in one line (issue #11, defect 4)."""

    async def degrade(self, pool: Pool, control: Control) -> None:
        control.fail_from_now_on()
        async with monitor(workers_supervisor(pool)) as tree:
            await worker_ref(pool, "w0").kill()
            with anyio.fail_after(WAIT):
                await tree.down()
        assert pool.stats().degraded is not None

    async def test_restart_brings_a_degraded_pool_back(
        self, make_pool: MakePool, subscribe: Subscribe, control: Control
    ) -> None:
        async with make_pool(size=2, max_restarts=1, max_seconds=600) as pool:
            await self.degrade(pool, control)
            with pytest.raises(PoolDegraded):
                await pool.execute("ping")
            control.fails = lambda n: False  # the cause is fixed
            events = subscribe(pool)
            with anyio.fail_after(WAIT):
                await pool.restart()
            stats = pool.stats()
            assert (stats.degraded, stats.ready, stats.idle, stats.size) == (None, 2, 2, 2)
            assert await pool.execute("echo", {"value": 5}) == 5
            assert len([e for e in pending(events) if isinstance(e, WorkerReady)]) == 2
            # the session store, the bridge, and a new worker supervisor
            assert pool.supervisor.count_children().active == 3
            await pool.restart()  # running: nothing to do
            # and the new tree has a budget of its own: one more crash is fine
            await worker_ref(pool, next(iter(w.worker_id for w in pool.workers()))).kill()
            await pool.wait_ready(timeout=WAIT)
            assert pool.stats().degraded is None
        with pytest.raises(PoolClosed):
            await pool.restart()
        assert control.teardowns == control.ready

    async def test_a_restart_that_fails_leaves_the_pool_degraded(
        self, make_pool: MakePool, control: Control
    ) -> None:
        async with make_pool(size=1, max_restarts=1, max_seconds=600) as pool:
            await self.degrade(pool, control)
            with anyio.fail_after(WAIT), pytest.raises(PoolStartError, match="failed on purpose"):
                await pool.restart()
            with pytest.raises(PoolDegraded, match="a restart failed"):
                await pool.execute("ping")
            control.fails = lambda n: False
            with anyio.fail_after(WAIT):
                await pool.restart()
            assert await pool.execute("ping") == {"status": "pong"}

    async def test_a_degraded_pool_logs_one_line_and_no_traceback(
        self, make_pool: MakePool, control: Control, caplog: pytest.LogCaptureFixture
    ) -> None:
        async with make_pool(size=1, max_restarts=1, max_seconds=600) as pool:
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                await self.degrade(pool, control)
        assert [r for r in caplog.records if r.exc_info] == []  # no traceback
        (line,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert line.name == "snakepit.pool"
        message = line.getMessage()
        assert "\n" not in message
        assert "restart intensity reached (more than 1 restarts in 600s)" in message
        assert "await pool.restart()" in message
