"""Building a call's request (``snakepit.pool._requests.fill_request``): the session fields."""

from __future__ import annotations

import anyio
import pytest

from snakepit._wire._codec import JSON
from snakepit._wire._proto.snakepit.v1 import worker_pb2
from snakepit._wire._session import encode_metadata
from snakepit.errors import PayloadTooLarge, QueueTimeout
from snakepit.pool import InProcessLauncher, Pool
from snakepit.pool._requests import DEFAULT_MAX_MESSAGE_BYTES, fill_request

anyio_backends = ("asyncio",)  # pools run on asyncio (grpc.aio)


def request(
    session_id: str = "", session_metadata: bytes = b"", limit: int = DEFAULT_MAX_MESSAGE_BYTES
) -> worker_pb2.ExecuteRequest:
    built = worker_pb2.ExecuteRequest()
    fill_request(built, 7, "tool", {"x": 1}, None, session_id, session_metadata, limit, JSON)
    return built


def test_session_id_and_metadata_are_sent() -> None:
    metadata = encode_metadata({"user": "ada"})
    built = request("s-1", metadata)
    decoded = worker_pb2.ExecuteRequest.FromString(built.SerializeToString())
    assert decoded.session_id == "s-1"
    assert decoded.session_metadata == b'{"user":"ada"}'
    assert decoded.request_id == 7
    assert decoded.tool == "tool"


def test_no_metadata_adds_no_byte() -> None:
    assert request("s-1").ByteSize() == request("s-1", b"").ByteSize()
    assert request().session_metadata == b""
    assert request().SerializeToString() == request("", b"").SerializeToString()
    with_metadata = request("s-1", b'{"a":1}')
    assert with_metadata.ByteSize() == request("s-1").ByteSize() + 2 + len(b'{"a":1}')


def test_metadata_counts_toward_the_message_limit() -> None:
    limit = 8 * 1024
    with pytest.raises(PayloadTooLarge):
        request("s", b'{"a":"' + b"x" * limit + b'"}', limit=limit)


class TestACallThatNeverStartedInItsWorker:
    """A reply saying the tool did not run (NOT_STARTED) is a QueueTimeout: the worker stays."""

    @pytest.mark.anyio
    async def test_waiting_for_its_sessions_previous_end_is_a_queue_timeout(
        self, launcher: InProcessLauncher
    ) -> None:
        # Before: ExecutionTimeout, and the pool replaced the healthy worker
        # (every other call on it failed with it).
        pool = Pool(
            "tests.unit.grpc._session_adapters:AsyncSessionEnds",
            launcher=launcher,
            size=1,
            max_concurrency=2,
        )
        async with pool:
            [before] = pool.workers()
            async with pool.session("hang") as session:  # its end's hook hangs
                await session.execute("remember", {"value": "old"})
            await pool.execute("wait_hook_started")
            async with pool.session("hang") as session:  # the id used again
                with anyio.fail_after(5), pytest.raises(QueueTimeout, match="did not run"):
                    await session.execute("remember", {"value": "new"}, timeout=0.2)
            await pool.execute("release_hooks")
            assert await pool.execute("held") == {}
            stats = pool.stats()
            assert (stats.timeouts, stats.errors) == (0, 0)  # not run: not the tool's error
            assert [w.worker_id for w in pool.workers()] == [before.worker_id]
            assert pool.workers()[0].pid == before.pid
