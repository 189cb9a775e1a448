"""SessionStore and its backends: the contract every backend meets, and the store's rules.

The contract tests take the ``backend`` fixture (memory and Redis, see
conftest.py) and run on asyncio (the Redis client's loop). The time rules run
on trio's MockClock with the memory backend (expiry is the store's logic, the
backend only answers ``due(now)``, which the contract tests check on every
backend with explicit times); one real-clock expiry test runs on every backend.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from trio.testing import MockClock

from snakepit.errors import (
    ArgumentTypeError,
    ConfigError,
    ServerExited,
    SessionExists,
    SessionLimitReached,
    SessionNotFound,
)
from snakepit.otp import ChildSpec, Supervisor, SupervisorSpec
from snakepit.session import (
    DEFAULT_TTL,
    EndReason,
    MemoryBackend,
    SessionBackend,
    SessionRecord,
    SessionStore,
    SessionStoreConfig,
    SessionStoreRef,
)

pytestmark = pytest.mark.anyio
#: The Redis backend's client runs on asyncio; the MockClock tests run on trio.
anyio_backends = ("asyncio",)


def record(session_id: str, last_used: float, ttl: float | None, **fields: Any) -> SessionRecord:
    return SessionRecord(session_id, created_at=0.0, last_used=last_used, ttl=ttl, **fields)


class Ended:
    """An ``on_end`` that records its calls and lets a test wait for the next ones."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, EndReason]] = []
        self.times: list[float] = []
        self._changed = anyio.Event()

    def __call__(self, rec: SessionRecord, why: EndReason) -> None:
        self.calls.append((rec.session_id, why))
        self.times.append(anyio.current_time())
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, n: int, timeout: float = 5) -> None:
        with anyio.fail_after(timeout):
            while len(self.calls) < n:
                await self._changed.wait()


@asynccontextmanager
async def store_of(backend: SessionBackend, **options: Any) -> AsyncIterator[SessionStoreRef]:
    # On the event loop's clock: a MockClock drives expiry (the default is time.time).
    options.setdefault("clock", anyio.current_time)
    async with SessionStore.running(SessionStoreConfig(backend=backend, **options)) as store:
        yield store


# -- the backend contract (explicit times) ---------------------------------------------


