"""Sessions on the wire: ``ctx.session``, and ``Multiplexer.end_session`` -> ``on_session_end``.

Every test serves an adapter of ``_session_adapters`` in the test's own loop
(the same ``AdapterServer`` a worker process runs) and talks to it through a
:class:`Multiplexer` on each transport (the ``Channel`` RPC, the frames socket).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
import pytest

from snakepit._wire._auth import new_secret
from snakepit._wire._session import encode_metadata
from snakepit.errors import InvalidArguments, QueueTimeout, WorkerUnavailable
from snakepit.pool._connection import Multiplexer, open_frames_multiplexer
from snakepit.pool._worker_connection import WorkerConnection
from snakepit.worker import AdapterServer

from ._session_adapters import AsyncSessionEnds, NoHook, SyncSessionEnds, _SessionTools

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

A = TypeVar("A", bound=_SessionTools)

METADATA = {"user": "ada", "tags": [1, 2.5, None, True], "nested": {"k": "é", "n": {}}}


@dataclass
class Served:
    """An adapter served in-process and a Multiplexer to it."""

    adapter: Any
    server: AdapterServer
    mux: Multiplexer


class Serve(Protocol):
    """Serves an adapter class (with ``max_concurrency`` slots) and connects to it."""

    def __call__(self, cls: type[_SessionTools], max_concurrency: int = 1) -> Awaitable[Served]:
        """Serve ``cls``."""
        ...


@pytest.fixture(params=["grpc", "frames"])
async def serve(request: pytest.FixtureRequest, sock_dir: Path) -> AsyncIterator[Serve]:
    """Serves an adapter class in-process; a Multiplexer to it over this run's transport."""
    async with _serving(sock_dir, request.param) as serve:
        yield serve


@asynccontextmanager
async def _serving(sock_dir: Path, transport: str) -> AsyncIterator[Serve]:
    opened: list[tuple[AdapterServer, WorkerConnection, Multiplexer]] = []

    async def serve(cls: type[_SessionTools], max_concurrency: int = 1) -> Served:
        adapter = cls()
        adapter.setup()
        secret = new_secret()
        server = await AdapterServer.start(
            adapter,
            listen=f"unix:{sock_dir}/s{len(opened)}.sock",
            adapter_path=f"tests.unit.grpc._session_adapters:{cls.__name__}",
            worker_id=f"s{len(opened)}",
            secret=secret,
            max_concurrency=max_concurrency,
        )
        client = WorkerConnection(server.address, secret=secret)
        if transport == "grpc":
            mux = client.multiplexer()
        else:
            assert server.frames_address is not None
            mux = await open_frames_multiplexer(server.frames_address, secret=secret)
        opened.append((server, client, mux))
        return Served(adapter, server, mux)

    try:
        yield serve
    finally:
        for server, client, mux in opened:
            await mux.aclose()
            await client.aclose()
            await server.abort()


