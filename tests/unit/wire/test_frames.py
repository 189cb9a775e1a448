"""Frames and their batching (``snakepit._wire._frames``), both ends' one implementation.

The contract of :class:`FrameBatcher`, as it stands:

- a frame holds items in the order they were added, frames in order;
- the items of a frame fill at most the message limit less
  :data:`ENVELOPE` (counted as ``ByteSize() + ITEM_OVERHEAD`` each, which is
  never less than what an item adds to the serialized frame), so a frame
  never exceeds the limit - except a frame holding one oversize item alone
  (the item's maker checks items against the limit; the batcher splits
  frames, it does not refuse items); what comes after it opens a new frame;
- :meth:`~FrameBatcher.take` returns no frame when nothing is queued, and
  never an empty frame.
"""

from __future__ import annotations

import asyncio

import pytest

from snakepit._wire._frames import (
    ENVELOPE,
    ITEM_OVERHEAD,
    SLACK,
    FlushSoon,
    FrameBatcher,
    FrameError,
    pack,
    read_frame,
)
from snakepit._wire._proto.snakepit.v1 import worker_pb2

anyio_backends = ("asyncio",)  # FlushSoon and read_frame use asyncio's loop and streams

Frame = worker_pb2.ServerFrame
LIMIT = 8 * 1024  # a message limit small enough to split frames often


def chunk(rid: int, size: int) -> worker_pb2.StreamChunk:
    """A stream chunk whose payload is ``size`` bytes."""
    return worker_pb2.StreamChunk(request_id=rid, chunk=worker_pb2.Payload(data=b"x" * size))