class TestBackendContract:
    async def test_create_get_replace_delete(self, backend: SessionBackend) -> None:
        first = record("a", 1.0, 10.0, metadata={"user": "ada", "tags": [1, 2]}, affinity="hint")
        assert await backend.create(first, limit=None)
        assert await backend.get("a") == first
        assert not await backend.create(record("a", 2.0, None), limit=None)  # id taken
        assert await backend.get("a") == first
        pinned = record("a", 3.0, 10.0, worker_id="w1", affinity="strict_queue")
        assert await backend.replace(pinned)
        assert await backend.get("a") == pinned
        assert not await backend.replace(record("nope", 1.0, None))
        assert await backend.get("nope") is None
        assert await backend.count() == 1
        assert await backend.delete("a") == pinned
        assert await backend.delete("a") is None
        assert await backend.get("a") is None
        assert await backend.count() == 0

    async def test_records_and_count(self, backend: SessionBackend) -> None:
        made = [record(f"s{i}", float(i), None if i % 2 else 5.0) for i in range(5)]
        for rec in made:
            assert await backend.create(rec, limit=None)
        assert sorted(await backend.records(), key=lambda r: r.session_id) == made
        assert await backend.count() == 5

    async def test_the_limit_writes_nothing(self, backend: SessionBackend) -> None:
        for i in range(2):
            assert await backend.create(record(f"s{i}", 0.0, None), limit=2)
        with pytest.raises(SessionLimitReached) as caught:
            await backend.create(record("s2", 0.0, None), limit=2)
        assert caught.value.max_sessions == 2
        assert await backend.get("s2") is None
        assert await backend.count() == 2

    async def test_due_follows_expiry_times(self, backend: SessionBackend) -> None:
        await backend.create(record("forever", 0.0, None), limit=None)
        await backend.create(record("early", 0.0, 5.0), limit=None)
        await backend.create(record("late", 0.0, 20.0), limit=None)
        assert await backend.due(4.9) == []
        assert [r.session_id for r in await backend.due(5.0)] == ["early"]  # <= now is due
        assert {r.session_id for r in await backend.due(20.0)} == {"early", "late"}
        assert [r.session_id for r in await backend.due(5.0)] == ["early"]  # due removes nothing
        await backend.replace(record("early", 10.0, 5.0))  # used again: due at 15
        assert await backend.due(14.0) == []
        assert [r.session_id for r in await backend.due(15.0)] == ["early"]
        await backend.delete("early")
        assert [r.session_id for r in await backend.due(1e9)] == ["late"]
        await backend.replace(record("late", 0.0, None))  # never expires now
        assert await backend.due(1e9) == []

    async def test_touch_sets_last_used_of_a_live_session_only(
        self, backend: SessionBackend
    ) -> None:
        await backend.create(record("a", 1.0, 10.0, worker_id="w1"), limit=None)
        touched = await backend.touch("a", 4.5)
        assert touched == record("a", 4.5, 10.0, worker_id="w1")
        assert touched is not None
        assert touched.created_at == 0.0  # unchanged
        assert await backend.get("a") == touched
        assert [r.session_id for r in await backend.due(14.5)] == ["a"]  # its expiry moved
        assert await backend.due(14.0) == []
        assert await backend.touch("a", 14.5) is None  # expired then: nothing written
        assert await backend.get("a") == touched
        assert await backend.touch("nope", 1.0) is None
        await backend.create(record("forever", 1.0, None), limit=None)
        assert await backend.touch("forever", 1e9) == record("forever", 1e9, None)
        assert await backend.due(1e10) == [touched]  # "forever" is never due

    async def test_a_touch_never_moves_last_used_back(self, backend: SessionBackend) -> None:
        # Found by a review: the default clock (time.time) may be set back; a
        # touch then moved the expiry earlier than the sweep's entry for it.
        await backend.create(record("a", 5.0, 10.0), limit=None)
        assert await backend.touch("a", 3.0) == record("a", 5.0, 10.0)
        assert await backend.due(14.9) == []
        assert [r.session_id for r in await backend.due(15.0)] == ["a"]

    async def test_pin_and_compare_and_set_pin(self, backend: SessionBackend) -> None:
        await backend.create(record("a", 1.0, 10.0), limit=None)
        assert await backend.pin("a", "w1", 2.0) == record("a", 1.0, 10.0, worker_id="w1")
        # Only if pinned to w0 (it is not): nothing written, the current record back.
        kept = await backend.pin("a", "w2", 2.0, only_if_pinned_to="w0")
        assert kept == record("a", 1.0, 10.0, worker_id="w1")
        assert await backend.pin("a", "w2", 2.0, only_if_pinned_to=None) == kept
        moved = await backend.pin("a", "w2", 2.0, only_if_pinned_to="w1")
        assert moved == record("a", 1.0, 10.0, worker_id="w2")
        assert await backend.pin("a", None, 2.0) == record("a", 1.0, 10.0)  # unpinned
        first = await backend.pin("a", "w3", 2.0, only_if_pinned_to=None)
        assert first == record("a", 1.0, 10.0, worker_id="w3")
        assert await backend.pin("a", "w4", 11.0) is None  # expired at 11: nothing written
        assert await backend.pin("nope", "w1", 2.0) is None
        assert await backend.get("a") == first

    async def test_the_sweeps_delete_removes_only_what_has_expired(
        self, backend: SessionBackend
    ) -> None:
        await backend.create(record("a", 1.0, 10.0), limit=None)
        await backend.create(record("forever", 1.0, None), limit=None)
        assert await backend.delete("a", expired_at=10.9) is None  # not yet
        assert await backend.delete("forever", expired_at=1e9) is None  # never
        await backend.touch("a", 5.0)  # used meanwhile: expires at 15
        assert await backend.delete("a", expired_at=11.0) is None
        assert await backend.delete("a", expired_at=15.0) == record("a", 5.0, 10.0)
        assert await backend.get("a") is None
        assert await backend.delete("a", expired_at=99.0) is None
        assert await backend.count() == 1

    async def test_updates_keep_every_other_field_exactly(self, backend: SessionBackend) -> None:
        # (A Redis script decodes and encodes the record: times, metadata and
        # ids must come back bit for bit.)
        metadata = {
            "f": 0.1 + 0.2,
            "big": 2**60 + 1,
            "e": [],
            "d": {},
            "s": 'é/\\"x\u2028',
            "n": None,
            "deep": [[{"a": [1.5e-300]}]],
        }
        made = record("é/s", 1234567.891011121314, 0.3, metadata=metadata, affinity="hint")
        assert await backend.create(made, limit=None)
        touched = await backend.touch("é/s", 1234567.9000000001)
        pinned = await backend.pin("é/s", "w9.1@run", 1234567.9000000001)
        from dataclasses import replace

        assert touched == replace(made, last_used=1234567.9000000001)
        assert pinned == replace(made, last_used=1234567.9000000001, worker_id="w9.1@run")
        assert await backend.get("é/s") == pinned
        assert pinned is not None
        assert pinned.metadata == metadata


