"""RedisBackend: how a session's changes reach its watches (inline, or by reference).

A write whose message would be larger than the backend's inline limit is
stored at a key of its own for a while, and only a reference to it is
published: a large value no longer overflows a watcher's pub/sub connection
(Redis drops it, and every watch of it ends). The large-value test runs on a
redis-server of its own, whose pub/sub output buffer it lowers below the
message the write would have published inline; the others make every write
go by reference (an inline limit of 0) on the shared server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import redis.asyncio

from snakepit.errors import VariableError
from snakepit.session import (
    RedisBackend,
    SessionStore,
    SessionStoreConfig,
    SessionVariables,
)
from tests._redis import RedisServer, redis_server

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # redis.asyncio

#: The pub/sub connections' hard limit on the large-value test's own server.
PUBSUB_LIMIT = 8 * 1024 * 1024
#: The large value: more than the limit above, inline (old and new records).
LARGE = 12_000_000


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own: its config is the test's to change."""
    with redis_server() as server:
        yield server


@asynccontextmanager
async def raw_client(server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis(unix_socket_path=server.socket)
    try:
        yield client
    finally:
        await client.aclose()


@asynccontextmanager
async def session(backend: RedisBackend) -> AsyncIterator[SessionVariables]:
    config = SessionStoreConfig(backend=backend, clock=anyio.current_time)
    async with SessionStore.running(config) as store:
        record = await store.create()
        yield store.variables(record.session_id)


async def change_keys(client: redis.asyncio.Redis, backend: RedisBackend) -> list[bytes]:
    return [key async for key in client.scan_iter(match=f"{{{backend.namespace}}}:vchg:*")]


async def test_a_watch_sees_the_change_of_a_large_value(own_redis_server: RedisServer) -> None:
    backend = RedisBackend(own_redis_server.url, namespace="large")
    try:
        async with raw_client(own_redis_server) as admin:
            # Redis's default for pub/sub connections is 32 MiB, or 8 MiB for 60 s.
            await admin.config_set("client-output-buffer-limit", f"pubsub {PUBSUB_LIMIT} 0 0")
            async with session(backend) as v:
                await v.register("blob", "string", "")
                await v.register("n", "integer", 0)
                seen: list[tuple[str, Any, Any, int]] = []
                async with v.watch() as changes:
                    await v.set("blob", "a" * LARGE)
                    await v.set("n", 1)  # small: inline, after the large one
                    with anyio.fail_after(10):
                        async for change in changes:
                            new = change.new if change.name == "n" else len(change.new)
                            seen.append((change.name, change.old, new, change.version))
                            if change.name == "n":
                                break
                assert seen == [("blob", "", LARGE, 2), ("n", 0, 1, 2)]
                (key,) = await change_keys(admin, backend)
                # What the write would have published inline: more than the connection holds.
                assert await admin.strlen(key) > PUBSUB_LIMIT
                assert 0 < await admin.pttl(key) <= 60_000
    finally:
        await backend.aclose()


async def test_changes_by_reference_keep_order_names_and_buffer(
    redis_session_backend: RedisBackend,
) -> None:
    redis_session_backend._inline_limit = 0  # every write by reference
    async with session(redis_session_backend) as v:
        await v.register("a", "integer", 0)
        await v.register("b", "integer", 0)
        async with v.watch(["b"]) as some, v.watch(buffer=3) as every:
            assert await v.set_many({"a": 1, "b": 2}) == {"a": 2, "b": 2}
            await v.set("a", 3)  # not b: nothing for `some`
            await v.delete("b")
            assert [(c.name, c.old, c.new) for c in [await some.__anext__() for _ in range(2)]] == [
                ("b", 0, 2),
                ("b", 2, None),
            ]
            got: list[tuple[str, Any]] = []

            async def drain() -> None:
                async for change in every:
                    got.append((change.name, change.new))

            with pytest.raises(VariableError, match="fell more than 3 changes behind"):
                await drain()
            assert got == [("a", 1), ("b", 2), ("a", 3)]  # the 4th is past its buffer


async def test_a_watch_whose_change_expired_is_ended_as_one_behind(
    redis_session_backend: RedisBackend, redis_server_for_tests: RedisServer
) -> None:
    backend = redis_session_backend
    backend._inline_limit = 0
    async with session(backend) as v, raw_client(redis_server_for_tests) as admin:
        await v.register("x", "integer", 0)
        async with v.watch() as changes:
            await v.set("x", 1)
            await v.set("x", 2)
            keys = sorted(await change_keys(admin, backend), key=lambda k: int(k.split(b":")[-1]))
            assert len(keys) == 3  # the registration's, and the two sets'
            await admin.delete(keys[-1])  # as its TTL would: the watcher has not read it yet
            assert (await changes.__anext__()).new == 1
            with pytest.raises(VariableError, match="fell too far behind: a large change"):
                await changes.__anext__()
            with pytest.raises(VariableError, match="fell too far behind"):
                await changes.__anext__()  # ended for good
