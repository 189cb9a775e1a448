"""The one grpc -> snakepit error mapper: no bare grpc error reaches a user."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import grpc
import pytest

from snakepit._wire._proto.snakepit.v1 import worker_pb2
from snakepit.errors import (
    ExecutionTimeout,
    PayloadTooLarge,
    QueueTimeout,
    WorkerError,
    WorkerUnavailable,
)
from snakepit.pool._connection import Multiplexer
from snakepit.pool._grpc_errors import error_from_grpc, error_from_info, grpc_errors
from snakepit.pool._transports import GrpcTransport
from snakepit.pool._worker_connection import WorkerConnection

from .conftest import Served

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "details")


class TestMapper:
    @pytest.mark.parametrize(
        ("code", "expected"),
        [
            (grpc.StatusCode.RESOURCE_EXHAUSTED, PayloadTooLarge),
            (grpc.StatusCode.DEADLINE_EXCEEDED, ExecutionTimeout),
            (grpc.StatusCode.UNAUTHENTICATED, WorkerUnavailable),
            (grpc.StatusCode.UNAVAILABLE, WorkerUnavailable),
            (grpc.StatusCode.INTERNAL, WorkerUnavailable),
        ],
    )
    def test_a_status_code_becomes_its_public_error_chained_to_grpcs(
        self, code: grpc.StatusCode, expected: type[WorkerError]
    ) -> None:
        raised = rpc_error(code)
        with pytest.raises(expected) as caught, grpc_errors("tool"):
            raise raised
        assert type(caught.value) is expected
        assert caught.value.__cause__ is raised
        assert str(caught.value).startswith("tool: ")

    @pytest.mark.parametrize("kind", [grpc.aio.UsageError, grpc.aio.InternalError])
    def test_a_grpc_aio_error_is_worker_unavailable(self, kind: type[Exception]) -> None:
        raised = kind("Channel is closed.")
        expected = r"^Describe: Channel is closed\.$"
        with pytest.raises(WorkerUnavailable, match=expected) as caught, grpc_errors("Describe"):
            raise raised
        assert caught.value.__cause__ is raised

    def test_a_call_that_never_started_in_its_worker_is_a_queue_timeout(self) -> None:
        # Not an ExecutionTimeout: that one gets the worker replaced.
        # The worker's message says why (its session's end, a free slot).
        said = "tool: it waited for on_session_end; the tool did not run"
        info = worker_pb2.ErrorInfo(kind=worker_pb2.ErrorInfo.Kind.NOT_STARTED, message=said)
        error = error_from_info(info, "tool")
        assert type(error) is QueueTimeout
        assert not isinstance(error, ExecutionTimeout)
        assert str(error) == said
        silent = error_from_info(
            worker_pb2.ErrorInfo(kind=worker_pb2.ErrorInfo.Kind.NOT_STARTED), "tool"
        )
        assert type(silent) is QueueTimeout
        assert str(silent).startswith("tool: ")
        assert "the tool did not run" in str(silent)

    def test_other_errors_pass_through(self) -> None:
        with pytest.raises(KeyError), grpc_errors("tool"):
            raise KeyError("not grpc's")
        assert error_from_grpc(KeyError("x"), "tool") is None


class TestNoBareGrpcErrorReachesAUser:
    async def test_every_call_on_a_closed_connection_is_worker_unavailable(self) -> None:
        # Before: a stream and a multiplexer opened on a closed connection
        # raised grpc.aio.UsageError.
        client = WorkerConnection("unix:/nonexistent-snakepit-test.sock")
        await client.aclose()
        with pytest.raises(WorkerUnavailable, match="Channel is closed"):
            await client.execute("echo")
        with pytest.raises(WorkerUnavailable, match="Channel is closed"):
            await client.describe()
        with pytest.raises(WorkerUnavailable, match="Channel is closed"):
            await client.health()
        with pytest.raises(WorkerUnavailable, match="Channel is closed"):
            async for _ in client.stream("count"):
                pass  # pragma: no cover - nothing comes
        with pytest.raises(WorkerUnavailable, match="Channel is closed"):
            client.multiplexer()

    async def test_an_unreachable_worker_keeps_grpcs_error_as_the_cause(
        self, tmp_path: Path
    ) -> None:
        # Before: ``raise ... from None`` dropped the cause the mapper had set.
        async with WorkerConnection(f"unix:{tmp_path}/none.sock") as client:
            with pytest.raises(WorkerUnavailable) as caught:
                await client.execute("echo", timeout=5)
            assert isinstance(caught.value.__cause__, grpc.RpcError)
            with pytest.raises(WorkerUnavailable) as streamed:
                async for _ in client.stream("count", timeout=5):
                    pass  # pragma: no cover - nothing comes
            assert isinstance(streamed.value.__cause__, grpc.RpcError)


class _Unreadable(GrpcTransport):
    """A Channel whose reading fails with an error no layer below expected."""

    def __init__(self) -> None:
        self.failed = asyncio.Event()

    async def write(self, frame: worker_pb2.ClientFrame) -> None:
        pass

    async def read(self) -> worker_pb2.ServerFrame | None:
        await self.failed.wait()
        raise ValueError("a frame nobody can read")

    async def close(self, writer: asyncio.Task[None], reader: asyncio.Task[None] | None) -> None:
        pass

    def cancel(self) -> None:
        pass


class _EndedUnderWrite(_Unreadable):
    """A Channel the worker ended as the writer wrote: grpc's write fails as ``error``."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def write(self, frame: worker_pb2.ClientFrame) -> None:
        raise self.error


