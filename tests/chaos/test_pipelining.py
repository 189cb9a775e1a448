"""Pipelining (``PoolConfig.prefetch``): calls sent ahead to busy workers, exactly once.

A call sent ahead waits in its worker until the call before it ends there.
The rules (issue 15): a worker killed with calls in flight fails those that
started (``WorkerCrashed``) and sends the others to another worker (they never
ran there: the started page says so), and no call runs twice; a call whose
timeout passes before it started is a ``QueueTimeout`` and its worker stays;
a cancelled one is withdrawn, and its slot comes back.
"""

from __future__ import annotations

import collections
import errno
import os
import random
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from snakepit.errors import ExecutionTimeout, QueueTimeout, WorkerCrashed
from snakepit.pool import Pool
from snakepit.worker._lane import LANE_ENV
from tests._fifo import open_gate

from ._support import ROOT, kill_and_wait_replaced, live_workers, make_pool, pid_of

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)

DEADLINE = 20.0

#: Both ways a worker runs a sync call: its fast lane, and its event loop.
lanes = pytest.mark.parametrize("lane", ["1", "0"], ids=["fast-lane", "loop"])


def never_opened(fifo: Path) -> bool:
    """True when no tool has the FIFO open for reading (its tool never ran, or ended)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        return exc.errno == errno.ENXIO
    os.close(fd)
    return False


@asynccontextmanager
async def held_call(
    pool: Pool, tmp_path: Path
) -> AsyncIterator[tuple[list[Any], anyio.abc.TaskGroup]]:
    """A call held running on the pool's worker (a FIFO gate) for the block.

    Yields the list that gets the call's outcome once the block has ended
    (the gate closes then), and the task group it runs in.
    """
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    outcome: list[Any] = []

    async def hold() -> None:
        try:
            outcome.append(await pool.execute("wait_gate", {"path": str(gate)}))
        except Exception as exc:
            outcome.append(exc)

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hold)
            writer = await open_gate(gate, DEADLINE)  # returns once the tool runs
            try:
                yield outcome, tg
            finally:
                writer.close()


@lanes
async def test_a_call_sent_ahead_runs_elsewhere_when_its_worker_is_killed(
    tmp_path: Path, lane: str
) -> None:
    ahead: list[Any] = []
    async with make_pool(size=1, prefetch=1, env={LANE_ENV: lane}) as pool:
        (worker,) = live_workers(pool)
        pid = pid_of(worker)

        async def send_ahead() -> None:
            ahead.append(await pool.execute("echo", {"value": "ahead"}))

        async with held_call(pool, tmp_path) as (held, tg):
            tg.start_soon(send_ahead)
            await anyio.wait_all_tasks_blocked()
            assert worker.in_flight == 2  # sent to the busy worker
            assert pool.stats().queued == 0
            await kill_and_wait_replaced(pool, [worker])
        (crash,) = held
        assert isinstance(crash, WorkerCrashed)  # it had started
        assert crash.pid == pid
        assert ahead == ["ahead"]  # it had not: it ran on the replacement
        stats = pool.stats()
        assert (stats.crashes, stats.resent, stats.idle) == (1, 1, 1)


@lanes
async def test_a_call_whose_timeout_passes_before_it_started_is_a_queue_timeout(
    tmp_path: Path, lane: str
) -> None:
    async with make_pool(size=1, prefetch=1, env={LANE_ENV: lane}) as pool:
        (worker,) = live_workers(pool)
        pid = pid_of(worker)
        async with held_call(pool, tmp_path) as (held, _tg):
            with pytest.raises(QueueTimeout, match="the tool did not run"):
                await pool.execute("echo", {"value": 1}, timeout=0.3)
            assert pool.stats().timeouts == 0
            assert pid_of(worker) == pid  # not at fault: not replaced
        assert held == ["opened"]
        assert await pool.execute("echo", {"value": 2}) == 2
        stats = pool.stats()
        assert (stats.timeouts, stats.restarts, stats.errors, stats.idle) == (0, 0, 0, 1)
        assert pid_of(live_workers(pool)[0]) == pid


@lanes
async def test_a_cancelled_call_sent_ahead_is_withdrawn_and_its_slot_comes_back(
    tmp_path: Path, lane: str
) -> None:
    never = tmp_path / "never"
    os.mkfifo(never)
    async with make_pool(size=1, prefetch=1, env={LANE_ENV: lane}) as pool:
        (worker,) = live_workers(pool)
        async with held_call(pool, tmp_path) as (held, tg):
            scope = anyio.CancelScope()

            async def send_ahead() -> None:
                with scope:
                    await pool.execute("wait_gate", {"path": str(never)})

            tg.start_soon(send_ahead)
            await anyio.wait_all_tasks_blocked()
            assert worker.in_flight == 2  # sent to the busy worker
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert scope.cancelled_caught
            assert worker.mux is not None
            for rid in worker.mux.left_running:  # withdrawn: the worker says so
                assert await worker.mux.settled(rid)
            await anyio.wait_all_tasks_blocked()
            assert pool.stats().idle == 0  # the held call still runs
        assert held == ["opened"]
        assert never_opened(never)  # the cancelled call never ran
        assert await pool.execute("echo", {"value": 1}) == 1
        assert pool.stats().idle == 1
        assert (pool.stats().crashes, pool.stats().restarts) == (0, 0)


async def test_kill_storm_under_pipelined_load_runs_each_call_once(
    tmp_path: Path, chaos_rng: random.Random
) -> None:
    """64 callers on 2 workers (prefetch 4); busy workers killed -9 again and again.

    Each call's tool appends its id to a file first: none is there twice,
    and every call that returned is there. A worker runs one call at a time
    (max_concurrency 1): of the calls in flight on a killed worker, one at
    most had started, so there are no more crashes than kills (every call
    sent ahead and not started ran elsewhere). A crashed call is in the file,
    unless the kill came between its start and its tool's first line.
    """
    rng = chaos_rng
    ran = tmp_path / "ran"
    calls, kills_wanted = 1500, 12
    outcomes: dict[int, str] = {}
    kills = 0
    settled = anyio.Event()
    async with make_pool(size=2, prefetch=4, max_restarts=10_000) as pool:
        ids = iter(range(calls))

        async def caller() -> None:
            nonlocal settled
            for call_id in ids:
                try:
                    await pool.execute("record", {"path": str(ran), "call_id": call_id})
                    outcomes[call_id] = "returned"
                except WorkerCrashed:
                    outcomes[call_id] = "crashed"
                settled.set()

        async def killer() -> None:
            nonlocal kills, settled
            every = calls // (kills_wanted + 1)
            next_kill = every
            while kills < kills_wanted and len(outcomes) < calls:
                await settled.wait()
                settled = anyio.Event()
                if len(outcomes) < next_kill:
                    continue
                next_kill += every
                busy = [w for w in live_workers(pool) if w.in_flight]
                if busy:
                    try:
                        os.kill(pid_of(rng.choice(busy)), signal.SIGKILL)
                    except ProcessLookupError:
                        # Killed by an earlier round and reaped by its fork
                        # server, its death not yet seen by the pool: no kill.
                        continue
                    kills += 1

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(killer)
                async with anyio.create_task_group() as callers:
                    for _ in range(64):
                        callers.start_soon(caller)
                tg.cancel_scope.cancel()
        stats = pool.stats()
    runs = collections.Counter(int(line) for line in ran.read_text().split())
    assert len(outcomes) == calls
    assert kills >= kills_wanted // 2, kills
    twice = [i for i, n in runs.items() if n > 1]
    assert twice == [], f"ran twice: {twice}"
    crashed = [i for i, o in outcomes.items() if o == "crashed"]
    assert len(crashed) <= kills, f"{len(crashed)} crashes for {kills} kills: {crashed}"
    assert [i for i, o in outcomes.items() if o == "returned" and not runs[i]] == []
    assert stats.crashes == len(crashed)
    assert stats.requests == calls + stats.resent


async def test_a_session_call_is_never_sent_ahead(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    async with (
        Pool("snakepit.testing.adapters:Gated", size=1, prefetch=4, cwd=ROOT) as pool,
        pool.session() as session,
    ):
        (worker,) = live_workers(pool)
        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tg:
                tg.start_soon(session.execute, "wait_gate", {"path": str(gate)})
                writer = await open_gate(gate, DEADLINE)
                try:
                    tg.start_soon(session.execute, "echo", {"value": 1})
                    await anyio.wait_all_tasks_blocked()
                    assert worker.in_flight == 1  # it waits in the host
                    assert pool.stats().queued == 1
                finally:
                    writer.close()


@lanes
async def test_when_the_hosts_timer_fires_first_an_unstarted_call_is_a_queue_timeout_too(
    tmp_path: Path, lane: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker gives up on a call still waiting a little before its
    # deadline, so that its word comes first; where it comes late (here: the
    # margin made negative, in an in-process worker), the host's own timer
    # fires, the started page says the call had not started, the call is
    # withdrawn, and the worker stays.
    from snakepit.pool import InProcessLauncher
    from snakepit.worker import _service

    monkeypatch.setattr(_service, "START_MARGIN", -5.0)
    monkeypatch.setenv(LANE_ENV, lane)
    async with Pool(
        "snakepit.testing.adapters:Gated", size=1, prefetch=1, launcher=InProcessLauncher()
    ) as pool:
        (worker,) = live_workers(pool)
        async with held_call(pool, tmp_path) as (held, _tg):
            with pytest.raises(QueueTimeout, match="the tool did not run") as info:
                await pool.execute("echo", {"value": 1}, timeout=0.2)
            assert "no reply within" in str(info.value.__cause__)  # the host's timer
            stats = pool.stats()
            assert (stats.timeouts, stats.restarts) == (0, 0)
            assert worker.usable
        assert held == ["opened"]
        assert await pool.execute("echo", {"value": 2}) == 2


async def test_the_errors_a_caller_gets_are_the_public_types() -> None:
    # The pool's own subclasses (the request id a judgement needs) stay inside.
    async with make_pool(size=1, prefetch=1) as pool:
        with pytest.raises(ExecutionTimeout) as info:
            await pool.execute("hang", timeout=0.2)
        assert type(info.value) is ExecutionTimeout
        assert info.value.worker_id == "w0"


async def test_a_stream_is_never_sent_ahead(tmp_path: Path) -> None:
    # Found by a review: a stream sent ahead to a busy worker timed out
    # waiting to start (its timeout is per item), which read as the worker's
    # fault: the worker was killed, and the call running there with it.
    async with make_pool(size=1, prefetch=4) as pool:
        (worker,) = live_workers(pool)
        pid = pid_of(worker)
        async with held_call(pool, tmp_path) as (held, _tg):
            with pytest.raises(QueueTimeout):
                async for _ in pool.stream("count", {"n": 3}, timeout=0.2):
                    pass
            assert worker.in_flight == 1  # it waited in the host
        assert held == ["opened"]
        stats = pool.stats()
        assert (stats.timeouts, stats.crashes, stats.restarts) == (0, 0, 0)
        assert pid_of(live_workers(pool)[0]) == pid


@lanes
async def test_a_timed_out_call_whose_tool_ends_costs_no_call_sent_ahead_and_no_worker(
    lane: str,
) -> None:
    # hang_sync returns once it sees ctx.cancelled, at its deadline: its worker
    # is not stuck. The calls sent ahead behind it start there right after:
    # none may be killed by the timeout (they were, as WorkerCrashed, when every
    # timeout replaced its worker), and the worker stays.
    async with make_pool(size=1, env={LANE_ENV: lane}) as pool:
        (before,) = pool.workers()
        for _ in range(3):
            results: dict[int, Any] = {}
            async with anyio.create_task_group() as tg:
                tg.start_soon(_times_out, pool)
                await anyio.wait_all_tasks_blocked()  # sent: the next are sent ahead of it
                for i in range(4):
                    tg.start_soon(_echo_into, pool, i, results)
            assert results == {i: i for i in range(4)}
        (after,) = pool.workers()
        assert (after.generation, after.pid) == (0, before.pid)
        stats = pool.stats()
        assert (stats.timeouts, stats.crashes, stats.restarts) == (3, 0, 0)


async def _times_out(pool: Pool) -> None:
    with pytest.raises(ExecutionTimeout):
        await pool.execute("hang_sync", timeout=0.1)


async def _echo_into(pool: Pool, i: int, results: dict[int, Any]) -> None:
    results[i] = await pool.execute("echo", {"value": i})
