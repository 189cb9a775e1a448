"""RedisBackend against a real redis-server: the SessionBackend contract, atomicity, failures."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest
import redis.asyncio

from snakepit import ArgumentTypeError, ConfigError, SessionBackendError, SessionLimitReached
from snakepit.session import RedisBackend, SessionBackend, SessionRecord
from tests._procs import wait_exit
from tests._redis import RedisServer, redis_executable, redis_server

ROOT = Path(__file__).resolve().parents[3]

anyio_backends = ("asyncio",)  # redis.asyncio
pytestmark = pytest.mark.anyio


def _record(session_id: str = "s1", *, last_used: float = 10.0, **fields: object) -> SessionRecord:
    values: dict[str, object] = {"created_at": 1.0, "last_used": last_used, "ttl": 60.0}
    values.update(fields)
    return SessionRecord(session_id, **values)  # type: ignore[arg-type]


async def test_it_is_a_session_backend(redis_session_backend: RedisBackend) -> None:
    assert isinstance(redis_session_backend, SessionBackend)


async def test_create_get_replace_delete(redis_session_backend: RedisBackend) -> None:
    backend = redis_session_backend
    first = _record("s1")
    assert await backend.get("s1") is None
    assert await backend.create(first, limit=None) is True
    assert await backend.get("s1") == first
    assert await backend.create(_record("s1", last_used=99.0), limit=None) is False
    assert await backend.get("s1") == first  # the taken id wrote nothing
    touched = _record("s1", last_used=20.0, worker_id="w3")
    assert await backend.replace(touched) is True
    assert await backend.get("s1") == touched
    assert await backend.replace(_record("nope")) is False
    assert await backend.get("nope") is None  # replace wrote nothing
    assert await backend.delete("s1") == touched
    assert await backend.delete("s1") is None
    assert await backend.get("s1") is None
    assert (await backend.count(), await backend.records(), await backend.due(1e9)) == (0, [], [])


async def test_a_record_round_trips_exactly(redis_session_backend: RedisBackend) -> None:
    record = SessionRecord(
        "sé/ss:ion {1}",
        created_at=1733234567.1234567,
        last_used=0.1 + 0.2,
        ttl=1e-7,
        metadata={"user": "ana", "n": [1, 2.5, None, True], "nested": {"ü": {}}, "big": 2**70},
        worker_id="w12",
        affinity="strict_fail_fast",
    )
    assert await redis_session_backend.create(record, limit=None)
    got = await redis_session_backend.get(record.session_id)
    assert got == record
    assert got is not None
    assert got.expires_at == record.expires_at
    assert await redis_session_backend.records() == [record]
    assert await redis_session_backend.due(record.expires_at or 0) == [record]
    assert await redis_session_backend.delete(record.session_id) == record


async def test_records_count_and_due(redis_session_backend: RedisBackend) -> None:
    backend = redis_session_backend
    soon = _record("soon", last_used=10.0, ttl=5.0)  # expires at 15
    later = _record("later", last_used=10.0, ttl=50.0)  # expires at 60
    never = _record("never", ttl=None)
    for record in (soon, later, never):
        assert await backend.create(record, limit=None)
    assert await backend.count() == 3
    assert sorted(await backend.records(), key=lambda r: r.session_id) == [later, never, soon]
    assert await backend.due(14.999) == []
    assert await backend.due(15.0) == [soon]  # expires_at <= now
    assert sorted(r.session_id for r in await backend.due(1e12)) == ["later", "soon"]
    # A touch moves it out of the due set; a ttl of None takes it out of the expiry set.
    assert await backend.replace(_record("soon", last_used=100.0, ttl=5.0))
    assert await backend.due(60.0) == [later]
    assert await backend.replace(_record("later", ttl=None))
    assert await backend.due(1e12) == [_record("soon", last_used=100.0, ttl=5.0)]
    # ... and a ttl given back puts it in again; a delete takes it out.
    assert await backend.replace(_record("never", last_used=0.0, ttl=1.0))
    assert [r.session_id for r in await backend.due(1.0)] == ["never"]
    await backend.delete("never")
    assert await backend.due(1.0) == []
    assert await backend.count() == 2


async def test_the_limit_holds_under_concurrent_creates(
    redis_session_backend: RedisBackend,
) -> None:
    backend = redis_session_backend
    created: list[str] = []
    refused: list[int] = []

    async def create(n: int) -> None:
        try:
            if await backend.create(_record(f"s{n}"), limit=10):
                created.append(f"s{n}")
        except SessionLimitReached as exc:
            refused.append(exc.max_sessions)

    async with anyio.create_task_group() as tg:
        for n in range(50):
            tg.start_soon(create, n)
    assert len(created) == 10
    assert refused == [10] * 40
    assert await backend.count() == 10
    assert sorted(r.session_id for r in await backend.records()) == sorted(created)
    assert len(await backend.due(1e12)) == 10  # nothing half-written in the expiry set


async def test_a_taken_id_is_refused_before_the_limit(
    redis_session_backend: RedisBackend,
) -> None:
    backend = redis_session_backend
    assert await backend.create(_record("a"), limit=1)
    assert await backend.create(_record("a"), limit=1) is False
    with pytest.raises(SessionLimitReached) as caught:
        await backend.create(_record("b"), limit=1)
    assert caught.value.max_sessions == 1
    with pytest.raises(SessionLimitReached):
        await backend.create(_record("c", ttl=None), limit=0)
    assert [r.session_id for r in await backend.records()] == ["a"]
    assert [r.session_id for r in await backend.due(1e12)] == ["a"]


async def test_namespaces_do_not_see_each_other(
    redis_session_backend: RedisBackend, redis_server_for_tests: RedisServer
) -> None:
    other = RedisBackend(
        redis_server_for_tests.url, namespace=redis_session_backend.namespace + "x"
    )
    try:
        assert await redis_session_backend.create(_record("shared-id"), limit=1)
        assert await other.create(_record("shared-id", worker_id="w9"), limit=1)  # not taken there
        assert await other.count() == 1
        assert (await other.get("shared-id") or _record()).worker_id == "w9"
        assert (await redis_session_backend.get("shared-id") or _record()).worker_id is None
        assert await other.delete("shared-id") is not None
        assert await redis_session_backend.count() == 1
        assert await other.due(1e12) == []
    finally:
        await other.aclose()
    assert set(redis_session_backend.keys).isdisjoint(other.keys)


async def test_a_client_of_ones_own_is_used_and_left_open(
    redis_server_for_tests: RedisServer,
) -> None:
    client = redis.asyncio.Redis(unix_socket_path=redis_server_for_tests.socket)
    backend = RedisBackend(client=client, namespace="own-client-test")
    try:
        assert await backend.create(_record("s1"), limit=None)
        await backend.aclose()
        assert await client.hlen(backend.keys[0]) == 1  # aclose left the client usable
        assert "own-client-test" in repr(backend)
        assert redis_server_for_tests.socket in repr(backend)
    finally:
        await client.delete(*backend.keys)
        await client.aclose()


async def test_nothing_listening_is_a_session_backend_error_at_once(tmp_path: Path) -> None:
    backend = RedisBackend(f"unix://{tmp_path}/nobody.sock", namespace="dead")
    try:
        with anyio.fail_after(5):  # no hang, no backoff
            with pytest.raises(SessionBackendError) as caught:
                await backend.create(_record(), limit=None)
            with pytest.raises(SessionBackendError):
                await backend.count()
    finally:
        await backend.aclose()
    error = caught.value
    assert isinstance(error.__cause__, redis.exceptions.ConnectionError)
    assert "nobody.sock" in error.backend
    assert "'dead'" in error.backend
    assert error.detail.startswith("create failed: ConnectionError: ")
    assert str(error).startswith("session backend redis unix://")


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_on_trio_it_says_it_runs_on_asyncio_only(tmp_path: Path) -> None:
    backend = RedisBackend(f"unix://{tmp_path}/nobody.sock")
    with pytest.raises(SessionBackendError, match="count: runs on asyncio only"):
        await backend.count()


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may kill."""
    with redis_server() as server:
        yield server