def test_memory_backend_drops_stale_expiry_entries() -> None:
    backend = MemoryBackend()

    async def main() -> None:
        await backend.create(record("a", 0.0, 10.0), limit=None)
        for t in range(1, 1000):
            await backend.replace(record("a", float(t), 10.0))
        assert [r.last_used for r in await backend.due(1e9)] == [999.0]

    anyio.run(main)
    assert len(backend._heap) < 100  # touches do not grow it without bound


def test_memory_backend_drops_the_expiry_entries_of_deleted_sessions() -> None:
    # Found by a review: 20,000 sessions deleted left 22,000 heap entries behind.
    backend = MemoryBackend()

    async def main() -> None:
        for i in range(2000):
            await backend.create(record(f"s{i}", 0.0, 10.0), limit=None)
        for i in range(2000):
            await backend.delete(f"s{i}")

    anyio.run(main)
    assert len(backend._heap) < 100


# -- the store's rules -------------------------------------------------------------------


class TestStore:
    async def test_create_get_touch_pin_delete(self, backend: SessionBackend) -> None:
        async with store_of(backend) as store:
            made = await store.create(metadata={"user": "ada"}, affinity="strict_queue")
            sid = made.session_id
            assert isinstance(sid, str)
            assert len(sid) == 32
            assert made.created_at == made.last_used <= anyio.current_time()
            assert (made.ttl, made.worker_id, made.affinity) == (DEFAULT_TTL, None, "strict_queue")
            assert made.metadata == {"user": "ada"}
            assert await store.get(sid) == made
            touched = await store.touch(sid)
            assert touched.last_used >= made.last_used
            assert touched.created_at == made.created_at
            pinned = await store.pin(sid, "w3")
            assert pinned.worker_id == "w3"
            assert pinned.last_used == touched.last_used  # pinning is not a use
            assert (await store.pin(sid, None)).worker_id is None
            assert await store.count() == 1
            assert await store.list() == [await store.get(sid)]
            deleted = await store.delete(sid)
            assert deleted is not None
            assert deleted.session_id == sid
            assert await store.delete(sid) is None
            assert await store.count() == 0
            assert await store.list() == []

    async def test_unknown_sessions_raise_session_not_found(self, backend: SessionBackend) -> None:
        async with store_of(backend) as store:
            for method in (store.get, store.touch):
                with pytest.raises(SessionNotFound) as caught:
                    await method("nope")
                assert caught.value.session_id == "nope"
            with pytest.raises(SessionNotFound):
                await store.pin("nope", "w1")
            assert await store.delete("nope") is None
            assert await store.count() == 0

    async def test_explicit_ids_and_duplicates(self, backend: SessionBackend) -> None:
        async with store_of(backend) as store:
            first = await store.create("mine", ttl=None, metadata={"n": 1})
            assert first.session_id == "mine"
            assert first.ttl is None
            with pytest.raises(SessionExists) as caught:
                await store.create("mine", metadata={"n": 2})
            assert caught.value.session_id == "mine"
            assert await store.get("mine") == first  # untouched
            assert await store.count() == 1

    async def test_max_sessions(self, backend: SessionBackend) -> None:
        async with store_of(backend, max_sessions=2) as store:
            a = await store.create()
            await store.create()
            with pytest.raises(SessionLimitReached) as caught:
                await store.create("third")
            assert caught.value.max_sessions == 2
            assert await store.count() == 2
            await store.delete(a.session_id)
            await store.create("third")
            assert await store.count() == 2

    async def test_list_is_oldest_first(self, backend: SessionBackend) -> None:
        async with store_of(backend) as store:
            made = [await store.create(f"s{i}") for i in range(4)]
            assert [r.session_id for r in await store.list()] == [r.session_id for r in made]

    async def test_on_end_is_called_once_per_deleted_session(self, backend: SessionBackend) -> None:
        ended = Ended()
        async with store_of(backend, on_end=ended) as store:
            await store.create("a", metadata={"k": "v"})
            await store.create("b")
            await store.delete("a")
            await store.delete("a")
            await store.delete("b")
            await ended.wait_for(2)
            await anyio.wait_all_tasks_blocked()
        assert ended.calls == [("a", "deleted"), ("b", "deleted")]

    async def test_an_async_on_end_gets_the_last_record(self, backend: SessionBackend) -> None:
        seen: list[SessionRecord] = []
        done = anyio.Event()

        async def on_end(rec: SessionRecord, why: EndReason) -> None:
            await anyio.lowlevel.checkpoint()
            seen.append(rec)
            done.set()

        async with store_of(backend, on_end=on_end) as store:
            await store.create("a", metadata={"k": 1})
            pinned = await store.pin("a", "w1")
            assert await store.delete("a") == pinned
            with anyio.fail_after(5):
                await done.wait()
        assert seen == [pinned]

    async def test_a_raising_on_end_is_logged_and_the_store_goes_on(
        self, backend: SessionBackend, caplog: pytest.LogCaptureFixture
    ) -> None:
        called = anyio.Event()

        def on_end(rec: SessionRecord, why: EndReason) -> None:
            called.set()
            raise RuntimeError("cleanup failed")

        with caplog.at_level(logging.ERROR, "snakepit.session"):
            async with store_of(backend, on_end=on_end) as store:
                await store.create("a")
                await store.delete("a")
                with anyio.fail_after(5):
                    await called.wait()
                await anyio.wait_all_tasks_blocked()
                assert store.alive
                await store.create("b")
                assert await store.count() == 1
        logged = [r for r in caplog.records if "on_end('a', 'deleted') raised" in r.getMessage()]
        assert len(logged) == 1
        assert logged[0].exc_info is not None
        assert isinstance(logged[0].exc_info[1], RuntimeError)

    async def test_a_stop_lets_running_on_end_calls_finish(self, backend: SessionBackend) -> None:
        release = anyio.Event()
        finished: list[str] = []

        async def on_end(rec: SessionRecord, why: EndReason) -> None:
            await release.wait()
            finished.append(rec.session_id)

        async with anyio.create_task_group() as tg:
            store = await SessionStore.start(tg, SessionStoreConfig(backend=backend, on_end=on_end))
            await store.create("a")
            await store.delete("a")
            tg.start_soon(store.stop)
            await anyio.wait_all_tasks_blocked()
            assert finished == []
            release.set()
            with anyio.fail_after(5):
                await store.wait()
        assert finished == ["a"]

    async def test_concurrent_creates_and_deletes(self, backend: SessionBackend) -> None:
        async with store_of(backend) as store:
            made: list[str] = []
            winners: list[str] = []

            async def client(n: int) -> None:
                mine = [(await store.create(metadata={"n": n})).session_id for _ in range(3)]
                await store.delete(mine.pop())
                made.extend(mine)
                try:
                    await store.create("contested")
                except SessionExists:
                    return
                winners.append(f"client {n}")

            async with anyio.create_task_group() as tg:
                for n in range(24):
                    tg.start_soon(client, n)
            assert len(winners) == 1
            assert len(set(made)) == len(made) == 48
            assert await store.count() == 49
            assert {r.session_id for r in await store.list()} == {*made, "contested"}

    async def test_a_restart_of_the_server_loses_no_session(self, backend: SessionBackend) -> None:
        config = SessionStoreConfig(backend=backend)
        spec = SupervisorSpec([ChildSpec("sessions", SessionStore, arg=config)])
        async with Supervisor.running(spec) as sup:
            store = sup.child("sessions")
            assert isinstance(store, SessionStoreRef)
            for i in range(3):
                await store.create(f"s{i}", metadata={"i": i})
            await store.pin("s1", "w1")
            before = await store.list()
            await store.kill()
            await sup.wait_stable()
            after = sup.child("sessions")
            assert isinstance(after, SessionStoreRef)
            assert after is not store
            assert after.generation == 1
            assert await after.list() == before
            await after.touch("s0")

    async def test_expiry_on_the_real_clock(self, backend: SessionBackend) -> None:
        # The derived sweep interval is its floor (0.05 s): this takes ~0.1 s of waiting.
        ended = Ended()
        async with store_of(backend, on_end=ended) as store:
            keep = await store.create(ttl=None)
            gone = await store.create(ttl=0.05)
            await ended.wait_for(1)
            assert ended.calls == [(gone.session_id, "expired")]
            with pytest.raises(SessionNotFound):
                await store.get(gone.session_id)
            assert await store.list() == [keep]


