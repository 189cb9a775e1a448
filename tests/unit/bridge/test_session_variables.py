"""A session's typed variables from the host: SessionVariables over a store's backend.

A contract over every backend (the ``backend`` fixture: memory, and Redis on
asyncio), the backends' variable storage checked directly too (expiry at an
explicit ``now``, the expectations of a write). Contention is made real on
the memory backend with one that yields before each operation (its own
methods have no await point); on Redis every operation awaits. Then what is
Redis's own: stores on several hosts (two backends on one namespace), the key
layout, a session swept by expiry, a lost connection.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
import redis.asyncio
from trio.testing import MockClock

from snakepit.errors import (
    ArgumentTypeError,
    ConfigError,
    SessionBackendError,
    SessionNotFound,
    VariableError,
    VariableExists,
    VariableNotFound,
    VariableValidationError,
)
from snakepit.session import (
    MemoryBackend,
    RedisBackend,
    SessionBackend,
    SessionRecord,
    SessionStore,
    SessionStoreConfig,
    SessionStoreRef,
    SessionVariables,
    VariableBackend,
    VariableRecord,
)
from snakepit.session._session_variables import _UPDATE_LOCKS
from tests._backends import DelegatingBackend
from tests._redis import RedisServer

pytestmark = pytest.mark.anyio
# The API is anyio's on either backend; the session store's own tests run on
# trio too (and the MockClock test here does). asyncio only, for the suite's time.
anyio_backends = ("asyncio",)


class Yielding(MemoryBackend):
    """A memory backend that lets other tasks run before each variable operation."""

    async def get_variables(
        self, session_id: str, names: Sequence[str] | None, now: float
    ) -> dict[str, VariableRecord]:
        await anyio.lowlevel.checkpoint()
        return await super().get_variables(session_id, names, now)

    async def set_variables(
        self,
        session_id: str,
        values: Mapping[str, Any],
        expect: Mapping[str, tuple[str, int | None]],
        now: float,
        source: str,
    ) -> dict[str, VariableRecord] | None:
        await anyio.lowlevel.checkpoint()
        return await super().set_variables(session_id, values, expect, now, source)


class SessionsOnly(DelegatingBackend):
    """A SessionBackend that is not a VariableBackend: a MemoryBackend's session methods."""

    def __init__(self) -> None:
        super().__init__(MemoryBackend())


def variables_of(backend: SessionBackend) -> VariableBackend:
    assert isinstance(backend, VariableBackend)
    return backend


@asynccontextmanager
async def store_of(backend: SessionBackend, **options: Any) -> AsyncIterator[SessionStoreRef]:
    options.setdefault("clock", anyio.current_time)
    async with SessionStore.running(SessionStoreConfig(backend=backend, **options)) as store:
        yield store


@asynccontextmanager
async def session(backend: SessionBackend) -> AsyncIterator[SessionVariables]:
    async with store_of(backend) as store:
        record = await store.create()
        yield store.variables(record.session_id)


def record(name: str, value: Any, *, uid: str = "u1", updated_at: float = 1.0) -> VariableRecord:
    return VariableRecord(
        name, {"name": name, "type": "integer"}, value, 1, uid, updated_at, "host"
    )


