"""Recycling, draining and health checks with pipelining (``PoolConfig.prefetch``).

A worker the pool recycles, drains or stops hands back the calls it was sent
ahead and has not started (``ClientFrame.withdraw``): they run on another
worker (or fail with ``PoolClosed`` when the pool stops), never twice, and
none waits behind the worker's running call. ``max_requests_per_worker`` is
exact: the calls sent ahead count, and a worker sent its last call takes no
more.
"""

from __future__ import annotations

import collections
import os
import random
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest

from snakepit.errors import PoolClosed, WorkerCrashed
from snakepit.pool._connection import Withdrawn
from snakepit.worker._lane import LANE_ENV
from tests._fifo import open_gate

from ._support import live_workers, make_pool, pid_of
from .test_pipelining import DEADLINE, held_call, lanes

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)


def runs_of(path: Path) -> list[tuple[int, int]]:
    """(call id, pid) of each call that ran, from ``record_pid``'s file."""
    if not path.exists():
        return []
    pairs = (line.split() for line in path.read_text().splitlines())
    return [(int(call_id), int(pid)) for call_id, pid in pairs]


class Outcomes(dict[int, Any]):
    """Calls' outcomes by id; :meth:`wait_for` returns once ``n`` are in."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = anyio.Event()

    def __setitem__(self, key: int, value: Any) -> None:
        super().__setitem__(key, value)
        self._changed.set()

    async def wait_for(self, n: int) -> None:
        with anyio.fail_after(DEADLINE):
            while len(self) < n:
                self._changed = anyio.Event()
                await self._changed.wait()


async def test_max_requests_per_worker_is_exact_with_prefetch(tmp_path: Path) -> None:
    # The host's count (the worker's lane does not matter).
    ran = tmp_path / "ran"
    limit, calls = 8, 120
    results: dict[int, int] = {}
    async with make_pool(size=2, prefetch=4, max_requests_per_worker=limit) as pool:
        ids = iter(range(calls))

        async def caller() -> None:
            for call_id in ids:
                results[call_id] = await pool.execute(
                    "record_pid", {"path": str(ran), "call_id": call_id}
                )

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(16):
                    tg.start_soon(caller)
        stats = pool.stats()
    runs = runs_of(ran)
    per_call = collections.Counter(call_id for call_id, _ in runs)
    assert sorted(per_call) == list(range(calls))
    assert [i for i, n in per_call.items() if n > 1] == []  # none twice
    per_worker = collections.Counter(pid for _, pid in runs)
    assert max(per_worker.values()) <= limit, per_worker
    assert dict(runs) == results  # each result came from where it ran
    assert stats.recycled >= 5
    assert stats.crashes == stats.errors == 0


@lanes
@pytest.mark.parametrize("tool", ["record_pid", "arecord_pid"])
async def test_a_recycled_workers_calls_sent_ahead_run_on_another_worker(
    tmp_path: Path, lane: str, tool: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = tmp_path / "ran"
    ahead = Outcomes()
    async with make_pool(size=1, prefetch=4, env={LANE_ENV: lane}) as pool:
        (old,) = live_workers(pool)
        old_pid = pid_of(old)

        async def send_ahead(call_id: int) -> None:
            ahead[call_id] = await pool.execute(tool, {"path": str(ran), "call_id": call_id})

        async with held_call(pool, tmp_path) as (held, tg):
            for call_id in range(3):
                tg.start_soon(send_ahead, call_id)
            await anyio.wait_all_tasks_blocked()
            assert old.in_flight == 4  # sent ahead, behind the held call
            # Due for recycling (as its age or memory would make it).
            recycler = pool._recycler
            monkeypatch.setattr(recycler, "reason", lambda worker, *, memory: "the test")
            recycler.check(old, memory=True)
            assert old.state == "recycling"
            await ahead.wait_for(3)  # while the held call still runs there
            assert old.in_flight == 1
        assert held == ["opened"]
        new_pid = pid_of(live_workers(pool)[0])
        assert new_pid != old_pid
        assert ahead == {0: new_pid, 1: new_pid, 2: new_pid}
        assert sorted(runs_of(ran)) == [(0, new_pid), (1, new_pid), (2, new_pid)]
        stats = pool.stats()
        assert (stats.resent, stats.recycled, stats.crashes, stats.errors) == (3, 1, 0, 0)


@lanes
@pytest.mark.parametrize("tool", ["record_pid", "arecord_pid"])
async def test_a_withdraw_racing_the_start_never_loses_nor_doubles_a_call(
    tmp_path: Path, lane: str, tool: str, chaos_rng: random.Random
) -> None:
    """Calls sent to one worker, then withdrawn after a seeded number of loop steps.

    Each ends in its result (it ran, once) or in Withdrawn (it never ran).
    """
    rng = chaos_rng
    ran = tmp_path / "ran"
    rounds, per_round = 100, 6
    outcomes: dict[int, str] = {}
    async with make_pool(size=1, prefetch=4, env={LANE_ENV: lane}) as pool:
        (worker,) = live_workers(pool)
        mux = worker.mux
        assert mux is not None

        async def call(call_id: int) -> None:
            try:
                await mux.execute(tool, {"path": str(ran), "call_id": call_id})
                outcomes[call_id] = "ran"
            except Withdrawn:
                outcomes[call_id] = "withdrawn"

        with anyio.fail_after(60):
            for r in range(rounds):
                async with anyio.create_task_group() as tg:
                    for i in range(per_round):
                        tg.start_soon(call, r * per_round + i)
                    for _ in range(rng.randrange(12)):
                        await anyio.lowlevel.checkpoint()
                    mux.withdraw_unstarted()
    runs = collections.Counter(call_id for call_id, _ in runs_of(ran))
    assert len(outcomes) == rounds * per_round  # none lost
    assert [i for i, n in runs.items() if n > 1] == []  # none twice
    assert {i for i, o in outcomes.items() if o == "ran"} == set(runs)
    withdrawn = sum(1 for o in outcomes.values() if o == "withdrawn")
    assert 0 < withdrawn < rounds * per_round  # both sides of the race were met


@lanes
async def test_health_checks_replace_a_stopped_worker_and_its_calls_ahead_run_elsewhere(
    tmp_path: Path, lane: str
) -> None:
    ahead = Outcomes()
    options: dict[str, Any] = {"health_interval": 0.05, "health_timeout": 0.2}
    async with make_pool(
        size=1, prefetch=4, max_missed_pings=2, env={LANE_ENV: lane}, **options
    ) as pool:
        (old,) = live_workers(pool)
        old_pid = pid_of(old)

        async def send_ahead(value: int) -> None:
            ahead[value] = await pool.execute("echo", {"value": value})

        async with held_call(pool, tmp_path) as (held, tg):
            for value in range(3):
                tg.start_soon(send_ahead, value)
            await anyio.wait_all_tasks_blocked()
            assert old.in_flight == 4
            os.kill(old_pid, signal.SIGSTOP)  # a stuck worker: its health checks fail
            with anyio.fail_after(DEADLINE):
                await old.ref.wait()  # retired (killed) for its missed health checks
            await ahead.wait_for(3)
        (crash,) = held
        assert isinstance(crash, WorkerCrashed)  # it had started
        assert ahead == {0: 0, 1: 1, 2: 2}  # they had not: they ran on the replacement
        stats = pool.stats()
        assert (stats.crashes, stats.resent) == (1, 3)


@lanes
async def test_a_pool_stopping_fails_its_calls_ahead_at_once_and_lets_the_running_one_end(
    tmp_path: Path, lane: str
) -> None:
    ran = tmp_path / "ran"
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    outcomes = Outcomes()
    held: list[Any] = []
    pool = make_pool(size=1, prefetch=4, env={LANE_ENV: lane})
    with anyio.fail_after(DEADLINE):
        async with pool, anyio.create_task_group() as tg:
            (worker,) = live_workers(pool)

            async def hold() -> None:
                held.append(await pool.execute("wait_gate", {"path": str(gate)}))

            async def send_ahead(call_id: int) -> None:
                try:
                    outcomes[call_id] = await pool.execute(
                        "record_pid", {"path": str(ran), "call_id": call_id}
                    )
                except PoolClosed as exc:
                    outcomes[call_id] = exc

            tg.start_soon(hold)
            writer = await open_gate(gate, DEADLINE)  # the held call runs
            try:
                for call_id in range(3):
                    tg.start_soon(send_ahead, call_id)
                await anyio.wait_all_tasks_blocked()
                assert worker.in_flight == 4
                tg.start_soon(pool.aclose)
                await outcomes.wait_for(3)  # the held call still runs
                assert held == []
            finally:
                writer.close()
    assert held == ["opened"]  # within the shutdown's grace
    assert all(isinstance(o, PoolClosed) for o in outcomes.values()), outcomes
    assert runs_of(ran) == []  # none of them ran


async def test_scaling_down_moves_the_stopped_workers_calls_ahead_to_the_other(
    tmp_path: Path,
) -> None:
    ran = tmp_path / "ran"
    gates = [tmp_path / "gate-a", tmp_path / "gate-b"]
    for gate in gates:
        os.mkfifo(gate)
    ahead = Outcomes()
    held: list[Any] = []
    async with make_pool(size=2, prefetch=4) as pool:
        a, b = live_workers(pool)

        async def hold(gate: Path) -> None:
            held.append(await pool.execute("wait_gate", {"path": str(gate)}))

        async def send_ahead(call_id: int) -> None:
            ahead[call_id] = await pool.execute(
                "record_pid", {"path": str(ran), "call_id": call_id}
            )

        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tg:
                writers = []
                for gate in gates:  # a call held running on each worker
                    tg.start_soon(hold, gate)
                    writers.append(await open_gate(gate, DEADLINE))
                try:
                    for call_id in range(8):
                        tg.start_soon(send_ahead, call_id)
                    await anyio.wait_all_tasks_blocked()
                    assert (a.in_flight, b.in_flight) == (5, 5)  # prefetch 4 each
                    victim, survivor = a, b  # of two as busy, scale() stops the first
                    moved = 4
                    tg.start_soon(pool.scale, 1)
                    await anyio.wait_all_tasks_blocked()
                    # The victim's calls ahead came back: they wait in the host now.
                    assert (victim.in_flight, pool.stats().queued) == (1, moved)
                finally:
                    for writer in writers:
                        writer.close()
        assert held == ["opened", "opened"]
        assert pool.stats().size == 1
    runs = runs_of(ran)
    assert sorted(call_id for call_id, _ in runs) == list(range(8))  # each once
    assert {pid for _, pid in runs} == {pid_of(survivor)}
    assert pool.stats().resent == moved
