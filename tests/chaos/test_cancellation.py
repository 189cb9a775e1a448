"""Cancellation: a cancelled call's slot is free again only once its tool has really ended.

Issue #11, defect 2: cancelling the caller of a sync tool that runs on freed
the host's slot at once, and the next call landed on the busy worker. Now the
slot stays taken until the worker reports the call ended (a CANCELLED reply
sent when the task, thread or generator is done), and a worker whose
cancelled call does not end within ``cancel_grace`` is replaced (the pool's
decision, not a crash). The seeded chaos test cancels 2,000 calls at random
points and checks that every slot, on the host and in the workers, is free
afterwards.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from snakepit.errors import ExecutionTimeout
from snakepit.pool import InProcessLauncher, Pool
from tests._budget import THOROUGH
from tests._procs import descendant_pids
from tests._slots import all_checked_in
from tests.unit.grpc._adapters import drop_gate, gate

from ._support import ROOT, live_workers

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

HOSTILE = "tests.unit.grpc._adapters:Hostile"


@pytest.fixture
def key(tmp_path: Path) -> Iterator[str]:
    """A gate key of this test's own (its tmp path); the gate is released after the test."""
    name = str(tmp_path)
    yield name
    drop_gate(name)


@pytest.fixture
def launcher() -> Iterator[InProcessLauncher]:
    """An in-process launcher; its socket directory is removed after the test."""
    made = InProcessLauncher()
    yield made
    made.close()


@pytest.fixture(params=["frames", "grpc"])
def transport(request: pytest.FixtureRequest) -> str:
    """How calls travel: the frames socket, or the ``Channel`` RPC."""
    value: str = request.param
    return value


def in_process_pool(launcher: InProcessLauncher, **options: Any) -> Pool:
    options.setdefault("size", 1)
    options.setdefault("health_interval", None)
    return Pool(HOSTILE, launcher=launcher, **options)


