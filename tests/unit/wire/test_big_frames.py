"""Big frames (``snakepit._wire._frames``): received straight into their own buffer, sent unjoined.

A reader that can receive into a buffer asks :meth:`FrameSplitter.get_buffer`
where the next bytes go and tells :meth:`FrameSplitter.filled` how many came:
small frames share one reused buffer; the rest of a frame of :data:`DIRECT`
bytes or more goes into a buffer of exactly its size. A big frame is written
as its header and its message (:func:`pack_parts`, :func:`send_parts`), the
same bytes as :func:`pack`. The limits are those of :meth:`FrameSplitter.feed`.
"""

from __future__ import annotations

import random
import socket
import threading

import pytest

from snakepit._wire._frames import (
    DIRECT,
    SLACK,
    FrameError,
    FrameSplitter,
    pack,
    pack_parts,
    rest_of,
    send_parts,
    size_buffers,
)
from snakepit._wire._proto.snakepit.v1 import worker_pb2

Frame = worker_pb2.ServerFrame
LIMIT = 4 * 1024 * 1024


def blob_frame(rid: int, size: int) -> Frame:
    """A frame whose one reply carries ``size`` bytes (distinct per ``rid``)."""
    frame = Frame()
    response = frame.responses.add(request_id=rid)
    response.result.blobs.append(bytes([rid % 256]) * size)
    return frame


def ids(frames: list[Frame]) -> list[int]:
    return [r.request_id for f in frames for r in f.responses]


def receive(splitter: FrameSplitter[Frame], data: bytes, cuts: list[int]) -> list[Frame]:
    """Receive ``data`` as a socket would, in reads ending at ``cuts`` (and at most what fits)."""
    got: list[Frame] = []
    start = 0
    for stop in [*cuts, len(data)]:
        while start < stop:
            target = splitter.get_buffer()
            count = min(len(target), stop - start)
            target[:count] = data[start : start + count]
            start += count
            got += splitter.filled(count)
    return got


class TestReceivingIntoTheSplittersBuffers:
    def test_small_and_big_frames_in_any_cuts_arrive_whole_and_in_order(self) -> None:
        sizes = [10, DIRECT, 3 * DIRECT + 5, 7, 1024 * 1024, DIRECT - 1, 300_000]
        frames = [blob_frame(rid, size) for rid, size in enumerate(sizes, 1)]
        data = b"".join(pack(f) for f in frames)
        rng = random.Random(15)
        for _ in range(20):
            cuts = sorted(rng.sample(range(1, len(data)), 12))
            got = receive(FrameSplitter(Frame, LIMIT), data, cuts)
            assert got == frames

    def test_a_big_frames_rest_goes_into_a_buffer_of_exactly_its_size(self) -> None:
        splitter = FrameSplitter(Frame, LIMIT)
        data = pack(blob_frame(1, 1024 * 1024))
        first = splitter.get_buffer()
        first[:100] = data[:100]
        assert splitter.filled(100) == []
        assert splitter.partial
        rest = splitter.get_buffer()
        assert len(rest) == len(data) - 100  # one recv_into can take all of it
        rest[:] = data[100:]
        assert ids(splitter.filled(len(rest))) == [1]
        assert not splitter.partial

    def test_the_buffer_of_a_big_frame_is_reused_for_the_next(self) -> None:
        splitter = FrameSplitter(Frame, LIMIT)
        owners = []
        for rid, size in ((1, 512 * 1024), (2, 256 * 1024)):
            data = pack(blob_frame(rid, size))
            head = splitter.get_buffer()
            head[:100] = data[:100]
            assert splitter.filled(100) == []
            rest = splitter.get_buffer()
            owners.append(rest.obj)
            rest[:] = data[100:]
            assert ids(splitter.filled(len(rest))) == [rid]
        assert owners[0] is owners[1]  # the second, smaller, went into the first's buffer

    def test_feed_completes_a_big_frame_begun_in_the_buffers(self) -> None:
        # What is left in a socket after a write error is read with recv() and fed.
        splitter = FrameSplitter(Frame, LIMIT)
        data = pack(blob_frame(1, 200_000)) + pack(blob_frame(2, 5))
        assert receive(splitter, data[:70_000], []) == []
        assert ids(splitter.feed(data[70_000:])) == [1, 2]
        assert not splitter.partial

    def test_a_frame_at_the_limit_and_its_slack_is_taken_one_byte_more_is_refused(self) -> None:
        limit = 256 * 1024
        splitter = FrameSplitter(Frame, limit)
        frame = blob_frame(1, 1)
        body = frame.SerializeToString()
        # Pad the body to exactly limit + SLACK with an unknown field (kept by the parser).
        pad = limit + SLACK - len(body)
        filler = b"\xfa\x3e" + _varint(pad - 2 - len(_varint(pad)))
        padded = body + filler + b"\0" * (pad - len(filler))
        assert len(padded) == limit + SLACK
        header = len(padded).to_bytes(4, "little")
        assert ids(receive(splitter, header + padded, [3, 9000])) == [1]
        over = FrameSplitter(Frame, limit)
        target = over.get_buffer()
        target[:4] = (limit + SLACK + 1).to_bytes(4, "little")
        with pytest.raises(FrameError, match="over the limit"):
            over.filled(4)

    def test_a_big_frame_that_does_not_parse_is_a_frame_error(self) -> None:
        splitter = FrameSplitter(Frame, LIMIT)
        data = (DIRECT * 2).to_bytes(4, "little") + b"\xff" * (DIRECT * 2)
        with pytest.raises(FrameError, match="does not parse"):
            receive(splitter, data, [100])


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class TestSendingUnjoined:
    def test_a_small_frame_is_one_part_a_big_one_its_header_and_message(self) -> None:
        small, big = blob_frame(1, 10), blob_frame(2, DIRECT)
        assert pack_parts(small) == [pack(small)]
        parts = pack_parts(big)
        assert len(parts) == 2
        assert b"".join(parts) == pack(big)

    def test_rest_of_parts_after_a_partial_send(self) -> None:
        parts: list[bytes | memoryview] = [b"abcd", b"efghij", b"k"]
        joined = b"".join(parts)
        for sent in range(len(joined) + 1):
            assert b"".join(bytes(p) for p in rest_of(list(parts), sent)) == joined[sent:]
        assert rest_of(list(parts), len(joined)) == []

    def test_send_parts_delivers_the_same_bytes_as_the_packed_frames(self) -> None:
        frames = [blob_frame(1, 3 * 1024 * 1024 + 1), blob_frame(2, 3), blob_frame(3, DIRECT)]
        left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        size_buffers(left)
        received = bytearray()
        expected = sum(len(pack(f)) for f in frames)

        def read() -> None:
            while len(received) < expected:
                chunk = right.recv(1 << 20)
                if not chunk:
                    return
                received.extend(chunk)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            for frame in frames:
                send_parts(left, pack_parts(frame))
        finally:
            reader.join(timeout=30)
            left.close()
            right.close()
        assert not reader.is_alive()
        assert bytes(received) == b"".join(pack(f) for f in frames)


def test_size_buffers_asks_for_big_buffers_and_takes_no_socket() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        before = left.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        size_buffers(left)
        assert left.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= before
        size_buffers(None)  # a transport without a socket: nothing to do
    finally:
        left.close()
        right.close()
