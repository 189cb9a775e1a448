"""The bridge's framed lane: BridgeServer's frames socket, and HostBridge on it.

A session store (memory backend) and a BridgeServer in the test's loop; the
worker's client (HostBridge) and raw frame connections, as a worker and as
processes that are not one.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from snakepit._wire._address import frames_path
from snakepit._wire._auth import new_secret
from snakepit._wire._bridge import to_wire, worker_token
from snakepit._wire._frames import (
    HIGH_WATER,
    SLACK,
    FrameError,
    FrameSplitter,
    pack,
    read_frame,
)
from snakepit._wire._proto.snakepit.v1 import bridge_pb2
from snakepit.errors import BridgeUnavailable, HostToolFailed, HostToolNotFound
from snakepit.pool._bridge import BridgeArgs, BridgeServer, HostTools
from snakepit.session import (
    MemoryBackend,
    SessionStore,
    SessionStoreConfig,
    SessionStoreRef,
    VariableSpec,
)
from snakepit.worker import HostBridge

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio, asyncio protocols

Kind = bridge_pb2.BridgeFailure.Kind
Request = bridge_pb2.BridgeRequest


@dataclass
class Lane:
    store: SessionStoreRef
    tools: HostTools
    secret: bytes
    path: str  # the gRPC socket's
    session_id: str
    server: BridgeServer
    clients: list[HostBridge] = field(default_factory=list)

    @property
    def lane_path(self) -> str:
        return frames_path(self.path)

    def client(self, worker_id: str = "w0", token: str | None = None, **kw: Any) -> HostBridge:
        """A worker's client (closed by the fixture)."""
        token = worker_token(self.secret, worker_id) if token is None else token
        made = HostBridge(f"unix:{self.path}", token, worker_id, **kw)
        self.clients.append(made)
        return made

    async def restart(self, **kw: Any) -> None:
        """Stop the server and serve again at the same path."""
        await self.server.aclose(grace=0)
        self.server = await BridgeServer.start(
            self.path, sessions=self.store, tools=self.tools, secret=self.secret, **kw
        )

    def set_request(self, name: str, value: Any) -> bridge_pb2.SetVariablesRequest:
        return bridge_pb2.SetVariablesRequest(
            session_id=self.session_id,
            values=[bridge_pb2.BridgeVariable(name=name, value_json=json.dumps(value))],
        )


@pytest.fixture
async def lane(sock_dir: Path) -> AsyncIterator[Lane]:
    config = SessionStoreConfig(backend=MemoryBackend(), clock=anyio.current_time)
    tools = HostTools()
    secret = new_secret()
    path = str(sock_dir / "b.sock")
    async with SessionStore.running(config) as store:
        server = await BridgeServer.start(path, sessions=store, tools=tools, secret=secret)
        made = Lane(store, tools, secret, path, (await store.create()).session_id, server)
        try:
            yield made
        finally:
            for client in made.clients:
                await client.aclose()
            await made.server.aclose(grace=0)


def wire(name: str, type_: str, value: Any) -> bridge_pb2.BridgeVariable:
    spec = VariableSpec.make(name, type_)
    return to_wire(name, spec.to_json(), spec.encode(value))


async def raw(lane: Lane) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(lane.lane_path)


async def replies(reader: asyncio.StreamReader) -> list[bridge_pb2.BridgeReply]:
    """Every reply until the host closes the connection."""
    out = []
    while (reply := await read_frame(reader, bridge_pb2.BridgeReply, 1 << 20)) is not None:
        out.append(reply)
    return out


def hello(worker_id: str, token: str) -> Request:
    return Request(id=0, hello=bridge_pb2.BridgeHello(worker_id=worker_id, token=token))


