"""A call's messages (``snakepit.pool._requests``): the request built, the reply read."""

from __future__ import annotations

import anyio
import pytest

from snakepit._wire._codec import JSON, PICKLE, encode
from snakepit._wire._proto.snakepit.v1 import worker_pb2
from snakepit._wire._session import encode_metadata
from snakepit.errors import PayloadError, PayloadTooLarge, QueueTimeout
from snakepit.pool import InProcessLauncher, Pool
from snakepit.pool._requests import DEFAULT_MAX_MESSAGE_BYTES, fill_request, result_of

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


class TestTheUsualCall:
    """No arguments, no session, no timeout: built without the codec, the same bytes."""

    @pytest.mark.parametrize("args", [None, {}])
    def test_no_arguments_are_the_payload_the_codec_writes_for_an_empty_dict(
        self, args: dict[str, object] | None
    ) -> None:
        built = worker_pb2.ExecuteRequest()
        fill_request(built, 3, "noop", args, None, "", b"", DEFAULT_MAX_MESSAGE_BYTES, JSON)
        expected = worker_pb2.ExecuteRequest(
            request_id=3, tool="noop", args=encode({}, root="args")
        )
        assert built.SerializeToString() == expected.SerializeToString()
        assert (built.timeout, built.session_id, built.args.codec) == (0.0, "", JSON)

    def test_a_timeout_is_sent(self) -> None:
        built = worker_pb2.ExecuteRequest()
        fill_request(built, 3, "noop", None, 2.5, "", b"", DEFAULT_MAX_MESSAGE_BYTES, JSON)
        assert worker_pb2.ExecuteRequest.FromString(built.SerializeToString()).timeout == 2.5

    def test_no_arguments_still_count_the_rest_toward_the_limit(self) -> None:
        limit = 8 * 1024
        with pytest.raises(PayloadTooLarge):
            fill_request(
                worker_pb2.ExecuteRequest(), 3, "noop", None, None, "s", b"x" * limit, limit, JSON
            )
        with pytest.raises(PayloadTooLarge):
            fill_request(
                worker_pb2.ExecuteRequest(), 3, "t" * limit, None, None, "", b"", limit, JSON
            )

    def test_no_arguments_with_pickle_go_through_the_codec(self) -> None:
        built = worker_pb2.ExecuteRequest()
        fill_request(built, 3, "noop", None, None, "", b"", DEFAULT_MAX_MESSAGE_BYTES, PICKLE)
        assert built.args.codec == PICKLE


def reply(payload: worker_pb2.Payload) -> worker_pb2.ExecuteResponse:
    response = worker_pb2.ExecuteResponse(request_id=1, result=payload)
    return worker_pb2.ExecuteResponse.FromString(response.SerializeToString())


class TestAReply:
    """A plain JSON result is read directly; markers, pickle and junk as decode() has them."""

    def test_plain_json(self) -> None:
        assert result_of(reply(encode({"a": [1, "x"]})), "t", JSON) == {"a": [1, "x"]}
        assert result_of(reply(encode(None)), "t", JSON) is None

    def test_markers_are_restored(self) -> None:
        value = {"data": b"\x00\xff", "n": float("nan")}
        out = result_of(reply(encode(value)), "t", JSON)
        assert out["data"] == b"\x00\xff"
        assert out["n"] != out["n"]

    def test_an_empty_codec_is_json(self) -> None:
        assert result_of(reply(worker_pb2.Payload(data=b"[1]")), "t", JSON) == [1]

    def test_pickle_only_when_allowed(self) -> None:
        pickled = encode({1, 2}, codec=PICKLE)
        assert result_of(reply(pickled), "t", PICKLE) == {1, 2}
        with pytest.raises(PayloadError, match="cannot decode the result"):
            result_of(reply(pickled), "t", JSON)

    def test_junk_is_a_payload_error(self) -> None:
        with pytest.raises(PayloadError, match="cannot decode the result"):
            result_of(reply(worker_pb2.Payload(codec=JSON, data=b"{nope")), "t", JSON)


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
