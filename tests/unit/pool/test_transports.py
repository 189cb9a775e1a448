"""The frames socket's push transport (``FramesTransport``) and the Multiplexer on it.

Driven by hand: bytes go to :meth:`FramesTransport.data_received` in the
pieces a test chooses (a socket would coalesce them as it likes).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import anyio
import pytest

from snakepit._wire._codec import decode, encode_into
from snakepit._wire._frames import SLACK, FrameError, pack, size_buffers
from snakepit._wire._proto.snakepit.v1 import worker_pb2
from snakepit.errors import WorkerUnavailable
from snakepit.pool._connection import Multiplexer
from snakepit.pool._transports import FramesTransport

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # an asyncio.Protocol

LIMIT = 64 * 1024


class FakeSocket:
    """The loop's side of a connection: what was written, and whether it was closed."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def reply(rid: int, value: Any) -> worker_pb2.ServerFrame:
    frame = worker_pb2.ServerFrame()
    response = frame.responses.add()
    response.request_id = rid
    encode_into(response.result, value)
    return frame


class Sink:
    """An owner of the transport: the frames delivered and how the connection ended."""

    def __init__(self) -> None:
        self.frames: list[worker_pb2.ServerFrame] = []
        self.ends: list[Exception | None] = []

    def deliver(self, frame: worker_pb2.ServerFrame) -> None:
        self.frames.append(frame)

    def lost(self, exc: Exception | None) -> None:
        self.ends.append(exc)


def opened(accept: bool = True) -> tuple[FramesTransport, FakeSocket, Sink]:
    frames = FramesTransport(LIMIT)
    socket = FakeSocket()
    frames.connection_made(socket)  # type: ignore[arg-type]
    if accept:
        frames.data_received(b"+")
    sink = Sink()
    frames.attach(sink.deliver, sink.lost)
    return frames, socket, sink


