"""A pool's sessions (pool.session(), pool.sessions, session_id): the store in the tree, affinity.

In-process workers (InProcessLauncher): each worker is an instance of the test's
adapter class, so ``whoami`` tells the workers apart; the worker-side hook
(``on_session_end``) reports to the test's Control. Every wait is on an event.
"""

from __future__ import annotations

from types import EllipsisType
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from snakepit.errors import (
    ArgumentTypeError,
    ConfigError,
    PoolClosed,
    QueueTimeout,
    SessionBackendError,
    SessionExists,
    SessionLimitReached,
    SessionNotFound,
    SessionWorkerLost,
    WorkerBusy,
)
from snakepit.pool import Pool, PoolSession
from snakepit.session import MemoryBackend, SessionRecord, SessionStore, SessionStoreConfig

from ._adapters import WAIT, Control
from ._helpers import worker_ref
from .conftest import MakePool

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)


async def pinned_worker(pool: Pool, session: PoolSession) -> str:
    """The worker id (``w0``) the session is pinned to now."""
    record = await session.info()
    assert record.worker_id is not None
    return next(w.worker_id for w in pool.workers() if w.pin_id == record.worker_id)


async def hold(tg: anyio.abc.TaskGroup, s: PoolSession, control: Control) -> anyio.CancelScope:
    """Start a ``block`` call of ``s`` in ``tg``; return, once it runs, the scope that ends it."""
    scope = anyio.CancelScope()
    blocked = control.blocked

    async def call() -> None:
        with scope:
            await s.execute("block")

    tg.start_soon(call)
    await control.wait_blocked(blocked + 1)
    return scope


class TestLifecycle:
    async def test_a_session_block_creates_then_deletes_its_session(
        self, make_pool: MakePool
    ) -> None:
        async with make_pool() as pool:
            assert pool.stats().sessions == 0
            async with pool.session(metadata={"user": "ada"}) as s:
                assert isinstance(s, PoolSession)
                assert [r.session_id for r in await pool.sessions.list()] == [s.session_id]
                assert pool.stats().sessions == 1
                assert s.record.metadata == {"user": "ada"}
                assert (s.record.affinity, s.record.ttl) == ("hint", 3600.0)
            assert await pool.sessions.list() == []
            assert pool.stats().sessions == 0
            with pytest.raises(SessionNotFound):
                await pool.execute("echo", {"value": 1}, session_id=s.session_id)

    async def test_keep_leaves_the_session_and_a_later_block_resumes_it(
        self, make_pool: MakePool
    ) -> None:
        async with make_pool() as pool:
            async with pool.session("s1", keep=True, affinity="strict_queue") as s:
                await s.execute("remember", {"value": 41})
            async with pool.session("s1") as again:  # resumed: same worker, same state
                assert again.record.affinity == "strict_queue"
                assert await again.execute("recall") == 41
            assert await pool.sessions.list() == []

    async def test_a_resumed_session_must_match_the_options_asked(
        self, make_pool: MakePool
    ) -> None:
        async with make_pool() as pool:
            await pool.sessions.create("s1", affinity="hint", ttl=60, metadata={"a": 1})
            cases: list[tuple[dict[str, Any], str]] = [
                ({"affinity": "strict_queue"}, "affinity"),
                ({"ttl": 30}, "ttl"),
                ({"metadata": {"a": 2}}, "metadata"),
            ]
            for options, name in cases:
                with pytest.raises(ConfigError, match=name) as info:
                    async with pool.session("s1", **options):
                        pass
                assert info.value.field == name
            async with pool.session("s1", affinity="hint", ttl=60, metadata={"a": 1}):
                pass  # the same options: resumed
            assert await pool.sessions.list() == []

    async def test_the_block_deletes_its_session_when_it_is_cancelled_or_raises(
        self, make_pool: MakePool
    ) -> None:
        async with make_pool() as pool:
            with anyio.CancelScope() as scope:
                async with pool.session("c"):
                    scope.cancel()
                    await anyio.sleep_forever()
            with pytest.raises(ZeroDivisionError):
                async with pool.session("r"):
                    raise ZeroDivisionError
            assert await pool.sessions.list() == []

    async def test_sessions_of_a_pool_that_is_not_running(self, make_pool: MakePool) -> None:
        pool = make_pool()
        with pytest.raises(PoolClosed):
            pool.sessions  # noqa: B018
        with pytest.raises(PoolClosed):
            async with pool.session():
                pass
        async with pool, pool.session() as s:
            pass
        with pytest.raises(PoolClosed):
            await s.execute("ping")
        assert pool.stats().sessions == 0


