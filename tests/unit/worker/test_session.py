"""The worker's side of sessions: ``Session``, ``ctx.session`` and ``AdapterService.end_sessions``.

Over the wire (both transports) in ``tests/unit/grpc/test_sessions.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from snakepit._wire._codec import decode, encode_into
from snakepit._wire._proto.snakepit.v1 import worker_pb2
from snakepit._wire._session import MetadataError, decode_metadata, encode_metadata
from snakepit.worker import Context, Session
from snakepit.worker import _context as context_module
from snakepit.worker._channel import FramesChannel
from snakepit.worker._service import AdapterService, _Ends
from tests.unit.grpc._session_adapters import AsyncSessionEnds, NoHook, SyncSessionEnds

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)

METADATA = {"user": "ada", "tags": [1, 2], "nested": {"k": "v"}}


def context(session: Session | None = None) -> Context:
    return Context(
        request_id=1,
        session_id="" if session is None else session.session_id,
        deadline=None,
        logger=logging.getLogger("t"),
        _session=session,
    )


class TestSession:
    def test_id_and_metadata(self) -> None:
        session = Session("s-1", encode_metadata(METADATA))
        assert session.session_id == "s-1"
        assert session.metadata == METADATA
        assert repr(session) == "Session('s-1')"

    def test_without_metadata_it_is_empty(self) -> None:
        assert Session("s").metadata == {}

    def test_from_a_mapping_it_holds_a_copy(self) -> None:
        given = {"tags": [1]}
        session = Session("s", given)
        given["tags"].append(2)
        assert session.metadata == {"tags": [1]}

    def test_metadata_is_decoded_on_first_read_only(self, monkeypatch: pytest.MonkeyPatch) -> None:
        decoded: list[bytes] = []
        real = decode_metadata

        def counting(data: bytes) -> dict[str, Any]:
            decoded.append(data)
            return real(data)

        monkeypatch.setattr(context_module, "decode_metadata", counting)
        session = Session("s", b'{"a":1}')
        assert decoded == []  # a call that never reads it pays nothing
        first = session.metadata
        assert session.metadata is first
        assert decoded == [b'{"a":1}']

    def test_bad_metadata_raises_on_read_naming_the_field(self) -> None:
        session = Session("s", b"{bad")  # not decoded yet: no error
        assert session.session_id == "s"
        with pytest.raises(MetadataError, match="session_metadata"):
            session.metadata  # noqa: B018

    def test_read_only(self) -> None:
        session = Session("s", encode_metadata(METADATA))
        with pytest.raises(TypeError):
            session.metadata["user"] = "bob"  # type: ignore[index]
        with pytest.raises(AttributeError):
            session.session_id = "t"  # type: ignore[misc]
        with pytest.raises(AttributeError):
            session.metadata = {}  # type: ignore[misc]
        with pytest.raises(AttributeError):
            session.other = 1  # type: ignore[attr-defined]

    def test_nested_values_are_this_sessions_own_copies(self) -> None:
        data = encode_metadata(METADATA)
        session = Session("s", data)
        session.metadata["tags"].append(3)
        session.metadata["nested"]["k"] = "changed"
        assert Session("s", data).metadata == METADATA
        assert METADATA == {"user": "ada", "tags": [1, 2], "nested": {"k": "v"}}


class TestContextSession:
    def test_none_outside_a_session(self) -> None:
        ctx = context()
        assert ctx.session is None
        assert ctx.session_id == ""

    def test_the_calls_session(self) -> None:
        session = Session("s-1")
        ctx = context(session)
        assert ctx.session is session
        assert ctx.session_id == "s-1"

    def test_read_only(self) -> None:
        ctx = context()
        with pytest.raises(AttributeError):
            ctx.session = Session("s")  # type: ignore[misc]


@pytest.fixture
async def service() -> AsyncIterator[Any]:
    made: list[AdapterService] = []

    def make(adapter: Any, max_concurrency: int = 1) -> AdapterService:
        adapter.setup()
        made.append(
            AdapterService(
                adapter, adapter_path="t:T", worker_id="w", max_concurrency=max_concurrency
            )
        )
        return made[-1]

    yield make
    for service in made:
        await service.aclose()


def request(
    tool: str, session_id: str = "", timeout: float = 0.0, **args: Any
) -> worker_pb2.ExecuteRequest:
    made = worker_pb2.ExecuteRequest(
        request_id=1, tool=tool, session_id=session_id, timeout=timeout
    )
    encode_into(made.args, args)
    return made


async def call(svc: AdapterService, tool: str, session_id: str = "", **args: Any) -> Any:
    """Run a unary call through the service; its result (or a failure naming its error)."""
    response = await svc.execute(request(tool, session_id, **args))
    assert not response.HasField("error"), response.error
    return decode(response.result)


async def stream(svc: AdapterService, tool: str, session_id: str = "", **args: Any) -> list[Any]:
    chunks = [chunk async for chunk in svc.stream(request(tool, session_id, **args))]
    assert chunks[-1].end, chunks[-1]
    return [decode(chunk.chunk) for chunk in chunks[:-1]]


class TestEndSessions:
    """``AdapterService.end_sessions``: the hooks, in order, in a task the service owns."""

    @pytest.mark.parametrize("cls", [SyncSessionEnds, AsyncSessionEnds])
    async def test_in_order_and_waited_for_by_wait_idle(self, service: Any, cls: type) -> None:
        adapter = cls()
        svc: AdapterService = service(adapter)
        svc.end_sessions(["a", "b"])
        svc.end_sessions(["c"])
        assert svc.ending_sessions == 3
        await svc.wait_idle()
        assert adapter.ended == ["a", "b", "c"]
        assert svc.ending_sessions == 0

    async def test_no_hook_costs_nothing(self, service: Any) -> None:
        svc: AdapterService = service(NoHook())
        svc.end_sessions(["a"])
        assert svc.ending_sessions == 0

    async def test_after_close_ids_are_ignored(self, service: Any) -> None:
        adapter = AsyncSessionEnds()
        svc: AdapterService = service(adapter)
        await svc.aclose()
        svc.end_sessions(["a"])
        assert svc.ending_sessions == 0
        await svc.wait_idle()
        assert adapter.ended == []

    async def test_aclose_cancels_a_running_hook_and_drops_the_rest(self, service: Any) -> None:
        adapter = AsyncSessionEnds()
        svc: AdapterService = service(adapter)
        svc.end_sessions(["hang", "hang"])  # the second end of "hang" waits for the first
        await adapter.started.wait()
        await svc.aclose()
        assert adapter.cancelled == ["hang"]
        assert adapter.ended == ["hang"]
        assert svc.ending_sessions == 0

    async def test_aclose_before_the_hooks_task_started(self, service: Any) -> None:
        adapter = AsyncSessionEnds()
        svc: AdapterService = service(adapter)
        svc.end_sessions(["a"])
        await svc.aclose()
        await svc.wait_idle()
        assert adapter.ended == []
        assert svc.ending_sessions == 0

    async def test_a_base_exception_from_a_sync_hook_is_logged_too(
        self, service: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        class Exits(SyncSessionEnds):
            def on_session_end(self, session_id: str) -> None:
                super().on_session_end(session_id)
                raise SystemExit(3)

        adapter = Exits()
        svc: AdapterService = service(adapter)
        with caplog.at_level(logging.ERROR, logger="snakepit.worker"):
            svc.end_sessions(["a", "b"])
            await svc.wait_idle()
        assert adapter.ended == ["a", "b"]
        assert [r.getMessage() for r in caplog.records] == [
            "on_session_end('a') raised SystemExit: 3",
            "on_session_end('b') raised SystemExit: 3",
        ]

    async def test_a_session_never_served_here_just_gets_the_hook(self, service: Any) -> None:
        adapter = AsyncSessionEnds()
        svc: AdapterService = service(adapter)
        svc.end_sessions(["elsewhere", "elsewhere"])  # a hint session served by another worker
        await svc.wait_idle()
        assert adapter.ended == ["elsewhere", "elsewhere"]
        assert svc._session_calls == {}
        assert svc._ends == {}


class TestEndWhileCallsRun:
    """A session's hook runs once no call of it runs here; a call of it waits for its hook."""

    @pytest.mark.parametrize("how", ["async", "sync", "stream"])
    @pytest.mark.parametrize("cls", [SyncSessionEnds, AsyncSessionEnds])
    async def test_the_hook_waits_for_the_sessions_running_call(
        self, service: Any, cls: type, how: str
    ) -> None:
        # Before: the hook ran while the call waited at its gate; what the call
        # stored afterwards was never freed.
        adapter = cls()
        svc: AdapterService = service(adapter, max_concurrency=2)
        if how == "stream":
            running = asyncio.ensure_future(stream(svc, "gated_stream", "s", value=1))
        else:
            tool = "gated_remember" if how == "async" else "sync_gated_remember"
            running = asyncio.ensure_future(call(svc, tool, "s", value=1))
        await adapter.gate_entered.wait()
        svc.end_sessions(["s", "other"])
        with anyio.fail_after(5):
            while "other" not in adapter.ended:  # another session's end does not wait
                adapter.changed.clear()
                await adapter.changed.wait()
        await anyio.wait_all_tasks_blocked()
        assert adapter.ended == ["other"]
        assert svc.ending_sessions >= 1  # "s" (and "other" if its thread's result is on its way)
        adapter.open_gate()
        await running
        await svc.wait_idle()
        assert adapter.ended == ["other", "s"]
        assert adapter.state == {}  # freed: the hook ran after the call stored it
        assert svc._session_calls == {}

    async def test_a_cancelled_sync_call_counts_until_its_thread_returned(
        self, service: Any
    ) -> None:
        adapter = AsyncSessionEnds()
        svc: AdapterService = service(adapter)
        running = asyncio.ensure_future(call(svc, "sync_gated_remember", "s", value=1))
        await adapter.gate_entered.wait()
        running.cancel()  # a unary call with nobody to answer: it does not wait for its thread
        with pytest.raises(asyncio.CancelledError):
            await running
        svc.end_sessions(["s"])
        await anyio.wait_all_tasks_blocked()
        assert adapter.ended == []  # its tool still runs in its thread
        adapter.open_gate()
        with anyio.fail_after(5):
            await svc.wait_idle()
        assert adapter.ended == ["s"]
        assert adapter.state == {}
        assert svc._session_calls == {}

    async def test_a_cancelled_stream_counts_until_its_generators_thread_returned(
        self, service: Any
    ) -> None:
        adapter = AsyncSessionEnds()
        svc: AdapterService = service(adapter)
        chunks = svc.stream(request("gated_stream", "s", value=1))
        assert decode((await chunks.__anext__()).chunk) == 1
        second = asyncio.ensure_future(chunks.__anext__())
        await adapter.gate_entered.wait()  # its next step runs in its thread
        second.cancel()  # nobody to answer: the stream ends without waiting for it
        with pytest.raises(asyncio.CancelledError):
            await second
        svc.end_sessions(["s"])
        await anyio.wait_all_tasks_blocked()
        assert adapter.ended == []
        adapter.open_gate()
        with anyio.fail_after(5):
            await svc.wait_idle()
        assert adapter.ended == ["s"]
        assert adapter.state == {}

    @pytest.mark.parametrize("cls", [SyncSessionEnds, AsyncSessionEnds])
    @pytest.mark.parametrize("streaming", [False, True])
    async def test_a_reused_id_waits_for_the_old_sessions_hook(
        self, service: Any, cls: type, streaming: bool
    ) -> None:
        # Before: the new session's call ran at once, and the old session's
        # hook, still running, then wiped what it stored.
        adapter = cls()
        svc: AdapterService = service(adapter, max_concurrency=2)
        svc.end_sessions(["hang"])  # the old "hang" ended; its hook is slow
        await adapter.started.wait()
        if streaming:
            new = asyncio.ensure_future(stream(svc, "gated_stream", "hang", value="new"))
            adapter.open_gate()
        else:
            new = asyncio.ensure_future(call(svc, "remember", "hang", value="new"))
        # A call of another session does not wait.
        assert await call(svc, "session_id_only", "other") == "other"
        await anyio.wait_all_tasks_blocked()
        assert not new.done()
        assert adapter.state == {}
        adapter.release()
        with anyio.fail_after(5):
            await new
            await svc.wait_idle()
        assert adapter.state == {"hang": "new"}
        assert adapter.ended == ["hang"]
        assert svc._session_calls == {}
        assert svc._ends == {}

    async def test_a_call_waiting_for_a_hook_keeps_its_deadline(self, service: Any) -> None:
        # Its tool never started: NOT_STARTED (the host's QueueTimeout), not
        # DEADLINE_EXCEEDED (an ExecutionTimeout, which replaces the worker).
        adapter = AsyncSessionEnds()
        svc: AdapterService = service(adapter)
        svc.end_sessions(["hang"])
        await adapter.started.wait()
        with anyio.fail_after(5):
            response = await svc.execute(request("remember", "hang", timeout=0.001, value=1))
            chunks = [c async for c in svc.stream(request("gated_stream", "hang", 0.001, value=1))]
        assert response.error.kind == worker_pb2.ErrorInfo.Kind.NOT_STARTED
        assert "the tool did not run" in response.error.message
        assert [c.error.kind for c in chunks] == [worker_pb2.ErrorInfo.Kind.NOT_STARTED]
        adapter.release()
        await svc.wait_idle()
        assert adapter.state == {}
        assert svc._session_calls == {}

    async def test_a_call_waiting_for_a_hook_can_be_cancelled(self, service: Any) -> None:
        adapter = AsyncSessionEnds()
        svc: AdapterService = service(adapter)
        svc.end_sessions(["hang"])
        await adapter.started.wait()
        waiting = asyncio.ensure_future(call(svc, "remember", "hang", value=1))
        await anyio.wait_all_tasks_blocked()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert svc.in_flight == 0
        adapter.release()
        await svc.wait_idle()
        assert adapter.state == {}
        assert svc._session_calls == {}

    async def test_a_call_let_in_then_cancelled_before_it_resumed_is_not_counted(
        self, service: Any
    ) -> None:
        svc: AdapterService = service(AsyncSessionEnds())
        ends = _Ends()
        ends.queued = 1
        svc._ends["s"] = ends
        admission = svc.admit(request("remember", "s", value=1))
        waiting = asyncio.ensure_future(svc.execute(request("remember", "s", value=1), admission))
        await anyio.wait_all_tasks_blocked()
        [(number, waiter)] = ends.waiters
        assert number == 1
        # What the session's end task does once the hook ran, then a cancel
        # that comes before the call resumed.
        waiter.set_result(None)
        svc._session_calls["s"] = 1
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert svc._session_calls == {}
        del svc._ends["s"]

    async def test_a_call_waiting_for_a_hook_is_refused_when_the_service_closes(
        self, service: Any
    ) -> None:
        adapter = AsyncSessionEnds()
        svc: AdapterService = service(adapter)
        svc.end_sessions(["hang"])
        await adapter.started.wait()
        waiting = asyncio.ensure_future(svc.execute(request("remember", "hang", value=1)))
        await anyio.wait_all_tasks_blocked()
        await svc.aclose()
        response = await waiting
        assert response.error.kind == worker_pb2.ErrorInfo.Kind.UNAVAILABLE
        assert adapter.state == {}

    async def test_ends_and_calls_of_one_session_keep_their_order(self, service: Any) -> None:
        # end 1, a call, end 2: the call runs after the first hook and before the second.
        adapter = AsyncSessionEnds()
        svc: AdapterService = service(adapter)
        svc.end_sessions(["hang"])
        await adapter.started.wait()
        between = asyncio.ensure_future(call(svc, "gated_remember", "hang", value=1))
        await anyio.wait_all_tasks_blocked()
        svc.end_sessions(["hang"])
        assert svc.ending_sessions == 2
        adapter.release()
        await adapter.gate_entered.wait()  # the call runs: the second end waits for it
        await anyio.wait_all_tasks_blocked()
        assert adapter.ended == ["hang"]
        adapter.open_gate()
        await between
        await svc.wait_idle()
        assert adapter.ended == ["hang", "hang"]
        assert adapter.state == {}