class TestReadWrite:
    async def test_register_get_set_list_delete_with_versions(
        self, backend: SessionBackend
    ) -> None:
        async with session(backend) as v:
            registered = await v.register("counter", "integer", 0, min=0, max=10)
            assert (registered.name, registered.value, registered.version) == ("counter", 0, 1)
            assert await v.set("counter", 5) == 2
            assert await v.get("counter") == 5
            variable = await v.variable("counter")
            assert (variable.value, variable.version, variable.spec.max) == (5, 2, 10)
            await v.register("label", "string", "a", max_length=3)
            assert [x.name for x in await v.list()] == ["counter", "label"]
            assert await v.get_many(["label", "counter"]) == {"label": "a", "counter": 5}
            await v.delete("counter")
            with pytest.raises(VariableNotFound, match="'counter'"):
                await v.get("counter")
            with pytest.raises(VariableNotFound):
                await v.delete("counter")

    async def test_an_invalid_value_leaves_the_old_value_and_version(
        self, backend: SessionBackend
    ) -> None:
        async with session(backend) as v:
            await v.register("counter", "integer", 3, min=0, max=10)
            with pytest.raises(VariableValidationError, match="'counter': max") as caught:
                await v.set("counter", 11)
            assert (caught.value.variable, caught.value.constraint) == ("counter", "max")
            with pytest.raises(VariableValidationError, match="type"):
                await v.set("counter", "3")
            assert (await v.variable("counter")).version == 1
            assert await v.get("counter") == 3
            with pytest.raises(VariableValidationError):
                await v.register("other", "integer", -1, min=0)
            with pytest.raises(VariableNotFound):
                await v.get("other")  # nothing half-written

    async def test_register_refuses_a_taken_name_and_a_bad_spec(
        self, backend: SessionBackend
    ) -> None:
        async with session(backend) as v:
            await v.register("x", "float", 1.5)
            with pytest.raises(VariableExists, match="'x'"):
                await v.register("x", "float", 2.5)
            with pytest.raises(ConfigError, match="type"):
                await v.register("y", "complex", 1)
            assert await v.get("x") == 1.5

    async def test_set_many_is_all_or_nothing(self, backend: SessionBackend) -> None:
        async with session(backend) as v:
            await v.register("a", "integer", 1, max=5)
            await v.register("b", "integer", 1, max=5)
            with pytest.raises(VariableValidationError, match="'b'"):
                await v.set_many({"a": 2, "b": 6})
            with pytest.raises(VariableNotFound, match="'c'"):
                await v.set_many({"a": 2, "c": 1})
            assert await v.get_many(["a", "b"]) == {"a": 1, "b": 1}
            assert await v.set_many({"a": 2, "b": 3}) == {"a": 2, "b": 2}
            assert await v.get_many(["a", "b"]) == {"a": 2, "b": 3}

    async def test_values_come_back_exactly(self, backend: SessionBackend) -> None:
        async with session(backend) as v:
            await v.register("x", "float", 0.1 + 0.2)
            await v.register("e", "embedding", [1e-300, -0.0, 2.5e17], dimension=3)
            await v.register("s", "string", 'é\\/"\u2028')
            await v.register("c", "choice", "b", choices=["a", "b"])
            assert await v.get_many(["x", "e", "s", "c"]) == {
                "x": 0.1 + 0.2,
                "e": (1e-300, -0.0, 2.5e17),
                "s": 'é\\/"\u2028',
                "c": "b",
            }
            assert (await v.variable("c")).spec.choices == ("a", "b")
            assert await v.set("x", 1 / 3) == 2
            assert await v.get("x") == 1 / 3

    async def test_wrong_argument_types_are_typed_errors(self, backend: SessionBackend) -> None:
        async with session(backend) as v:
            with pytest.raises(ArgumentTypeError):
                await v.get_many("ab")
            with pytest.raises(ArgumentTypeError):
                await v.get_many([1])  # type: ignore[list-item]
            with pytest.raises(ArgumentTypeError, match="iterable"):  # before: a bare TypeError
                await v.get_many(None)  # type: ignore[arg-type]
            with pytest.raises(ArgumentTypeError, match="iterable"):
                await v.variables(5)  # type: ignore[arg-type]
            with pytest.raises(ArgumentTypeError):
                await v.set_many([("a", 1)])  # type: ignore[arg-type]


