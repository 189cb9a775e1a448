"""Sessions end to end with real worker processes (the seed's session workflow, ported).

The workers run :class:`~tests.integration._session_adapters.SessionCounter`:
per-session state lives in the worker process (``self.state[session_id]``), and
every answer carries the worker's pid, so a test sees which process served a
call. A session's end (delete, expiry) is observed in the worker itself: a
second session, pinned to the same worker, runs ``wait_session_end``, which
returns once ``on_session_end`` ran in that process. Killed workers are waited
for on the pool's events (the replacement's ``WorkerReady``); nothing sleeps.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from snakepit.errors import SessionNotFound, SessionWorkerLost
from snakepit.pool import Pool, PoolSession, WorkerInfo, WorkerReady
from snakepit.session import SessionRecord, SessionStore, SessionStoreConfig
from tests._backends import DelegatingBackend

if TYPE_CHECKING:
    from snakepit.session import RedisBackend
    from tests._redis import RedisServer

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

ADAPTER = "tests.integration._session_adapters:SessionCounter"
ROOT = str(Path(__file__).resolve().parents[2])

#: The deadline of a wait that should end soon (it only guards against a hang).
WAIT = 15.0


def make_pool(**options: Any) -> Pool:
    """A pool of SessionCounter worker processes (forkserver, the default launcher)."""
    options.setdefault("size", 2)
    return Pool(ADAPTER, cwd=ROOT, **options)


def worker_of(pool: Pool, pin: str | None) -> WorkerInfo:
    """The worker whose ``pin_id`` is ``pin`` (a session's ``record.worker_id``)."""
    found = [w for w in pool.workers() if w.pin_id == pin]
    assert len(found) == 1, (pin, pool.workers())
    return found[0]


async def kill_and_wait_replaced(pool: Pool, worker: WorkerInfo) -> None:
    """SIGKILL ``worker``'s process; return once its slot's replacement is ready."""
    assert worker.pid is not None
    with pool.subscribe() as events, anyio.fail_after(WAIT):
        os.kill(worker.pid, signal.SIGKILL)
        async for event in events:
            if (
                isinstance(event, WorkerReady)
                and event.worker_id == worker.worker_id
                and event.generation > worker.generation
            ):
                break
    await pool.wait_ready(timeout=WAIT)


async def wait_ended_in(pool: Pool, pin: str | None, session_id: str) -> dict[str, Any]:
    """Wait until ``on_session_end(session_id)`` ran in the worker ``pin``; what it reports.

    A watcher session pinned to that worker (strict_queue: its call waits for
    that worker) runs ``wait_session_end``.
    """
    assert pin is not None
    async with pool.session(affinity="strict_queue") as watcher:
        await pool.sessions.pin(watcher.session_id, pin)
        with anyio.fail_after(WAIT):
            ended: dict[str, Any] = await watcher.execute(
                "wait_session_end", {"session_id": session_id}
            )
    return ended


async def pinned_pid(pool: Pool, session: PoolSession) -> int | None:
    """The pid of the worker the session is pinned to now."""
    return worker_of(pool, (await session.info()).worker_id).pid


class TestWorkflow:
    async def test_initialize_concurrent_sets_pinned_pid_then_delete_ends_it_in_the_worker(
        self,
    ) -> None:
        async with make_pool() as pool:
            async with pool.session(affinity="strict_queue", metadata={"user": "ada"}) as s:
                init = await s.execute("initialize_session")
                assert init["metadata"] == {"user": "ada"}  # ctx.session.metadata
                pid = init["pid"]
                pids: list[int] = []

                async def set_counter(value: int) -> None:
                    pids.append(await s.execute("set_counter", {"value": value}))

                async with anyio.create_task_group() as tg:
                    for value in range(1, 11):
                        tg.start_soon(set_counter, value)
                final = await s.execute("get_counter")
                assert final["value"] in range(1, 11)
                assert pids == [pid] * 10  # every call served by the session's process
                assert final["pid"] == pid
                assert await s.execute("where") == {"pid": pid, "session_id": s.session_id}
                record = await s.info()
                assert worker_of(pool, record.worker_id).pid == pid  # the pin is that process
            # The block's end deleted it: the worker freed its state.
            ended = await wait_ended_in(pool, record.worker_id, s.session_id)
            assert ended == {"pid": pid, "state_freed": True}
            with pytest.raises(SessionNotFound):
                await s.execute("get_counter")
            assert await pool.sessions.list() == []
            assert (await pool.execute("where"))["session_id"] == ""  # no session: none seen

    async def test_expiry_calls_on_session_end_in_the_pinned_worker(self) -> None:
        async with make_pool() as pool:
            async with pool.session(ttl=0.2, keep=True) as s:
                pid = (await s.execute("initialize_session"))["pid"]
                pin = next(w.pin_id for w in pool.workers() if w.pid == pid)  # no use of it
            # Not deleted (keep=True): its TTL passes, the sweep ends it.
            ended = await wait_ended_in(pool, pin, s.session_id)
            assert ended == {"pid": pid, "state_freed": True}
            with pytest.raises(SessionNotFound):
                await s.execute("get_counter")
            assert pool.stats().sessions == 0
            assert await pool.sessions.list() == []


class TestKilledWorker:
    async def test_hint_re_pins_and_strict_sessions_raise_session_worker_lost(self) -> None:
        async with make_pool() as pool:
            victim = pool.workers()[0]
            async with (
                pool.session(affinity="hint") as hint,
                pool.session(affinity="strict_queue") as queue,
                pool.session(affinity="strict_fail_fast") as fail_fast,
            ):
                for s in (hint, queue, fail_fast):  # all three on the victim, with state there
                    await pool.sessions.pin(s.session_id, victim.pin_id)
                    assert (await s.execute("initialize_session"))["pid"] == victim.pid
                    await s.execute("set_counter", {"value": 7})
                    assert await s.execute("get_counter") == {"value": 7, "pid": victim.pid}

                await kill_and_wait_replaced(pool, victim)

                # hint: another process serves it now (re-pinned); its state went with the victim.
                after = await hint.execute("get_counter")
                assert after["value"] is None
                assert after["pid"] != victim.pid
                assert (await hint.info()).worker_id != victim.pin_id
                assert await pinned_pid(pool, hint) == after["pid"]
                assert (await hint.execute("where"))["pid"] == after["pid"]  # pinned there now

                # strict: the tool does not run; the error names the worker and why it went.
                requests = pool.stats().requests
                for s in (queue, fail_fast):
                    with pytest.raises(SessionWorkerLost) as info:
                        await s.execute("get_counter")
                    assert (info.value.session_id, info.value.worker_id) == (
                        s.session_id,
                        victim.pin_id,
                    )
                    assert "killed" in info.value.reason, info.value.reason
                    assert (await s.info()).worker_id == victim.pin_id  # the session stays
                assert pool.stats().requests == requests

                # Pinned again by hand (as the error says), a strict session works again.
                fresh = next(w for w in pool.workers() if w.worker_id == victim.worker_id)
                assert fresh.pid != victim.pid
                await pool.sessions.pin(queue.session_id, fresh.pin_id)
                assert (await queue.execute("get_counter")) == {"value": None, "pid": fresh.pid}
            assert await pool.sessions.list() == []


class GatedTouch(DelegatingBackend):
    """A backend that delegates to ``inner``; its next ``touch`` waits for :attr:`gate` first.

    :attr:`at_gate` is set when that touch arrives (the store has begun it).
    """

    def __init__(self, inner: RedisBackend) -> None:
        super().__init__(inner)
        self.at_gate = anyio.Event()
        self.gate: anyio.Event | None = None

    async def touch(self, session_id: str, now: float) -> SessionRecord | None:
        gate, self.gate = self.gate, None
        if gate is not None:
            self.at_gate.set()
            await gate.wait()
        return await self.inner.touch(session_id, now)


class TestRedisBackend:
    async def test_a_session_on_redis_end_to_end(self, redis_session_backend: RedisBackend) -> None:
        config = SessionStoreConfig(backend=redis_session_backend)
        async with make_pool(sessions=config) as pool:
            async with pool.session(affinity="strict_queue", metadata={"model": "m1"}) as s:
                init = await s.execute("initialize_session")
                assert init["metadata"] == {"model": "m1"}
                pid = init["pid"]
                for value in (1, 2, 3):
                    assert await s.execute("set_counter", {"value": value}) == pid
                assert await s.execute("get_counter") == {"value": 3, "pid": pid}
                # The pin and the metadata are in Redis, not only in the pool.
                stored = await redis_session_backend.get(s.session_id)
                assert stored is not None
                assert stored.metadata == {"model": "m1"}
                assert stored.worker_id == (await s.info()).worker_id
                assert worker_of(pool, stored.worker_id).pid == pid
                assert [r.session_id for r in await pool.sessions.list()] == [s.session_id]
            ended = await wait_ended_in(pool, stored.worker_id, s.session_id)
            assert ended == {"pid": pid, "state_freed": True}
            assert await redis_session_backend.get(s.session_id) is None
            assert await pool.sessions.list() == []
            with pytest.raises(SessionNotFound):
                await s.execute("get_counter")

    async def test_two_stores_sharing_a_namespace_lose_no_pin(
        self, redis_session_backend: RedisBackend, redis_server_for_tests: RedisServer
    ) -> None:
        from snakepit.session import RedisBackend

        # Another pool's backend: the same server and namespace, a client of its own.
        shared = RedisBackend(redis_server_for_tests.url, namespace=redis_session_backend.namespace)
        # Found by a review: a store's touch was get + replace, two Redis
        # commands, and another store's pin between them was lost. A touch is
        # one script now: whenever it runs, it keeps the pin it finds.
        gated = GatedTouch(shared)
        async with (
            contextlib.aclosing(shared),
            SessionStore.running(SessionStoreConfig(backend=gated)) as a,
            SessionStore.running(SessionStoreConfig(backend=redis_session_backend)) as b,
        ):
            await a.create("s", affinity="strict_queue")
            await b.pin("s", "w0.0@host-a")
            gated.gate = gate = anyio.Event()
            with anyio.fail_after(WAIT):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(a.touch, "s")  # begun, then waits before it writes
                    await gated.at_gate.wait()
                    await b.pin("s", "w1.0@host-b")  # another pool re-pins it meanwhile
                    gate.set()
            record = await b.get("s")
            assert record.worker_id == "w1.0@host-b"
            assert record.last_used > record.created_at  # and a's touch was written