class TestFramesTransport:
    async def test_a_frame_split_across_many_reads_is_delivered_once_complete(self) -> None:
        frames, _, sink = opened()
        data = pack(reply(7, "x" * 100))
        for i in range(len(data) - 1):
            frames.data_received(data[i : i + 1])
        assert sink.frames == []
        frames.data_received(data[-1:])
        assert [f.responses[0].request_id for f in sink.frames] == [7]

    async def test_many_frames_in_one_read_are_delivered_in_order(self) -> None:
        frames, _, sink = opened()
        data = b"".join(pack(reply(rid, rid)) for rid in range(1, 51))
        frames.data_received(data[:-3])  # the last one split
        assert len(sink.frames) == 49
        frames.data_received(data[-3:])
        assert [f.responses[0].request_id for f in sink.frames] == list(range(1, 51))

    async def test_reads_into_its_reused_buffer_keep_what_a_partial_frame_needs(self) -> None:
        # The loop reads into get_buffer()'s view (recv_into) and says how much
        # came (buffer_updated); the next read overwrites that buffer.
        frames, _, sink = opened()
        assert isinstance(frames, asyncio.BufferedProtocol)
        data = pack(reply(1, "a" * 300)) + pack(reply(2, "b" * 300))
        cuts = [0, 5, 310, len(data) - 1, len(data)]  # inside a header, inside each frame
        for start, stop in itertools.pairwise(cuts):
            buffer = frames.get_buffer(-1)
            buffer[: stop - start] = data[start:stop]
            frames.buffer_updated(stop - start)
            buffer[: stop - start] = b"\xee" * (stop - start)  # reused: its old bytes are gone
        assert [(f.responses[0].request_id, f.responses[0].result.data) for f in sink.frames] == [
            (1, b'"' + b"a" * 300 + b'"'),
            (2, b'"' + b"b" * 300 + b'"'),
        ]
        assert sink.ends == []

    async def test_the_acceptance_and_frames_in_one_read(self) -> None:
        frames = FramesTransport(LIMIT)
        frames.connection_made(FakeSocket())  # type: ignore[arg-type]
        frames.data_received(b"+" + pack(reply(1, 1)))
        assert frames.accepted.result() is True
        sink = Sink()
        frames.attach(sink.deliver, sink.lost)  # what came before is handed over
        assert [f.responses[0].request_id for f in sink.frames] == [1]

    async def test_a_frame_over_the_limit_ends_the_connection_with_a_typed_error(self) -> None:
        frames, socket, sink = opened()
        frames.data_received((LIMIT + SLACK + 1).to_bytes(4, "little"))
        assert len(sink.ends) == 1
        assert isinstance(sink.ends[0], FrameError)
        assert socket.closed
        frames.data_received(pack(reply(1, 1)))  # nothing more is read
        frames.connection_lost(None)  # the close it caused: reported once
        assert sink.frames == []
        assert len(sink.ends) == 1

    async def test_a_frame_that_does_not_parse_ends_the_connection(self) -> None:
        frames, _, sink = opened()
        frames.data_received(b"\x02\x00\x00\x00\xff\xff")
        assert isinstance(sink.ends[0], FrameError)

    async def test_a_clean_end_and_an_end_inside_a_frame(self) -> None:
        frames, _, sink = opened()
        frames.connection_lost(None)
        assert sink.ends == [None]
        frames, _, sink = opened()
        frames.data_received(pack(reply(1, 1))[:5])
        frames.connection_lost(None)
        assert isinstance(sink.ends[0], FrameError)

    async def test_an_end_before_the_owner_attached_is_handed_over(self) -> None:
        frames = FramesTransport(LIMIT)
        frames.connection_made(FakeSocket())  # type: ignore[arg-type]
        frames.data_received(b"+")
        error = ConnectionResetError("gone")
        frames.connection_lost(error)
        sink = Sink()
        frames.attach(sink.deliver, sink.lost)
        assert sink.ends == [error]

    async def test_a_close_before_the_acceptance_fails_the_handshake(self) -> None:
        frames = FramesTransport(LIMIT)
        frames.connection_made(FakeSocket())  # type: ignore[arg-type]
        frames.connection_lost(None)
        with pytest.raises(ConnectionResetError):
            frames.accepted.result()

    async def test_writes_report_the_high_water_mark(self) -> None:
        frames, socket, _ = opened()
        assert frames.write_nowait(worker_pb2.ClientFrame()) is True
        frames.pause_writing()
        assert frames.write_nowait(worker_pb2.ClientFrame()) is False
        frames.resume_writing()
        assert len(socket.written) == 8  # two empty frames: their headers


class TestMultiplexerOnFrames:
    async def test_replies_pushed_complete_the_calls_and_a_bad_frame_fails_the_rest(
        self,
    ) -> None:
        frames, socket, _ = opened()
        mux = Multiplexer(frames, LIMIT)
        try:
            with anyio.fail_after(5):
                first = asyncio.ensure_future(mux.execute("echo", {"value": 1}))
                await anyio.wait_all_tasks_blocked()
                assert socket.written  # sent at once: alone on the channel
                frames.data_received(pack(reply(1, "one")))
                assert await first == "one"
                second = asyncio.ensure_future(mux.execute("echo", {"value": 2}))
                await anyio.wait_all_tasks_blocked()
                frames.data_received((LIMIT + SLACK + 1).to_bytes(4, "little"))
                with pytest.raises(WorkerUnavailable) as caught:
                    await second
                assert isinstance(caught.value.__cause__, WorkerUnavailable)
                assert isinstance(caught.value.__cause__.__cause__, FrameError)
                with pytest.raises(WorkerUnavailable):
                    await mux.execute("echo", {})  # the channel is broken
        finally:
            await mux.aclose()

    async def test_the_worker_closing_fails_every_call_in_flight(self) -> None:
        frames, _, _ = opened()
        mux = Multiplexer(frames, LIMIT)
        try:
            with anyio.fail_after(5):
                calls = [asyncio.ensure_future(mux.execute("echo", {})) for _ in range(5)]
                await anyio.wait_all_tasks_blocked()
                frames.connection_lost(None)
                for call in calls:
                    with pytest.raises(WorkerUnavailable, match="closed the channel"):
                        await call
        finally:
            await mux.aclose()