class TestSessions:
    async def test_an_unknown_or_deleted_session_has_no_variables(
        self, backend: SessionBackend
    ) -> None:
        async with store_of(backend) as store:
            with pytest.raises(SessionNotFound):
                await store.variables("nope").register("x", "integer", 1)
            record = await store.create()
            v = store.variables(record.session_id)
            await v.register("x", "integer", 1)
            await store.delete(record.session_id)
            with pytest.raises(SessionNotFound):
                await v.get("x")
            again = await store.create(session_id=record.session_id)
            with pytest.raises(VariableNotFound):  # a new session of that id starts empty
                await store.variables(again.session_id).get("x")

    async def test_an_expired_session_has_no_variables_even_before_its_sweep(
        self, mock_clock: MockClock
    ) -> None:
        config = SessionStoreConfig(
            backend=MemoryBackend(), clock=anyio.current_time, sweep_interval=3600
        )
        async with SessionStore.running(config) as store:
            record = await store.create(ttl=10)
            v = store.variables(record.session_id)
            await v.register("x", "integer", 1)
            mock_clock.jump(11)  # past its TTL, before any sweep
            with pytest.raises(SessionNotFound):
                await v.get("x")

    async def test_at_the_backend_a_session_expired_at_now_has_no_variables(
        self, backend: SessionBackend
    ) -> None:
        variables = variables_of(backend)
        session = SessionRecord("s", created_at=0.0, last_used=0.0, ttl=10.0)
        assert await backend.create(session, limit=None)
        now = 5.123456789012345
        await variables.register_variable("s", record("x", 1, updated_at=now), now)
        [(name, got)] = (await variables.get_variables("s", None, 9.99)).items()
        assert name == "x"
        assert got == record("x", 1, updated_at=now)  # the time exact
        with pytest.raises(SessionNotFound):
            await variables.get_variables("s", ["x"], 10.0)
        with pytest.raises(SessionNotFound):
            await variables.register_variable("s", record("y", 1), 10.0)
        with pytest.raises(SessionNotFound):
            await variables.set_variables("s", {"x": 2}, {}, 10.0, "host")
        with pytest.raises(SessionNotFound):
            await variables.delete_variable("s", "x", 10.0, "host")
        with pytest.raises(SessionNotFound):
            await variables.get_variables("nope", None, 0.0)
        assert await backend.delete("s", expired_at=10.0) is not None  # the sweep's
        assert await backend.create(session, limit=None)
        assert await variables.get_variables("s", None, 1.0) == {}  # gone with it

    async def test_at_the_backend_a_write_checks_every_expectation_first(
        self, backend: SessionBackend
    ) -> None:
        variables = variables_of(backend)
        assert await backend.create(SessionRecord("s", 0.0, 0.0, None), limit=None)
        await variables.register_variable("s", record("a", 1), 1.0)
        await variables.register_variable("s", record("b", 1, uid="u2"), 1.0)
        for expect in (
            {"a": ("u1", 2)},  # another version
            {"a": ("u1", None), "b": ("u1", None)},  # another registration
            {"a": ("u1", 1), "c": ("u3", None)},  # not there
        ):
            assert await variables.set_variables("s", {"a": 2, "b": 2}, expect, 2.0, "w") is None
        with pytest.raises(VariableNotFound, match="'c'"):
            await variables.set_variables("s", {"a": 2, "c": 2}, {}, 2.0, "w")
        got = await variables.get_variables("s", ["a", "b"], 2.0)
        assert [(r.value, r.version) for r in got.values()] == [(1, 1), (1, 1)]
        written = await variables.set_variables(
            "s", {"a": 5, "b": [1, {"k": None}]}, {"a": ("u1", 1), "b": ("u2", None)}, 3.0, "w"
        )
        assert written == {
            "a": VariableRecord("a", record("a", 1).spec, 5, 2, "u1", 3.0, "w"),
            "b": VariableRecord("b", record("b", 1).spec, [1, {"k": None}], 2, "u2", 3.0, "w"),
        }
        assert await variables.get_variables("s", ["b", "a"], 3.0) == written
        assert await variables.set_variables("s", {}, {}, 3.0, "w") == {}
        assert await variables.delete_variable("s", "a", 4.0, "w") == written["a"]
        with pytest.raises(VariableNotFound, match="'a'"):
            await variables.delete_variable("s", "a", 4.0, "w")
        with pytest.raises(VariableExists, match="'b'"):
            await variables.register_variable("s", record("b", 7), 4.0)

    def test_a_session_id_is_a_str(self) -> None:
        with pytest.raises(ArgumentTypeError):
            SessionVariables(None, 5)  # type: ignore[arg-type]


