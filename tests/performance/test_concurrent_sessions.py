"""Many sessions at once: 1,000 strict sessions, 64 concurrent callers, 4 worker processes.

Every call must land on its session's worker (the tool reports its pid and the
session it saw; the session's pin names the worker), none may be lost, and
every session must be gone at the end. The only bound on time is a generous
overall deadline that catches a stall; the real numbers live in
``benchmarks/sessions.py``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import pytest

from snakepit.pool import Pool

from ._load import run_calls

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

ADAPTER = "tests.integration._session_adapters:SessionCounter"
ROOT = str(Path(__file__).resolve().parents[2])

SIZE = 4
SESSIONS = 1_000
#: Calls per session; consecutive calls go to the same session, so callers race on it
#: (its first calls race to pin it: all of them must go to the worker that won).
CALLS_PER_SESSION = 2
IN_FLIGHT = 64
#: The deadline of each phase, and of the whole test (they only catch a stall).
BOUND = 30.0
TOTAL = 60.0


class TestConcurrentSessions:
    async def test_every_call_lands_on_its_sessions_worker_and_nothing_is_left(self) -> None:
        with anyio.fail_after(TOTAL):
            await self._run()

    async def _run(self) -> None:
        async with Pool(ADAPTER, cwd=ROOT, size=SIZE) as pool:
            started = time.perf_counter()
            ids: dict[int, str] = {}

            async def create(i: int) -> None:
                record = await pool.sessions.create(f"s{i}", affinity="strict_queue")
                ids[i] = record.session_id

            await run_calls(create, calls=SESSIONS, in_flight=IN_FLIGHT, bound=BOUND)
            assert pool.stats().sessions == SESSIONS

            calls = SESSIONS * CALLS_PER_SESSION

            async def call(i: int) -> dict[str, Any]:
                session_id = ids[i // CALLS_PER_SESSION]
                report: dict[str, Any] = await pool.execute("where", session_id=session_id)
                return report

            results, elapsed = await run_calls(call, calls=calls, in_flight=IN_FLIGHT, bound=BOUND)

            # No call lost: one answer per call, each from the session it was made in.
            assert sorted(results) == list(range(calls))
            for i, report in results.items():
                assert report["session_id"] == ids[i // CALLS_PER_SESSION], (i, report)
            stats = pool.stats()
            assert (stats.requests, stats.errors, stats.crashes, stats.restarts) == (
                calls,
                0,
                0,
                0,
            ), stats

            # Every call landed on its session's worker: the process of its pin.
            pids = {w.pin_id: w.pid for w in pool.workers()}
            served: dict[str, set[int]] = defaultdict(set)
            for report in results.values():
                served[report["session_id"]].add(report["pid"])
            records = await pool.sessions.list()
            assert len(records) == SESSIONS
            for record in records:
                assert record.worker_id in pids, record
                assert served[record.session_id] == {pids[record.worker_id]}, record
            # The load was spread: every worker serves some of the sessions.
            assert {r.worker_id for r in records} == set(pids)

            async def delete(i: int) -> None:
                assert await pool.sessions.delete(ids[i]) is not None

            await run_calls(delete, calls=SESSIONS, in_flight=IN_FLIGHT, bound=BOUND)
            assert pool.stats().sessions == 0
            assert await pool.sessions.list() == []
            total = time.perf_counter() - started
            print(
                f"{SESSIONS} sessions, {calls} calls, {IN_FLIGHT} in flight, {SIZE} workers: "
                f"{calls / elapsed:.0f} calls/s; created, called and deleted in {total:.2f} s"
            )