class TestAWriteThatMeetsADeadWorker:
    """Found with pipelining: a reply the worker wrote before it died was lost.

    The host's write to the dead worker failed (a broken pipe) before the loop
    read the reply already in the socket: the call that had ended was
    reported as crashed with the rest.
    """

    async def test_the_replies_left_in_the_socket_are_delivered_before_the_end(self) -> None:
        import socket

        host, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        loop = asyncio.get_running_loop()
        frames = FramesTransport(LIMIT)
        transport, _ = await loop.create_unix_connection(lambda: frames, sock=host)
        sink = Sink()
        try:
            worker.sendall(b"+")
            await frames.accepted
            frames.attach(sink.deliver, sink.lost)
            # It replies and dies; before the loop reads the replies (no await
            # from here), a write meets the closed socket: a broken pipe.
            worker.sendall(pack(reply(1, "done")) + pack(reply(2, "done too")))
            worker.close()
            frames.send(worker_pb2.ClientFrame(cancel=[3]))
            assert sink.frames == []
            with anyio.fail_after(5):
                while not sink.ends:  # connection_lost comes in a later loop pass
                    await anyio.lowlevel.checkpoint()
            rids = [r.request_id for f in sink.frames for r in f.responses]
            assert rids == [1, 2]
            assert len(sink.ends) == 1
        finally:
            transport.close()
            worker.close()


class TestBigFrames:
    """A big frame is read straight into a buffer of its size (``FrameSplitter.get_buffer``)."""

    async def test_big_replies_over_a_socket_arrive_whole(self) -> None:
        import socket

        host, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        loop = asyncio.get_running_loop()
        frames = FramesTransport(8 * 1024 * 1024)
        transport, _ = await loop.create_unix_connection(lambda: frames, sock=host)
        sink = Sink()
        try:
            worker.sendall(b"+")
            await frames.accepted
            frames.attach(sink.deliver, sink.lost)
            values = [b"a" * (3 * 1024 * 1024), "small", b"b" * (64 * 1024), b"c" * 1_000_001]
            data = b"".join(pack(reply(rid, v)) for rid, v in enumerate(values, 1))
            worker.setblocking(False)
            with anyio.fail_after(10):
                sent = 0
                while len(sink.frames) < len(values):
                    if sent < len(data):
                        with contextlib.suppress(BlockingIOError):
                            sent += worker.send(data[sent : sent + 300_000])
                    await anyio.lowlevel.checkpoint()
            got = [(f.responses[0].request_id, f.responses[0].result) for f in sink.frames]
            assert [rid for rid, _ in got] == [1, 2, 3, 4]
            assert [decode(result) for _, result in got] == values
            assert sink.ends == []
        finally:
            transport.close()
            worker.close()

    async def test_a_worker_killed_mid_big_frame_fails_the_calls_with_a_typed_error(
        self,
    ) -> None:
        import socket

        host, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        loop = asyncio.get_running_loop()
        frames = FramesTransport(8 * 1024 * 1024)
        transport, _ = await loop.create_unix_connection(lambda: frames, sock=host)
        mux = None
        try:
            worker.sendall(b"+")
            await frames.accepted
            mux = Multiplexer(frames, 8 * 1024 * 1024)
            with anyio.fail_after(10):
                call = asyncio.ensure_future(mux.execute("echo", {"value": 1}))
                await anyio.wait_all_tasks_blocked()
                data = pack(reply(1, b"z" * (2 * 1024 * 1024)))
                size_buffers(worker)  # (no reader until this test awaits: the half fits)
                worker.sendall(data[: 1024 * 1024])  # half of its reply, then it dies
                worker.close()
                with pytest.raises(WorkerUnavailable) as caught:
                    await call
                # The stream ended inside a frame, or (the host's request unread) was reset.
                assert isinstance(caught.value.__cause__, WorkerUnavailable)
                cause = caught.value.__cause__.__cause__
                assert isinstance(cause, FrameError | ConnectionError)
        finally:
            if mux is not None:
                await mux.aclose()
            transport.close()
            worker.close()