class TestBadInput:
    async def test_bad_options_raise_typed_errors_and_write_nothing(
        self, make_pool: MakePool
    ) -> None:
        async with make_pool() as pool:
            cases: list[tuple[dict[str, Any], type[Exception], str]] = [
                ({"session_id": 5}, ArgumentTypeError, "session_id"),
                ({"session_id": ""}, ConfigError, "session_id"),
                ({"ttl": -1}, ConfigError, "ttl"),
                ({"ttl": "1"}, ArgumentTypeError, "ttl"),
                ({"affinity": "sticky"}, ConfigError, "affinity"),
                ({"metadata": {1: 2}}, ArgumentTypeError, "metadata"),
                ({"metadata": {"x": object()}}, ArgumentTypeError, "metadata"),
                ({"metadata": {"t": (1, 2)}}, ConfigError, "metadata"),
                ({"keep": "yes"}, ArgumentTypeError, "keep"),
            ]
            for options, error, name in cases:
                with pytest.raises(error) as info:
                    async with pool.session(**options):
                        pass
                assert getattr(info.value, "field", None) == name, options
            assert await pool.sessions.list() == []

    async def test_a_duplicate_id_an_unknown_one_and_a_wrong_type(
        self, make_pool: MakePool
    ) -> None:
        async with make_pool() as pool:
            await pool.sessions.create("dup")
            with pytest.raises(SessionExists):
                await pool.sessions.create("dup")
            with pytest.raises(SessionNotFound, match="nope"):
                await pool.execute("echo", {"value": 1}, session_id="nope")
            with pytest.raises(SessionNotFound):
                await pool.stream("count", {"n": 2}, session_id="nope").__anext__()
            with pytest.raises(ArgumentTypeError):
                await pool.execute("echo", session_id=b"dup")  # type: ignore[arg-type]
            assert pool.stats().requests == 0  # no tool ran

    async def test_max_sessions(self, make_pool: MakePool) -> None:
        async with make_pool(sessions=SessionStoreConfig(max_sessions=1)) as pool:
            async with pool.session():
                with pytest.raises(SessionLimitReached):
                    async with pool.session():
                        pass
            async with pool.session():  # the first one ended
                pass

    async def test_a_pool_option_sessions_of_the_wrong_type(self, make_pool: MakePool) -> None:
        with pytest.raises(ArgumentTypeError, match="sessions"):
            make_pool(sessions={"max_sessions": 1})


class TestToolsSeeTheirSession:
    async def test_ctx_session_and_its_metadata(self, make_pool: MakePool) -> None:
        async with make_pool() as pool:
            assert await pool.execute("session_info") is None
            async with pool.session(metadata={"user": "ada", "n": [1, 2]}) as s:
                info = await s.execute("session_info")
                assert info == {
                    "session_id": s.session_id,
                    "metadata": {"user": "ada", "n": [1, 2]},
                }
            async with pool.session() as bare:
                assert await bare.execute("session_info") == {
                    "session_id": bare.session_id,
                    "metadata": {},
                }

    async def test_a_stream_in_a_session(self, make_pool: MakePool) -> None:
        async with make_pool() as pool, pool.session() as s:
            assert [i async for i in s.stream("count", {"n": 3})] == [0, 1, 2]
            record = await s.info()
            assert record.worker_id is not None  # pinned by its first call


class TestVariables:
    async def test_a_sessions_variables_from_the_pool(self, make_pool: MakePool) -> None:
        async with make_pool() as pool:
            async with pool.session() as s:
                await s.variables.register("counter", "integer", 0, min=0)
                assert await s.variables.update("counter", lambda n: n + 1) == 1
                assert await pool.sessions.variables(s.session_id).get("counter") == 1
            with pytest.raises(SessionNotFound):  # gone with its session
                await s.variables.get("counter")


