"""The host's client: unary calls, the multiplexed Channel, error mapping."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import grpc
import pytest

from snakepit._wire._auth import FRAMES_ACCEPTED, frames_preface
from snakepit._wire._frames import ENVELOPE
from snakepit._wire._proto.snakepit.v1 import worker_pb2
from snakepit.errors import (
    ConfigError,
    ExecutionTimeout,
    InvalidArguments,
    PayloadError,
    PayloadTooLarge,
    RemoteError,
    ToolNotFound,
    WorkerError,
    WorkerStartError,
    WorkerStopping,
    WorkerUnavailable,
)
from snakepit.pool._connection import Multiplexer, open_frames_multiplexer
from snakepit.pool._grpc_errors import error_from_info, error_from_rpc
from snakepit.pool._launch._process import WorkerProcess, spawn_worker
from snakepit.pool._worker_connection import WorkerConnection
from snakepit.worker import AdapterServer
from tests._procs import gone

from .conftest import Served, Spawn, serve_all

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

Echo = tuple[Served, WorkerConnection]
EchoProcess = tuple[WorkerProcess, WorkerConnection]
OpenMux = Callable[[WorkerProcess | Served, WorkerConnection], Awaitable[Multiplexer]]
Kind = worker_pb2.ErrorInfo.Kind


@pytest.fixture(params=["grpc", "frames"])
def open_mux(request: pytest.FixtureRequest) -> OpenMux:
    """Opens a Multiplexer to a worker over the transport of this run."""

    async def open_(worker: WorkerProcess | Served, client: WorkerConnection) -> Multiplexer:
        if request.param == "grpc":
            return client.multiplexer()
        assert worker.frames_address is not None
        return await open_frames_multiplexer(
            worker.frames_address, max_message_bytes=client.max_message_bytes, secret=worker.secret
        )

    return open_


class TestChannel:
    """The Multiplexer, on each transport: the Channel RPC and the frames socket."""

    async def test_many_concurrent_calls_each_get_their_own_result(
        self, echo: Echo, open_mux: OpenMux
    ) -> None:
        worker, client = echo
        mux = await open_mux(worker, client)
        results: dict[int, Any] = {}

        async def call(i: int) -> None:
            results[i] = await mux.execute("echo", {"value": i})

        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(call, i)
        assert results == {i: i for i in range(200)}
        await mux.aclose()

    async def test_errors_travel_per_call(self, echo: Echo, open_mux: OpenMux) -> None:
        worker, client = echo
        mux = await open_mux(worker, client)
        with pytest.raises(RemoteError, match="boom"):
            await mux.execute("fail", {"message": "boom"})
        with pytest.raises(ToolNotFound):
            await mux.execute("nope")
        with pytest.raises(InvalidArguments):
            await mux.execute("add", {"a": 1})
        assert await mux.execute("ping") == {"status": "pong"}
        await mux.aclose()

    async def test_streams_over_the_channel(self, echo: Echo, open_mux: OpenMux) -> None:
        worker, client = echo
        mux = await open_mux(worker, client)
        assert [x async for x in mux.stream("count", {"n": 4})] == [0, 1, 2, 3]
        with pytest.raises(RemoteError):
            async for _ in mux.stream("fail_midstream", {"after": 1}):
                pass
        stream = mux.stream("hang_stream")
        assert await stream.__anext__() == 0
        await stream.aclose()
        assert await mux.execute("ping") == {"status": "pong"}
        await mux.aclose()

    async def test_timeout_cancels_the_remote_call(self, echo: Echo, open_mux: OpenMux) -> None:
        worker, client = echo
        mux = await open_mux(worker, client)
        with pytest.raises(ExecutionTimeout):
            await mux.execute("hang", timeout=0.05)
        with pytest.raises(ExecutionTimeout):
            await mux.execute("hang_sync", timeout=0.05)
        # the sync tool saw ctx.cancelled and freed the worker's only slot
        with anyio.fail_after(10):
            assert await mux.execute("noop_sync") is None
        await mux.aclose()

    async def test_deadlines_in_the_worker_leave_the_channel_working(
        self, echo: Echo, open_mux: OpenMux
    ) -> None:
        # The worker enforces the timeout too (asyncio.timeout around an async
        # tool); whichever side fires first, the channel must keep flowing.
        worker, client = echo
        mux = await open_mux(worker, client)
        for _ in range(10):
            for tool in ("hang", "hang_sync"):
                with pytest.raises(ExecutionTimeout):
                    await mux.execute(tool, timeout=0.02)
            with anyio.fail_after(10):
                assert await mux.execute("noop_sync") is None
        await mux.aclose()

    async def test_cancelling_the_caller_cancels_the_remote_call(
        self, echo: Echo, open_mux: OpenMux
    ) -> None:
        worker, client = echo
        mux = await open_mux(worker, client)
        with anyio.move_on_after(0.05):
            await mux.execute("hang_sync")
        with anyio.fail_after(10):
            assert await mux.execute("noop_sync") is None
        await mux.aclose()

    async def test_oversize_stays_a_per_call_error(self, spawn: Spawn, open_mux: OpenMux) -> None:
        worker = await spawn(extra_args=["--max-message-mb", "1"])
        async with WorkerConnection(
            worker.address, max_message_bytes=1024 * 1024, secret=worker.secret
        ) as client:
            mux = await open_mux(worker, client)
            with pytest.raises(PayloadTooLarge):
                await mux.execute("echo", {"value": b"x" * (2 * 1024 * 1024)})
            with pytest.raises(PayloadTooLarge):
                await mux.execute("blob", {"size": 2 * 1024 * 1024})
            # several large-but-legal results at once are split over frames
            async with anyio.create_task_group() as tg:
                sizes: list[int] = []

                async def big() -> None:
                    sizes.append(len(await mux.execute("blob", {"size": 400 * 1024})))

                for _ in range(6):
                    tg.start_soon(big)
            assert sizes == [400 * 1024] * 6
            assert await mux.execute("ping") == {"status": "pong"}
            await mux.aclose()

    async def test_worker_death_fails_pending_calls_at_once(
        self, echo_process: EchoProcess, open_mux: OpenMux
    ) -> None:
        worker, client = echo_process
        mux = await open_mux(worker, client)
        errors: list[BaseException] = []

        async def call() -> None:
            try:
                await mux.execute("hang")
            except WorkerUnavailable as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            assert await mux.execute("ping") == {"status": "pong"}  # the channel is up
            os.killpg(worker.pid, signal.SIGKILL)
        assert len(errors) == 1
        assert isinstance(errors[0].__cause__, WorkerError)  # it was lost (found by review)
        with pytest.raises(WorkerUnavailable):
            await mux.execute("ping")
        await worker.wait()
        await mux.aclose()

    async def test_closed_channel_refuses_calls(self, echo: Echo, open_mux: OpenMux) -> None:
        worker, client = echo
        mux = await open_mux(worker, client)
        await mux.aclose()
        await mux.aclose()
        with pytest.raises(WorkerUnavailable, match="closed"):
            await mux.execute("ping")


class TestFrames:
    """What only the frames socket has to survive: a misbehaving peer."""

    async def test_a_garbage_frame_closes_only_that_connection(self, echo: Echo) -> None:
        worker, _client = echo
        assert worker.frames_address is not None
        path = worker.frames_address.removeprefix("unix:")
        stream = await anyio.connect_unix(path)
        async with stream:
            assert worker.secret is not None
            await stream.send(frames_preface(worker.secret))
            assert await stream.receive(1) == FRAMES_ACCEPTED
            await stream.send(b"\xff\xff\xff\x7f" + b"x" * 16)  # a 2 GiB frame: refused
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await stream.receive()
        mux = await open_frames_multiplexer(worker.frames_address, secret=worker.secret)
        assert await mux.execute("ping") == {"status": "pong"}
        await mux.aclose()

    async def test_a_client_gone_mid_call_frees_the_slot(self, echo: Echo) -> None:
        worker, _client = echo
        assert worker.frames_address is not None
        first = await open_frames_multiplexer(worker.frames_address, secret=worker.secret)
        async with anyio.create_task_group() as tg:

            async def hang() -> None:
                with pytest.raises(WorkerUnavailable):
                    await first.execute("hang")

            tg.start_soon(hang)
            await anyio.wait_all_tasks_blocked()
            await first.aclose()  # the connection drops with the call running
        second = await open_frames_multiplexer(worker.frames_address, secret=worker.secret)
        with anyio.fail_after(10):  # the worker's only slot came free
            assert await second.execute("ping") == {"status": "pong"}
        await second.aclose()

    async def test_a_frames_address_must_be_unix(self) -> None:
        with pytest.raises(ConfigError, match="address"):
            await open_frames_multiplexer("tcp:127.0.0.1:1")

    async def test_no_socket_is_worker_unavailable(self, sock_dir: Path) -> None:
        with pytest.raises(WorkerUnavailable, match="cannot connect"):
            await open_frames_multiplexer(f"unix:{sock_dir}/nothing.sock.frames")


class TestUnary:
    async def test_bad_timeout(self, echo: Echo) -> None:
        _, client = echo
        for bad in (0, -1.0):
            with pytest.raises(ConfigError):
                await client.execute("ping", timeout=bad)

    async def test_unencodable_arguments_are_reported_on_the_client(self, echo: Echo) -> None:
        _, client = echo
        cyclic: list[Any] = []
        cyclic.append(cyclic)
        with pytest.raises(PayloadError):
            await client.execute("echo", {"value": cyclic})
        assert await client.execute("ping") == {"status": "pong"}

    async def test_timeout(self, echo: Echo) -> None:
        _, client = echo
        with pytest.raises(ExecutionTimeout):
            await client.execute("hang", timeout=0.05)

    async def test_unreachable_worker(self, sock_dir: Path) -> None:
        async with WorkerConnection(f"unix:{sock_dir}/nobody.sock") as client:
            with pytest.raises(WorkerUnavailable):
                await client.execute("ping", timeout=2)


class TestLaunch:
    async def test_aclose_reaps_and_is_idempotent(self, sock_dir: Path) -> None:
        worker = await spawn_worker("snakepit.testing.adapters:Echo", f"unix:{sock_dir}/a.sock")
        assert await worker.aclose() == 0
        assert await worker.aclose() == 0
        assert gone(worker.pid)

    async def test_ready_timeout_kills_the_worker(self, sock_dir: Path) -> None:
        fifo = sock_dir / "gate"
        os.mkfifo(fifo)
        env = {**os.environ, "SNAKEPIT_SLOWSTART_GATE": str(fifo)}
        with pytest.raises(WorkerStartError, match="no ready line within") as info:
            await spawn_worker(
                "snakepit.testing.adapters:SlowStart",
                f"unix:{sock_dir}/s.sock",
                env=env,
                ready_timeout=0.3,
            )
        assert info.value.returncode is not None  # killed and reaped

    async def test_slow_start_proceeds_when_the_gate_opens(self, sock_dir: Path) -> None:
        fifo = sock_dir / "gate"
        os.mkfifo(fifo)
        env = {**os.environ, "SNAKEPIT_SLOWSTART_GATE": str(fifo)}
        async with anyio.create_task_group() as tg:
            workers: list[WorkerProcess] = []

            async def start() -> None:
                workers.append(
                    await spawn_worker(
                        "snakepit.testing.adapters:SlowStart", f"unix:{sock_dir}/s.sock", env=env
                    )
                )

            tg.start_soon(start)
            writer = await anyio.to_thread.run_sync(open, fifo, "wb")  # setup() is waiting
            writer.close()
        (worker,) = workers
        await worker.aclose()
        assert gone(worker.pid)

    async def test_bad_ready_timeout(self) -> None:
        with pytest.raises(ConfigError):
            await spawn_worker("x:Y", "unix:/nonexistent/x.sock", ready_timeout=0)


class TestErrorMapping:
    @pytest.mark.parametrize(
        ("kind", "expected"),
        [
            (Kind.REMOTE, RemoteError),
            (Kind.TOOL_NOT_FOUND, ToolNotFound),
            (Kind.INVALID_ARGUMENTS, InvalidArguments),
            (Kind.PAYLOAD_TOO_LARGE, PayloadTooLarge),
            (Kind.DEADLINE_EXCEEDED, ExecutionTimeout),
            (Kind.UNAVAILABLE, WorkerStopping),
            (Kind.CODEC, PayloadError),
            (Kind.KIND_UNSPECIFIED, WorkerError),
        ],
    )
    def test_error_info(self, kind: Any, expected: type[WorkerError]) -> None:
        info = worker_pb2.ErrorInfo(kind=kind, type="mod.E", message="m", traceback="tb")
        error = error_from_info(info, "tool")
        assert type(error) is expected

    def test_remote_error_keeps_its_fields_and_pickles(self) -> None:
        import pickle

        error = error_from_info(
            worker_pb2.ErrorInfo(kind=Kind.REMOTE, type="mod.E", message="m", traceback="tb"), "t"
        )
        assert isinstance(error, RemoteError)
        copy = pickle.loads(pickle.dumps(error))
        assert (copy.type_name, copy.message, copy.traceback) == ("mod.E", "m", "tb")

    def test_rpc_errors(self) -> None:
        def rpc(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
            return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "d")

        assert isinstance(
            error_from_rpc(rpc(grpc.StatusCode.RESOURCE_EXHAUSTED), "t"), PayloadTooLarge
        )
        assert isinstance(
            error_from_rpc(rpc(grpc.StatusCode.DEADLINE_EXCEEDED), "t"), ExecutionTimeout
        )
        error = error_from_rpc(rpc(grpc.StatusCode.UNAVAILABLE), "t")
        assert isinstance(error, WorkerUnavailable)
        assert isinstance(error.__cause__, grpc.RpcError)


class TestPickle:
    async def test_pickle_round_trip_with_a_trusting_worker(self, spawn: Spawn) -> None:
        worker = await spawn(extra_args=["--allow-pickle"])
        async with WorkerConnection(worker.address, codec="pickle", secret=worker.secret) as client:
            value = {"a": (1, 2), "s": {3, 4}, "b": b"\x00"}
            assert await client.execute("echo", {"value": value}) == value  # tuples, sets kept
            mux = client.multiplexer()
            assert await mux.execute("echo", {"value": (1, "x")}) == (1, "x")
            await mux.aclose()

    async def test_a_worker_refuses_pickle_unless_allowed(self, echo: Echo) -> None:
        worker, _ = echo
        async with WorkerConnection(worker.address, codec="pickle", secret=worker.secret) as client:
            with pytest.raises(PayloadError, match="pickle"):
                await client.execute("echo", {"value": 1})

    def test_unknown_codec(self) -> None:
        with pytest.raises(ConfigError, match="codec"):
            WorkerConnection("unix:/nonexistent", codec="yaml")  # type: ignore[arg-type]


async def cancel_hold_once_running(mux: Multiplexer, key: str) -> None:
    """Call ``hold`` on ``mux`` in this task and cancel it once the tool runs (its gate says so)."""
    from ._adapters import gate

    async with anyio.create_task_group() as tg:

        async def cancel_when_running() -> None:
            await anyio.to_thread.run_sync(gate(key).started.wait)
            tg.cancel_scope.cancel()

        tg.start_soon(cancel_when_running)
        await mux.execute("hold", {"key": key})


class TestCancellationAcks:
    """A call left running is answered once its tool has ended (issue #11, defect 2)."""

    @pytest.fixture
    async def hostile(
        self, sock_dir: Path, tmp_path: Path
    ) -> AsyncIterator[tuple[AdapterServer, str]]:
        """The Hostile adapter served in-process, and a gate key of this test's own."""
        from ._adapters import Hostile, drop_gate

        adapter = Hostile()
        server = await AdapterServer.start(
            adapter,
            listen=f"unix:{sock_dir}/hostile.sock",
            adapter_path="tests.unit.grpc._adapters:Hostile",
            worker_id="hostile",
        )
        key = str(tmp_path)
        try:
            yield server, key
        finally:
            drop_gate(key)
            with anyio.fail_after(10):
                await server.abort()

    async def test_a_cancelled_call_settles_when_its_tool_ends(
        self, hostile: tuple[AdapterServer, str], open_mux: OpenMux
    ) -> None:
        from ._adapters import gate

        server, key = hostile
        async with WorkerConnection(server.address) as client:
            mux = await open_mux(Served(server.address, server.frames_address), client)
            await cancel_hold_once_running(mux, key)  # in this task
            (rid,) = mux.left_running
            assert mux.take_left_running() == rid  # this task's call
            assert mux.take_left_running() is None  # taken once
            settled = asyncio.ensure_future(mux.settled(rid))
            await anyio.wait_all_tasks_blocked()
            assert not settled.done()  # the tool runs on
            gate(key).release.set()
            with anyio.fail_after(10):
                assert await settled is True
            assert mux.left_running == frozenset()
            assert await mux.execute("slot_state") == {
                "size": 1,
                "free": 0,
                "waiting": 0,
                "waited": 0,
                "in_flight": 1,
            }
            await mux.aclose()

    async def test_a_second_cancel_does_not_settle_a_call_whose_tool_runs_on(
        self, hostile: tuple[AdapterServer, str], open_mux: OpenMux
    ) -> None:
        # As when the worker's own deadline cancelled the call and the
        # client's cancel came after it: the task is cancelled twice while
        # it waits for its thread. Its reply still waits for the tool's end.
        from ._adapters import gate

        server, key = hostile
        async with WorkerConnection(server.address) as client:
            mux = await open_mux(Served(server.address, server.frames_address), client)
            await cancel_hold_once_running(mux, key)
            (rid,) = mux.left_running
            settled = asyncio.ensure_future(mux.settled(rid))
            await anyio.wait_all_tasks_blocked()
            mux._batch.frame.cancel.append(rid)  # the second cancel of the same call
            mux._batch.added(8)
            await anyio.wait_all_tasks_blocked()
            assert not settled.done()  # the tool runs on: no reply yet
            gate(key).release.set()
            with anyio.fail_after(10):
                assert await settled is True
            await mux.aclose()

    async def test_a_generator_ignoring_its_close_still_ends_the_stream(
        self,
        hostile: tuple[AdapterServer, str],
        open_mux: OpenMux,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        server, _ = hostile
        async with WorkerConnection(server.address) as client:
            mux = await open_mux(Served(server.address, server.frames_address), client)
            for tool in ("stubborn_stream", "astubborn_stream"):
                with anyio.fail_after(10):
                    async with aclosing(mux.stream(tool)) as items:
                        assert await anext(items) == 0
                    (rid,) = mux.left_running
                    assert await mux.settled(rid) is True
                    state = await mux.execute("slot_state")
                assert (state["free"], state["waiting"]) == (0, 0), tool
            assert "closing the generator raised" in caplog.text
            await mux.aclose()

    async def test_a_closed_channel_settles_what_was_left_running(
        self, hostile: tuple[AdapterServer, str], open_mux: OpenMux
    ) -> None:
        from ._adapters import gate

        server, key = hostile
        async with WorkerConnection(server.address) as client:
            mux = await open_mux(Served(server.address, server.frames_address), client)
            with anyio.move_on_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(mux.execute, "hold", {"key": key})
                    await anyio.to_thread.run_sync(gate(key).started.wait)
                    tg.cancel_scope.cancel()
            (rid,) = mux.left_running
            await mux.aclose()
            assert await mux.settled(rid) is False  # unknown: the channel is gone

    async def test_a_client_gone_mid_sync_call_does_not_hold_up_the_server(
        self, hostile: tuple[AdapterServer, str], open_mux: OpenMux
    ) -> None:
        """Nobody is left to answer: the session ends though the tool runs on."""
        from ._adapters import gate

        server, key = hostile
        async with WorkerConnection(server.address) as client:
            mux = await open_mux(Served(server.address, server.frames_address), client)
            async with anyio.create_task_group() as tg:

                async def hold() -> None:
                    with pytest.raises(WorkerUnavailable):
                        await mux.execute("hold", {"key": key})

                tg.start_soon(hold)
                await anyio.to_thread.run_sync(gate(key).started.wait)
                await mux.aclose()  # the connection drops with the tool running
        with anyio.fail_after(5):
            await server.abort()  # does not wait for the tool (it never ends by itself)


#: A small message limit, so that items near it are cheap to build.
SMALL_LIMIT = 64 * 1024


@pytest.fixture
async def small(sock_dir: Path) -> AsyncIterator[Echo]:
    """The test tools served in-process with a 64 KiB message limit, and a client to them."""
    async with serve_all(
        sock_dir, "small", max_concurrency=4, max_message_bytes=SMALL_LIMIT
    ) as served:
        yield served


class TestItemsNearTheLimit:
    """A frame carries an item and its envelope: no item may take the whole limit."""

    async def test_a_reply_within_an_envelope_of_the_limit_fails_alone(
        self, small: Echo, open_mux: OpenMux
    ) -> None:
        # The worker refused only replies over the limit itself; one just under
        # it made a frame over it, which killed the whole gRPC Channel (found
        # by review of issue #12). Now it is that call's PayloadTooLarge.
        worker, client = small
        size = SMALL_LIMIT - ENVELOPE // 2
        mux = await open_mux(worker, client)
        with pytest.raises(PayloadTooLarge, match="message limit"):
            await mux.execute("blob", {"size": size})
        with pytest.raises(PayloadTooLarge, match="message limit"):
            await client.execute("blob", {"size": size})
        assert await mux.execute("ping") == {"status": "pong"}  # the channel lives
        assert len(await mux.execute("blob", {"size": SMALL_LIMIT - 2 * ENVELOPE})) > 0
        await mux.aclose()

    async def test_requests_that_fill_frames_move_to_the_next_whole(
        self, small: Echo, open_mux: OpenMux
    ) -> None:
        # Two of these fill a frame: most are built in one frame and moved, as
        # built, to the next (not encoded a second time).
        worker, client = small
        mux = await open_mux(worker, client)
        values = [f"{i}" + "x" * (SMALL_LIMIT // 3) for i in range(12)]
        results = await asyncio.gather(*(mux.execute("echo", {"value": v}) for v in values))
        assert results == values
        await mux.aclose()

    async def test_cancels_in_the_pass_of_a_full_frame_go_in_a_new_one(self, small: Echo) -> None:
        # Cancels were appended to the current frame without checking that
        # they fit: hundreds of them after a request that nearly filled it made
        # a frame over the limit, and the Channel died (found by review).
        _, client = small
        mux = client.multiplexer()
        hangs = [asyncio.create_task(mux.execute("hang")) for _ in range(700)]
        await anyio.wait_all_tasks_blocked()
        assert len(mux.left_running) == 0
        value = "x" * (SMALL_LIMIT - ENVELOPE - 200)  # a request just under the limit
        # The request is queued when ``big`` first runs, and the cancels when the
        # hangs resume: all in the next loop pass, in this order.
        big = asyncio.create_task(mux.execute("echo", {"value": value}))
        for hang in hangs:
            hang.cancel()
        assert await big == value
        await asyncio.gather(*hangs, return_exceptions=True)
        assert await mux.execute("ping") == {"status": "pong"}
        await mux.aclose()


class TestClosedUnderneath:
    """A WorkerConnection closed under its streams and its Channel fails them, typed."""

    async def test_a_multiplexers_calls_fail_when_its_connection_closes(self, echo: Echo) -> None:
        # grpc's own CancelledError ended the channel's reader without failing
        # its calls: they waited forever (found by review of issue #12).
        _, client = echo
        mux = client.multiplexer()
        assert await mux.execute("ping") == {"status": "pong"}
        errors: list[BaseException] = []

        async def call() -> None:
            try:
                await mux.execute("hang")
            except WorkerUnavailable as exc:
                errors.append(exc)

        async def stream() -> None:
            try:
                async with aclosing(mux.stream("hang_stream")) as items:
                    async for _ in items:
                        pass
            except WorkerUnavailable as exc:
                errors.append(exc)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                tg.start_soon(stream)
                await anyio.wait_all_tasks_blocked()
                await client.aclose()
        assert len(errors) == 2
        assert all(error.__cause__ is not None for error in errors)
        with pytest.raises(WorkerUnavailable):
            await mux.execute("ping")
        await mux.aclose()

    async def test_a_unary_stream_fails_typed_when_its_connection_closes(self, echo: Echo) -> None:
        # It raised grpc's bare CancelledError, which looked like the
        # consumer's own cancellation (found by review of issue #12).
        _, client = echo
        seen: list[object] = []

        async def consume() -> None:
            async with aclosing(client.stream("hang_stream")) as items:
                async for item in items:
                    seen.append(item)

        with anyio.fail_after(10):
            task = asyncio.create_task(consume())
            await anyio.wait_all_tasks_blocked()
            assert seen == [0]
            await client.aclose()
            with pytest.raises(WorkerUnavailable, match="closed with the stream in flight"):
                await task