# -- bad input: a typed error naming the argument, nothing written -------------------------


BAD_CREATE: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"session_id": 7}, ArgumentTypeError, "session_id"),
    ({"session_id": b"id"}, ArgumentTypeError, "session_id"),
    ({"session_id": ""}, ConfigError, "session_id"),
    ({"ttl": 0}, ConfigError, "ttl"),
    ({"ttl": -1.5}, ConfigError, "ttl"),
    ({"ttl": float("nan")}, ConfigError, "ttl"),
    ({"ttl": float("inf")}, ConfigError, "ttl"),
    ({"ttl": True}, ArgumentTypeError, "ttl"),
    ({"ttl": "60"}, ArgumentTypeError, "ttl"),
    ({"affinity": "sticky"}, ConfigError, "affinity"),
    ({"affinity": None}, ArgumentTypeError, "affinity"),
    ({"metadata": [("a", 1)]}, ArgumentTypeError, "metadata"),
    ({"metadata": {1: "a"}}, ArgumentTypeError, "metadata"),
    ({"metadata": {"f": object()}}, ArgumentTypeError, "metadata"),
    ({"metadata": {"b": b"bytes"}}, ArgumentTypeError, "metadata"),
    ({"metadata": {"x": float("nan")}}, ConfigError, "metadata"),
    ({"metadata": {"t": (1, 2)}}, ConfigError, "metadata"),
    ({"metadata": {"d": {1: "a"}}}, ConfigError, "metadata"),
    ({"session_id": "x" * 257}, ConfigError, "session_id"),
    ({"session_id": "\ud800"}, ConfigError, "session_id"),  # no UTF-8 form
    ({"metadata": {"k": "\udc80"}}, ConfigError, "metadata"),
    ({"metadata": {"big": "x" * 70_000}}, ConfigError, "metadata"),
]


