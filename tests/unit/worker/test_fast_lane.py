"""The frames fast lane (snakepit.worker._lane), spoken to over a raw frames socket."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from snakepit._wire._auth import FRAMES_ACCEPTED, frames_preface
from snakepit._wire._codec import JSON, decode, encode_into
from snakepit._wire._frames import pack, read_frame
from snakepit._wire._proto.snakepit.v1 import worker_pb2
from snakepit.testing.adapters import Hang
from snakepit.worker import Context, tool
from snakepit.worker._adapter_server import AdapterServer
from snakepit.worker._lane import LANE_ENV, lane_enabled

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


Kind = worker_pb2.ErrorInfo.Kind


class _Tools(Hang):
    """Hang, plus a sync tool that says when it runs (a FIFO gate), then waits for its cancel."""

    @tool
    def signal_then_hang(self, ctx: Context, path: str) -> str:
        # The test's open(path, "wb") returns once this runs; then it waits.
        with open(path, "rb"):
            pass
        ctx.cancel_event.wait()
        return "cancelled"

    @tool
    def gate(self, path: str) -> str:
        # Runs until the test closes its end of the FIFO at ``path``.
        with open(path, "rb") as fifo:
            fifo.read()
        return "opened"


LIMIT = 64 * 1024 * 1024


class _Client:
    """A raw frames client: sends ClientFrames, collects the final reply of each request."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.chunks: dict[int, list[worker_pb2.StreamChunk]] = {}

    def send(self, frame: worker_pb2.ClientFrame) -> None:
        self.writer.write(pack(frame))

    async def replies(
        self, count: int
    ) -> dict[int, worker_pb2.ExecuteResponse | list[worker_pb2.StreamChunk]]:
        """Read until ``count`` requests have their final reply (a response, a stream's end)."""
        done: dict[int, worker_pb2.ExecuteResponse | list[worker_pb2.StreamChunk]] = {}
        with anyio.fail_after(20):
            while len(done) < count:
                frame = await read_frame(self.reader, worker_pb2.ServerFrame, LIMIT)
                assert frame is not None, "the worker closed the connection"
                for response in frame.responses:
                    assert response.request_id not in done  # one final reply per request
                    done[response.request_id] = response
                for chunk in frame.chunks:
                    self.chunks.setdefault(chunk.request_id, []).append(chunk)
                    if chunk.end or chunk.HasField("error"):
                        done[chunk.request_id] = self.chunks[chunk.request_id]
        return done


def request(rid: int, tool: str, timeout: float = 0.0, **args: object) -> worker_pb2.ExecuteRequest:
    req = worker_pb2.ExecuteRequest(request_id=rid, tool=tool, timeout=timeout)
    encode_into(req.args, args, codec=JSON)
    return req


def value(response: worker_pb2.ExecuteResponse | list[worker_pb2.StreamChunk]) -> object:
    assert isinstance(response, worker_pb2.ExecuteResponse), response
    assert response.HasField("result"), response.error
    return decode(response.result)


async def _connect(server: AdapterServer) -> _Client:
    # A frames connection to ``server``, its preface answered.
    assert server.frames_address is not None
    reader, writer = await asyncio.open_unix_connection(server.frames_address[len("unix:") :])
    writer.write(frames_preface(None))
    assert await reader.readexactly(len(FRAMES_ACCEPTED)) == FRAMES_ACCEPTED
    return _Client(reader, writer)


@pytest.fixture(params=[True, False], ids=["lane", "loop"])
async def served(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[AdapterServer, _Client]]:
    sock_dir = tmp_path / "s"
    sock_dir.mkdir(mode=0o700)
    server = await AdapterServer.start(
        _Tools(),
        listen=f"unix:{sock_dir}/w.sock",
        adapter_path="snakepit.testing.adapters:Hang",
        worker_id="lane",
        fast_lane=request.param,
    )
    client = await _connect(server)
    try:
        yield server, client
    finally:
        client.writer.close()
        with anyio.fail_after(10):
            await server.abort()