class TestContextSession:
    """What a tool sees of its session: ``ctx.session`` and ``ctx.session_id``."""

    async def test_a_call_sees_its_session_and_metadata(self, serve: Serve) -> None:
        mux = (await serve(NoHook)).mux
        view = await mux.execute(
            "session_view", session_id="s-1", session_metadata=encode_metadata(METADATA)
        )
        assert view == {
            "session_id": "s-1",
            "has_session": True,
            "id_matches": True,
            "metadata": METADATA,
        }
        assert (
            await mux.execute(
                "async_session_metadata",
                session_id="s-1",
                session_metadata=encode_metadata(METADATA),
            )
            == METADATA
        )
        items = [
            item
            async for item in mux.stream(
                "session_stream", session_id="s-1", session_metadata=b'{"b":2,"a":1}'
            )
        ]
        assert items == [["a", 1], ["b", 2]]

    async def test_a_call_outside_a_session_has_none(self, serve: Serve) -> None:
        mux = (await serve(NoHook)).mux
        view = await mux.execute("session_view")
        assert view == {
            "session_id": "",
            "has_session": False,
            "id_matches": False,
            "metadata": None,
        }
        # Metadata without a session id: no session either (nothing decodes it).
        assert (await mux.execute("session_view", session_metadata=b"{bad"))["has_session"] is False

    async def test_a_session_without_metadata_has_an_empty_mapping(self, serve: Serve) -> None:
        mux = (await serve(NoHook)).mux
        view = await mux.execute("session_view", session_id="s-2")
        assert view["has_session"] is True
        assert view["metadata"] == {}

    @pytest.mark.parametrize(
        "bad", [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe{}", b'{"x": NaN}']
    )
    async def test_bad_metadata_refuses_only_the_calls_that_read_it(
        self, serve: Serve, bad: bytes
    ) -> None:
        mux = (await serve(NoHook)).mux
        # Decoded on first read only: a tool that never looks is not refused.
        assert await mux.execute("session_id_only", session_id="s", session_metadata=bad) == "s"
        for tool in ("session_view", "async_session_metadata"):
            with pytest.raises(InvalidArguments, match="session_metadata"):
                await mux.execute(tool, session_id="s", session_metadata=bad)
        with pytest.raises(InvalidArguments, match="session_metadata"):
            async for _ in mux.stream("session_stream", session_id="s", session_metadata=bad):
                pass
        # The worker goes on serving.
        view = await mux.execute("session_view", session_id="s", session_metadata=b'{"a":1}')
        assert view["metadata"] == {"a": 1}


class TestEndSession:
    """``Multiplexer.end_session`` -> ``ClientFrame.end_sessions`` -> ``Adapter.on_session_end``."""

    @pytest.mark.parametrize("cls", [SyncSessionEnds, AsyncSessionEnds])
    async def test_the_hook_runs_for_each_id_in_order(
        self, serve: Serve, cls: type[_SessionTools]
    ) -> None:
        served = await serve(cls)
        mux = served.mux
        mux.end_session("a")
        mux.end_session("b")  # a and b in one frame
        assert await mux.execute("wait_ended", {"n": 2}) == ["a", "b"]
        for sid in ("c", "d", "e"):
            mux.end_session(sid)
        assert await mux.execute("wait_ended", {"n": 5}) == ["a", "b", "c", "d", "e"]
        if cls is SyncSessionEnds:  # on the hook thread, never on a tool thread
            assert set(served.adapter.threads) == {"snakepit-session-end-0"}

    async def test_ids_queued_in_one_loop_pass_share_a_frame(self, serve: Serve) -> None:
        mux = (await serve(AsyncSessionEnds)).mux
        mux.end_session("x")
        mux.end_session("y")
        queued = mux._batch.frame  # not sent before the end of this loop pass
        assert list(queued.end_sessions) == ["x", "y"]
        assert await mux.execute("wait_ended", {"n": 2}) == ["x", "y"]

    @pytest.mark.parametrize("cls", [SyncSessionEnds, AsyncSessionEnds])
    async def test_a_raising_hook_is_logged_on_one_line_and_the_worker_serves_on(
        self, serve: Serve, cls: type[_SessionTools], caplog: pytest.LogCaptureFixture
    ) -> None:
        mux = (await serve(cls)).mux
        with caplog.at_level(logging.ERROR, logger="snakepit.worker"):
            for sid in ("a", "boom-1", "c"):
                mux.end_session(sid)
            assert await mux.execute("wait_ended", {"n": 3}) == ["a", "boom-1", "c"]
            # The hook of "c" ran after the one that raised: its log record is in.
        records = [r for r in caplog.records if r.name == "snakepit.worker"]
        assert len(records) == 1, records
        line = records[0].getMessage()
        assert "'boom-1'" in line
        assert (
            "RuntimeError: cannot free boom-1" if cls is SyncSessionEnds else "KeyError"
        ) in line
        assert "\n" not in line
        assert records[0].exc_info is None
        view = await mux.execute("session_view", session_id="s", session_metadata=b'{"a":1}')
        assert view["metadata"] == {"a": 1}

    async def test_an_adapter_without_a_hook_ignores_ended_sessions(self, serve: Serve) -> None:
        served = await serve(NoHook)
        served.mux.end_session("a")
        assert await served.mux.execute("session_id_only", session_id="b") == "b"
        assert served.server._service.ending_sessions == 0
        assert served.adapter.ended == []

    async def test_a_closed_or_broken_multiplexer_ignores_end_session(self, serve: Serve) -> None:
        served = await serve(NoHook)
        mux = served.mux
        await mux.aclose()
        mux.end_session("a")  # no error: the worker's state is gone with it
        assert not mux._batch.pending
        broken = await serve(NoHook)
        await broken.server.abort()
        with pytest.raises(WorkerUnavailable):
            await broken.mux.execute("session_id_only", session_id="s")
        broken.mux.end_session("a")
        assert not broken.mux._batch.pending

    async def test_an_empty_id_is_not_sent(self, serve: Serve) -> None:
        mux = (await serve(NoHook)).mux
        mux.end_session("")
        assert not mux._batch.pending

    async def test_an_async_hook_running_when_the_worker_stops_is_cancelled(
        self, serve: Serve
    ) -> None:
        served = await serve(AsyncSessionEnds)
        served.mux.end_session("hang")
        served.mux.end_session("hang")  # the same session's next end: dropped at the stop
        await served.mux.execute("wait_hook_started")
        with anyio.fail_after(10):
            await served.server.abort()
        assert served.adapter.cancelled == ["hang"]
        assert served.adapter.ended == ["hang"]

    async def test_a_sync_hook_running_when_the_worker_stops_is_abandoned(
        self, serve: Serve
    ) -> None:
        served = await serve(SyncSessionEnds)
        served.mux.end_session("hang")
        await served.mux.execute("wait_hook_started")
        try:
            with anyio.fail_after(10):
                await served.server.abort()  # does not wait for the thread
        finally:
            served.adapter.release()

    async def test_a_graceful_stop_lets_a_pending_hook_finish(self, serve: Serve) -> None:
        served = await serve(AsyncSessionEnds)
        served.mux.end_session("hang")
        await served.mux.execute("wait_hook_started")
        stopping = asyncio.ensure_future(served.server.stop(grace=30))
        await anyio.wait_all_tasks_blocked()
        assert not stopping.done()  # waiting for the hook
        served.adapter.release()
        with anyio.fail_after(10):
            await stopping
        assert served.adapter.cancelled == []
        assert served.adapter.ended == ["hang"]


class TestEndWhileCallsRun:
    """Over the wire: a session's hook waits for its calls, and its calls for its hook."""

    @pytest.mark.parametrize("tool", ["gated_remember", "gated_stream"])
    @pytest.mark.parametrize("cls", [SyncSessionEnds, AsyncSessionEnds])
    async def test_the_hook_waits_for_the_sessions_running_call(
        self, serve: Serve, cls: type[_SessionTools], tool: str
    ) -> None:
        # Before: the hook ran while the call waited at its gate, and what the
        # call stored then was never freed.
        served = await serve(cls, max_concurrency=4)
        mux = served.mux
        async with anyio.create_task_group() as tg:
            if tool == "gated_stream":

                async def consume() -> None:
                    assert [i async for i in mux.stream(tool, {"value": 1}, session_id="s")] == [
                        1,
                        2,
                    ]

                tg.start_soon(consume)
            else:
                tg.start_soon(functools.partial(mux.execute, tool, {"value": 1}, session_id="s"))
            await mux.execute("wait_gate_entered")
            mux.end_session("s")
            mux.end_session("other")
            assert await mux.execute("wait_ended", {"n": 1}) == ["other"]
            await mux.execute("open_gate")
        assert await mux.execute("wait_ended", {"n": 2}) == ["other", "s"]
        assert await mux.execute("held") == {}

    @pytest.mark.parametrize("cls", [SyncSessionEnds, AsyncSessionEnds])
    async def test_a_reused_id_waits_for_the_old_sessions_hook(
        self, serve: Serve, cls: type[_SessionTools]
    ) -> None:
        # Before: the new "hang" stored its value at once, and the old one's
        # hook, still running, wiped it.
        served = await serve(cls, max_concurrency=4)
        mux = served.mux
        mux.end_session("hang")
        await mux.execute("wait_hook_started")
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                functools.partial(mux.execute, "remember", {"value": "new"}, session_id="hang")
            )
            assert await mux.execute("session_id_only", session_id="other") == "other"
            await mux.execute("release_hooks")
        await served.server._service.wait_idle()
        assert await mux.execute("held") == {"hang": "new"}
        assert served.adapter.ended == ["hang"]

    async def test_a_hung_sync_hook_does_not_take_a_tool_thread(self, serve: Serve) -> None:
        # Before: it held the worker's only tool thread; the next sync call hung.
        served = await serve(SyncSessionEnds)
        served.mux.end_session("hang")
        try:
            await served.mux.execute("wait_hook_started")
            with anyio.fail_after(5):
                assert await served.mux.execute("ended_sessions") == ["hang"]  # a sync tool
        finally:
            served.adapter.release()

    async def test_a_hung_async_hook_does_not_hold_other_sessions_ends(self, serve: Serve) -> None:
        # Before: "a" waited behind "hang" for ever.
        served = await serve(AsyncSessionEnds)
        mux = served.mux
        mux.end_session("hang")
        mux.end_session("a")
        with anyio.fail_after(5):
            assert await mux.execute("wait_ended", {"n": 2}) == ["hang", "a"]
        assert served.server._service.ending_sessions == 1
        await mux.execute("release_hooks")