class Wakes:
    """Counts the wakes of the owner's writer task."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def batcher(wake: Wakes | None = None) -> FrameBatcher[worker_pb2.ServerFrame]:
    """A batcher whose frames a writer task takes (no ``write_nowait``)."""
    return FrameBatcher(Frame, LIMIT, write_nowait=None, wake=wake or Wakes(), flush=lambda: None)


def ids(frames: list[worker_pb2.ServerFrame]) -> list[list[int]]:
    return [[c.request_id for c in frame.chunks] for frame in frames]


class TestFrameBatcher:
    def test_nothing_queued_takes_no_frame(self) -> None:
        batch = batcher()
        assert not batch.pending
        assert batch.take() == []

    def test_items_that_fit_share_one_frame_in_order(self) -> None:
        batch = batcher()
        for rid in range(5):
            batch.append("chunks", chunk(rid, 100))
        # Queued, taken, then nothing left: it starts afresh.
        seen = [batch.pending, ids(batch.take()), batch.pending, batch.take()]
        assert seen == [True, [[0, 1, 2, 3, 4]], False, []]

    @pytest.mark.parametrize("size", [1, 100, 1000, 3000, LIMIT // 2])
    def test_no_frame_exceeds_the_limit_and_order_is_kept(self, size: int) -> None:
        batch = batcher()
        for rid in range(40):
            batch.append("chunks", chunk(rid, size))
        frames = batch.take()
        assert [rid for frame in ids(frames) for rid in frame] == list(range(40))
        for frame in frames:
            assert frame.chunks  # never an empty frame
            assert frame.ByteSize() <= LIMIT - ENVELOPE
        assert len(pack(frames[0])) <= LIMIT

    def test_the_items_fill_the_limit_less_the_envelope(self) -> None:
        batch = batcher()
        size = (LIMIT - ENVELOPE) // 4 - ITEM_OVERHEAD  # counted: exactly a quarter
        per_item = chunk(0, size).ByteSize() + ITEM_OVERHEAD
        count = (LIMIT - ENVELOPE) // per_item
        for rid in range(count + 1):
            batch.append("chunks", chunk(rid, size))
        assert [len(frame) for frame in ids(batch.take())] == [count, 1]

    def test_an_oversize_item_goes_alone_in_its_frame(self) -> None:
        # The one case a frame is over the limit: the item alone.
        batch = batcher()
        batch.append("chunks", chunk(0, 10))
        batch.append("chunks", chunk(1, 2 * LIMIT))
        batch.append("chunks", chunk(2, 10))
        frames = batch.take()
        assert ids(frames) == [[0], [1], [2]]
        assert frames[1].ByteSize() > LIMIT

    def test_an_oversize_item_first_opens_no_empty_frame(self) -> None:
        batch = batcher()
        batch.append("chunks", chunk(0, 2 * LIMIT))
        assert ids(batch.take()) == [[0]]

    def test_two_fields_share_a_frame(self) -> None:
        batch = batcher()
        batch.append("responses", worker_pb2.ExecuteResponse(request_id=1))
        batch.append("chunks", chunk(2, 10))
        (frame,) = batch.take()
        assert [r.request_id for r in frame.responses] == [1]
        assert [c.request_id for c in frame.chunks] == [2]

    def test_an_item_built_in_place(self) -> None:
        # As the host builds a request: in the current frame, or in a new one.
        batch = batcher()
        for rid in range(10):
            size = chunk(rid, 1500).ByteSize() + ITEM_OVERHEAD
            frame = batch.frame if batch.fits(size) else batch.next_frame()
            frame.chunks.append(chunk(rid, 1500))
            batch.added(size)
        frames = batch.take()
        assert [rid for frame in ids(frames) for rid in frame] == list(range(10))
        assert all(f.chunks and f.ByteSize() <= LIMIT - ENVELOPE for f in frames)

    def test_a_frame_opened_with_nothing_added_yet_loses_no_full_frame(self) -> None:
        # take() judged by the last frame alone: a next_frame() whose item was
        # never added (its build raised) dropped every full frame before it.
        batch = batcher()
        while batch.fits(chunk(0, 1500).ByteSize() + ITEM_OVERHEAD):
            batch.append("chunks", chunk(0, 1500))
        batch.next_frame()  # the next item's frame; its build fails: nothing added
        assert batch.pending
        frames = batch.take()
        assert len(frames) == 1
        assert frames[0].chunks
        assert batch.take() == []
        assert not batch.pending

    def test_opened_changes_whenever_a_new_frame_opens(self) -> None:
        batch = batcher()
        first = batch.opened
        batch.append("chunks", chunk(1, 100))
        assert batch.opened == first  # the same frame
        batch.next_frame()
        assert batch.opened == first + 1
        batch.append("chunks", chunk(2, 100))  # into the frame just opened
        assert batch.opened == first + 1
        batch.append("chunks", chunk(3, LIMIT))  # it does not fit: the next frame
        assert batch.opened == first + 2
        batch.take()
        assert batch.opened == first + 3  # a fresh frame

    def test_each_item_kicks_the_writer(self) -> None:
        wakes = Wakes()
        batch = batcher(wakes)
        batch.append("chunks", chunk(0, 10))
        batch.append("chunks", chunk(1, 10))
        batch.added(0)
        assert wakes.count == 3


@pytest.mark.anyio
class TestWriteAll:
    async def test_frames_are_written_at_the_end_of_the_loop_pass(self) -> None:
        written: list[worker_pb2.ServerFrame] = []
        flushes: list[bool] = []

        def write_nowait(frame: worker_pb2.ServerFrame) -> bool:
            written.append(frame)
            return True

        def flush() -> None:
            flushes.append(batch.write_all())

        batch = FrameBatcher(Frame, LIMIT, write_nowait=write_nowait, wake=Wakes(), flush=flush)
        for rid in range(3):
            batch.append("chunks", chunk(rid, 10))
        assert written == []  # not yet: at the end of this pass
        await _one_pass()
        assert ids(written) == [[0, 1, 2]]  # one frame
        assert flushes == [True]  # one flush for the pass
        assert not batch.pending

    async def test_every_frame_is_written_though_one_is_over_the_high_water_mark(self) -> None:
        answers = iter([False, True])
        written: list[worker_pb2.ServerFrame] = []

        def write_nowait(frame: worker_pb2.ServerFrame) -> bool:
            written.append(frame)
            return next(answers)

        batch = FrameBatcher(Frame, LIMIT, write_nowait=write_nowait, wake=Wakes(), flush=list)
        batch.append("chunks", chunk(0, LIMIT // 2))
        batch.append("chunks", chunk(1, LIMIT // 2))
        assert batch.write_all() is False
        assert ids(written) == [[0], [1]]
        assert batch.write_all() is True  # nothing queued: nothing written
        assert len(written) == 2


async def _one_pass() -> None:
    """Let the callbacks scheduled in this loop pass run (a future done by call_soon)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(done.set_result, None)
    await done


