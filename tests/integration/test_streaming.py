"""Pool.stream() end to end, with real worker processes.

Items arrive complete and in order (sync and async generators, empty streams,
large items); a tool that raises mid-stream delivers what it yielded, then a
typed RemoteError, and its worker stays; closing a stream early, or cancelling
its consumer, gives the slot back and cancels the remote generator; a worker
killed mid-stream is a WorkerCrashed and is replaced; a stream's timeout is an
ExecutionTimeout and its worker is replaced; streams on one worker interleave.
Two regression tests pin bugs found here: an async generator tool that never
awaits was run to its end before its first item went out, and aclose() left
the remote cancel to asyncio's async-generator finalizer.

Nothing waits on a timer: a stream that must stay open waits on an event that
is never set (``hang_stream``, ``awatched``) or on its call's cancellation
(``watched``); every wait has a deadline. Each test uses one small pool and
checks the cases of its kind one after the other on it, which also shows the
worker is reusable after each. What a stream must yield, to its end, is
checked with the harness's ``assert_streaming_response`` (every item in order,
then the end: a missing, wrong or extra item fails).
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from contextlib import aclosing, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from snakepit.errors import (
    ExecutionTimeout,
    InvalidArguments,
    PayloadTooLarge,
    PoolClosed,
    RemoteError,
    ToolNotFound,
    WorkerCrashed,
    WorkerUnavailable,
)
from snakepit.pool import InProcessLauncher, Pool, RequestStopped, WorkerReady
from snakepit.testing import assert_streaming_response

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

#: The test adapter: Echo, Hang and Crash, plus the streaming tools of _stream_adapters.
ADAPTER = "tests.integration._stream_adapters:Streams"
ROOT = str(Path(__file__).resolve().parents[2])
#: Deadline of any one test body (a hang fails the test instead of the suite).
DEADLINE = 20.0
#: Deadline of one item of a stream, or of its end (the first waits for a free slot too).
CHUNK_TIMEOUT = 5.0
MIB = 1024 * 1024


def make_pool(*, process: bool = False, **options: Any) -> Pool:
    """A pool of the Streams adapter: worker processes, or in-process workers.

    What a stream does on the channel (order, errors, closing, cancelling,
    interleaving) is the same with the adapter served in this process, at a
    fraction of the cost; crashes, timeouts (a worker killed) and anything
    about a pid take real processes (``process=True``).
    """
    options.setdefault("size", 1)
    if not process:
        options.setdefault("launcher", InProcessLauncher())
    return Pool(ADAPTER, cwd=ROOT, **options)


async def slots_back(pool: Pool) -> None:
    """Return once the calls cancelled on the pool's workers were reported ended.

    A stream closed early (or whose consumer was cancelled) keeps its slot
    until its worker says the tool's generator has ended (PoolConfig.cancel_grace).
    """
    for worker in list(pool._tree.workers.values()):
        mux = worker.mux
        if mux is not None:
            for rid in mux.left_running:
                assert await mux.settled(rid)
    await anyio.wait_all_tasks_blocked()  # the pool's check-ins that waited for them ran


async def collect(
    pool: Pool,
    tool: str,
    args: dict[str, Any] | None = None,
    *,
    into: list[Any] | None = None,
    timeout: float | None = None,
) -> list[Any]:
    """Every item of the stream, in order; appended to ``into`` as they come, if given."""
    received = [] if into is None else into
    async with aclosing(pool.stream(tool, args, timeout=timeout)) as items:
        async for item in items:
            received.append(item)
    return received


@contextmanager
def noting(context: object) -> Iterator[None]:
    """Name ``context`` in an AssertionError raised in the block (a loop's current case)."""
    try:
        yield
    except AssertionError as exc:
        exc.add_note(f"checking {context!r}")
        raise


def only_pid(pool: Pool) -> int:
    (worker,) = pool.workers()
    assert worker.pid is not None
    return worker.pid


def only_worker(pool: Pool) -> tuple[str, int]:
    """The pool's one worker, as (id, generation): it changes when the worker is replaced."""
    (worker,) = pool.workers()
    return worker.worker_id, worker.generation


def watch(tool: str) -> dict[str, Any]:
    """Arguments for a watched stream: a fresh key to ask ``was_closed`` about."""
    return {"key": f"{tool}-{uuid.uuid4().hex}"}


async def assert_serves(pool: Pool) -> None:
    """A call completes, and every slot is free again."""
    assert await pool.execute("ping") == {"status": "pong"}
    stats = pool.stats()
    assert (stats.idle, stats.queued) == (stats.size * pool.config.max_concurrency, 0), stats
    assert all(w.in_flight == 0 for w in pool.workers()), pool.workers()


class TestItems:
    async def test_every_item_in_order(self) -> None:
        async with Pool("snakepit.testing.adapters:Echo", size=1) as pool:
            with anyio.fail_after(DEADLINE):
                for tool in ("count", "acount"):  # a sync and an async generator
                    for n in (100, 1, 0):  # 0: an empty stream
                        with noting((tool, n)):
                            await assert_streaming_response(
                                pool.stream(tool, {"n": n}), range(n), chunk_timeout=CHUNK_TIMEOUT
                            )
                    with noting((tool, "timeout=10")):  # a stream that ends in time
                        await assert_streaming_response(
                            pool.stream(tool, {"n": 10}, timeout=10.0),
                            range(10),
                            chunk_timeout=CHUNK_TIMEOUT,
                        )
                stats = pool.stats()
                assert (stats.requests, stats.errors, stats.timeouts) == (8, 0, 0), stats
                await assert_serves(pool)

    async def test_large_items(self) -> None:
        async with make_pool() as pool:
            with anyio.fail_after(DEADLINE):
                items = await collect(pool, "blobs", {"size": 2 * MIB, "n": 4})
                assert len(items) == 4
                for i, item in enumerate(items):
                    assert type(item) is bytes
                    assert item == bytes([i]) * (2 * MIB), i  # whole, in order, unmixed
                await assert_serves(pool)

    async def test_an_item_over_the_message_limit_is_payload_too_large(self) -> None:
        async with make_pool(max_message_mb=1) as pool:
            before = only_worker(pool)
            with anyio.fail_after(DEADLINE):
                with pytest.raises(PayloadTooLarge, match="over the"):
                    await collect(pool, "blobs", {"size": 2 * MIB, "n": 1})
                await assert_streaming_response(
                    pool.stream("blobs", {"size": 1024, "n": 2}),
                    [b"\0" * 1024, b"\1" * 1024],
                    chunk_timeout=CHUNK_TIMEOUT,
                )
                await assert_serves(pool)
            assert only_worker(pool) == before  # the connection was unharmed
            assert pool.stats().crashes == 0

    async def test_an_async_generator_that_never_awaits_is_streamed(self) -> None:
        # A regression test: the worker once ran such a generator to its end (all
        # `limit` items) before writing its first chunk or reading another frame.
        limit = 20_000
        async with make_pool(max_concurrency=2) as pool:
            key = uuid.uuid4().hex
            with anyio.fail_after(DEADLINE):
                stream = pool.stream("until_stopped", {"key": key, "limit": limit})
                async with aclosing(stream) as items:
                    assert await anext(items) == 0
                    await pool.execute("stop", {"key": key})  # on the same worker
                    rest = [item async for item in items]
                assert rest == list(range(1, len(rest) + 1))
                # item 0 went out and the stop came in long before the last item
                assert len(rest) + 1 < limit

    async def test_a_stream_holds_its_slot_only_while_it_runs(self) -> None:
        async with make_pool() as pool:
            with anyio.fail_after(DEADLINE):
                stream = pool.stream("count", {"n": 3})
                assert pool.stats().requests == 0  # nothing happens before the first item
                async with aclosing(stream) as items:
                    assert await anext(items) == 0
                    assert pool.stats().idle == 0
                    assert pool.workers()[0].in_flight == 1
                    await assert_streaming_response(items, [1, 2], chunk_timeout=CHUNK_TIMEOUT)
                    assert pool.stats().idle == 1  # the end of the stream gave it back
                await assert_serves(pool)

    async def test_a_closed_pool_refuses_a_stream(self) -> None:
        pool = make_pool()
        with pytest.raises(PoolClosed):
            await collect(pool, "count", {"n": 1})
        async with pool:
            pass
        with pytest.raises(PoolClosed):
            await collect(pool, "count", {"n": 1})


class TestErrors:
    async def test_a_tool_raising_midstream(self) -> None:
        async with make_pool() as pool:
            before = only_worker(pool)
            with anyio.fail_after(DEADLINE):
                for tool in ("fail_midstream", "afail_midstream"):  # sync, async
                    for after in (3, 0):
                        received: list[Any] = []
                        with pytest.raises(RemoteError) as info:
                            await collect(pool, tool, {"after": after}, into=received)
                        assert received == list(range(after))  # the items before the error
                        error = info.value
                        assert type(error) is RemoteError
                        assert error.type_name == "RuntimeError"
                        assert error.message == f"failed after {after} items"
                        assert tool in error.traceback
                        await assert_serves(pool)  # the worker stays in service
            stats = pool.stats()
            assert (stats.errors, stats.crashes, stats.timeouts, stats.restarts) == (4, 0, 0, 0)
            assert only_worker(pool) == before

    async def test_refused_calls_are_typed(self) -> None:
        cases: list[tuple[str, dict[str, Any] | None, type[RemoteError], str]] = [
            ("no_such_tool", None, ToolNotFound, "no tool 'no_such_tool'"),
            ("ping", None, InvalidArguments, "not a streaming tool"),
            ("count", {"n": "many"}, InvalidArguments, "must be int"),
            ("count", {}, InvalidArguments, "missing required argument"),
        ]
        async with make_pool() as pool:
            before = only_worker(pool)
            with anyio.fail_after(DEADLINE):
                for tool, args, error, match in cases:
                    with pytest.raises(error, match=match):
                        await collect(pool, tool, args)
                with pytest.raises(InvalidArguments, match=r"call it with stream\(\)"):
                    await pool.execute("count", {"n": 3})
                await assert_serves(pool)
            assert (pool.stats().errors, pool.stats().crashes) == (len(cases) + 1, 0)
            assert only_worker(pool) == before


class TestClosing:
    async def test_aclose_midway_returns_the_slot_and_cancels_the_tool(self) -> None:
        async with make_pool() as pool:  # one worker, one slot: a leak shows at once
            before = only_worker(pool)
            with anyio.fail_after(DEADLINE):
                for tool, args in [
                    ("count", {"n": 10_000}),
                    ("acount", {"n": 10_000}),
                    ("hang_stream", None),
                    ("watched", watch("watched")),
                    ("awatched", watch("awatched")),
                ]:
                    received: list[Any] = []
                    async with aclosing(pool.stream(tool, args)) as items:
                        async for item in items:
                            received.append(item)
                            break
                    assert received == [0], tool
                    await slots_back(pool)
                    stats = pool.stats()
                    assert (stats.idle, stats.queued) == (1, 0), (tool, stats)
                    if args is not None and "key" in args:  # its finally block ran remotely
                        assert await pool.execute("was_closed", args) is True, tool
                    # the worker's own slot came back too: the remote generator was cancelled
                    await assert_serves(pool)
            stats = pool.stats()
            assert (stats.errors, stats.crashes, stats.timeouts) == (0, 0, 0), stats
            assert only_worker(pool) == before

    async def test_an_error_in_the_consumer_closes_the_stream(self) -> None:
        async def consume_then_fail(pool: Pool, args: dict[str, Any]) -> None:
            async with aclosing(pool.stream("awatched", args)) as items:
                async for _ in items:
                    raise LookupError("the consumer's own")

        async with make_pool() as pool:
            args = watch("awatched")
            with anyio.fail_after(DEADLINE):
                with pytest.raises(LookupError, match="the consumer's own"):
                    await consume_then_fail(pool, args)
                await slots_back(pool)
                assert pool.stats().idle == 1
                assert await pool.execute("was_closed", args) is True
                await assert_serves(pool)
            stats = pool.stats()
            assert (stats.errors, stats.crashes) == (0, 0), stats  # not the pool's error

    async def test_a_stream_dropped_without_aclose_gives_its_slot_back(self) -> None:
        # A bare break leaves the generator to asyncio's async-generator finalizer
        # (aclosing is the way to close it at once); it still gets closed.
        async with make_pool() as pool:
            args = watch("watched")
            with anyio.fail_after(DEADLINE):
                async for item in pool.stream("watched", args):
                    assert item == 0
                    break
                assert await pool.execute("ping") == {"status": "pong"}  # waits for the slot
                assert await pool.execute("was_closed", args) is True
                await assert_serves(pool)

    async def test_aclose_queues_the_remote_cancel_before_it_returns(self) -> None:
        # A regression test: Pool.stream once left its inner Multiplexer.stream to
        # asyncio's async-generator finalizer, so the remote cancel went out two
        # loop turns after aclose() had already handed the slot to the next call.
        async with make_pool() as pool:
            (worker,) = pool._tree.workers.values()
            mux = worker.mux
            assert mux is not None
            with anyio.fail_after(DEADLINE):
                async with aclosing(pool.stream("awatched", watch("awatched"))) as items:
                    assert await anext(items) == 0
                    assert len(mux._streams) == 1
                # The stream is closed, its cancel queued, not left to the GC; the
                # slot comes back when the worker reports the generator ended.
                assert mux._streams == {}
                assert len(mux.left_running) == 1
                await slots_back(pool)
                assert pool.stats().idle == 1

    async def test_cancelling_the_consumer_returns_the_slot(self) -> None:
        async def consume(
            pool: Pool, tool: str, args: dict[str, Any], closing: bool, first: anyio.Event
        ) -> None:
            stream = pool.stream(tool, args)
            if closing:
                async with aclosing(stream) as items:
                    async for _ in items:
                        first.set()
            else:  # the cancellation ends the generator by itself
                async for _ in stream:
                    first.set()

        async with make_pool() as pool:
            before = only_worker(pool)
            for tool in ("watched", "awatched"):
                for closing in (True, False):
                    case = (tool, closing)
                    args = watch(tool)
                    first = anyio.Event()
                    with anyio.fail_after(DEADLINE):
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(consume, pool, tool, args, closing, first)
                            await first.wait()  # the tool runs, the consumer waits for item 1
                            assert pool.stats().idle == 0, case
                            tg.cancel_scope.cancel()
                        await slots_back(pool)
                        assert pool.stats().idle == 1, case
                        assert await pool.execute("was_closed", args) is True, case
                        await assert_serves(pool)
            stats = pool.stats()
            assert (stats.errors, stats.crashes, stats.timeouts) == (0, 0, 0), stats
            assert only_worker(pool) == before


class TestCrash:
    async def test_worker_killed_midstream_is_worker_crashed_and_replaced(self) -> None:
        async with make_pool(process=True) as pool:
            pid = only_pid(pool)
            with anyio.fail_after(DEADLINE):
                async with aclosing(pool.stream("hang_stream")) as items:
                    assert await anext(items) == 0
                    os.kill(pid, signal.SIGKILL)
                    with pytest.raises(WorkerCrashed) as info:
                        await anext(items)
                error = info.value
                assert error.pid == pid
                assert error.returncode == -signal.SIGKILL
                assert "killed by SIGKILL" in str(error)
                assert isinstance(error.__cause__, WorkerUnavailable)
                await pool.wait_ready()
                assert only_pid(pool) != pid
                await assert_serves(pool)
            stats = pool.stats()
            assert (stats.crashes, stats.restarts, stats.ready) == (1, 1, 1), stats

    async def test_a_tool_killing_its_worker_midstream(self) -> None:
        received: list[Any] = []
        async with make_pool(process=True) as pool:
            pid = only_pid(pool)
            with anyio.fail_after(DEADLINE):
                with pytest.raises(WorkerCrashed, match="SIGKILL") as info:
                    await collect(pool, "die_midstream", {"after": 3}, into=received)
                # the chunks written before the kill, in order (how many is a race)
                assert received == list(range(len(received)))
                assert len(received) <= 3
                assert info.value.pid == pid
                await pool.wait_ready()
                assert only_pid(pool) != pid
                await assert_serves(pool)
            assert pool.stats().crashes == 1

    async def test_a_crash_fails_only_the_stream_on_the_killed_worker(self) -> None:
        async with make_pool(process=True, size=2) as pool:
            with anyio.fail_after(DEADLINE):
                async with (
                    aclosing(pool.stream("hang_stream")) as doomed,
                    aclosing(pool.stream("tagged", {"tag": "s", "n": 3})) as survivor,
                ):
                    assert await anext(doomed) == 0
                    (busy,) = [w for w in pool.workers() if w.in_flight]
                    assert await anext(survivor) == "s:0"  # on the other worker
                    assert all(w.in_flight == 1 for w in pool.workers())
                    assert busy.pid is not None
                    os.kill(busy.pid, signal.SIGKILL)
                    with pytest.raises(WorkerCrashed):
                        await anext(doomed)
                    await assert_streaming_response(
                        survivor, ["s:1", "s:2"], chunk_timeout=CHUNK_TIMEOUT
                    )
                await pool.wait_ready()
                assert busy.pid not in {w.pid for w in pool.workers()}
                await assert_serves(pool)
            assert pool.stats().crashes == 1


class TestTimeout:
    async def test_a_timeout_is_execution_timeout_and_only_a_stuck_tool_costs_its_worker(
        self,
    ) -> None:
        async with make_pool(process=True) as pool:
            with anyio.fail_after(DEADLINE):
                # an async tool waiting on an event, and a sync one blocking its
                # thread until cancelled: both end when cancelled, the worker stays
                for n, (tool, args) in enumerate(
                    [("hang_stream", None), ("watched", watch("watched"))], 1
                ):
                    pid = only_pid(pool)
                    received: list[Any] = []
                    events = pool.subscribe()
                    with pytest.raises(ExecutionTimeout):
                        await collect(pool, tool, args, into=received, timeout=0.25)
                    assert received in ([], [0]), tool  # item 0 comes at once, unless loaded
                    async for event in events:  # over once the worker says it ended
                        if isinstance(event, RequestStopped):
                            assert event.outcome == "timeout"
                            break
                    events.close()
                    await assert_serves(pool)
                    assert only_pid(pool) == pid, tool
                    stats = pool.stats()
                    assert (stats.timeouts, stats.restarts, stats.errors) == (n, 0, 0), stats
                # a sync one deaf to its cancellation (stuck in C code): replaced
                pid = only_pid(pool)
                events = pool.subscribe()
                try:
                    with pytest.raises(ExecutionTimeout):
                        await collect(pool, "stuck_stream", None, into=[], timeout=0.25)
                    async for event in events:
                        if isinstance(event, WorkerReady):
                            break
                finally:
                    events.close()
                assert only_pid(pool) != pid
                await assert_serves(pool)
                stats = pool.stats()
                assert (stats.timeouts, stats.restarts, stats.errors) == (3, 1, 0), stats


class TestConcurrency:
    async def test_streams_interleave_item_by_item(self) -> None:
        async with make_pool(max_concurrency=2) as pool:
            with anyio.fail_after(DEADLINE):
                async with (
                    aclosing(pool.stream("tagged", {"tag": "a", "n": 20})) as a,
                    aclosing(pool.stream("atagged", {"tag": "b", "n": 20})) as b,
                ):
                    for i in range(20):
                        assert await anext(a) == f"a:{i}"
                        assert await anext(b) == f"b:{i}"
                    assert pool.stats().idle == 0
                    for stream in (a, b):  # and both end there
                        await assert_streaming_response(stream, [], chunk_timeout=CHUNK_TIMEOUT)
                await assert_serves(pool)

    async def test_a_stream_completes_while_another_runs_on_the_same_worker(self) -> None:
        async with make_pool(max_concurrency=2) as pool:
            pid = only_worker(pool)
            args = watch("awatched")
            with anyio.fail_after(DEADLINE):
                async with aclosing(pool.stream("awatched", args)) as open_stream:
                    assert await anext(open_stream) == 0
                    await assert_streaming_response(
                        pool.stream("count", {"n": 50}), range(50), chunk_timeout=CHUNK_TIMEOUT
                    )
                    assert await pool.execute("echo", {"value": "x"}) == "x"
                    assert pool.workers()[0].in_flight == 1
                assert await pool.execute("was_closed", args) is True
                await assert_serves(pool)
            assert only_worker(pool) == pid

    async def test_many_concurrent_streams(self) -> None:
        finished: set[str] = set()
        echoes: dict[int, Any] = {}
        async with make_pool(size=2, max_concurrency=3) as pool:
            with anyio.fail_after(DEADLINE):

                async def consume(tag: str, n: int) -> None:
                    tool = "tagged" if n % 2 else "atagged"
                    with noting(tag):
                        await assert_streaming_response(
                            pool.stream(tool, {"tag": tag, "n": n}),
                            [f"{tag}:{i}" for i in range(n)],
                            chunk_timeout=CHUNK_TIMEOUT,
                        )
                    finished.add(tag)

                async def call(i: int) -> None:
                    echoes[i] = await pool.execute("echo", {"value": i})

                async with anyio.create_task_group() as tg:
                    for k in range(16):
                        tg.start_soon(consume, f"s{k}", 20 + k)
                        tg.start_soon(call, k)
                assert finished == {f"s{k}" for k in range(16)}
                assert echoes == {k: k for k in range(16)}
                stats = pool.stats()
                assert (stats.requests, stats.errors, stats.crashes) == (32, 0, 0), stats
                await assert_serves(pool)