async def test_a_timed_out_cooperative_tool_sees_cancelled_and_is_deadline_exceeded(
    served: tuple[AdapterServer, _Client],
) -> None:
    server, client = served
    client.send(worker_pb2.ClientFrame(execute=[request(1, "hang_sync", timeout=0.2)]))
    (reply,) = (await client.replies(1)).values()
    assert isinstance(reply, worker_pb2.ExecuteResponse)
    assert reply.error.kind == Kind.DEADLINE_EXCEEDED  # hang_sync returned: it saw ctx.cancelled
    client.send(worker_pb2.ClientFrame(execute=[request(2, "echo", value=7)]))
    assert value((await client.replies(1))[2]) == 7  # the slot is back
    assert server._service.in_flight == 0


async def test_a_cancelled_call_is_answered_once_its_tool_returned(
    served: tuple[AdapterServer, _Client],
) -> None:
    server, client = served
    client.send(worker_pb2.ClientFrame(execute=[request(1, "hang_sync")]))
    client.send(worker_pb2.ClientFrame(cancel=[1]))  # hang_sync returns only once cancelled
    reply = (await client.replies(1))[1]
    assert isinstance(reply, worker_pb2.ExecuteResponse)
    assert reply.error.kind == Kind.CANCELLED
    assert server._service.slot_state()["free"] == 1  # given back before the reply
    client.send(worker_pb2.ClientFrame(execute=[request(2, "echo", value="again")]))
    assert value((await client.replies(1))[2]) == "again"


async def test_a_frame_mixing_sync_async_and_stream_calls_answers_all(
    served: tuple[AdapterServer, _Client],
) -> None:
    _, client = served
    frame = worker_pb2.ClientFrame(
        execute=[
            request(1, "echo", value=1),
            request(2, "aecho", value=2),
            request(3, "no_such_tool"),
            request(4, "count", n=2),  # a streaming tool called unary: refused
            request(5, "fail"),
        ],
        stream=[request(6, "count", n=3)],
    )
    client.send(frame)
    replies = await client.replies(6)
    assert value(replies[1]) == 1
    assert value(replies[2]) == 2
    assert replies[3].error.kind == Kind.TOOL_NOT_FOUND  # type: ignore[union-attr]
    assert replies[4].error.kind == Kind.INVALID_ARGUMENTS  # type: ignore[union-attr]
    assert replies[5].error.kind == Kind.REMOTE  # type: ignore[union-attr]
    chunks = replies[6]
    assert isinstance(chunks, list)
    assert [decode(c.chunk) for c in chunks[:-1]] == [0, 1, 2]
    assert chunks[-1].end


async def test_eof_with_a_tool_running_cancels_it_and_leaves_nothing_in_flight(
    served: tuple[AdapterServer, _Client],
) -> None:
    server, client = served
    client.send(worker_pb2.ClientFrame(execute=[request(1, "hang_sync")]))
    client.writer.close()  # hang_sync returns only once cancelled: the end of the client does
    with anyio.fail_after(10):
        await server._service.wait_idle()
    assert server._service.in_flight == 0


async def test_a_stopping_worker_refuses_new_calls(
    served: tuple[AdapterServer, _Client],
) -> None:
    server, client = served
    server._service.stop_accepting()
    client.send(worker_pb2.ClientFrame(execute=[request(1, "echo"), request(2, "aecho")]))
    replies = await client.replies(2)
    assert {r.error.kind for r in replies.values()} == {Kind.UNAVAILABLE}  # type: ignore[union-attr]


def test_the_environment_turns_the_lane_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LANE_ENV, raising=False)
    assert lane_enabled()
    for off in ("0", "false", "off", "no"):
        monkeypatch.setenv(LANE_ENV, off)
        assert not lane_enabled()
    monkeypatch.setenv(LANE_ENV, "1")
    assert lane_enabled()


# -- the tool thread reads the socket (snakepit.worker._lane: Slots.lend) ---------------


def _lane_of(server: AdapterServer) -> Any:
    (lane,) = server._service._lanes
    return lane


def _idle(lane: Any) -> bool:
    # (On a thread.) Whether the lane's own thread waits without a timeout
    # within 10 s: parked, or reading the socket itself (it took the socket
    # over while a call ran long, as on a loaded machine, and keeps it until
    # the next frame comes).
    with lane._lock:
        return bool(lane._relief.wait_for(lambda: lane._parked or not lane._tool_reads, 10))


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "running"
    os.mkfifo(path)
    return path