class TestAuth:
    async def test_no_hello_or_a_wrong_token_is_refused_and_closed(self, lane: Lane) -> None:
        get = Request(
            id=7, get_variables=bridge_pb2.GetVariablesRequest(session_id=lane.session_id)
        )
        w0 = worker_token(lane.secret, "w0")
        for first in (
            get,  # no hello
            hello("w0", new_secret().hex()),
            hello("w1", w0),  # another worker's token
            hello("w0", lane.secret.hex()),  # the pool's secret is no token
            hello("", w0),
            hello("w0", "é" * 64),
        ):
            reader, writer = await raw(lane)
            writer.write(pack(first) + pack(get))  # a call right behind: never run
            got = await replies(reader)
            writer.close()
            assert [(r.id, r.refused.error_type) for r in got] == [(first.id, "PERMISSION_DENIED")]
            assert "token is needed" in got[0].refused.message

    async def test_a_connection_that_sends_no_hello_is_closed(
        self, lane: Lane, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Before: it stayed open for ever (a descriptor of the host's each).
        from snakepit.pool import _bridge_lane

        monkeypatch.setattr(_bridge_lane, "HELLO_TIMEOUT", 0.0)
        reader, writer = await raw(lane)
        assert await replies(reader) == []  # closed by the host, without a word
        writer.close()

    async def test_a_worker_with_a_wrong_token_gets_bridge_unavailable(self, lane: Lane) -> None:
        client = lane.client("w1", token=worker_token(lane.secret, "w0"))
        with pytest.raises(BridgeUnavailable, match="refused this worker"):
            await client.call_host("x", {}, "")

    async def test_frames_that_are_not_requests_close_the_connection(self, lane: Lane) -> None:
        for junk in (b"\x05\x00\x00\x00\xff\xff\xff\xff\xff", (1 << 31).to_bytes(4, "little")):
            reader, writer = await raw(lane)
            writer.write(junk)
            assert await replies(reader) == []
            writer.close()


class TestCalls:
    async def test_each_kind_of_call(self, lane: Lane) -> None:
        client, sid = lane.client("w3"), lane.session_id
        registered = await client._request(
            "register_variable",
            bridge_pb2.RegisterVariableRequest(session_id=sid, variable=wire("n", "integer", 1)),
        )
        assert (registered.variable.version, registered.variable.source) == (1, "w3")
        written = await client._request("set_variables", lane.set_request("n", 2))
        assert [v.version for v in written.variables] == [2]
        assert await lane.store.variables(sid).get("n") == 2
        stale = bridge_pb2.BridgeVariable(
            name="n", value_json="3", uid=registered.variable.uid, version=1
        )
        conflict = await client._request(
            "set_variables", bridge_pb2.SetVariablesRequest(session_id=sid, values=[stale])
        )
        assert conflict.conflict
        got = await client._request(
            "get_variables", bridge_pb2.GetVariablesRequest(session_id=sid, all=True)
        )
        assert [(v.name, v.value_json) for v in got.variables] == [("n", "2")]
        invalid = await client._request("set_variables", lane.set_request("n", "x"))
        assert invalid.failure.kind == Kind.VALIDATION  # the caller's to map
        deleted = await client._request(
            "delete_variable", bridge_pb2.DeleteVariableRequest(session_id=sid, name="n")
        )
        assert not deleted.HasField("failure")
        gone = await client._request(
            "get_variables", bridge_pb2.GetVariablesRequest(session_id="nope")
        )
        assert gone.failure.kind == Kind.SESSION_NOT_FOUND

        async def whose(session_id: str) -> str:
            return session_id

        lane.tools.register(whose)
        assert await client.call_host("whose", None, sid) == sid

    async def test_host_tools_failing_are_typed(self, lane: Lane) -> None:
        def fails() -> None:
            raise KeyError("on purpose")

        lane.tools.register(fails)
        client = lane.client()
        with pytest.raises(HostToolFailed, match="KeyError") as failed:
            await client.call_host("fails", {}, "")
        assert failed.value.error_type == "KeyError"
        with pytest.raises(HostToolNotFound, match="'fails'"):
            await client.call_host("nope", {}, "")

    async def test_calls_run_concurrently_and_are_answered_out_of_order(self, lane: Lane) -> None:
        release = asyncio.Event()
        entered = asyncio.Event()

        async def slow() -> str:
            entered.set()
            await release.wait()
            return "slow"

        lane.tools.register(slow)
        await lane.store.variables(lane.session_id).register("n", "integer", 5)
        client = lane.client()
        done: list[str] = []

        async def call_slow() -> None:
            done.append(await client.call_host("slow", {}, ""))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call_slow)
            await entered.wait()
            got = await client._request(
                "get_variables",
                bridge_pb2.GetVariablesRequest(session_id=lane.session_id, names=["n"]),
            )
            done.append(got.variables[0].value_json)
            release.set()
        assert done == ["5", "slow"]

    async def test_a_raw_connection_gets_replies_by_id_in_completion_order(
        self, lane: Lane
    ) -> None:
        release = asyncio.Event()

        async def slow() -> int:
            await release.wait()
            return 1

        lane.tools.register(slow)
        reader, writer = await raw(lane)
        worker = "w0"
        slow_call = bridge_pb2.CallHostToolRequest(name="slow", args_json=b"{}")
        fast = bridge_pb2.GetVariablesRequest(session_id=lane.session_id, all=True)
        writer.write(
            pack(hello(worker, worker_token(lane.secret, worker)))
            + pack(Request(id=1, call_host_tool=slow_call))
            + pack(Request(id=2, get_variables=fast))
            + pack(Request(id=2, get_variables=fast))  # an id in flight: refused
            + pack(Request(id=3))  # no call at all: refused
        )
        first = [await read_frame(reader, bridge_pb2.BridgeReply, 1 << 20) for _ in range(3)]
        assert sorted((r.id, r.WhichOneof("reply")) for r in first if r is not None) == [
            (2, "get_variables"),
            (2, "refused"),
            (3, "refused"),
        ]
        release.set()
        last = await read_frame(reader, bridge_pb2.BridgeReply, 1 << 20)
        assert last is not None
        assert (last.id, json.loads(last.call_host_tool.result_json)) == (1, 1)
        writer.close()


class TestTransportTrouble:
    async def test_the_host_gone_mid_call_then_a_restart(self, lane: Lane) -> None:
        entered = asyncio.Event()
        cancelled = asyncio.Event()

        async def hangs() -> None:
            entered.set()
            try:
                await asyncio.Event().wait()  # never set
            finally:
                cancelled.set()

        lane.tools.register(hangs)
        client = lane.client()
        seen: list[BaseException] = []

        async def call() -> None:
            try:
                await client.call_host("hangs", {}, "")
            except BridgeUnavailable as exc:
                seen.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await entered.wait()
            await lane.restart()
        assert cancelled.is_set()  # the host's stop ended the handler
        assert len(seen) == 1
        assert "closed the connection" in str(seen[0])
        # The bridge serves again (its supervisor restarted it): the next call reconnects.
        got = await client._request("get_variables", bridge_pb2.GetVariablesRequest(session_id="s"))
        assert got.failure.kind == Kind.SESSION_NOT_FOUND

    async def test_the_host_not_there_is_bridge_unavailable(self, lane: Lane) -> None:
        client = lane.client()
        await lane.server.aclose(grace=0)
        with pytest.raises(BridgeUnavailable, match="cannot reach the bridge"):
            await client._request("get_variables", bridge_pb2.GetVariablesRequest(session_id="s"))
        lane.server = await BridgeServer.start(
            lane.path, sessions=lane.store, tools=lane.tools, secret=lane.secret
        )
        got = await client._request("get_variables", bridge_pb2.GetVariablesRequest(session_id="s"))
        assert got.failure.kind == Kind.SESSION_NOT_FOUND

    async def test_a_timeout_or_a_cancel_ends_only_that_call_and_its_handler(
        self, lane: Lane
    ) -> None:
        entered = asyncio.Event()
        ended: list[str] = []

        async def hangs(tag: str) -> None:
            entered.set()
            try:
                await asyncio.Event().wait()  # never set
            finally:
                ended.append(tag)

        lane.tools.register(hangs)
        client = lane.client()
        with pytest.raises(BridgeUnavailable, match="host tool 'hangs': no answer within"):
            await client.call_host("hangs", {"tag": "timeout"}, "", timeout=0.05)
        entered.clear()
        task = asyncio.get_running_loop().create_task(
            client.call_host("hangs", {"tag": "cancel"}, "")
        )
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client._lane is not None
        assert client._lane.pending == {}
        # The connection goes on; a call behind the cancels runs after them.
        got = await client._request("get_variables", bridge_pb2.GetVariablesRequest(session_id="s"))
        assert got.failure.kind == Kind.SESSION_NOT_FOUND
        assert sorted(ended) == ["cancel", "timeout"]
        assert lane.server._lane.connections == 1

    async def test_messages_over_the_limit(self, lane: Lane) -> None:
        await lane.restart(max_message_bytes=64 * 1024)

        def big(n: int) -> str:
            return "x" * n

        lane.tools.register(big)
        client = lane.client(max_message_bytes=64 * 1024)
        with pytest.raises(BridgeUnavailable, match="larger than the bridge takes"):
            await client.call_host("big", {"n": 0, "pad": "y" * 70_000}, "")
        with pytest.raises(BridgeUnavailable, match="reply is larger than the bridge takes"):
            await client.call_host("big", {"n": 70_000}, "")
        assert await client.call_host("big", {"n": 3}, "") == "xxx"  # the lane goes on
        # A frame past the limit (and its slack) closes a raw connection.
        reader, writer = await raw(lane)
        writer.write(pack(hello("w0", worker_token(lane.secret, "w0"))))
        writer.write((10 << 20).to_bytes(4, "little"))
        assert await replies(reader) == []
        writer.close()

    async def test_the_worker_stopping_fails_its_calls(self, lane: Lane) -> None:
        entered = asyncio.Event()

        async def hangs() -> None:
            entered.set()
            await asyncio.Event().wait()  # never set

        lane.tools.register(hangs)
        client = lane.client()
        task = asyncio.get_running_loop().create_task(client.call_host("hangs", {}, ""))
        await entered.wait()
        await client.aclose()
        with pytest.raises(BridgeUnavailable, match="worker stopped"):
            await task
        with pytest.raises(BridgeUnavailable, match="closed"):
            await client._request("set_variables", lane.set_request("n", 1))


class TestStop:
    async def test_nothing_is_left_after_a_stop(self, lane: Lane) -> None:
        entered: list[str] = []
        both = asyncio.Event()

        async def hangs(session_id: str) -> None:
            entered.append(session_id)
            if len(entered) == 2:
                both.set()
            await asyncio.Event().wait()  # never set

        lane.tools.register(hangs)
        before = asyncio.all_tasks()
        clients = [lane.client(f"w{i}") for i in range(2)]
        calls = [
            asyncio.get_running_loop().create_task(c.call_host("hangs", {}, f"s{i}"))
            for i, c in enumerate(clients)
        ]
        await both.wait()
        # And an idle connection (its one call answered).
        reader, writer = await raw(lane)
        get = bridge_pb2.GetVariablesRequest(session_id="s")
        writer.write(
            pack(hello("w9", worker_token(lane.secret, "w9")))
            + pack(Request(id=1, get_variables=get))
        )
        assert await read_frame(reader, bridge_pb2.BridgeReply, 1 << 20) is not None
        assert lane.server._lane.connections == 3
        args = BridgeArgs(lane.path, lambda: lane.store, lane.tools, lane.secret)
        args.serving = lane.server  # as the pool's Bridge has it
        await args.stop()
        assert not os.path.exists(lane.lane_path)
        assert not os.path.exists(lane.path)
        assert lane.server._lane.connections == 0
        assert await replies(reader) == []
        writer.close()
        for call in calls:
            with pytest.raises(BridgeUnavailable):
                await call
        for client in clients:
            await client.aclose()
        assert asyncio.all_tasks() - before == {asyncio.current_task()} - before


class TestWatch:
    async def test_a_watch_over_grpc_and_its_break(self, lane: Lane) -> None:
        variables = lane.store.variables(lane.session_id)
        await variables.register("n", "integer", 0)
        client = lane.client()
        request = bridge_pb2.WatchVariablesRequest(session_id=lane.session_id)
        async with client._watch_variables(request) as events:
            assert (await events.__anext__()).started
            await client._request("set_variables", lane.set_request("n", 1))
            change = await events.__anext__()
            assert (change.name, change.new.value_json, change.source) == ("n", "1", "w0")
            await lane.store.delete(lane.session_id)  # the watch ends with the session
            assert [e async for e in events] == []
        async with client._watch_variables(bridge_pb2.WatchVariablesRequest(session_id="s")) as ev:
            assert [e.failure.kind async for e in ev] == [Kind.SESSION_NOT_FOUND]
        await lane.store.create()
        other = (await lane.store.create()).session_id
        async with client._watch_variables(
            bridge_pb2.WatchVariablesRequest(session_id=other)
        ) as events:
            assert (await events.__anext__()).started
            await lane.server.aclose(grace=0)
            with pytest.raises(BridgeUnavailable, match="watch"):
                await events.__anext__()
        await lane.restart()
        await client.aclose()
        with pytest.raises(BridgeUnavailable, match="closed"):
            async with client._watch_variables(request):
                pass  # pragma: no cover


class TestFrameSplitter:
    def test_frames_cut_at_any_byte_come_out_whole_and_in_order(self) -> None:
        messages = [Request(id=i, hello=bridge_pb2.BridgeHello(worker_id="w" * i)) for i in (1, 50)]
        stream = b"".join(pack(m) for m in messages)
        for cut in range(len(stream) + 1):
            splitter = FrameSplitter(Request, 1 << 20)
            out = splitter.feed(stream[:cut]) + splitter.feed(stream[cut:])
            assert out == messages
            assert not splitter.partial
        splitter = FrameSplitter(Request, 1 << 20)
        assert [splitter.feed(bytes([b])) for b in stream[:3]] == [[], [], []]
        assert splitter.partial

    def test_too_large_or_junk_is_a_frame_error(self) -> None:
        with pytest.raises(FrameError, match="over the limit"):
            FrameSplitter(Request, 10).feed((HIGH_WATER).to_bytes(4, "little"))
        with pytest.raises(FrameError, match="does not parse"):
            FrameSplitter(Request, 10).feed(b"\x02\x00\x00\x00\xff\xff")
        # One whole frame in one read (the fast path) is held to the limit too.
        whole = pack(Request(id=1, hello=bridge_pb2.BridgeHello(worker_id="w" * (SLACK + 100))))
        with pytest.raises(FrameError, match="over the limit"):
            FrameSplitter(Request, 10).feed(whole)

    def test_one_whole_frame_in_a_read_then_a_partial_one(self) -> None:
        first, second = (Request(id=i) for i in (1, 2))
        splitter = FrameSplitter(Request, 1 << 20)
        assert splitter.feed(pack(first)) == [first]
        assert not splitter.partial
        tail = pack(second)
        assert splitter.feed(tail[:5]) == []
        assert splitter.feed(tail[5:]) == [second]
