"""Issue #11, defect 11: a worker serves only connections that have its secret.

The worker's server in this event loop (the same AdapterServer as a
process's); a stranger on its frames socket is closed unanswered, a gRPC
call without the secret ends UNAUTHENTICATED, and the host's own
connections go on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from snakepit._wire._auth import (
    FRAMES_ACCEPTED,
    METADATA_KEY,
    PREFACE_SIZE,
    SECRET_BYTES,
    frames_preface,
    new_secret,
)
from snakepit._wire._codec import encode_into
from snakepit._wire._frames import pack
from snakepit._wire._proto.snakepit.v1 import worker_pb2, worker_pb2_grpc
from snakepit.errors import ConfigError, WorkerUnavailable
from snakepit.pool import InProcessLauncher, Pool
from snakepit.pool._connection import open_frames_multiplexer
from snakepit.pool._launch._process import spawn_worker
from snakepit.pool._worker_connection import WorkerConnection
from snakepit.worker import AdapterServer, _auth
from snakepit.worker._adapter_server import AdapterStartError
from snakepit.worker._main import read_secret

from ._adapters import All
from .conftest import Served

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

Echo = tuple[Served, WorkerConnection]
Metadata = tuple[tuple[str, str | bytes], ...] | None
STRANGERS: dict[str, Metadata] = {
    "no secret": None,
    "wrong secret": ((METADATA_KEY, new_secret().hex()),),
    "not hex": ((METADATA_KEY, "z" * 64),),
    "binary": ((f"{METADATA_KEY}-bin", new_secret()),),
}


def call_frame(tool: str = "echo", value: Any = "x" * 64) -> bytes:
    """A valid frame with one call (longer than a preface)."""
    frame = worker_pb2.ClientFrame()
    request = frame.execute.add()
    request.request_id = 1
    request.tool = tool
    encode_into(request.args, {"value": value}, root="args")
    return pack(frame)


async def raw_frames(served: Served, data: bytes) -> bytes:
    """Send ``data`` on a new frames connection; all that comes back before it closes."""
    assert served.frames_address is not None
    got = b""
    stream = await anyio.connect_unix(served.frames_address.removeprefix("unix:"))
    async with stream:
        await stream.send(data)
        with anyio.fail_after(10):
            try:
                while True:
                    got += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                pass
    return got


class TestFrames:
    @pytest.mark.parametrize(
        "preface",
        [b"", frames_preface(None), frames_preface(new_secret()), b"SNKPAUT\x02" + bytes(32)],
        ids=["none", "zeros", "wrong secret", "other version"],
    )
    async def test_a_stranger_is_closed_unanswered(self, echo: Echo, preface: bytes) -> None:
        served, client = echo
        assert await raw_frames(served, preface + call_frame()) == b""
        # the host's own connections go on
        assert served.frames_address is not None
        mux = await open_frames_multiplexer(served.frames_address, secret=served.secret)
        assert await mux.execute("echo", {"value": 1}) == 1
        await mux.aclose()
        assert await client.execute("ping") == {"status": "pong"}

    async def test_the_right_preface_is_answered(self, echo: Echo) -> None:
        served, _ = echo
        assert served.secret is not None
        stream = await anyio.connect_unix(str(served.frames_address).removeprefix("unix:"))
        async with stream:
            await stream.send(frames_preface(served.secret) + call_frame(value=7))
            with anyio.fail_after(10):
                assert await stream.receive(1) == FRAMES_ACCEPTED
                reply = await stream.receive()
        assert reply  # a ServerFrame with the reply

    async def test_a_silent_connection_is_closed_after_the_timeout(
        self, echo: Echo, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(_auth, "AUTH_TIMEOUT", 0.05)
        served, _ = echo
        assert await raw_frames(served, frames_preface(None)[: PREFACE_SIZE - 1]) == b""

    async def test_our_client_with_a_wrong_secret_gets_a_typed_error(self, echo: Echo) -> None:
        served, _ = echo
        assert served.frames_address is not None
        for secret in (None, new_secret()):
            with pytest.raises(WorkerUnavailable, match="authentication failed"):
                await open_frames_multiplexer(served.frames_address, secret=secret)


def stub(address: str) -> tuple[grpc.aio.Channel, Any, Any]:
    channel = grpc.aio.insecure_channel(address)
    return (
        channel,
        worker_pb2_grpc.WorkerServiceStub(channel),  # type: ignore[no-untyped-call]
        health_pb2_grpc.HealthStub(channel),
    )


class TestGrpc:
    @pytest.mark.parametrize("who", list(STRANGERS))
    async def test_every_call_of_a_stranger_is_unauthenticated(self, echo: Echo, who: str) -> None:
        served, _ = echo
        metadata = STRANGERS[who]
        channel, service, health = stub(served.address)
        request = worker_pb2.ExecuteRequest(request_id=1, tool="ping")
        encode_into(request.args, {}, root="args")
        async with channel:
            calls: dict[str, Callable[[], Awaitable[Any]]] = {
                "Execute": lambda: service.Execute(request, metadata=metadata),
                "Describe": lambda: service.Describe(
                    worker_pb2.DescribeRequest(), metadata=metadata
                ),
                "ExecuteStream": lambda: service.ExecuteStream(request, metadata=metadata).read(),
                "Channel": lambda: service.Channel(metadata=metadata).read(),
                "Health.Watch": lambda: health.Watch(
                    health_pb2.HealthCheckRequest(), metadata=metadata
                ).read(),
            }
            for name, call in calls.items():
                with anyio.fail_after(10), pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call()
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
                assert "authentication required" in str(caught.value.details())
            # a health check tells only whether it serves: open to all
            response = await health.Check(health_pb2.HealthCheckRequest(), metadata=metadata)
            assert response.status == health_pb2.HealthCheckResponse.SERVING

    async def test_our_client_without_the_secret_gets_a_typed_error(self, echo: Echo) -> None:
        served, client = echo
        async with WorkerConnection(served.address, secret=new_secret()) as stranger:
            with pytest.raises(WorkerUnavailable, match="authentication failed"):
                await stranger.execute("ping")
            with pytest.raises(WorkerUnavailable, match="authentication failed"):
                await stranger.describe()
            with pytest.raises(WorkerUnavailable, match="authentication failed"):
                async for _ in stranger.stream("count", {"n": 2}):
                    pass
            mux = stranger.multiplexer()
            with pytest.raises(WorkerUnavailable, match="authentication failed"):
                await mux.execute("ping")
            await mux.aclose()
            assert await stranger.health() == "SERVING"
        # ours, with the secret, on every kind of call
        assert await client.execute("echo", {"value": 2}) == 2
        assert [x async for x in client.stream("count", {"n": 2})] == [0, 1]
        mux = client.multiplexer()
        assert await mux.execute("echo", {"value": 3}) == 3
        await mux.aclose()
        assert (await client.describe()).tools


class TestServer:
    async def test_refusals_are_counted_and_warned_about_sparingly(
        self, echo: Echo, caplog: pytest.LogCaptureFixture
    ) -> None:
        served, _ = echo
        with caplog.at_level(logging.WARNING, "snakepit.worker"):
            for _ in range(5):
                assert await raw_frames(served, b"\x00" * PREFACE_SIZE) == b""
        warnings = [r for r in caplog.records if "not authenticated" in r.getMessage()]
        assert len(warnings) == 1

    def test_warnings_resume_after_the_interval(self, caplog: pytest.LogCaptureFixture) -> None:
        now = [0.0]
        refusals = _auth.Refusals(interval=10.0, clock=lambda: now[0])
        with caplog.at_level(logging.WARNING, "snakepit.worker"):
            for t in (0.0, 1.0, 2.0, 11.0):
                now[0] = t
                refusals.refuse("a test connection")
        assert refusals.count == 4
        messages = [r.getMessage() for r in caplog.records]
        assert len(messages) == 2
        assert "2 more since the last warning" in messages[1]

    async def test_a_secret_of_the_wrong_size_is_refused(self, sock_dir: Any) -> None:
        with pytest.raises(AdapterStartError, match=f"{SECRET_BYTES} bytes"):
            await AdapterServer.start(
                All(),
                listen=f"unix:{sock_dir}/x.sock",
                adapter_path="x:Y",
                worker_id="x",
                secret=b"short",
            )
        with pytest.raises(ConfigError, match="secret"):
            await spawn_worker("x:Y", f"unix:{sock_dir}/y.sock", secret=b"short")

    async def test_the_secret_stays_out_of_reprs(self, echo: Echo) -> None:
        served, client = echo
        assert served.secret is not None
        assert served.secret.hex() not in repr(client)
        launcher = InProcessLauncher()
        async with Pool("snakepit.testing.adapters:Echo", size=1, launcher=launcher) as pool:
            assert await pool.execute("ping") == {"status": "pong"}
            (worker,) = pool._tree.workers.values()
            handle = worker.process
            assert handle is not None
            assert handle.secret is not None
            assert handle.secret.hex() not in repr(handle)
            assert repr(handle.secret) not in repr(handle)


@pytest.fixture
async def unauthenticated(sock_dir: Any) -> AsyncIterator[Served]:
    """A server started without a secret (a worker started by hand, for development)."""
    adapter = All()
    adapter.setup()
    server = await AdapterServer.start(
        adapter, listen=f"unix:{sock_dir}/dev.sock", adapter_path="x:All", worker_id="dev"
    )
    try:
        yield Served(server.address, server.frames_address, None)
    finally:
        await server.abort()
        adapter.teardown()


async def test_a_worker_without_a_secret_serves_anyone(unauthenticated: Served) -> None:
    assert unauthenticated.frames_address is not None
    mux = await open_frames_multiplexer(unauthenticated.frames_address)
    assert await mux.execute("echo", {"value": 1}) == 1
    await mux.aclose()
    async with WorkerConnection(unauthenticated.address) as client:
        assert await client.execute("echo", {"value": 2}) == 2
    # but a stranger to the protocol is still closed
    assert await raw_frames(unauthenticated, call_frame()) == b""


class TestReadSecret:
    def test_it_takes_the_secret_and_not_a_byte_more(self) -> None:
        secret = new_secret()
        r, w = os.pipe()
        try:
            os.write(w, secret + b"what follows")
            assert read_secret(r) == secret
            assert os.read(r, 100) == b"what follows"
        finally:
            os.close(r)
            os.close(w)

    def test_a_short_secret_is_a_startup_error(self) -> None:
        r, w = os.pipe()
        try:
            os.write(w, b"x" * 10)
            os.close(w)
            with pytest.raises(AdapterStartError, match="after 10 of the secret's 32 bytes"):
                read_secret(r)
        finally:
            os.close(r)