@pytest.mark.anyio
class TestFlushSoon:
    async def test_it_flushes_once_per_pass_however_often_asked(self) -> None:
        calls: list[None] = []
        soon = FlushSoon(asyncio.get_running_loop(), lambda: calls.append(None))
        soon()
        soon()
        await _one_pass()
        assert len(calls) == 1
        soon()
        await _one_pass()
        assert len(calls) == 2


@pytest.mark.anyio
class TestReadFrame:
    async def read(self, data: bytes, limit: int = LIMIT) -> worker_pb2.ServerFrame | None:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_frame(reader, Frame, limit)

    async def test_a_packed_frame_reads_back(self) -> None:
        frame = Frame(chunks=[chunk(7, 10)])
        assert await self.read(pack(frame)) == frame

    async def test_a_clean_end_is_none(self) -> None:
        assert await self.read(b"") is None

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (b"\x05\x00", "inside a frame header"),
            (b"\x05\x00\x00\x00ab", "inside a frame$"),
        ],
    )
    async def test_a_stream_that_ends_inside_a_frame_is_an_error(
        self, data: bytes, message: str
    ) -> None:
        with pytest.raises(FrameError, match=message):
            await self.read(data)

    async def test_a_frame_over_the_limit_and_its_slack_is_refused(self) -> None:
        over = (LIMIT + SLACK + 1).to_bytes(4, "little")
        with pytest.raises(FrameError, match=rf"of {LIMIT + SLACK + 1} bytes is over"):
            await self.read(over)
        # Up to the slack is allowed: a frame's envelope around items at the limit.
        frame = Frame(chunks=[chunk(1, LIMIT + SLACK - 100)])
        assert await self.read(pack(frame)) == frame


class TestStrItems:
    """A str item (an ended session's id) takes room in a frame like any item."""

    def test_ids_go_in_order_and_share_a_frame_with_other_items(self) -> None:
        batch: FrameBatcher[worker_pb2.ClientFrame] = FrameBatcher(
            worker_pb2.ClientFrame, LIMIT, write_nowait=None, wake=Wakes(), flush=lambda: None
        )
        batch.append("end_sessions", "a")
        batch.append("cancel", 3)
        batch.append("end_sessions", "b")
        [frame] = batch.take()
        assert list(frame.end_sessions) == ["a", "b"]
        assert list(frame.cancel) == [3]

    def test_an_id_counts_its_utf8_length(self) -> None:
        batch: FrameBatcher[worker_pb2.ClientFrame] = FrameBatcher(
            worker_pb2.ClientFrame, LIMIT, write_nowait=None, wake=Wakes(), flush=lambda: None
        )
        # Ids of 2-byte characters: half as many fit as their str length says.
        sid = "é" * ((LIMIT - ENVELOPE) // 4)
        for _ in range(3):
            batch.append("end_sessions", sid)
        frames = batch.take()
        assert [len(f.end_sessions) for f in frames] == [1, 1, 1]
        assert all(f.ByteSize() <= LIMIT - ENVELOPE + ITEM_OVERHEAD for f in frames)