async def cancel_once_running(pool: Pool, tool: str, args: dict[str, Any], key: str) -> None:
    """Call ``tool`` and cancel the caller once the tool runs (its gate says so)."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.execute, tool, args)
        await anyio.to_thread.run_sync(gate(key).started.wait)
        tg.cancel_scope.cancel()


class TestCancelledSyncTool:
    """A cancelled sync tool that runs on keeps its worker's slot; its worker is not reused."""

    async def test_the_slot_stays_taken_until_the_tool_ends(
        self, launcher: InProcessLauncher, key: str, transport: str
    ) -> None:
        async with in_process_pool(launcher, transport=transport) as pool:
            with anyio.fail_after(10):
                await cancel_once_running(pool, "hold", {"key": key}, key)
            stats = pool.stats()
            assert (stats.idle, stats.queued) == (0, 0)  # the worker is still busy
            results: list[Any] = []

            async def call() -> None:
                results.append(await pool.execute("echo", {"value": 7}, timeout=10))

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(call)
                    await anyio.wait_all_tasks_blocked()
                    # It waits: in the host, or sent ahead (prefetch) to wait
                    # unstarted in the worker, behind the cancelled tool.
                    assert pool.stats().queued == (0 if pool.config.prefetch else 1)
                    assert results == []
                    gate(key).release.set()  # the tool returns; the worker says so
            assert results == [7]
            await all_checked_in(pool)
            stats = pool.stats()
            assert (stats.idle, stats.queued, stats.crashes, stats.timeouts) == (1, 0, 0, 0)

    async def test_a_stream_closed_early_keeps_the_slot_until_its_generator_ends(
        self, launcher: InProcessLauncher, key: str, transport: str
    ) -> None:
        async with in_process_pool(launcher, transport=transport) as pool:
            with anyio.fail_after(10):
                items = pool.stream("hold_stream", {"key": key})
                assert await items.__anext__() == 0
                await anyio.to_thread.run_sync(gate(key).started.wait)  # blocked in a step
                await items.aclose()
            assert pool.stats().idle == 0
            gate(key).release.set()
            with anyio.fail_after(10):
                assert await pool.execute("echo", {"value": 1}) == 1
                await all_checked_in(pool)
            assert pool.stats().idle == 1

    async def test_a_cancelled_tool_that_never_ends_gets_its_worker_replaced(
        self, launcher: InProcessLauncher, key: str, transport: str
    ) -> None:
        async with in_process_pool(launcher, cancel_grace=0.2, transport=transport) as pool:
            (worker,) = live_workers(pool)
            with anyio.fail_after(10):
                await cancel_once_running(pool, "hold", {"key": key}, key)
                await worker.ref.wait()  # killed after cancel_grace
                await pool.wait_ready(timeout=None)
                assert await pool.execute("echo", {"value": 2}, timeout=10) == 2
            stats = pool.stats()
            assert (stats.crashes, stats.timeouts, stats.idle) == (0, 0, 1)
            assert worker.retired_reason is not None
            assert "cancel_grace" in worker.retired_reason

    async def test_closing_the_pool_does_not_wait_for_a_pending_check_in(
        self, launcher: InProcessLauncher, key: str, transport: str
    ) -> None:
        with anyio.fail_after(10):
            async with in_process_pool(launcher, shutdown_timeout=0.5, transport=transport) as pool:
                await cancel_once_running(pool, "hold", {"key": key}, key)
                assert pool.stats().idle == 0
            # left with the tool still running: aclose() returned all the same

    async def test_a_call_cancelled_while_the_pool_closes_is_just_cancelled(
        self, launcher: InProcessLauncher
    ) -> None:
        # The pool stops its workers one by one; a caller cancelled meanwhile
        # on a worker not stopped yet gets its CancelledError (its slot back at
        # once: no deferred check-in while the pool closes), and the close
        # does not wait shutdown_timeout for it.
        pool = in_process_pool(launcher, size=2, shutdown_timeout=30)
        await pool.__aenter__()
        outcomes: list[str] = []

        async def call() -> None:
            try:
                await pool.execute("linger_sync", {"work": 0})
            except BaseException as exc:
                outcomes.append(type(exc).__name__)
                raise

        with anyio.fail_after(10):
            async with anyio.create_task_group() as closing, anyio.create_task_group() as callers:
                callers.start_soon(call)
                callers.start_soon(call)
                while pool.stats().idle:
                    await anyio.wait_all_tasks_blocked()
                closing.start_soon(pool.aclose)
                await anyio.wait_all_tasks_blocked()  # stopping a worker: waits for its call
                callers.cancel_scope.cancel()
        assert outcomes == ["CancelledError", "CancelledError"]

    async def test_a_check_in_whose_channel_broke_takes_the_worker_out(
        self, launcher: InProcessLauncher, key: str, transport: str
    ) -> None:
        # The channel broke while a cancelled call's check-in waited: the
        # worker's state is unknown, so it is replaced, never handed the next call.
        async with in_process_pool(launcher, transport=transport) as pool:
            (worker,) = live_workers(pool)
            with anyio.fail_after(10):
                await cancel_once_running(pool, "hold", {"key": key}, key)
                assert worker.mux is not None
                await worker.mux.aclose()  # as if the connection broke
                await worker.ref.wait()
                gate(key).release.set()
                assert await pool.execute("echo", {"value": 3}) == 3  # on its replacement
            assert live_workers(pool) != [worker]

    def test_cancel_grace_is_checked(self) -> None:
        from snakepit.errors import ConfigError

        for bad in (0, -1.0, float("nan"), float("inf")):
            with pytest.raises(ConfigError, match="cancel_grace"):
                Pool(HOSTILE, cancel_grace=bad)


# -- the seeded chaos --------------------------------------------------------------------

SIZE = 2
CALLERS = 64
# Per run: the seed changes every run, so runs add up (the suite has a 30 s
# budget); SNAKEPIT_THOROUGH=1 makes it 10,000.
CALLS = 1_000 * THOROUGH
CHECKED_CALLS = 200

#: (tool, args, streaming, hangs until cancelled)
TOOLS: list[tuple[str, dict[str, Any], bool, bool]] = [
    ("echo", {"value": 1}, False, False),
    ("aecho", {"value": 2}, False, False),
    ("noop", {}, False, False),
    ("hang", {}, False, True),
    ("hang_sync", {}, False, True),
    ("count", {"n": 3}, True, False),
    ("acount", {"n": 3}, True, False),
    ("hang_stream", {}, True, True),
    ("linger_sync", {}, False, True),
    ("slot_state", {}, False, False),
]
#: The probe: the worker's slots as a call sees them when it starts.
PROBE = len(TOOLS) - 1


def plan_calls(rng: random.Random) -> list[tuple[int, str, int]]:
    """For each call: its tool's index, how it is cancelled, and when.

    ``("none", 0)``: not cancelled; ``("checkpoints", k)``: cancelled after k
    scheduler passes of the caller (0: before the call's task even started,
    then while queued, running, or with its reply on the way);
    ``("deadline", us)``: a cancel scope with a deadline of ``us`` microseconds;
    ``("break", 0)``: a stream left after its first item.
    """
    plan = []
    for _ in range(CALLS):
        index = rng.randrange(len(TOOLS))
        _, _, streaming, hangs = TOOLS[index]
        draw = rng.random()
        if streaming and draw < 0.15:
            plan.append((index, "break", 0))
        elif draw < 0.25 and not hangs:
            plan.append((index, "none", 0))
        elif draw < 0.40:
            plan.append((index, "deadline", rng.randrange(0, 3000)))
        else:
            # Now and then late enough for the call to have reached its worker.
            latest = 400 if rng.random() < 0.25 else 60
            plan.append((index, "checkpoints", rng.randrange(0, latest)))
    return plan