class TestHooksDoNotBlock:
    """A slow or hung hook holds neither a tool thread nor the other sessions' ends."""

    async def test_a_hung_sync_hook_does_not_take_a_tool_thread(self, service: Any) -> None:
        # Before: it ran on the only tool thread, and the next sync call hung.
        adapter = SyncSessionEnds()
        svc: AdapterService = service(adapter)  # one tool thread
        svc.end_sessions(["hang"])
        try:
            await adapter.started.wait()
            with anyio.fail_after(5):
                assert await call(svc, "session_id_only", "x") == "x"  # a sync tool
            assert adapter.threads == ["snakepit-session-end-0"]
        finally:
            adapter.release()
        await svc.wait_idle()

    async def test_sync_hooks_run_on_the_hook_thread_in_order(self, service: Any) -> None:
        adapter = SyncSessionEnds()
        svc: AdapterService = service(adapter)
        svc.end_sessions(["a", "b", "a"])
        await svc.wait_idle()
        assert adapter.ended == ["a", "b", "a"]
        assert set(adapter.threads) == {"snakepit-session-end-0"}

    async def test_a_hung_async_hook_does_not_hold_other_sessions_ends(self, service: Any) -> None:
        # Before: hooks ran one after another, and "a" waited for "hang" forever.
        adapter = AsyncSessionEnds()
        svc: AdapterService = service(adapter)
        svc.end_sessions(["hang", "a"])
        svc.end_sessions(["hang", "b"])
        await adapter.started.wait()
        await anyio.wait_all_tasks_blocked()
        assert adapter.ended == ["hang", "a", "b"]  # the second "hang" waits for the first
        assert svc.ending_sessions == 2
        adapter.release()
        await svc.wait_idle()
        assert adapter.ended == ["hang", "a", "b", "hang"]
        assert svc.ending_sessions == 0