def count_writes(backend: SessionBackend, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count ``backend``'s set_variables calls (in the list returned: one item a call)."""
    variables = variables_of(backend)
    write = variables.set_variables
    calls: list[int] = []

    async def counted(*args: Any) -> dict[str, VariableRecord] | None:
        calls.append(1)
        return await write(*args)

    monkeypatch.setattr(variables, "set_variables", counted)
    return calls


def locks_of(v: SessionVariables) -> list[Any]:
    """The update locks of ``v``'s session in use now."""
    return [entry for key, entry in _UPDATE_LOCKS.items() if key[1] == v.session_id]


class TestUpdate:
    async def test_concurrent_updates_add_exactly_n_each_in_one_attempt(
        self, backend: SessionBackend, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Memory: with a yield before each operation; Redis: every operation awaits.
        # The updates of this process take turns (a lock per variable), so none
        # conflicts: n writes, not the ~n*n/2 attempts of n compare-and-sets in lockstep.
        n = 64
        used = Yielding() if isinstance(backend, MemoryBackend) else backend
        async with session(used) as v:
            await v.register("counter", "integer", 0)
            writes = count_writes(used, monkeypatch)

            async def bump() -> None:
                await v.update("counter", lambda n: n + 1)

            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(bump)
            variable = await v.variable("counter")
            assert (variable.value, variable.version, len(writes)) == (n, n + 1, n)
            assert not locks_of(v)  # each dropped when its last user was done

    @pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
    async def test_cancelled_updates_leave_the_variable_unlocked(self) -> None:
        # asyncio's lock on asyncio, anyio's on trio: a waiter cancelled, then the holder.
        async with session(Yielding()) as v:
            await v.register("x", "integer", 0)
            entered = anyio.Event()

            async def stuck(n: int) -> int:
                entered.set()
                await anyio.sleep_forever()
                raise AssertionError("unreachable")  # pragma: no cover

            async def update(
                fn: Any, *, task_status: anyio.abc.TaskStatus[anyio.CancelScope]
            ) -> None:
                with anyio.CancelScope() as scope:
                    task_status.started(scope)
                    await v.update("x", fn)

            async with anyio.create_task_group() as tg:
                holder = await tg.start(update, stuck)
                await entered.wait()
                waiter = await tg.start(update, lambda n: n + 100)
                await anyio.wait_all_tasks_blocked()
                (entry,) = locks_of(v)
                assert (entry.users, entry.lock.locked()) == (2, True)
                waiter.cancel()
                await anyio.wait_all_tasks_blocked()
                assert (entry.users, entry.lock.locked()) == (1, True)
                holder.cancel()
            assert not locks_of(v)
            assert await v.get("x") == 0
            with anyio.fail_after(5):
                assert await v.update("x", lambda n: n + 1) == 1
            assert not locks_of(v)

    async def test_an_update_from_its_own_fn_is_refused(self, backend: SessionBackend) -> None:
        async with session(backend) as v:
            await v.register("x", "integer", 0)

            async def again(n: int) -> int:
                return int(await v.update("x", lambda m: m + 1)) + n

            with pytest.raises(VariableError, match="from its own fn: it would wait for itself"):
                await v.update("x", again)
            assert await v.get("x") == 0
            assert not locks_of(v)

    async def test_an_async_function_and_an_invalid_result(self, backend: SessionBackend) -> None:
        async with session(backend) as v:
            await v.register("name", "string", "a", max_length=2)

            async def longer(s: str) -> str:
                await anyio.lowlevel.checkpoint()
                return s + "b"

            assert await v.update("name", longer) == "ab"
            with pytest.raises(VariableValidationError, match="max_length"):
                await v.update("name", longer)
            assert await v.get("name") == "ab"

    async def test_a_set_never_lands_on_a_later_registration_of_the_name(
        self, backend: SessionBackend
    ) -> None:
        variables = variables_of(backend)
        async with session(backend) as v:
            first = await v.register("x", "integer", 1)
            assert first.version == 1
            old_uid = (await variables.get_variables(v.session_id, ["x"], 0.0))["x"].uid
            await v.delete("x")
            await v.register("x", "string", "s")
            written = await variables.set_variables(
                v.session_id, {"x": 5}, {"x": (old_uid, None)}, 0.0, "host"
            )
            assert written is None
            assert await v.get("x") == "s"


class TestWatch:
    async def test_the_host_watches_what_another_task_writes(self, backend: SessionBackend) -> None:
        async with session(backend) as v:
            await v.register("counter", "integer", 0)
            await v.register("other", "integer", 0)
            seen = []
            async with v.watch(["counter"]) as changes, anyio.create_task_group() as tg:

                async def write() -> None:
                    await v.set("other", 9)  # not watched
                    await v.set("counter", 1)
                    await v.update("counter", lambda n: n + 1)
                    await v.delete("counter")

                tg.start_soon(write)
                async for change in changes:
                    seen.append(
                        (change.name, change.old, change.new, change.version, change.source)
                    )
                    if change.new is None:
                        break
            assert seen == [
                ("counter", 0, 1, 2, "host"),
                ("counter", 1, 2, 3, "host"),
                ("counter", 2, None, 3, "host"),
            ]

    async def test_a_watch_ends_with_its_session(self, backend: SessionBackend) -> None:
        async with store_of(backend) as store:
            made = await store.create()
            v = store.variables(made.session_id)
            async with v.watch() as changes:
                await v.register("x", "integer", 1)  # right after entering: seen
                await store.delete(made.session_id)
                assert [(c.name, c.old, c.new) async for c in changes] == [("x", None, 1)]
                assert [c async for c in changes] == []  # ended for good
            with pytest.raises(SessionNotFound):
                async with v.watch():
                    pass  # pragma: no cover - refused

    async def test_a_watcher_that_falls_behind_is_ended_not_silently_skipped(
        self, backend: SessionBackend
    ) -> None:
        async with session(backend) as v:
            await v.register("x", "integer", 0)
            async with v.watch(buffer=2) as changes:
                for n in range(1, 4):
                    await v.set("x", n)
                got: list[Any] = []

                async def drain() -> None:
                    async for change in changes:
                        got.append(change.new)

                with pytest.raises(VariableError, match="fell more than 2 changes behind"):
                    await drain()
                assert got == [1, 2]

    async def test_bad_watch_arguments(self, backend: SessionBackend) -> None:
        async with session(backend) as v:
            with pytest.raises(ConfigError, match="buffer"):
                async with v.watch(buffer=0):
                    pass  # pragma: no cover - refused
            with pytest.raises(ArgumentTypeError):
                async with v.watch("x"):
                    pass  # pragma: no cover - refused

    async def test_watches_of_some_names_and_of_all(self, backend: SessionBackend) -> None:
        async with session(backend) as v:
            await v.register("a", "integer", 0)
            await v.register("b", "integer", 0)
            async with v.watch(["b"]) as some, v.watch(buffer=3) as every:
                assert await v.set_many({"a": 1, "b": 2}) == {"a": 2, "b": 2}
                await v.delete("a")
                change = await some.__anext__()
                assert (change.name, change.old, change.new, change.version) == ("b", 0, 2, 2)
                assert [(c.name, c.new) for c in [await every.__anext__() for _ in range(3)]] == [
                    ("a", 1),
                    ("b", 2),
                    ("a", None),
                ]


async def test_the_store_ref_is_the_way_in() -> None:
    config = SessionStoreConfig(backend=MemoryBackend(), clock=anyio.current_time)
    async with SessionStore.running(config) as store:
        assert isinstance(store, SessionStoreRef)
        record = await store.create()
        assert repr(store.variables(record.session_id)).startswith("<SessionVariables")


async def test_a_backend_that_keeps_no_variables_says_so() -> None:
    backend = SessionsOnly()
    assert isinstance(backend, SessionBackend)
    assert not isinstance(backend, VariableBackend)
    async with store_of(backend) as store:
        record = await store.create()
        with pytest.raises(SessionBackendError, match="keeps no session variables"):
            await store.variables(record.session_id).register("x", "integer", 1)


# -- Redis's own: several hosts on one namespace, its keys, the sweep, its connection -----


@asynccontextmanager
async def another_host(
    backend: RedisBackend, server: RedisServer
) -> AsyncIterator[tuple[RedisBackend, SessionStoreRef]]:
    """A second RedisBackend on ``backend``'s namespace, in a store of its own."""
    other = RedisBackend(server.url, namespace=backend.namespace)
    try:
        async with store_of(other) as store:
            yield other, store
    finally:
        await other.aclose()


@asynccontextmanager
async def raw_client(server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client of the test's redis-server, to look at the keys."""
    client = redis.asyncio.Redis(unix_socket_path=server.socket)
    try:
        yield client
    finally:
        await client.aclose()


class TestRedis:
    async def test_two_hosts_on_one_namespace_share_variables_and_watches(
        self, redis_session_backend: RedisBackend, redis_server_for_tests: RedisServer
    ) -> None:
        backend = redis_session_backend
        async with (
            store_of(backend) as here,
            another_host(backend, redis_server_for_tests) as (_, there),
        ):
            made = await here.create()
            mine, theirs = here.variables(made.session_id), there.variables(made.session_id)
            await theirs.register("x", "float", 0.5)
            assert await mine.get("x") == 0.5
            async with mine.watch() as changes:
                assert await theirs.set("x", 1.5) == 2
                await theirs.delete("x")
                await there.delete(made.session_id)  # ends the watch here
                seen = [(c.name, c.old, c.new, c.version) async for c in changes]
            assert seen == [("x", 0.5, 1.5, 2), ("x", 1.5, None, 2)]

    async def test_the_key_layout(
        self, redis_session_backend: RedisBackend, redis_server_for_tests: RedisServer
    ) -> None:
        backend = redis_session_backend
        ns = backend.namespace
        assert backend.variables_key("s") == f"{{{ns}}}:vars:s"
        assert backend.variables_channel("s") == f"{{{ns}}}:vch:s"
        assert await backend.create(SessionRecord("s", 0.0, 0.0, None), limit=None)
        written = record("x", [0.1, {"a": 1e-300}], updated_at=0.1 + 0.2)
        await backend.register_variable("s", written, 1.0)
        async with raw_client(redis_server_for_tests) as client:
            raw = await client.hget(backend.variables_key("s"), "x")
            assert raw is not None
            stored = json.loads(raw)  # spec and value as JSON text, the time exact
            assert stored["updated_at"] == repr(0.1 + 0.2)
            assert json.loads(stored["value"]) == [0.1, {"a": 1e-300}]
            assert await backend.delete("s") is not None
            assert await client.exists(backend.variables_key("s")) == 0

    async def test_concurrent_updates_from_two_hosts_add_exactly_n(
        self, redis_session_backend: RedisBackend, redis_server_for_tests: RedisServer
    ) -> None:
        backend = redis_session_backend
        async with (
            store_of(backend) as here,
            another_host(backend, redis_server_for_tests) as (_, there),
        ):
            made = await here.create()
            hosts = [here.variables(made.session_id), there.variables(made.session_id)]
            await hosts[0].register("counter", "integer", 0)
            async with anyio.create_task_group() as tg:
                for n in range(40):
                    tg.start_soon(hosts[n % 2].update, "counter", lambda n: n + 1)
            variable = await hosts[1].variable("counter")
            assert (variable.value, variable.version) == (40, 41)

    async def test_a_session_swept_by_expiry_ends_its_watch(
        self, redis_session_backend: RedisBackend, redis_server_for_tests: RedisServer
    ) -> None:
        backend = redis_session_backend
        async with store_of(backend) as store:  # its sweep runs every 0.05 s (its floor)
            made = await store.create(ttl=0.05)
            v = store.variables(made.session_id)
            await v.register("x", "integer", 1)
            with anyio.fail_after(5):
                async with v.watch() as changes:
                    assert [c async for c in changes] == []
            with pytest.raises(SessionNotFound):
                await store.get(made.session_id)
            async with raw_client(redis_server_for_tests) as client:
                assert await client.exists(backend.variables_key(made.session_id)) == 0

    async def test_a_watch_that_loses_its_connection_is_ended_with_a_backend_error(
        self, redis_session_backend: RedisBackend, redis_server_for_tests: RedisServer
    ) -> None:
        async with session(redis_session_backend) as v:
            await v.register("x", "integer", 1)
            async with v.watch() as changes:
                async with raw_client(redis_server_for_tests) as admin:
                    assert await admin.client_kill_filter(_type="pubsub") == 1
                await v.set("x", 2)  # perhaps missed: said so
                with pytest.raises(SessionBackendError, match="lost its connection"):
                    await changes.__anext__()
                with pytest.raises(SessionBackendError, match="lost its connection"):
                    await changes.__anext__()

    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_an_unreachable_redis_is_a_backend_error(self, tmp_path: Any) -> None:
        backend = RedisBackend(f"unix://{tmp_path}/none.sock", namespace="n")
        try:
            with pytest.raises(SessionBackendError, match="register_variable failed"):
                await backend.register_variable("s", record("x", 1), 0.0)
            with pytest.raises(SessionBackendError, match="watch_variables failed"):
                async with backend.watch_variables("s", None, 8):
                    pass  # pragma: no cover - refused
        finally:
            await backend.aclose()


class TestReviewFindingsOfTheHostApi:
    """Each found by a review; each failed before its fix."""

    async def test_name_in_constraints_and_non_str_names_are_typed_errors(
        self, backend: SessionBackend
    ) -> None:
        async with session(backend) as v:
            with pytest.raises(ConfigError, match="name"):
                await v.register("x", "integer", 0, name="y")
            await v.register("x", "integer", 0)
            with pytest.raises(ArgumentTypeError):
                await v.update(123, lambda n: n + 1)  # type: ignore[arg-type]
            with pytest.raises(ArgumentTypeError):
                await v.delete(None)  # type: ignore[arg-type]
            assert await v.get("x") == 0


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_redis_client_that_decodes_responses_is_refused(anyio_backend: str) -> None:
    import redis.asyncio

    from snakepit.session import RedisBackend

    client = redis.asyncio.Redis(unix_socket_path="/nonexistent", decode_responses=True)
    try:
        with pytest.raises(ConfigError, match="decode_responses"):
            RedisBackend(client=client)
    finally:
        await client.aclose()
