"""Session variables from inside tools (``ctx.session.variables``), end to end.

The seed's "full gRPC bridge integration" workflow, ported: a host registers
a typed variable in a session, tools of real worker processes set and update
it through the bridge, and the host reads it back; plus watches both ways,
the worker's read cache's coherence, and typed errors on the tool's side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from snakepit.pool import Pool, PoolSession

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # pools: grpc.aio

ROOT = Path(__file__).resolve().parents[2]
VARIABLES = "tests.integration._variable_adapters:Variables"


@pytest.fixture
def pool() -> Pool:
    """One worker: a session's calls go to one worker anyway (the seed's workflow has two)."""
    return Pool(VARIABLES, size=1, cwd=ROOT, max_concurrency=4)


@pytest.fixture(params=["memory", "redis"])
def any_pool(request: pytest.FixtureRequest) -> Pool:
    """Two workers (writes from both), its sessions on the memory backend and on Redis."""
    from snakepit.session import SessionStoreConfig

    if request.param == "memory":
        return Pool(VARIABLES, size=2, cwd=ROOT, max_concurrency=4)
    backend = request.getfixturevalue("redis_session_backend")
    sessions = SessionStoreConfig(backend=backend)
    return Pool(VARIABLES, size=2, cwd=ROOT, max_concurrency=4, sessions=sessions)


async def test_the_seeds_workflow_concurrent_sets_and_updates(any_pool: Pool) -> None:
    async with any_pool, any_pool.session(affinity="hint") as s:
        await s.variables.register("counter", "integer", 0)
        async with anyio.create_task_group() as tg:
            for i in range(1, 11):  # 10 concurrent sets, each through a tool and the bridge
                tool = "set" if i % 2 else "set_sync"
                tg.start_soon(s.execute, tool, {"name": "counter", "value": i})
        assert 1 <= await s.variables.get("counter") <= 10
        assert (await s.variables.variable("counter")).version == 11

        await s.variables.set("counter", 0)

        async def host_adds() -> None:
            await s.variables.update("counter", lambda n: n + 1)

        async with anyio.create_task_group() as tg:  # 100 updates: host, async and sync tools
            for i in range(100):
                if i % 3 == 0:
                    tg.start_soon(host_adds)
                else:
                    tool = "add" if i % 3 == 1 else "add_sync"
                    tg.start_soon(s.execute, tool, {"name": "counter"})
        assert await s.variables.get("counter") == 100


@pytest.mark.parametrize("tool", ["read_around_host", "read_around_host_sync"])
async def test_a_read_after_a_host_set_returned_never_sees_the_old_value(
    any_pool: Pool, tool: str
) -> None:
    async with any_pool, any_pool.session() as s:
        await s.variables.register("x", "integer", 1)

        async def host_sets(name: str) -> None:
            await s.variables.set(name, 2)

        any_pool.register_host_tool(host_sets)
        before = await s.execute("cache_counts", {})
        assert await s.execute(tool, {"name": "x"}) == [1, 1, 2]
        after = await s.execute("cache_counts", {})
        # The second read cost no round trip; the read after the host's set did.
        assert after[0] - before[0] >= 1


async def test_reads_of_unchanged_variables_are_served_from_the_cache(pool: Pool) -> None:
    async with pool, pool.session(affinity="strict_queue") as s:
        await s.variables.register("lr", "float", 0.5)
        assert await s.execute("get", {"name": "lr"}) == 0.5
        hits, misses = await s.execute("cache_counts", {})
        for _ in range(5):
            assert await s.execute("get_sync", {"name": "lr"}) == 0.5
        assert await s.execute("cache_counts", {}) == [hits + 5, misses]
        await s.variables.set("lr", 0.25)  # from the host: the next read asks again
        assert await s.execute("get", {"name": "lr"}) == 0.25
        assert (await s.execute("cache_counts", {}))[1] == misses + 1


async def test_a_tool_reads_and_writes_every_operation(pool: Pool) -> None:
    async with pool, pool.session() as s:
        assert (
            await s.execute(
                "register",
                {
                    "name": "mode",
                    "type": "choice",
                    "value": "a",
                    "constraints": {"choices": ["a", "b"]},
                },
            )
            == 1
        )
        await s.variables.register("n", "integer", 5, min=0, max=10)
        assert await s.execute("set_many", {"values": {"mode": "b", "n": 7}}) == {"mode": 2, "n": 2}
        assert await s.execute("snapshot", {}) == {"mode": ["b", 2], "n": [7, 2]}
        await s.execute("delete", {"name": "mode"})
        assert [v.name for v in await s.variables.list()] == ["n"]


@pytest.mark.parametrize("tool", ["attempt", "attempt_sync"])
async def test_bad_input_is_a_typed_bridge_error_and_nothing_is_written(
    pool: Pool, tool: str
) -> None:
    async with pool, pool.session() as s:
        await s.variables.register("n", "integer", 5, min=0, max=10)
        await s.variables.register("m", "integer", 1)

        async def attempt(op: str, *args: Any) -> list[str]:
            result: list[str] = await s.execute(tool, {"op": op, "args": list(args)})
            return result

        kind, classes, message = await attempt("set", "n", 11)
        assert kind == "BridgeValidationError"
        assert "VariableValidationError" in classes
        assert "BridgeError" in classes
        assert "'n'" in message
        assert "max" in message
        kind, _, _ = await attempt("set", "n", "seven")
        assert kind == "BridgeValidationError"
        kind, classes, _ = await attempt("get", "nope")
        assert kind == "BridgeVariableNotFound"
        assert "VariableNotFound" in classes
        kind, _, _ = await attempt("set_many", {"m": 2, "n": 99})  # all or none
        assert kind == "BridgeValidationError"
        kind, _, _ = await attempt("register", "n", "integer", 1)
        assert kind == "BridgeVariableExists"
        kind, _, _ = await attempt("delete", "nope")
        assert kind == "BridgeVariableNotFound"
        kind, _, _ = await attempt("get", 3)
        assert kind == "ArgumentTypeError"
        for op, arg in (("get_many", None), ("variables", 5)):  # before: a bare TypeError
            kind, _, _ = await attempt(op, arg)
            assert kind == "ArgumentTypeError"
        assert await s.variables.get_many(["n", "m"]) == {"n": 5, "m": 1}
        assert (await s.variables.variable("n")).version == 1
        assert pool.stats().degraded is None


async def test_a_cached_read_after_the_session_ended_is_bridge_session_not_found(
    pool: Pool,
) -> None:
    from snakepit.errors import RemoteError

    async with pool:
        record = await pool.sessions.create()
        session = PoolSession(pool, record)
        await session.variables.register("x", "integer", 1)

        async def host_sets(name: str) -> None:  # ends the session instead
            await pool.sessions.delete(record.session_id)

        pool.register_host_tool(host_sets)
        with pytest.raises(RemoteError, match="BridgeSessionNotFound"):
            await session.execute("read_around_host", {"name": "x"})


async def test_the_host_watches_what_a_tool_writes(any_pool: Pool) -> None:
    async with any_pool, any_pool.session() as s:
        await s.variables.register("x", "integer", 0)
        async with s.variables.watch(["x"]) as changes:
            await s.execute("set", {"name": "x", "value": 5})
            change = await anext(changes)
        assert (change.name, change.old, change.new, change.version) == ("x", 0, 5, 2)
        assert change.source.startswith("w")  # the worker's id, not "host"


async def test_a_tool_watches_what_the_host_writes(any_pool: Pool) -> None:
    async with any_pool, any_pool.session() as s:
        await s.variables.register("x", "integer", 0)
        watching = anyio.Event()

        async def mark() -> None:  # on the host's loop
            watching.set()

        any_pool.register_host_tool(mark, name="watching")
        seen: list[Any] = []

        async def watch() -> None:
            seen.append(await s.execute("watch_until", {"name": "x", "value": 2}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await watching.wait()  # the tool's watch is in place
            await s.variables.set("x", 1)
            await s.variables.set("x", 2)
        assert seen == [[["x", 0, 1, 2, "host"], ["x", 1, 2, 3, "host"]]]


async def test_a_write_by_another_store_of_the_backend_reaches_the_workers_caches() -> None:
    # Another process's write (a pool on another host, with Redis) does not go
    # through this pool: the bridge follows the session through the backend.
    from snakepit.session import MemoryBackend, SessionStore, SessionStoreConfig

    backend = MemoryBackend()
    config = SessionStoreConfig(backend=backend)
    async with (
        Pool(VARIABLES, size=1, cwd=ROOT, sessions=config) as pool,
        SessionStore.running(SessionStoreConfig(backend=backend)) as other,
        pool.session() as s,
    ):
        await s.variables.register("x", "integer", 1)

        async def host_sets(name: str) -> None:
            await other.variables(s.session_id).set(name, 2)  # not through the pool
            await anyio.wait_all_tasks_blocked()  # its change has reached the bridge

        pool.register_host_tool(host_sets)
        assert await s.execute("read_around_host", {"name": "x"}) == [1, 1, 2]


async def test_a_tool_writes_to_a_variable_registered_again_with_another_spec(pool: Pool) -> None:
    # The worker keeps each variable's spec and registration for its writes;
    # the host refuses a write to a registration that is gone (a conflict),
    # and the worker reads the new spec and checks the value against it.
    async with pool, pool.session(affinity="strict_queue") as s:
        await s.variables.register("x", "integer", 0)
        assert await s.execute("set", {"name": "x", "value": 1}) == 2
        await s.variables.delete("x")
        await s.variables.register("x", "string", "a")
        assert await s.execute("set", {"name": "x", "value": "b"}) == 2
        kind, _, _ = await s.execute("attempt", {"op": "set", "args": ["x", 5]})
        assert kind == "BridgeValidationError"
        await s.variables.delete("x")
        kind, _, _ = await s.execute("attempt", {"op": "set", "args": ["x", "c"]})
        assert kind == "BridgeVariableNotFound"
        assert [v.name for v in await s.variables.list()] == []


async def test_a_tool_reads_and_writes_tensors_as_numpy_arrays(pool: Pool) -> None:
    import numpy as np

    async with pool, pool.session() as s:
        start = np.arange(6, dtype="float32").reshape(2, 3)
        await s.variables.register("w", "tensor", start, shape=[2, 3], dtype="float32")
        assert await s.execute("double_tensor", {"name": "w"}) == ["Tensor", [2, 3], "float32"]
        after = (await s.variables.get("w")).to_numpy()
        assert after.dtype == np.float32
        assert (after == start * 2).all()