class TestAffinity:
    @pytest.mark.parametrize("affinity", ["hint", "strict_queue", "strict_fail_fast"])
    async def test_a_sessions_calls_go_to_one_worker_and_its_state_is_there(
        self, make_pool: MakePool, affinity: Any
    ) -> None:
        async with make_pool(size=3) as pool, pool.session(affinity=affinity) as s:
            await s.execute("remember", {"value": "kept"})
            first = await s.execute("whoami")
            for _ in range(10):
                assert await s.execute("whoami") == first
                assert await s.execute("recall") == "kept"

    async def test_delete_runs_on_session_end_in_the_pinned_worker(
        self, make_pool: MakePool, control: Control
    ) -> None:
        async with make_pool(size=3) as pool:
            async with pool.session() as s:
                worker = await s.execute("whoami")
            assert await control.wait_ended(s.session_id) == worker

    async def test_expiry_runs_on_session_end_and_the_session_is_gone(
        self, make_pool: MakePool, control: Control
    ) -> None:
        async with make_pool(size=2) as pool:
            async with pool.session(ttl=0.05, keep=True) as s:
                worker = await s.execute("whoami")
            assert await control.wait_ended(s.session_id) == worker  # the sweep ran
            with pytest.raises(SessionNotFound):
                await s.execute("whoami")
            assert pool.stats().sessions == 0

    async def test_a_user_on_end_runs_too(self, make_pool: MakePool, control: Control) -> None:
        seen: list[tuple[str, str]] = []
        done = anyio.Event()

        def on_end(record: SessionRecord, why: str) -> None:
            seen.append((record.session_id, why))
            done.set()

        async with make_pool(sessions=SessionStoreConfig(on_end=on_end)) as pool:
            async with pool.session("u") as s:
                await s.execute("ping")
            with anyio.fail_after(WAIT):
                await done.wait()
            await control.wait_ended("u")  # and the worker's hook ran
        assert seen == [("u", "deleted")]

    async def test_hint_re_pins_when_its_worker_was_killed(self, make_pool: MakePool) -> None:
        async with make_pool(size=2) as pool, pool.session() as s:
            await s.execute("remember", {"value": 1})
            old = await pinned_worker(pool, s)
            old_pin = (await s.info()).worker_id
            await worker_ref(pool, old).kill()
            assert await s.execute("recall") is None  # its state went with the worker
            assert (await s.info()).worker_id != old_pin

    @pytest.mark.parametrize("affinity", ["strict_queue", "strict_fail_fast"])
    async def test_strict_raises_session_worker_lost_naming_the_worker_and_why(
        self, make_pool: MakePool, affinity: Any
    ) -> None:
        async with make_pool(size=2) as pool, pool.session(affinity=affinity) as s:
            await s.execute("ping")
            pin = (await s.info()).worker_id
            assert pin is not None
            await worker_ref(pool, await pinned_worker(pool, s)).kill()
            with anyio.fail_after(WAIT):
                await pool.wait_ready()
            with pytest.raises(SessionWorkerLost) as info:
                await s.execute("ping")
            assert (info.value.session_id, info.value.worker_id) == (s.session_id, pin)
            assert "killed" in info.value.reason
            assert pool.stats().requests == 1  # the tool did not run

    async def test_strict_queue_waits_for_its_worker_while_others_are_free(
        self, make_pool: MakePool, control: Control
    ) -> None:
        async with make_pool(size=2) as pool, pool.session(affinity="strict_queue") as s:
            me = await s.execute("whoami")
            async with anyio.create_task_group() as tg:
                await hold(tg, s, control)
                got: list[str] = []

                async def call() -> None:
                    got.append(await s.execute("whoami"))

                tg.start_soon(call)
                await anyio.wait_all_tasks_blocked()
                assert got == []
                assert (pool.stats().queued, pool.stats().idle) == (1, 1)
                tg.cancel_scope.cancel()  # the block ends; the waiting call is cancelled too
            assert await s.execute("whoami") == me

    async def test_strict_fail_fast_raises_worker_busy_at_once(
        self, make_pool: MakePool, control: Control
    ) -> None:
        async with make_pool(size=2) as pool, pool.session(affinity="strict_fail_fast") as s:
            await s.execute("ping")
            async with anyio.create_task_group() as tg:
                await hold(tg, s, control)
                with pytest.raises(WorkerBusy) as info:
                    await s.execute("ping")
                assert info.value.session_id == s.session_id
                tg.cancel_scope.cancel()

    async def test_hint_takes_another_worker_when_its_own_is_busy_and_re_pins(
        self, make_pool: MakePool, control: Control
    ) -> None:
        async with make_pool(size=2) as pool, pool.session() as s:
            me = await s.execute("whoami")
            async with anyio.create_task_group() as tg:
                await hold(tg, s, control)
                other = await s.execute("whoami")
                assert other != me
                tg.cancel_scope.cancel()
            assert await s.execute("whoami") == other  # re-pinned there

    async def test_first_calls_at_once_of_a_strict_session_all_go_to_one_worker(
        self, make_pool: MakePool
    ) -> None:
        async with make_pool(size=4) as pool, pool.session(affinity="strict_queue") as s:
            seen: list[str] = []

            async def call() -> None:
                seen.append(await s.execute("whoami"))

            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(call)
            assert len(set(seen)) == 1

    async def test_unpinned_calls_are_not_held_up_by_pinned_ones(
        self, make_pool: MakePool, control: Control
    ) -> None:
        async with make_pool(size=2) as pool, pool.session(affinity="strict_queue") as s:
            await s.execute("ping")
            async with anyio.create_task_group() as tg:
                await hold(tg, s, control)
                for _ in range(5):  # the other worker serves them
                    assert await pool.execute("echo", {"value": 1}) == 1
                tg.cancel_scope.cancel()