async def _running(path: Path) -> Any:
    # The FIFO's writing end, opened once the tool at its other end runs.
    with anyio.fail_after(20):
        return await anyio.to_thread.run_sync(open, path, "wb", abandon_on_cancel=True)


async def test_sync_tools_run_on_the_tool_thread_whoever_reads_the_socket(
    served: tuple[AdapterServer, _Client], tmp_path: Path
) -> None:
    # The tool thread reads when idle; while it runs a long call the lane's
    # own thread reads (the cancel of that call); every call still runs on
    # the one tool thread.
    _, client = served
    client.send(worker_pb2.ClientFrame(execute=[request(1, "info")]))
    first = value((await client.replies(1))[1])
    fifo = _fifo(tmp_path)
    client.send(worker_pb2.ClientFrame(execute=[request(2, "signal_then_hang", path=str(fifo))]))
    (await _running(fifo)).close()
    client.send(worker_pb2.ClientFrame(execute=[request(3, "info")]))  # queued behind it
    client.send(worker_pb2.ClientFrame(cancel=[2]))  # read while it runs
    replies = await client.replies(2)
    assert replies[2].error.kind == Kind.CANCELLED  # type: ignore[union-attr]
    client.send(worker_pb2.ClientFrame(execute=[request(4, "info")]))
    last = value((await client.replies(1))[4])
    threads = {info["thread"] for info in (first, value(replies[3]), last)}  # type: ignore[index]
    assert threads == {"snakepit-tool-0"}


async def test_a_call_queued_behind_a_running_one_gives_up_at_its_deadline(
    served: tuple[AdapterServer, _Client], tmp_path: Path
) -> None:
    # While the tool thread runs the gate, only the lane's own thread can
    # read the next call and see its timeout pass: it is answered
    # NOT_STARTED while the gate still holds the tool thread.
    server, client = served
    fifo = _fifo(tmp_path)
    client.send(worker_pb2.ClientFrame(execute=[request(1, "gate", path=str(fifo))]))
    writer = await _running(fifo)
    try:
        client.send(worker_pb2.ClientFrame(execute=[request(2, "echo", timeout=0.3, value=2)]))
        reply = (await client.replies(1))[2]
        assert isinstance(reply, worker_pb2.ExecuteResponse)
        assert reply.error.kind == Kind.NOT_STARTED
    finally:
        writer.close()
    assert value((await client.replies(1))[1]) == "opened"
    assert server._service.in_flight == 0


async def test_an_idle_lane_parks_its_relief_thread(
    served: tuple[AdapterServer, _Client],
) -> None:
    # Idle, the lane's own thread waits without a timeout (no wake-ups for
    # nothing); the next call wakes it (it must watch that call's length).
    server, client = served
    for rid in (1, 2):
        client.send(worker_pb2.ClientFrame(execute=[request(rid, "echo", value=rid)]))
        assert value((await client.replies(1))[rid]) == rid
        if not server._service._lanes:
            return  # the loop's path: no lane
        assert await anyio.to_thread.run_sync(_idle, _lane_of(server))


async def test_a_job_from_the_loop_wakes_the_tool_thread_waiting_in_the_socket(
    served: tuple[AdapterServer, _Client],
) -> None:
    # A sync streaming tool runs on the tool thread, queued by the loop: with
    # the tool thread waiting in the lent socket (the relief parked: nothing
    # happens; on a loaded machine the relief may hold the socket instead),
    # the job must wake it.
    server, client = served
    client.send(worker_pb2.ClientFrame(execute=[request(1, "echo", value=1)]))
    assert value((await client.replies(1))[1]) == 1
    if server._service._lanes:
        assert await anyio.to_thread.run_sync(_idle, _lane_of(server))
    client.send(worker_pb2.ClientFrame(stream=[request(2, "count", n=3)]))
    chunks = (await client.replies(1))[2]
    assert isinstance(chunks, list)
    assert [decode(c.chunk) for c in chunks[:-1]] == [0, 1, 2]


MIB = 1024 * 1024