async def test_a_server_that_dies_is_a_session_backend_error(
    own_redis_server: RedisServer,
) -> None:
    backend = RedisBackend(own_redis_server.url, namespace="dies")
    try:
        assert await backend.create(_record(), limit=None)  # connected
        os.killpg(own_redis_server.process.pid, signal.SIGKILL)
        own_redis_server.process.wait(5)
        calls: list[Callable[[], Awaitable[object]]] = [
            backend.count,
            lambda: backend.get("s1"),
            lambda: backend.delete("s1"),
        ]
        for call in calls:
            with anyio.fail_after(5), pytest.raises(SessionBackendError) as caught:
                await call()
            assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)
    finally:
        await backend.aclose()


async def test_a_stored_value_it_cannot_read_is_a_session_backend_error(
    redis_session_backend: RedisBackend, redis_server_for_tests: RedisServer
) -> None:
    client = redis.asyncio.Redis(unix_socket_path=redis_server_for_tests.socket)
    try:
        await client.hset(redis_session_backend.keys[0], "bad", b"{not json")
    finally:
        await client.aclose()
    with pytest.raises(SessionBackendError, match="a stored record cannot be read") as caught:
        await redis_session_backend.get("bad")
    assert isinstance(caught.value.__cause__, ValueError)


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ArgumentTypeError, match="namespace"):
        RedisBackend(namespace=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="namespace: must not be empty"):
        RedisBackend(namespace="")
    with pytest.raises(ConfigError, match="timeout"):
        RedisBackend(timeout=0)
    with pytest.raises(ArgumentTypeError, match="timeout"):
        RedisBackend(timeout=True)
    with pytest.raises(ConfigError, match="url: 'ftp://h'"):
        RedisBackend("ftp://h")
    with pytest.raises(ConfigError, match=r"\*\*\*"):  # the password is not repeated
        RedisBackend("ftp://u:secret@h")
    client = redis.asyncio.Redis()
    with pytest.raises(ConfigError, match="url: give a url or a client, not both"):
        RedisBackend("redis://h", client=client)
    with pytest.raises(ArgumentTypeError, match="client"):
        RedisBackend(client="redis://h")  # type: ignore[arg-type]


