"""A session's typed variables from the host: SessionVariables over a store's backend.

The memory backend; its variable storage is checked directly too (the
expectations of a write). Contention is made real with a backend that yields
before each operation: the memory backend's own methods have no await point.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
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
    SessionBackend,
    SessionStore,
    SessionStoreConfig,
    SessionStoreRef,
    SessionVariables,
    VariableRecord,
)

pytestmark = pytest.mark.anyio


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


@asynccontextmanager
async def session(backend: MemoryBackend | None = None) -> AsyncIterator[SessionVariables]:
    config = SessionStoreConfig(backend=backend or MemoryBackend(), clock=anyio.current_time)
    async with SessionStore.running(config) as store:
        record = await store.create()
        yield store.variables(record.session_id)


class TestReadWrite:
    async def test_register_get_set_list_delete_with_versions(self) -> None:
        async with session() as v:
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

    async def test_an_invalid_value_leaves_the_old_value_and_version(self) -> None:
        async with session() as v:
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

    async def test_register_refuses_a_taken_name_and_a_bad_spec(self) -> None:
        async with session() as v:
            await v.register("x", "float", 1.5)
            with pytest.raises(VariableExists, match="'x'"):
                await v.register("x", "float", 2.5)
            with pytest.raises(ConfigError, match="type"):
                await v.register("y", "complex", 1)
            assert await v.get("x") == 1.5

    async def test_set_many_is_all_or_nothing(self) -> None:
        async with session() as v:
            await v.register("a", "integer", 1, max=5)
            await v.register("b", "integer", 1, max=5)
            with pytest.raises(VariableValidationError, match="'b'"):
                await v.set_many({"a": 2, "b": 6})
            with pytest.raises(VariableNotFound, match="'c'"):
                await v.set_many({"a": 2, "c": 1})
            assert await v.get_many(["a", "b"]) == {"a": 1, "b": 1}
            assert await v.set_many({"a": 2, "b": 3}) == {"a": 2, "b": 2}
            assert await v.get_many(["a", "b"]) == {"a": 2, "b": 3}

    async def test_wrong_argument_types_are_typed_errors(self) -> None:
        async with session() as v:
            with pytest.raises(ArgumentTypeError):
                await v.get_many("ab")
            with pytest.raises(ArgumentTypeError):
                await v.get_many([1])  # type: ignore[list-item]
            with pytest.raises(ArgumentTypeError):
                await v.set_many([("a", 1)])  # type: ignore[arg-type]


class TestSessions:
    async def test_an_unknown_or_deleted_session_has_no_variables(self) -> None:
        config = SessionStoreConfig(backend=MemoryBackend(), clock=anyio.current_time)
        async with SessionStore.running(config) as store:
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

    def test_a_session_id_is_a_str(self) -> None:
        with pytest.raises(ArgumentTypeError):
            SessionVariables(None, 5)  # type: ignore[arg-type]


class TestUpdate:
    async def test_concurrent_updates_add_exactly_n(self) -> None:
        async with session(Yielding()) as v:
            await v.register("counter", "integer", 0)

            async def bump() -> None:
                await v.update("counter", lambda n: n + 1)

            async with anyio.create_task_group() as tg:
                for _ in range(100):
                    tg.start_soon(bump)
            variable = await v.variable("counter")
            assert variable.value == 100
            assert variable.version == 101

    async def test_an_async_function_and_an_invalid_result(self) -> None:
        async with session() as v:
            await v.register("name", "string", "a", max_length=2)

            async def longer(s: str) -> str:
                await anyio.lowlevel.checkpoint()
                return s + "b"

            assert await v.update("name", longer) == "ab"
            with pytest.raises(VariableValidationError, match="max_length"):
                await v.update("name", longer)
            assert await v.get("name") == "ab"

    async def test_a_set_never_lands_on_a_later_registration_of_the_name(self) -> None:
        backend = MemoryBackend()
        async with session(backend) as v:
            first = await v.register("x", "integer", 1)
            assert first.version == 1
            old_uid = (await backend.get_variables(v.session_id, ["x"], 0.0))["x"].uid
            await v.delete("x")
            await v.register("x", "string", "s")
            written = await backend.set_variables(
                v.session_id, {"x": 5}, {"x": (old_uid, None)}, 0.0, "host"
            )
            assert written is None
            assert await v.get("x") == "s"


class TestWatch:
    async def test_the_host_watches_what_another_task_writes(self) -> None:
        async with session() as v:
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

    async def test_a_watch_ends_with_its_session(self) -> None:
        config = SessionStoreConfig(backend=MemoryBackend(), clock=anyio.current_time)
        async with SessionStore.running(config) as store:
            record = await store.create()
            v = store.variables(record.session_id)
            async with v.watch() as changes:
                await v.register("x", "integer", 1)
                await store.delete(record.session_id)
                assert [(c.name, c.old, c.new) async for c in changes] == [("x", None, 1)]

    async def test_a_watcher_that_falls_behind_is_ended_not_silently_skipped(self) -> None:
        async with session() as v:
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

    async def test_bad_watch_arguments(self) -> None:
        async with session() as v:
            with pytest.raises(ConfigError, match="buffer"):
                async with v.watch(buffer=0):
                    pass  # pragma: no cover - refused
            with pytest.raises(ArgumentTypeError):
                async with v.watch("x"):
                    pass  # pragma: no cover - refused


async def test_the_store_ref_is_the_way_in() -> None:
    config = SessionStoreConfig(backend=MemoryBackend(), clock=anyio.current_time)
    async with SessionStore.running(config) as store:
        assert isinstance(store, SessionStoreRef)
        record = await store.create()
        assert repr(store.variables(record.session_id)).startswith("<SessionVariables")


async def test_a_backend_that_keeps_no_variables_says_so(
    redis_session_backend: SessionBackend,
) -> None:
    # Redis keeps sessions; its variables are not built yet (issue #14).
    config = SessionStoreConfig(backend=redis_session_backend)
    async with SessionStore.running(config) as store:
        record = await store.create()
        with pytest.raises(SessionBackendError, match="keeps no session variables"):
            await store.variables(record.session_id).register("x", "integer", 1)