def _nested(depth: int) -> dict[str, Any]:
    inner: dict[str, Any] = {}
    for _ in range(depth):
        inner = {"d": inner}
    return inner


class TestBadInput:
    @pytest.mark.parametrize(("kwargs", "error", "field"), BAD_CREATE)
    async def test_create(
        self, backend: SessionBackend, kwargs: dict[str, Any], error: type[Exception], field: str
    ) -> None:
        async with store_of(backend) as store:
            with pytest.raises(error) as caught:
                await store.create(**kwargs)
            assert isinstance(caught.value, ConfigError)
            assert caught.value.field == field
            assert await store.count() == 0
            assert await backend.count() == 0

    async def test_a_cyclic_metadata_is_refused(self, backend: SessionBackend) -> None:
        cyclic: dict[str, Any] = {}
        cyclic["self"] = cyclic
        async with store_of(backend) as store:
            with pytest.raises(ConfigError, match="metadata"):
                await store.create(metadata=cyclic)
            assert await store.count() == 0

    async def test_metadata_nested_too_deep_for_json_is_refused(
        self, backend: SessionBackend
    ) -> None:
        async with store_of(backend) as store:
            with pytest.raises(ConfigError, match="nested too deeply"):
                await store.create(metadata=_nested(100_000))
            assert await store.count() == 0
            # the limits' edges are fine
            await store.create("x" * 256, metadata={"big": "x" * 60_000})

    async def test_metadata_is_copied(self, backend: SessionBackend) -> None:
        mine: dict[str, Any] = {"tags": ["a"]}
        async with store_of(backend) as store:
            made = await store.create("s", metadata=mine)
            mine["tags"].append("b")
            assert (await store.get("s")).metadata == {"tags": ["a"]}
            assert made.metadata == {"tags": ["a"]}

    @pytest.mark.parametrize("bad", [None, 3, ""])
    async def test_session_ids_of_every_method(self, backend: SessionBackend, bad: Any) -> None:
        async with store_of(backend) as store:
            await store.create("s")
            error = ConfigError if bad == "" else ArgumentTypeError
            for call in (store.get, store.touch, store.delete, lambda sid: store.pin(sid, "w")):
                with pytest.raises(error) as caught:
                    await call(bad)
                assert caught.value.field == "session_id"
            assert await store.count() == 1

    @pytest.mark.parametrize(("bad", "error"), [(3, ArgumentTypeError), ("", ConfigError)])
    async def test_worker_id(
        self, backend: SessionBackend, bad: Any, error: type[Exception]
    ) -> None:
        async with store_of(backend) as store:
            made = await store.create("s")
            with pytest.raises(error, match="worker_id"):
                await store.pin("s", bad)
            assert await store.get("s") == made