async def run_call(
    pool: Pool, index: int, how: str, when: int, outcomes: Counter[str], seen: list[Any]
) -> None:
    tool, args, streaming, _ = TOOLS[index]

    async def call() -> None:
        if streaming:
            async with contextlib.aclosing(pool.stream(tool, args)) as items:
                async for _ in items:
                    if how == "break":
                        break
        else:
            result = await pool.execute(tool, args)
            if index == PROBE:
                seen.append(result)
        outcomes["ended"] += 1

    if how == "deadline":
        with anyio.move_on_after(when / 1e6) as scope:
            await call()
        if scope.cancelled_caught:
            outcomes["cancelled"] += 1
        return
    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        if how == "checkpoints":
            for _ in range(when):
                await anyio.lowlevel.checkpoint()
            tg.cancel_scope.cancel()
    if tg.cancel_scope.cancelled_caught:
        outcomes["cancelled"] += 1


@pytest.mark.parametrize(("max_concurrency", "prefetch"), [(1, 4), (4, 0)])
async def test_cancellations_at_random_points_leave_every_slot_free(
    max_concurrency: int, prefetch: int, chaos_rng: random.Random
) -> None:
    """64 callers, 2,000 calls cancelled at random points: then every slot is free, and usable.

    With ``prefetch``, calls are sent ahead to busy workers (they wait there
    to start: at most ``prefetch`` at a time); without, none ever waits in a
    worker (the host never sends one to a worker still busy with a cancelled call).
    """
    plan = plan_calls(chaos_rng)
    before = descendant_pids()
    outcomes: Counter[str] = Counter()
    seen: list[dict[str, int]] = []  # what the probes saw
    pool = Pool(
        HOSTILE,
        cwd=ROOT,
        size=SIZE,
        max_concurrency=max_concurrency,
        prefetch=prefetch,
        health_interval=None,
    )
    async with pool:
        todo = iter(plan)

        async def caller() -> None:
            for index, how, when in todo:  # shared: the callers take the plan in order
                await run_call(pool, index, how, when, outcomes, seen)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(CALLERS):
                    tg.start_soon(caller)
        assert outcomes["cancelled"] > CALLS // 3, outcomes
        assert len(seen) > CALLS // 100, outcomes  # some probes ran (about 1 call in 40)
        if prefetch:  # the probe may wait behind calls sent ahead too
            assert [s for s in seen if s["waiting"] > prefetch or s["free"] < 0] == []
        else:
            assert [s for s in seen if s["waited"] or s["waiting"] or s["free"] < 0] == []
        workers = live_workers(pool)
        with anyio.fail_after(10):  # every cancelled call's end reported by its worker
            for worker in workers:
                assert worker.mux is not None
                for rid in worker.mux.left_running:
                    assert await worker.mux.settled(rid)
            await anyio.wait_all_tasks_blocked()  # the check-ins that waited for them ran
        stats = pool.stats()
        free = SIZE * max_concurrency
        assert (stats.ready, stats.idle, stats.queued) == (SIZE, free, 0), stats
        assert (stats.crashes, stats.timeouts, stats.restarts) == (0, 0, 0), stats
        assert live_workers(pool) == workers  # nobody was replaced
        for worker in workers:
            assert worker.in_flight == 0
            assert worker.mux is not None
            with anyio.fail_after(10):
                state = await worker.mux.execute("slot_state")  # this call holds one slot
            # Without prefetch no call ever waited for a slot in the worker: the
            # host never sent one to a worker still busy with a cancelled call.
            if prefetch:
                state.pop("waited")
            assert state == {
                "size": max_concurrency,
                "free": max_concurrency - 1,
                "waiting": 0,
                **({} if prefetch else {"waited": 0}),
                "in_flight": 1,
            }, (worker.worker_id, state)

        results: list[int] = []
        failures: list[BaseException] = []

        async def checked(i: int) -> None:
            try:
                results.append(await pool.execute("echo", {"value": i}, timeout=10))
            except ExecutionTimeout as exc:
                failures.append(exc)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i in range(CHECKED_CALLS):
                    tg.start_soon(checked, i)
        assert failures == []
        assert sorted(results) == list(range(CHECKED_CALLS))
        assert pool.stats().idle == free
    assert descendant_pids() - before == set()