async def serve_frames(svc: AdapterService, *frames: worker_pb2.ClientFrame) -> list[Any]:
    """Serve ``frames`` (read at once, as if buffered); each reply's result or error kind."""
    sent: list[worker_pb2.ServerFrame] = []

    async def write(frame: worker_pb2.ServerFrame) -> None:
        sent.append(frame)

    async def read() -> AsyncIterator[worker_pb2.ClientFrame]:
        for frame in frames:
            yield frame

    with anyio.fail_after(5):
        await FramesChannel(svc, write).run(read())
    return [
        r.error.kind if r.HasField("error") else decode(r.result)
        for frame in sent
        for r in frame.responses
    ]


def frame(
    *calls: worker_pb2.ExecuteRequest, ends: tuple[str, ...] = (), cancel: tuple[int, ...] = ()
) -> worker_pb2.ClientFrame:
    return worker_pb2.ClientFrame(execute=calls, end_sessions=ends, cancel=cancel)


class TestWireOrder:
    """A channel admits each call as it reads it: the wire's order of calls and ends is kept."""

    @pytest.mark.parametrize("cls", [SyncSessionEnds, AsyncSessionEnds])
    async def test_a_call_read_before_its_sessions_end_runs_before_the_hook(
        self, service: Any, cls: type
    ) -> None:
        # Before: the end, read before the call's task first ran, found no call
        # running; the hook ran first and what the call stored was never freed.
        adapter = cls()
        svc: AdapterService = service(adapter)
        replies = await serve_frames(
            svc, frame(request("remember", "s", value=1)), frame(ends=("s",))
        )
        assert replies == [None]
        await svc.wait_idle()
        assert adapter.ended == ["s"]
        assert adapter.state == {}  # freed: the hook ran after the call
        assert svc._session_calls == {}

    async def test_a_call_read_after_its_sessions_end_runs_after_the_hook(
        self, service: Any
    ) -> None:
        adapter = AsyncSessionEnds()
        svc: AdapterService = service(adapter)
        replies = await serve_frames(
            svc, frame(ends=("s",)), frame(request("remember", "s", value=2))
        )
        assert replies == [None]
        await svc.wait_idle()
        assert adapter.ended == ["s"]
        assert adapter.state == {"s": 2}
        assert svc._session_calls == {}

    @pytest.mark.parametrize("pending_end", [False, True])
    async def test_a_call_cancelled_before_its_task_ran_gives_its_admission_back(
        self, service: Any, pending_end: bool
    ) -> None:
        adapter = AsyncSessionEnds()
        svc: AdapterService = service(adapter)
        first = (frame(ends=("s",)),) if pending_end else ()
        replies = await serve_frames(
            svc, *first, frame(request("remember", "s", value=1), cancel=(1,)), frame(ends=("s",))
        )
        assert replies == [worker_pb2.ErrorInfo.Kind.CANCELLED]
        with anyio.fail_after(5):
            await svc.wait_idle()  # the last end did not wait for a call that never ran
        assert adapter.ended == (["s", "s"] if pending_end else ["s"])
        assert adapter.state == {}
        assert svc._session_calls == {}
        assert svc._ends == {}