async def test_the_test_server_dies_with_a_killed_pytest() -> None:
    # tests/_redis.py: PR_SET_PDEATHSIG, so a SIGKILLed test process leaves no redis-server.
    redis_executable()  # or skip
    script = (
        "import os\n"
        "from tests._redis import redis_server\n"
        "with redis_server() as server:\n"
        "    print(server.process.pid, os.path.dirname(server.socket), flush=True)\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    done = await anyio.run_process([sys.executable, "-c", script], cwd=ROOT, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    pid, directory = done.stdout.decode().split()
    shutil.rmtree(directory)  # what a SIGKILL leaves: the temp dir
    await wait_exit(int(pid), timeout=5)


def test_snakepit_imports_without_the_redis_package() -> None:
    # snakepit.session loads the redis package on first use of RedisBackend only.
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import snakepit, snakepit.session\n"
        "from snakepit.session import SessionBackend\n"
        "try:\n"
        "    snakepit.session.RedisBackend\n"
        "except ImportError:\n"
        "    print('lazy')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "lazy\n", out.stderr


async def test_a_burst_past_the_connection_limit_waits_instead_of_failing(
    redis_server_for_tests: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: redis-py's pool refused the 101st concurrent operation at once
    # (MaxConnectionsError, a SessionBackendError) under a burst of bridge calls.
    from snakepit.session import _redis

    monkeypatch.setattr(_redis, "MAX_CONNECTIONS", 4)  # (the same past 256: cheaper)
    backend = RedisBackend(redis_server_for_tests.url, namespace=f"burst-{os.getpid()}")
    try:
        pool = backend._client.connection_pool
        assert isinstance(pool, redis.asyncio.BlockingConnectionPool)
        assert pool.max_connections == 4
        assert await backend.create(_record("burst"), limit=None)
        found: list[SessionRecord | None] = []

        async def get() -> None:
            found.append(await backend.get("burst"))

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(get)
        assert len(found) == 50
        assert all(r is not None and r.session_id == "burst" for r in found)
        assert await backend.delete("burst") is not None
    finally:
        await backend.aclose()
