"""The pool end to end, with real worker processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

import snakepit
from snakepit.errors import (
    ConfigError,
    ExecutionTimeout,
    PoolClosed,
    PoolStartError,
    QueueFull,
    QueueTimeout,
    RemoteError,
    WorkerCrashed,
)
from snakepit.pool import InProcessLauncher, Pool, PoolConfig, WorkerReady
from tests._procs import descendant_pids
from tests._slots import all_checked_in

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

ADAPTER = "tests.unit.grpc._adapters:All"
ROOT = str(Path(__file__).resolve().parents[2])


def pool(*, in_process: bool = False, **options: Any) -> Pool:
    """A pool of the test adapter; ``in_process`` for what is only the pool's logic."""
    options.setdefault("size", 2)
    if in_process:
        options["launcher"] = InProcessLauncher()
    return Pool(ADAPTER, cwd=ROOT, **options)


class TestLifecycle:
    @pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
    @pytest.mark.snakepit_own_fork_server  # it counts the pool's fork server
    async def test_start_call_and_stop_leaves_nothing(self, start_method: str) -> None:
        before = descendant_pids()
        async with pool(start_method=start_method) as p:
            assert p.stats().ready == 2
            assert (
                p.supervisor.count_children().active == 3
            )  # the session store, the bridge, the workers
            workers = p.supervisor.child("workers")
            assert workers is not None
            assert len(workers.server.ref.which_children()) == 2  # type: ignore[attr-defined]
            assert await p.execute("ping") == {"status": "pong"}
            assert [x async for x in p.stream("count", {"n": 3})] == [0, 1, 2]
            described = await p.describe()
            assert "ping" in {t.name for t in described.tools}
            during = descendant_pids() - before
            workers_pids = {w.pid for w in p.workers()}
            assert len(workers_pids) == 2
            assert workers_pids <= during
            # The workers, and with "forkserver" the process they were forked from.
            assert len(during) == 2 + (start_method == "forkserver")
        assert descendant_pids() - before == set()  # every worker reaped

    async def test_concurrent_calls(self) -> None:
        async with pool() as p:
            results: dict[int, Any] = {}

            async def call(i: int) -> None:
                results[i] = await p.execute("echo", {"value": i})

            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(call, i)
            assert results == {i: i for i in range(50)}
            assert p.stats().requests == 50

    async def test_bad_adapter_is_a_pool_start_error_and_nothing_runs(self) -> None:
        before = descendant_pids()
        with pytest.raises(PoolStartError, match="cannot import module") as info:
            async with Pool("no_such_module_xyz:Thing", size=2):
                pass
        assert "stderr" in str(info.value)
        assert descendant_pids() - before == set()

    async def test_setup_raising_is_a_pool_start_error(self) -> None:
        with pytest.raises(PoolStartError, match="setup\\(\\) raised RuntimeError"):
            async with Pool("tests.unit.grpc._adapters:BadSetup", size=1, cwd=ROOT):
                pass

    async def test_closed_pool_refuses_calls(self) -> None:
        p = pool()
        with pytest.raises(PoolClosed):
            await p.execute("ping")
        async with p:
            pass
        with pytest.raises(PoolClosed):
            await p.execute("ping")
        with pytest.raises(PoolClosed):
            async with p:
                pass


class TestConfig:
    @pytest.mark.parametrize(
        ("options", "field"),
        [
            ({"size": 0}, "size"),
            ({"size": 1.5}, "size"),
            ({"max_queue": 0}, "max_queue"),
            ({"queue_timeout": -1}, "queue_timeout"),
            ({"shutdown_timeout": 0}, "shutdown_timeout"),
            ({"no_such_option": 1}, "no_such_option"),
            ({"env": {"A": 1}}, "env"),
        ],
    )
    def test_bad_option_names_the_field(self, options: dict[str, Any], field: str) -> None:
        with pytest.raises(ConfigError) as info:
            Pool(ADAPTER, **options)
        assert info.value.field == field

    @pytest.mark.parametrize("adapter", ["no_colon", ":Cls", "mod:", ""])
    def test_bad_adapter_string(self, adapter: str) -> None:
        with pytest.raises(ConfigError) as info:
            Pool(adapter)
        assert info.value.field == "adapter"

    def test_thread_caps(self) -> None:
        config = PoolConfig(adapter=ADAPTER, env={"OMP_NUM_THREADS": "4"})
        env = config.worker_env({"MKL_NUM_THREADS": "2"})
        assert env["OMP_NUM_THREADS"] == "4"  # configured
        assert env["MKL_NUM_THREADS"] == "2"  # the host's own setting
        assert env["OPENBLAS_NUM_THREADS"] == "1"  # capped
        assert PoolConfig(adapter=ADAPTER, cap_threads=False).worker_env({}) == {}

    def test_public_names(self) -> None:
        assert snakepit.Pool is Pool
        assert snakepit.PoolConfig is PoolConfig