@pytest.mark.parametrize(
    ("options", "error", "field"),
    [
        ({"backend": {}}, ArgumentTypeError, "backend"),
        ({"max_sessions": 0}, ConfigError, "max_sessions"),
        ({"max_sessions": True}, ArgumentTypeError, "max_sessions"),
        ({"max_sessions": 1.5}, ArgumentTypeError, "max_sessions"),
        ({"sweep_interval": 0}, ConfigError, "sweep_interval"),
        ({"sweep_interval": "1"}, ArgumentTypeError, "sweep_interval"),
        ({"on_end": "print"}, ArgumentTypeError, "on_end"),
        ({"in_use": 1}, ArgumentTypeError, "in_use"),
        ({"clock": 0.0}, ArgumentTypeError, "clock"),
    ],
)
def test_bad_config(options: dict[str, Any], error: type[ConfigError], field: str) -> None:
    with pytest.raises(error) as caught:
        SessionStoreConfig(**options)
    assert caught.value.field == field


async def test_the_store_takes_only_a_config() -> None:
    async with anyio.create_task_group() as tg:
        with pytest.raises(ArgumentTypeError, match="SessionStoreConfig"):
            await SessionStore.start(tg, {"max_sessions": 3})  # type: ignore[arg-type]


# -- time, on trio's MockClock (memory backend) --------------------------------------------