class TestTheChannelsTasks:
    async def test_an_unexpected_error_in_the_reader_fails_the_calls_in_flight(self) -> None:
        # Before: the reader task died with it, unseen, and the call hung.
        transport = _Unreadable()
        mux = Multiplexer(transport, 1024 * 1024)
        try:
            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:

                    async def call() -> None:
                        with pytest.raises(WorkerUnavailable, match="a frame nobody can read"):
                            await mux.execute("echo", {})

                    tg.start_soon(call)
                    await anyio.wait_all_tasks_blocked()
                    transport.failed.set()
        finally:
            await mux.aclose()

    @pytest.mark.parametrize(
        "error",
        [
            # grpc's write after the worker ended the stream: the batch failed
            # (grpc sets this status itself), or the status came in first.
            grpc.aio.AioRpcError(
                grpc.StatusCode.INTERNAL,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details="Internal error from Core",
            ),
            asyncio.InvalidStateError("RPC already finished."),
        ],
    )
    async def test_a_stream_ended_under_a_write_says_why_it_may_have_ended(
        self, error: Exception
    ) -> None:
        # Before: "the connection to the worker failed: Internal error from
        # Core" (or "the channel broke: RPC already finished."), when a worker
        # refused the secret at the instant of the first write.
        mux = Multiplexer(_EndedUnderWrite(error), 1024 * 1024)
        try:
            with anyio.fail_after(5), pytest.raises(WorkerUnavailable) as caught:
                await mux.execute("echo", {})
        finally:
            await mux.aclose()
        message = str(caught.value)
        assert "the worker ended the stream" in message
        assert "authentication failed (a missing or wrong secret)" in message
        assert "Internal error from Core" not in message
        assert caught.value.__cause__ is not None

    async def test_a_transport_error_of_grpc_is_mapped(self, echo: tuple[Served, object]) -> None:
        served, _ = echo
        # The Channel RPC without the secret: the worker refuses it.
        async with WorkerConnection(served.address) as client:
            mux = client.multiplexer()
            try:
                with pytest.raises(WorkerUnavailable, match="authentication failed"):
                    await mux.execute("echo", {})
            finally:
                await mux.aclose()