class TestFailures:
    async def test_crash_fails_only_the_call_in_flight_and_is_replaced(self) -> None:
        async with pool() as p:
            with pytest.raises(WorkerCrashed) as info:
                await p.execute("exit", {"code": 3})
            assert info.value.returncode == 3
            with pytest.raises(WorkerCrashed, match="SIGKILL"):
                await p.execute("kill_self")
            await p.wait_ready()
            assert await p.execute("ping") == {"status": "pong"}
            stats = p.stats()
            assert stats.crashes == 2
            assert stats.restarts >= 2

    async def test_remote_errors_leave_the_worker_in_service(self) -> None:
        async with pool(in_process=True, size=1) as p:
            with pytest.raises(RemoteError):
                await p.execute("fail")
            assert await p.execute("ping") == {"status": "pong"}
            assert p.stats().errors == 1

    async def test_timeout_kills_and_replaces_a_stuck_worker(self) -> None:
        async with pool(size=1) as p:
            (before,) = p.workers()
            events = p.subscribe()
            with pytest.raises(ExecutionTimeout):
                await p.execute("stuck_sync", timeout=0.1)  # deaf to ctx.cancelled
            with anyio.fail_after(30):
                async for event in events:
                    if isinstance(event, WorkerReady):
                        break
            events.close()
            (after,) = p.workers()
            assert (after.generation, after.pid != before.pid) == (1, True)
            assert await p.execute("ping") == {"status": "pong"}
            assert p.stats().timeouts == 1

    async def test_timeout_of_a_tool_that_sees_it_keeps_the_worker(self) -> None:
        async with pool(size=1) as p:
            (before,) = p.workers()
            with pytest.raises(ExecutionTimeout):
                await p.execute("hang_sync", timeout=0.1)  # returns once cancelled
            assert await p.execute("ping") == {"status": "pong"}
            (after,) = p.workers()
            assert (after.generation, after.pid) == (0, before.pid)
            assert (p.stats().timeouts, p.stats().restarts) == (1, 0)

    async def test_aclose_from_another_task_stops_real_workers(self) -> None:
        before = descendant_pids()
        p = pool(size=2)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(p.__aenter__)  # entered in a task that ends
            assert await p.execute("ping") == {"status": "pong"}
            async with anyio.create_task_group() as tg:
                tg.start_soon(p.aclose)  # closed from another one
        assert descendant_pids() - before == set()  # every worker reaped

    async def test_cancelled_call_returns_its_slot(self) -> None:
        async with pool(in_process=True, size=1) as p:
            with anyio.move_on_after(0.05):
                await p.execute("hang")
            with anyio.fail_after(10):
                assert await p.execute("ping") == {"status": "pong"}
            await all_checked_in(p)  # sent ahead, the ping may end before the check-in
            assert p.stats().idle == 1


class TestQueue:
    async def test_queue_timeout(self) -> None:
        async with (
            pool(in_process=True, size=1, queue_timeout=0.05) as p,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(p.execute, "hang")  # holds the only slot
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(QueueTimeout):
                await p.execute("ping")
            assert p.stats().queued == 0
            tg.cancel_scope.cancel()

    async def test_queue_full(self) -> None:
        async with (
            pool(in_process=True, size=1, max_queue=1, prefetch=0) as p,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(p.execute, "hang")  # holds the only slot
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(p.execute, "ping")  # waits in the queue
            await anyio.wait_all_tasks_blocked()
            assert p.stats().queued == 1
            with pytest.raises(QueueFull):
                await p.execute("ping")
            tg.cancel_scope.cancel()
        # cancelled waiters leave the queue; the slot came back