class TestExpiry:
    async def test_a_session_expires_ttl_after_its_last_use(self, mock_clock: MockClock) -> None:
        ended = Ended()
        async with store_of(MemoryBackend(), on_end=ended) as store:
            t0 = anyio.current_time()
            sid = (await store.create(ttl=10)).session_id
            mock_clock.jump(9)
            await store.touch(sid)  # now due at t0 + 19
            mock_clock.jump(9)
            assert (await store.get(sid)).last_used == t0 + 9
            await ended.wait_for(1, timeout=60)  # the clock jumps to the sweep after t0 + 19
            assert ended.calls == [(sid, "expired")]
            # The derived sweep period is ttl / 2: it ran within 5 s of the expiry.
            assert t0 + 19 <= ended.times[0] <= t0 + 24
            with pytest.raises(SessionNotFound):
                await store.touch(sid)
            assert await store.count() == 0

    async def test_an_expired_session_is_gone_before_any_sweep(self, mock_clock: MockClock) -> None:
        ended = Ended()
        options = {"on_end": ended, "sweep_interval": 1e6, "max_sessions": 2}
        async with store_of(MemoryBackend(), **options) as store:
            for sid in ("a", "b"):
                await store.create(sid, ttl=5)
            mock_clock.jump(5)  # exactly ttl: expired
            with pytest.raises(SessionNotFound, match="expired"):
                await store.get("a")
            assert await store.delete("b") is None  # gone, not deleted
            await anyio.wait_all_tasks_blocked()
            assert sorted(ended.calls) == [("a", "expired"), ("b", "expired")]
            await store.create("a", ttl=5)  # the id and the slot are free again
            await store.create("c")
            mock_clock.jump(5)
            assert await store.list() == [await store.get("c")]
            assert await store.count() == 1
            await anyio.wait_all_tasks_blocked()
            assert len(ended.calls) == 3  # one call per ended session

    async def test_a_start_ends_what_expired_while_no_store_ran(
        self, mock_clock: MockClock
    ) -> None:
        backend = MemoryBackend()
        async with store_of(backend) as store:
            await store.create("old", ttl=5)
            await store.create("kept", ttl=None)
        mock_clock.jump(60)
        ended = Ended()
        async with store_of(backend, on_end=ended, sweep_interval=1e6) as store:
            await ended.wait_for(1)
            assert ended.calls == [("old", "expired")]
            assert [r.session_id for r in await store.list()] == ["kept"]

    async def test_a_shorter_ttl_makes_the_sweep_come_sooner(self, mock_clock: MockClock) -> None:
        ended = Ended()
        async with store_of(MemoryBackend(), on_end=ended) as store:
            t0 = anyio.current_time()
            await store.create("long")  # an hour: the sweep every 60 s
            await store.create("short", ttl=1)  # now every 0.5 s
            await ended.wait_for(1)
            assert ended.calls == [("short", "expired")]
            assert ended.times[0] <= t0 + 1.5

    async def test_a_session_in_use_does_not_expire(self, mock_clock: MockClock) -> None:
        # A pool says which sessions have a call running (in_use): a call
        # longer than the TTL must not lose its session under it.
        ended = Ended()
        busy = {"long"}
        options = {"on_end": ended, "sweep_interval": 1.0, "in_use": busy.__contains__}
        async with store_of(MemoryBackend(), **options) as store:
            await store.create("long", ttl=5)
            await store.create("idle", ttl=5)
            mock_clock.jump(10)  # both past their TTL; sweeps ran
            await ended.wait_for(1, timeout=60)
            assert ended.calls == [("idle", "expired")]
            assert [r.session_id for r in await store.list()] == ["long"]
            record = await store.touch("long")  # used again while in use: fine
            assert record.last_used == anyio.current_time()
            busy.clear()  # its call ended
            mock_clock.jump(5)
            await ended.wait_for(2, timeout=60)
            assert ended.calls[1] == ("long", "expired")


async def test_the_default_clock_is_the_wall_clock() -> None:
    # Times a backend keeps across restarts and hosts: seconds since the epoch.
    import time

    async with SessionStore.running(SessionStoreConfig()) as store:
        before = time.time()
        made = await store.create()
        assert before <= made.created_at <= time.time()
        assert before <= store.now() <= time.time() + 1


class TestTheRefsFastPath:
    """Reads, touches and pins go to the backend from the caller's task, one atomic operation."""

    async def test_touch_pin_and_get_are_one_backend_operation_each(self) -> None:
        calls: list[str] = []

        class Recording(MemoryBackend):
            async def get(self, session_id: str) -> SessionRecord | None:
                calls.append("get")
                return await super().get(session_id)

            async def replace(self, record: SessionRecord) -> bool:
                calls.append("replace")
                return await super().replace(record)

            async def touch(self, session_id: str, now: float) -> SessionRecord | None:
                calls.append("touch")
                return await super().touch(session_id, now)

        async with store_of(Recording()) as store:
            await store.create("s")
            calls.clear()
            await store.touch("s")
            await store.pin("s", "w1", only_if_pinned_to=None)
            await store.get("s")
            assert calls == ["touch", "get"]  # pin: MemoryBackend.pin, not get + replace

    async def test_a_dead_store_still_raises_server_exited(self) -> None:
        async with store_of(MemoryBackend()) as store:
            await store.create("s")
        with pytest.raises(ServerExited):
            await store.touch("s")
        with pytest.raises(ServerExited):
            await store.pin("s", "w1")
