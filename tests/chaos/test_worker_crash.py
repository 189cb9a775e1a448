"""Chaos: worker processes killed under load; every call still ends, typed, and nothing leaks.

The kill storm is seeded: the seed is pytest-randomly's when it runs (so
``-p randomly --randomly-seed=N`` replays one), else :data:`FIXED_SEED`; every
assertion message names it. Nothing here waits on a timer: the storm waits
for calls to complete, for the killed Worker servers to exit and for
``pool.wait_ready()``; every wait has a deadline.
"""

from __future__ import annotations

import os
import random
import signal
from collections import Counter
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import pytest

from snakepit.errors import SnakepitError, WorkerCrashed, WorkerUnavailable
from snakepit.pool import Pool, Worker

from ._support import (
    CALL_DEADLINE,
    FIXED_SEED,
    RECOVERY_DEADLINE,
    TEST_DEADLINE,
    TYPED,
    child_pids,
    kill_and_wait_replaced,
    live_workers,
    make_pool,
    open_gate,
    pid_of,
)

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

#: The storm: workers, concurrent callers, kill rounds, successful calls between kills.
SIZE = 3
CALLERS = 60
ROUNDS = 2
CALLS_BETWEEN_KILLS = 30


class Progress:
    """Counts successful calls; lets the storm wait until N more happened."""

    def __init__(self) -> None:
        self.count = 0
        self._target = 0
        self._reached = anyio.Event()

    def tick(self) -> None:
        self.count += 1
        if self.count >= self._target:
            self._reached.set()

    async def more(self, n: int) -> None:
        self._target = self.count + n
        self._reached = anyio.Event()
        await self._reached.wait()


async def test_kill_storm_under_load(seed: int) -> None:
    rng = random.Random(seed)
    tag = f"[seed {seed}: replay with -p randomly --randomly-seed={seed}]"
    before = child_pids()
    progress = Progress()
    typed: Counter[str] = Counter()
    crashes: list[WorkerCrashed] = []
    untyped: list[BaseException] = []
    wrong: list[tuple[Any, Any]] = []
    hung: list[Any] = []
    killed: list[int] = []
    plan: list[int] = []

    with anyio.fail_after(TEST_DEADLINE):
        async with make_pool(size=SIZE, max_restarts=10 * SIZE * ROUNDS) as pool:
            stop = anyio.Event()

            async def caller(i: int) -> None:
                n = 0
                while not stop.is_set():
                    value: Any = [i, n]
                    n += 1
                    try:
                        with anyio.fail_after(CALL_DEADLINE):
                            if i % 4 == 3:  # a quarter of the callers use streams
                                value = [0, 1, 2]
                                async with aclosing(pool.stream("count", {"n": 3})) as items:
                                    result = [item async for item in items]
                            else:
                                result = await pool.execute("echo", {"value": value})
                    except TYPED as exc:
                        typed[type(exc).__name__] += 1
                        if isinstance(exc, WorkerCrashed):
                            crashes.append(exc)
                    except TimeoutError:  # the deadline above, not ExecutionTimeout
                        hung.append(value)
                        return
                    except Exception as exc:
                        untyped.append(exc)
                    else:
                        if result != value:
                            wrong.append((value, result))
                        progress.tick()

            async def storm() -> None:
                for _ in range(ROUNDS):
                    with anyio.fail_after(RECOVERY_DEADLINE):
                        await progress.more(CALLS_BETWEEN_KILLS)  # the load is flowing
                    live = live_workers(pool)
                    assert len(live) == SIZE, f"{tag} {live}"
                    victims = rng.sample(live, rng.randint(1, SIZE))
                    plan.append(len(victims))
                    killed.extend(pid_of(w) for w in victims)
                    await kill_and_wait_replaced(pool, victims)
                    assert pool.stats().ready == SIZE, f"{tag} {pool.stats()}"
                stop.set()

            async with anyio.create_task_group() as tg:
                for i in range(CALLERS):
                    tg.start_soon(caller, i)
                tg.start_soon(storm)

            tag = f"{tag} kills per round {plan}"
            # a stray CancelledError in a task cancels the group without an error
            assert stop.is_set(), f"{tag} the storm was cut short"
            stats = pool.stats()
            assert hung == [], f"{tag} calls with no outcome after {CALL_DEADLINE}s: {hung[:5]}"
            assert untyped == [], f"{tag} untyped errors: {untyped[:5]!r}"
            assert wrong == [], f"{tag} wrong results: {wrong[:5]}"
            assert sum(typed.values()) >= 1, f"{tag} the storm hit no call: {stats}"
            for crash in crashes:
                assert crash.returncode == -signal.SIGKILL, f"{tag} {crash}"
                assert crash.pid in killed, f"{tag} {crash} names no killed pid {killed}"
                assert "SIGKILL" in str(crash), f"{tag} {crash}"

            # the pool is whole again: every worker replaced once, every slot back
            assert stats.ready == SIZE, f"{tag} {stats}"
            assert stats.restarts == len(killed), f"{tag} {stats}"
            assert stats.queued == 0, f"{tag} {stats}"
            assert stats.idle == SIZE, f"{tag} a slot leaked or doubled: {stats}"
            assert stats.requests == progress.count + sum(typed.values()), f"{tag} {stats}"
            assert stats.crashes == typed["WorkerCrashed"] + typed["WorkerUnavailable"], (
                f"{tag} {typed} {stats}"
            )
            live_pids = {pid_of(w) for w in live_workers(pool)}
            assert live_pids.isdisjoint(killed), f"{tag} {live_pids} {killed}"

            # and it serves again, on every worker
            results: dict[int, Any] = {}

            async def after(i: int) -> None:
                results[i] = await pool.execute("echo", {"value": i})

            with anyio.fail_after(CALL_DEADLINE):
                async with anyio.create_task_group() as tg:
                    for i in range(4 * SIZE):
                        tg.start_soon(after, i)
            assert results == {i: i for i in range(4 * SIZE)}, tag
            assert pool.stats().errors == 0, f"{tag} {pool.stats()}"
    assert child_pids() - before == set(), f"{tag} orphan workers after the pool exited"


