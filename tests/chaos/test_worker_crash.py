"""Chaos: worker processes killed under load; every call still ends, typed, and nothing leaks.

The kill storm runs on the harness: its randomness is the ``chaos_rng``
fixture (pytest-randomly's seed and the test id: ``-p randomly
--randomly-seed=N`` replays one; the seed is printed and named in every
assertion message), its rounds alternate a SIGKILL of worker processes from
outside (the pool must notice) and ``chaos_kill_children`` (the pool's WorkerServer
servers killed, their processes with them), and ``assert_chaos_resilient``
checks the pool is whole again and serves. Nothing here waits on a timer: the
storm waits for calls to complete, for the killed WorkerServers to exit and
for ``pool.wait_ready()``; every wait has a deadline.
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
from snakepit.pool import Pool, PoolStats, WorkerServer
from snakepit.testing import assert_chaos_resilient, chaos_kill_children
from tests._fifo import open_gate
from tests._procs import descendant_pids

from ._support import (
    CALL_DEADLINE,
    FIXED_SEED,
    RECOVERY_DEADLINE,
    TEST_DEADLINE,
    TYPED,
    kill_and_wait_replaced,
    live_workers,
    make_pool,
    pid_of,
)

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

#: The storm: workers, concurrent callers, successful calls between kills.
SIZE = 3
CALLERS = 60
CALLS_BETWEEN_KILLS = 30
#: How each round kills 1..SIZE random workers: their processes SIGKILLed from
#: outside, or their WorkerServers killed by the harness's chaos_kill_children.
ROUNDS = ("outside", "chaos_kill_children")


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


async def test_kill_storm_under_load(
    chaos_rng: random.Random, request: pytest.FixtureRequest
) -> None:
    rng = chaos_rng
    tag = f"[chaos_rng seed {dict(request.node.user_properties)['chaos_rng_seed']}]"
    before = descendant_pids()
    progress = Progress()
    typed: Counter[str] = Counter()
    crashes: list[WorkerCrashed] = []
    untyped: list[BaseException] = []
    wrong: list[tuple[Any, Any]] = []
    hung: list[Any] = []
    killed: list[int] = []
    plan: list[tuple[str, int]] = []
    stop = anyio.Event()

    async def caller(pool: Pool, i: int) -> None:
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

    async def kill_round(pool: Pool, how: str) -> None:
        """Kill 1..SIZE random workers, ``how`` says how; return once all are replaced."""
        live = live_workers(pool)
        assert len(live) == SIZE, f"{tag} {live}"
        count = rng.randint(1, SIZE)
        plan.append((how, count))
        if how == "outside":
            victims = rng.sample(live, count)
            killed.extend(pid_of(w) for w in victims)
            await kill_and_wait_replaced(pool, victims)
        else:  # waits until stable and ready, checks each victim came back
            pids = {w.worker_id: pid_of(w) for w in live}
            report = await chaos_kill_children(
                pool, rounds=1, rng=rng, per_round=count, timeout=RECOVERY_DEADLINE
            )
            assert len(report.kills) == count, f"{tag} {report}"
            killed.extend(pids[str(kill.child_id)] for kill in report.kills)
        assert pool.stats().ready == SIZE, f"{tag} {pool.stats()}"

    async def storm(pool: Pool) -> None:
        """The chaos: callers keep the pool busy through the kill rounds; then check each call."""
        async with anyio.create_task_group() as tg:
            for i in range(CALLERS):
                tg.start_soon(caller, pool, i)
            for how in ROUNDS:
                with anyio.fail_after(RECOVERY_DEADLINE):
                    await progress.more(CALLS_BETWEEN_KILLS)  # the load is flowing
                await kill_round(pool, how)
            stop.set()
        # a stray CancelledError in a task cancels the group without an error
        assert stop.is_set(), f"{tag} the storm was cut short"
        check_outcomes(pool.stats(), f"{tag} kills per round {plan}")

    def check_outcomes(stats: PoolStats, tag: str) -> None:
        """Every call ended with its result or a typed error; the pool is whole, no slot lost."""
        assert hung == [], f"{tag} calls with no outcome after {CALL_DEADLINE}s: {hung[:5]}"
        assert untyped == [], f"{tag} untyped errors: {untyped[:5]!r}"
        assert wrong == [], f"{tag} wrong results: {wrong[:5]}"
        # Hit: failed with a typed error, or (not started yet) sent to another worker.
        assert sum(typed.values()) + stats.resent >= 1, f"{tag} the storm hit no call: {stats}"
        for crash in crashes:
            assert crash.returncode == -signal.SIGKILL, f"{tag} {crash}"
            assert crash.pid in killed, f"{tag} {crash} names no killed pid {killed}"
            assert "SIGKILL" in str(crash), f"{tag} {crash}"
        # every worker replaced once, every slot back
        assert stats.ready == SIZE, f"{tag} {stats}"
        assert stats.restarts == len(killed), f"{tag} {stats}"
        assert stats.queued == 0, f"{tag} {stats}"
        assert stats.idle == SIZE, f"{tag} a slot leaked or doubled: {stats}"
        # A call sent to a killed worker that had not started it was sent again.
        assert stats.requests == progress.count + sum(typed.values()) + stats.resent, (
            f"{tag} {stats}"
        )
        assert stats.crashes == typed["WorkerCrashed"] + typed["WorkerUnavailable"], (
            f"{tag} {typed} {stats}"
        )

    async def serves_on_every_worker(pool: Pool) -> None:
        """The replacements are new processes, and the pool serves again, on every worker."""
        live_pids = {pid_of(w) for w in live_workers(pool)}
        assert live_pids.isdisjoint(killed), f"{tag} {live_pids} {killed}"
        results: dict[int, Any] = {}

        async def after(i: int) -> None:
            results[i] = await pool.execute("echo", {"value": i})

        with anyio.fail_after(CALL_DEADLINE):
            async with anyio.create_task_group() as tg:
                for i in range(4 * SIZE):
                    tg.start_soon(after, i)
        assert results == {i: i for i in range(4 * SIZE)}, tag
        assert pool.stats().errors == 0, f"{tag} {pool.stats()}"

    with anyio.fail_after(TEST_DEADLINE):
        async with make_pool(size=SIZE, max_restarts=10 * SIZE * len(ROUNDS)) as pool:
            await assert_chaos_resilient(pool, storm, serves_on_every_worker, timeout=TEST_DEADLINE)
    assert descendant_pids() - before == set(), f"{tag} orphan workers after the pool exited"


async def test_the_seed_fixture_is_pytest_randomly_seed(
    seed: int, request: pytest.FixtureRequest
) -> None:
    value = request.config.getoption("randomly_seed", default=None)
    assert seed == (value if isinstance(value, int) else FIXED_SEED)


class TestKillMidCall:
    """A SIGKILL from outside fails exactly the call in flight, with the signal named."""

    @pytest.mark.parametrize("calls", [3])
    async def test_running_calls(self, calls: int, tmp_path: Path) -> None:
        """Every call running on the killed worker fails (max_concurrency > 1 too).

        Each is known to run (a FIFO gate each) when the kill comes: a call
        sent but not started yet would run on the replacement instead.
        """
        gates = [tmp_path / f"gate{i}" for i in range(calls)]
        for gate in gates:
            os.mkfifo(gate)
        before = descendant_pids()
        outcome: list[BaseException] = []
        async with make_pool(size=1, max_concurrency=calls) as pool:
            (worker,) = live_workers(pool)
            pid = pid_of(worker)

            async def call(gate: Path) -> None:
                try:
                    await pool.execute("wait_gate", {"path": str(gate)})
                except Exception as exc:
                    outcome.append(exc)

            with anyio.fail_after(RECOVERY_DEADLINE):
                async with anyio.create_task_group() as tg:
                    for gate in gates:
                        tg.start_soon(call, gate)
                    writers = [await open_gate(gate, RECOVERY_DEADLINE) for gate in gates]
                    try:
                        assert pool.stats().idle == 0  # the calls hold every slot
                        assert worker.in_flight == calls
                        await kill_and_wait_replaced(pool, [worker])
                    finally:
                        for writer in writers:
                            writer.close()
            assert len(outcome) == calls
            for error in outcome:
                self.check_crash(error, worker, pid)
            await self.check_serves(pool, crashes=calls, slots=calls)
        assert descendant_pids() - before == set()

    async def test_running_tool(self, tmp_path: Path) -> None:
        """The tool is known to be running (a FIFO gate) when the kill comes."""
        gate = tmp_path / "gate"
        os.mkfifo(gate)
        before = descendant_pids()
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
                    writer = await open_gate(
                        gate, RECOVERY_DEADLINE
                    )  # returns once the tool opened it
                    try:
                        await kill_and_wait_replaced(pool, [worker])
                    finally:
                        writer.close()
            assert len(outcome) == 1
            self.check_crash(outcome[0], worker, pid)
            await self.check_serves(pool)
        assert descendant_pids() - before == set()

    async def test_stream(self) -> None:
        before = descendant_pids()
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
        assert descendant_pids() - before == set()

    async def test_describe_in_flight_when_the_channel_closes(self) -> None:
        """Seen in a kill storm with describe() callers; made deterministic here.

        The worker is frozen so the Describe call stays in flight, then the pool
        is left: its WorkerServer closes the channel under the call (as it does after a
        kill when the host notices the exit before grpc notices the socket).
        """
        before = descendant_pids()
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
        assert descendant_pids() - before == set()
        assert len(outcome) == 1
        assert isinstance(outcome[0], SnakepitError), repr(outcome[0])

    async def test_segfault_names_sigsegv(self) -> None:
        before = descendant_pids()
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
        assert descendant_pids() - before == set()

    @staticmethod
    def check_crash(error: BaseException, worker: WorkerServer, pid: int) -> None:
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