class TestStoreInTheTree:
    async def test_a_crashed_store_is_restarted_and_keeps_its_sessions(
        self, make_pool: MakePool
    ) -> None:
        async with make_pool() as pool, pool.session(affinity="strict_queue") as s:
            await s.execute("remember", {"value": 7})
            store = pool.sessions
            await store.kill()
            with anyio.fail_after(WAIT):
                await pool.supervisor.wait_stable()
            assert pool.sessions is not store  # a new server...
            assert [r.session_id for r in await pool.sessions.list()] == [
                s.session_id
            ]  # ...same data
            assert await s.execute("recall") == 7


class TestDeadlines:
    async def test_a_pinned_call_handed_its_slot_with_no_time_left_is_not_sent(
        self, make_pool: MakePool, control: Control, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # As for an unpinned call: a call that waited for its worker and got it
        # with less than MIN_RUN_TIME left is refused unrun (the worker is not
        # killed for a timeout), even though another worker was idle meanwhile.
        from snakepit.pool import _calls

        monkeypatch.setattr(_calls, "MIN_RUN_TIME", 60.0)
        async with make_pool(size=2) as pool, pool.session(affinity="strict_queue") as s:
            await s.execute("ping")
            before = pool.workers()
            errors: list[BaseException] = []

            async def call() -> None:
                try:
                    await s.execute("echo", {"value": 1}, timeout=10)
                except QueueTimeout as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as tg:
                holder = await hold(tg, s, control)
                tg.start_soon(call)
                await anyio.wait_all_tasks_blocked()
                assert pool.stats().idle == 1  # the other worker is free
                assert pool.stats().queued == 1
                holder.cancel()  # the block ends: its slot goes to the waiting call
            assert len(errors) == 1
            assert "did not run" in str(errors[0])
            assert pool.stats().timeouts == 0
            assert [w.pid for w in pool.workers()] == [w.pid for w in before]


class _GatedBackend(MemoryBackend):
    """A memory backend whose ``create`` waits for a gate (a store slow to answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.creating = anyio.Event()

    async def create(self, record: SessionRecord, *, limit: int | None) -> bool:
        self.creating.set()
        await self.gate.wait()
        return await super().create(record, limit=limit)


class TestCancellation:
    async def test_a_block_cancelled_while_its_session_is_created_leaves_no_session(
        self, make_pool: MakePool
    ) -> None:
        backend = _GatedBackend()
        async with make_pool(sessions=SessionStoreConfig(backend=backend)) as pool:
            entered: list[PoolSession] = []

            async def use() -> None:
                async with pool.session() as s:
                    entered.append(s)
                    await s.execute("ping")

            async with anyio.create_task_group() as tg:
                tg.start_soon(use)
                with anyio.fail_after(WAIT):
                    await backend.creating.wait()
                tg.cancel_scope.cancel()  # while the store writes the session
                backend.gate.set()
            # created, then deleted at the block's end (the cancel reached the body)
            assert await pool.sessions.list() == []
            assert entered


class TestInUse:
    async def test_a_session_is_in_use_for_the_store_while_its_calls_run(
        self, make_pool: MakePool, control: Control
    ) -> None:
        # Found by a review: a call longer than its session's TTL saw the
        # session expire under it (on_session_end freed its state mid-call).
        # The pool tells its store which sessions have a call running (the
        # store's own test shows such a session does not expire, on a MockClock).
        async with make_pool(size=2) as pool, pool.session() as s:
            server = pool.sessions.server
            assert isinstance(server, SessionStore)
            in_use = server.config.in_use
            assert in_use is not None
            assert not in_use(s.session_id)
            async with anyio.create_task_group() as tg:
                holders = [await hold(tg, s, control), await hold(tg, s, control)]
                assert in_use(s.session_id)
                holders[0].cancel()
                await anyio.wait_all_tasks_blocked()
                assert in_use(s.session_id)  # one call still runs
                holders[1].cancel()
            assert not in_use(s.session_id)
            assert not in_use("another")


class _SlowBackend(MemoryBackend):
    """A memory backend whose touch or pin waits for a gate that a test may never open."""

    def __init__(self, slow: str) -> None:
        super().__init__()
        self.slow = slow
        self.gate = anyio.Event()

    async def touch(self, session_id: str, now: float) -> SessionRecord | None:
        if self.slow == "touch":
            await self.gate.wait()
        return await super().touch(session_id, now)

    async def pin(
        self,
        session_id: str,
        worker_id: str | None,
        now: float,
        *,
        only_if_pinned_to: str | EllipsisType | None = ...,
    ) -> SessionRecord | None:
        if self.slow == "pin":
            await self.gate.wait()
        return await super().pin(session_id, worker_id, now, only_if_pinned_to=only_if_pinned_to)


class TestReviewFindings:
    @pytest.mark.parametrize("slow", ["touch", "pin"])
    async def test_a_slow_store_makes_a_queue_timeout_not_a_killed_worker(
        self, make_pool: MakePool, slow: str
    ) -> None:
        # Found by a review: the store's time ate the call's timeout, the call
        # was sent with ~1 us left, timed out, and its healthy worker was killed.
        backend = _SlowBackend(slow)
        async with make_pool(sessions=SessionStoreConfig(backend=backend)) as pool:
            before = [w.pid for w in pool.workers()]
            await pool.sessions.create("s")
            with pytest.raises(QueueTimeout, match="did not run") as info:
                await pool.execute("ping", session_id="s", timeout=0.05)
            assert "session store" in str(info.value)
            stats = pool.stats()
            assert (stats.timeouts, stats.restarts, stats.requests) == (0, 0, 0)
            assert stats.idle == 2  # the slot taken before the pin went back
            assert [w.pid for w in pool.workers()] == before

    async def test_a_call_waiting_for_a_deleted_session_does_not_run(
        self, make_pool: MakePool, control: Control
    ) -> None:
        # Found by a review: a strict_queue call waiting behind a long call ran
        # after its session was deleted, and left state in the worker.
        async with make_pool(size=2) as pool:
            async with pool.session(affinity="strict_queue") as s:
                await s.execute("ping")
                errors: list[BaseException] = []

                async def queued() -> None:
                    try:
                        await s.execute("remember", {"value": "late"})
                    except SessionNotFound as exc:
                        errors.append(exc)

                async with anyio.create_task_group() as tg:
                    holder = await hold(tg, s, control)
                    tg.start_soon(queued)
                    await anyio.wait_all_tasks_blocked()
                    assert pool.stats().queued == 1
                    await s.delete()
                    holder.cancel()
            assert [str(e) for e in errors] == [
                f"no session {s.session_id!r}: it was deleted while the call waited"
            ]
            assert pool.stats().requests == 2  # ping and block: the queued call never ran

    async def test_a_hint_session_that_moves_frees_its_state_in_the_worker_it_left(
        self, make_pool: MakePool, control: Control
    ) -> None:
        # Found by a review: only the last worker was told, the first kept the state.
        async with make_pool(size=2) as pool, pool.session() as s:
            first = await s.execute("whoami")
            async with anyio.create_task_group() as tg:
                holder = await hold(tg, s, control)
                second = await s.execute("whoami")  # its worker is busy: it moves
                assert second != first
                holder.cancel()
            assert await control.wait_ended(s.session_id) == first

    async def test_concurrent_blocks_of_one_explicit_id_all_resume_it(
        self, make_pool: MakePool
    ) -> None:
        # Found by a review: all but one got SessionExists.
        async with make_pool() as pool:
            ids: list[str] = []

            async def use() -> None:
                async with pool.session("same", keep=True) as s:
                    ids.append(s.session_id)

            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(use)
            assert ids == ["same"] * 5
            assert [r.session_id for r in await pool.sessions.list()] == ["same"]

    async def test_a_delete_that_fails_at_the_end_of_a_block_does_not_hide_its_error(
        self, make_pool: MakePool, caplog: pytest.LogCaptureFixture
    ) -> None:
        class Failing(MemoryBackend):
            async def delete(
                self, session_id: str, *, expired_at: float | None = None
            ) -> SessionRecord | None:
                raise SessionBackendError("test", "down")

        async with make_pool(sessions=SessionStoreConfig(backend=Failing())) as pool:
            with pytest.raises(ZeroDivisionError):
                async with pool.session("s"):
                    raise ZeroDivisionError
            assert "was not deleted at the end of its block" in caplog.text

    async def test_a_sessions_metadata_is_encoded_once(
        self, make_pool: MakePool, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from snakepit._wire._session import encode_metadata

        encoded: list[object] = []

        def counting(metadata: Any) -> bytes:
            encoded.append(metadata)
            return encode_metadata(metadata)

        monkeypatch.setattr("snakepit.pool._sessions.encode_metadata", counting)
        async with make_pool() as pool, pool.session(metadata={"big": "x" * 1000}) as s:
            for _ in range(5):
                info = await s.execute("session_info")
                assert info["metadata"] == {"big": "x" * 1000}
        assert len(encoded) == 1


class _Clock:
    """A session clock a test moves by hand (the store's times; the loop's run on)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _TouchReplyLate(MemoryBackend):
    """A touch computed at once whose reply waits for a gate (a slow network to Redis)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: anyio.Event | None = None
        self.replying = anyio.Event()

    async def touch(self, session_id: str, now: float) -> SessionRecord | None:
        record = await super().touch(session_id, now)
        gate = self.gate
        if gate is not None:
            self.replying.set()
            await gate.wait()
        return record


class _YieldingPin(MemoryBackend):
    """A memory backend whose pin lets other tasks run first (as a remote backend's does)."""

    async def pin(
        self,
        session_id: str,
        worker_id: str | None,
        now: float,
        *,
        only_if_pinned_to: str | EllipsisType | None = ...,
    ) -> SessionRecord | None:
        await anyio.lowlevel.checkpoint()
        return await super().pin(session_id, worker_id, now, only_if_pinned_to=only_if_pinned_to)


class TestSecondReviewFindings:
    async def test_a_session_whose_call_outlived_its_ttl_lives_on_after_it(
        self, make_pool: MakePool, control: Control
    ) -> None:
        # Found by a review: the call's end let the session go out of use
        # before the touch that should restart its TTL, and it expired at once.
        clock = _Clock()
        config = SessionStoreConfig(clock=clock, sweep_interval=1e6)
        async with (
            make_pool(sessions=config) as pool,
            pool.session(ttl=10, affinity="strict_queue") as s,
        ):
            await s.execute("remember", {"value": "kept"})
            async with anyio.create_task_group() as tg:
                holder = await hold(tg, s, control)
                clock.now += 15  # the call runs past the session's TTL
                holder.cancel()
            for _ in range(100):  # the end's touch runs in the background
                if (await pool.sessions.get(s.session_id)).last_used == clock.now:
                    break
                await anyio.wait_all_tasks_blocked()
            assert await s.execute("recall") == "kept"
            assert control.ended == []

    async def test_concurrent_first_calls_of_a_hint_session_leave_no_state_behind(
        self, make_pool: MakePool, control: Control
    ) -> None:
        # Found by a review: the call that lost the race to pin a hint session
        # ran where it was, and the session's end never reached that worker.
        # (A pin that yields once lets both first calls take a worker first.)
        config = SessionStoreConfig(backend=_YieldingPin())
        async with make_pool(size=2, sessions=config) as pool:
            async with pool.session() as s:
                ran: set[str] = set()

                async def call() -> None:
                    ran.add(await s.execute("whoami"))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(call)
                    tg.start_soon(call)
            await control.wait_ended_in(s.session_id, ran)

    async def test_a_delete_while_a_calls_touch_replies_refuses_the_call(
        self, make_pool: MakePool
    ) -> None:
        # Found by a review: the call looked its session up, the session was
        # deleted before the reply came, and the call still ran.
        backend = _TouchReplyLate()
        async with make_pool(sessions=SessionStoreConfig(backend=backend)) as pool:
            await pool.sessions.create("s")
            await pool.execute("ping", session_id="s")  # pinned: no pin on the next call
            backend.gate = gate = anyio.Event()
            errors: list[BaseException] = []

            async def call() -> None:
                try:
                    await pool.execute("remember", {"value": 1}, session_id="s")
                except SessionNotFound as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                with anyio.fail_after(WAIT):
                    await backend.replying.wait()
                backend.gate = None
                await pool.sessions.delete("s")
                gate.set()
            assert [str(e) for e in errors] == [
                "no session 's': it was deleted while the call waited"
            ]
            assert pool.stats().requests == 1  # the ping