async def test_big_values_echo_whole_on_both_paths(
    served: tuple[AdapterServer, _Client],
) -> None:
    # A big frame is received straight into a buffer of its size and written
    # unjoined to its header: on the lane's thread (sync echo) and the loop's
    # (async aecho; all of it with the lane off).
    np = pytest.importorskip("numpy")
    _, client = served
    data = bytes(range(256)) * (3 * MIB // 256) + b"tail"
    array = np.arange(MIB // 8, dtype=np.float64).reshape(128, -1)
    values: list[object] = [data, bytearray(data[:MIB]), memoryview(data)[7 : 2 * MIB], array]
    sent = []
    rid = 0
    for name in ("echo", "aecho"):
        for item in values:
            rid += 1
            sent.append((rid, item))
            client.send(worker_pb2.ClientFrame(execute=[request(rid, name, value=item)]))
    # And several big ones in one frame, mixed with small ones.
    many = [request(rid + n, "echo", value=bytes([n]) * (MIB + n)) for n in range(1, 4)]
    many.append(request(rid + 4, "echo", value="small"))
    client.send(worker_pb2.ClientFrame(execute=many))
    replies = await client.replies(len(sent) + len(many))
    for rid, item in sent:
        got = value(replies[rid])
        if isinstance(item, np.ndarray):
            assert isinstance(got, np.ndarray)
            assert got.flags.writeable
            assert got.flags.c_contiguous
            assert np.array_equal(got, item)
        else:
            assert type(got) is bytes
            assert got == bytes(item)  # type: ignore[call-overload]
    for n in range(1, 4):
        assert value(replies[rid + n]) == bytes([n]) * (MIB + n)
    assert value(replies[rid + 4]) == "small"


async def test_a_client_gone_mid_big_frame_ends_only_its_connection(
    served: tuple[AdapterServer, _Client],
) -> None:
    server, client = served
    data = pack(worker_pb2.ClientFrame(execute=[request(1, "echo", value=b"x" * 2 * MIB)]))
    client.writer.write(data[: MIB + 10])  # its header and half of it, then gone
    await client.writer.drain()
    client.writer.close()
    with anyio.fail_after(10):
        await server._service.wait_idle()
    assert server._service.in_flight == 0
    # The worker serves a new connection (the big frame whole this time).
    assert server.frames_address is not None
    reader, writer = await asyncio.open_unix_connection(server.frames_address[len("unix:") :])
    try:
        writer.write(frames_preface(None))
        assert await reader.readexactly(len(FRAMES_ACCEPTED)) == FRAMES_ACCEPTED
        again = _Client(reader, writer)
        again.send(worker_pb2.ClientFrame(execute=[request(2, "echo", value=b"y" * 2 * MIB)]))
        assert value((await again.replies(1))[2]) == b"y" * 2 * MIB
    finally:
        writer.close()


async def test_a_second_connection_is_served_by_its_own_reader(
    served: tuple[AdapterServer, _Client], tmp_path: Path
) -> None:
    # The tool thread reads one connection's socket (the first's); a second
    # frames connection to the same worker keeps a reader thread of its own,
    # and both are served, a long call on one not holding up the other's reads.
    server, first = served
    second = await _connect(server)
    try:
        fifo = _fifo(tmp_path)
        first.send(worker_pb2.ClientFrame(execute=[request(1, "gate", path=str(fifo))]))
        gate = await _running(fifo)
        try:
            second.send(worker_pb2.ClientFrame(execute=[request(2, "echo", value=2)]))
            second.send(worker_pb2.ClientFrame(cancel=[2]))  # waits for the slot: withdrawn
            reply = (await second.replies(1))[2]
            assert isinstance(reply, worker_pb2.ExecuteResponse)
            assert reply.error.kind == Kind.CANCELLED
        finally:
            gate.close()
        assert value((await first.replies(1))[1]) == "opened"
        second.send(worker_pb2.ClientFrame(execute=[request(3, "echo", value=3)]))
        assert value((await second.replies(1))[3]) == 3
        first.send(worker_pb2.ClientFrame(execute=[request(4, "echo", value=4)]))
        assert value((await first.replies(1))[4]) == 4
    finally:
        second.writer.close()