async def test_storm_seed_is_pytest_randomly_seed(
    seed: int, request: pytest.FixtureRequest
) -> None:
    value = request.config.getoption("randomly_seed", default=None)
    assert seed == (value if isinstance(value, int) else FIXED_SEED)


class TestKillMidCall:
    """A SIGKILL from outside fails exactly the call in flight, with the signal named."""

    @pytest.mark.parametrize("calls", [3])
    async def test_hang_calls(self, calls: int) -> None:
        """Every call in flight on the killed worker fails (max_concurrency > 1 too)."""
        before = child_pids()
        outcome: list[BaseException] = []
        async with make_pool(size=1, max_concurrency=calls) as pool:
            (worker,) = live_workers(pool)
            pid = pid_of(worker)

            async def call() -> None:
                try:
                    await pool.execute("hang")
                except Exception as exc:
                    outcome.append(exc)

            with anyio.fail_after(RECOVERY_DEADLINE):
                async with anyio.create_task_group() as tg:
                    for _ in range(calls):
                        tg.start_soon(call)
                    await anyio.wait_all_tasks_blocked()
                    assert pool.stats().idle == 0  # the calls hold every slot
                    assert worker.in_flight == calls
                    await kill_and_wait_replaced(pool, [worker])
            assert len(outcome) == calls
            for error in outcome:
                self.check_crash(error, worker, pid)
            await self.check_serves(pool, crashes=calls, slots=calls)
        assert child_pids() - before == set()

    async def test_running_tool(self, tmp_path: Path) -> None:
        """The tool is known to be running (a FIFO gate) when the kill comes."""
        gate = tmp_path / "gate"
        os.mkfifo(gate)
        before = child_pids()
        outcome: list[BaseException] = []
        async with make_pool(size=1) as pool:
            (worker,) = live_workers(pool)
            pid = pid_of(worker)

            async def call() -> None:
                try:
                    await pool.execute("wait_gate", {"path": str(gate)})
                except Exception as exc:
                    outcome.append(exc)

            with anyio.fail_after(RECOVERY_DEADLINE):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(call)
                    writer = await open_gate(gate)  # returns once the tool opened it
                    try:
                        await kill_and_wait_replaced(pool, [worker])
                    finally:
                        writer.close()
            assert len(outcome) == 1
            self.check_crash(outcome[0], worker, pid)
            await self.check_serves(pool)
        assert child_pids() - before == set()

    async def test_stream(self) -> None:
        before = child_pids()
        items: list[Any] = []
        outcome: list[BaseException] = []
        async with make_pool(size=1) as pool:
            (worker,) = live_workers(pool)
            pid = pid_of(worker)
            first = anyio.Event()

            async def consume() -> None:
                try:
                    async with aclosing(pool.stream("hang_stream")) as stream:
                        async for item in stream:
                            items.append(item)
                            first.set()
                except Exception as exc:
                    outcome.append(exc)

            with anyio.fail_after(RECOVERY_DEADLINE):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(consume)
                    await first.wait()  # the tool is running
                    await kill_and_wait_replaced(pool, [worker])
            assert items == [0]
            assert len(outcome) == 1
            self.check_crash(outcome[0], worker, pid)
            await self.check_serves(pool)
        assert child_pids() - before == set()

    async def test_describe_in_flight_when_the_channel_closes(self) -> None:
        """Seen in a kill storm with describe() callers; made deterministic here.

        The worker is frozen so the Describe call stays in flight, then the pool
        is left: its Worker closes the channel under the call (as it does after a
        kill when the host notices the exit before grpc notices the socket).
        """
        before = child_pids()
        outcome: list[BaseException] = []

        async def describe(pool: Pool) -> None:
            try:
                await pool.describe()
            except BaseException as exc:  # a stray cancellation too
                outcome.append(exc)

        with anyio.fail_after(RECOVERY_DEADLINE):
            async with (
                anyio.create_task_group() as tg,
                make_pool(size=1, shutdown_timeout=0.1) as pool,
            ):
                (worker,) = live_workers(pool)
                os.kill(pid_of(worker), signal.SIGSTOP)  # Describe stays in flight
                tg.start_soon(describe, pool)
                await anyio.wait_all_tasks_blocked()
        assert child_pids() - before == set()
        assert len(outcome) == 1
        assert isinstance(outcome[0], SnakepitError), repr(outcome[0])

    async def test_segfault_names_sigsegv(self) -> None:
        before = child_pids()
        async with make_pool(size=1) as pool:
            (worker,) = live_workers(pool)
            with anyio.fail_after(RECOVERY_DEADLINE):
                with pytest.raises(WorkerCrashed, match="SIGSEGV") as info:
                    await pool.execute("segfault")
                await worker.ref.wait()
                await pool.wait_ready(timeout=None)
            assert info.value.returncode == -signal.SIGSEGV
            assert info.value.pid == pid_of(worker)
            assert info.value.worker_id == worker.worker_id
            await self.check_serves(pool)
        assert child_pids() - before == set()

    @staticmethod
    def check_crash(error: BaseException, worker: Worker, pid: int) -> None:
        assert isinstance(error, WorkerCrashed), repr(error)
        assert error.returncode == -signal.SIGKILL
        assert error.pid == pid
        assert error.worker_id == worker.worker_id
        assert "killed by SIGKILL" in str(error)
        assert isinstance(error.__cause__, WorkerUnavailable)

    @staticmethod
    async def check_serves(pool: Pool, *, crashes: int = 1, slots: int = 1) -> None:
        with anyio.fail_after(CALL_DEADLINE):
            assert await pool.execute("ping") == {"status": "pong"}
        stats = pool.stats()
        assert (stats.ready, stats.idle, stats.restarts) == (1, slots, 1), stats
        assert stats.crashes == crashes, stats