class TestCallAfterAnEnd:
    """A call of a session sent after that session's end: it runs after the hook, or not at all."""

    async def test_a_call_whose_timeout_passes_while_it_waits_for_the_hook_is_a_queue_timeout(
        self, serve: Serve
    ) -> None:
        # Before: ExecutionTimeout (the host's timer, or DEADLINE_EXCEEDED),
        # and the pool replaced the healthy worker, killing its other calls.
        served = await serve(AsyncSessionEnds, max_concurrency=2)
        mux = served.mux
        mux.end_session("hang")  # the old session's hook is slow
        await mux.execute("wait_hook_started")
        with anyio.fail_after(5), pytest.raises(QueueTimeout, match="the tool did not run"):
            await mux.execute("remember", {"value": "new"}, session_id="hang", timeout=0.2)
        with anyio.fail_after(5), pytest.raises(QueueTimeout, match="the tool did not run"):
            async for _ in mux.stream(
                "gated_stream", {"value": "new"}, session_id="hang", timeout=0.2
            ):
                pass
        assert served.server._service.in_flight == 0
        await mux.execute("release_hooks")
        await served.server._service.wait_idle()
        assert served.adapter.state == {}  # neither tool ran
        assert served.server._service._session_calls == {}

    async def test_an_end_then_a_call_of_its_session_in_one_loop_pass_go_in_two_frames(
        self, serve: Serve
    ) -> None:
        # Before: one frame; the worker, which reads a frame's calls before its
        # ends, ran the call first and the old session's hook then freed the
        # new session's state.
        served = await serve(AsyncSessionEnds)
        mux = served.mux
        # Queued with no await in between (one loop pass); nothing is sent yet.
        mux.end_session("s")
        mux._queue("execute", "remember", {"value": "new"}, None, "s", b"")
        mux._queue("execute", "remember", {"value": 1}, None, "other", b"")
        mux.end_session("t")
        mux._queue("execute", "remember", {"value": 2}, None, "t", b"")
        frames = list(mux._batch._frames)
        assert [list(f.end_sessions) for f in frames] == [["s"], ["t"], []]
        assert [[r.session_id for r in f.execute] for f in frames] == [[], ["s", "other"], ["t"]]
        assert await mux.execute("wait_ended", {"n": 2}) == ["s", "t"]
        await served.server._service.wait_idle()
        assert served.adapter.state == {"s": "new", "other": 1, "t": 2}

    async def test_a_call_right_after_its_sessions_end_runs_after_the_hook(
        self, serve: Serve
    ) -> None:
        served = await serve(AsyncSessionEnds)
        mux = served.mux
        mux.end_session("s")
        await mux.execute("remember", {"value": "new"}, session_id="s")  # the same loop pass
        await served.server._service.wait_idle()
        assert served.adapter.ended == ["s"]
        assert served.adapter.state == {"s": "new"}
