"""BridgeServer: the host's end of the worker -> host bridge, called over gRPC as a worker would.

A session store (memory backend) and a BridgeServer in the test's loop; a
grpc.aio client with and without the bridge's secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import grpc
import pytest

from snakepit._wire._auth import new_secret
from snakepit._wire._bridge import AUTH_KEY, SOURCE_KEY, from_wire_value, to_wire, worker_token
from snakepit._wire._proto.snakepit.v1 import bridge_pb2, bridge_pb2_grpc
from snakepit.errors import ArgumentTypeError, BridgeUnavailable, ConfigError
from snakepit.pool._bridge import BridgeServer, HostTools
from snakepit.session import (
    MemoryBackend,
    SessionStore,
    SessionStoreConfig,
    SessionStoreRef,
    Tensor,
    VariableSpec,
)
from snakepit.worker import Context, HostBridge

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

Kind = bridge_pb2.BridgeFailure.Kind


@dataclass
class Bridge:
    store: SessionStoreRef
    tools: HostTools
    stub: Any  # BridgeServiceStub with the secret
    bare: Any  # without it
    session_id: str
    secret: bytes
    address: str

    def md(self, source: str = "w0") -> tuple[tuple[str, str], ...]:
        """The metadata of the worker ``source``'s calls: its id and its token."""
        return ((AUTH_KEY, worker_token(self.secret, source)), (SOURCE_KEY, source))


@pytest.fixture
async def bridge(sock_dir: Path) -> AsyncIterator[Bridge]:
    config = SessionStoreConfig(backend=MemoryBackend(), clock=anyio.current_time)
    tools = HostTools()
    secret = new_secret()
    async with SessionStore.running(config) as store:
        server = await BridgeServer.start(
            str(sock_dir / "bridge.sock"), sessions=store, tools=tools, secret=secret
        )
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = bridge_pb2_grpc.BridgeServiceStub(channel)  # type: ignore[no-untyped-call]
                record = await store.create()
                yield Bridge(store, tools, stub, stub, record.session_id, secret, server.address)
        finally:
            await server.aclose(grace=0)


def bridge_address(bridge: Bridge) -> str:
    """Where the fixture's BridgeServer listens."""
    return bridge.address


def wire(name: str, type_: str, value: Any, **constraints: Any) -> bridge_pb2.BridgeVariable:
    spec = VariableSpec.make(name, type_, **constraints)
    return to_wire(name, spec.to_json(), spec.encode(value))


def value_of(variable: bridge_pb2.BridgeVariable) -> Any:
    spec = VariableSpec.from_json(json.loads(variable.spec_json))
    return spec.decode(from_wire_value(variable.value_json, variable.data))


class TestAuth:
    async def test_a_call_without_the_secret_is_permission_denied(self, bridge: Bridge) -> None:
        request = bridge_pb2.GetVariablesRequest(session_id=bridge.session_id, all=True)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await bridge.bare.GetVariables(request)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await bridge.bare.GetVariables(
                request, metadata=((AUTH_KEY, new_secret().hex()), (SOURCE_KEY, "w0"))
            )
        assert wrong.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # The pool's secret itself is no token; one worker's token does not name another.
        for metadata in (
            ((AUTH_KEY, bridge.secret.hex()), (SOURCE_KEY, "w0")),
            ((AUTH_KEY, worker_token(bridge.secret, "w0")), (SOURCE_KEY, "w1")),
            ((AUTH_KEY, worker_token(bridge.secret, "w0")),),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as other:
                await bridge.bare.GetVariables(request, metadata=metadata)
            assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED
        ok = await bridge.stub.GetVariables(request, metadata=bridge.md("w1"))
        assert not ok.HasField("failure")
        watch = bridge.bare.WatchVariables(
            bridge_pb2.WatchVariablesRequest(session_id=bridge.session_id)
        )
        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            async for _ in watch:
                pass  # pragma: no cover - refused
        assert streamed.value.code() == grpc.StatusCode.PERMISSION_DENIED


class TestVariables:
    async def test_register_get_set_and_a_compare_and_set(self, bridge: Bridge) -> None:
        stub, sid = bridge.stub, bridge.session_id
        reply = await stub.RegisterVariable(
            bridge_pb2.RegisterVariableRequest(
                session_id=sid, variable=wire("counter", "integer", 0, min=0)
            ),
            metadata=bridge.md(),
        )
        assert not reply.HasField("failure")
        assert (reply.variable.version, reply.variable.source) == (1, "w0")
        uid = reply.variable.uid
        assert await bridge.store.variables(sid).get("counter") == 0  # the host sees it
        set_reply = await stub.SetVariables(
            bridge_pb2.SetVariablesRequest(
                session_id=sid,
                values=[bridge_pb2.BridgeVariable(name="counter", value_json="5")],
            ),
            metadata=bridge.md(),
        )
        assert [v.version for v in set_reply.variables] == [2]
        stale = await stub.SetVariables(
            bridge_pb2.SetVariablesRequest(
                session_id=sid,
                values=[
                    bridge_pb2.BridgeVariable(name="counter", value_json="6", uid=uid, version=1)
                ],
            ),
            metadata=bridge.md(),
        )
        assert stale.conflict
        got = await stub.GetVariables(
            bridge_pb2.GetVariablesRequest(session_id=sid, names=["counter"]),
            metadata=bridge.md(),
        )
        assert [(v.name, value_of(v), v.version) for v in got.variables] == [("counter", 5, 2)]

    async def test_a_tensor_travels_as_raw_bytes(self, bridge: Bridge) -> None:
        tensor = Tensor("uint8", (2, 2), bytes([1, 2, 3, 4]))
        variable = wire("t", "tensor", tensor, shape=(2, 2), dtype="uint8")
        assert variable.data == bytes([1, 2, 3, 4])
        assert "data" not in json.loads(variable.value_json)
        await bridge.stub.RegisterVariable(
            bridge_pb2.RegisterVariableRequest(session_id=bridge.session_id, variable=variable),
            metadata=bridge.md(),
        )
        assert await bridge.store.variables(bridge.session_id).get("t") == tensor

    async def test_failures_are_typed_and_the_server_goes_on(self, bridge: Bridge) -> None:
        stub, sid, md = bridge.stub, bridge.session_id, bridge.md()
        await bridge.store.variables(sid).register("counter", "integer", 0, max=10)

        async def set_(value_json: str, session_id: str = sid, name: str = "counter") -> Any:
            return await stub.SetVariables(
                bridge_pb2.SetVariablesRequest(
                    session_id=session_id,
                    values=[bridge_pb2.BridgeVariable(name=name, value_json=value_json)],
                ),
                metadata=md,
            )

        invalid = (await set_("11")).failure
        assert (invalid.kind, invalid.variable, invalid.constraint) == (
            Kind.VALIDATION,
            "counter",
            "max",
        )
        assert (await set_('"x"')).failure.constraint == "type"
        assert (await set_("{nope")).failure.kind == Kind.BAD_REQUEST
        assert (await set_("1", session_id="gone")).failure.kind == Kind.SESSION_NOT_FOUND
        assert (await set_("1", name="other")).failure.kind == Kind.VARIABLE_NOT_FOUND
        taken = await stub.RegisterVariable(
            bridge_pb2.RegisterVariableRequest(
                session_id=sid, variable=wire("counter", "integer", 1)
            ),
            metadata=md,
        )
        assert taken.failure.kind == Kind.VARIABLE_EXISTS
        bad_spec = await stub.RegisterVariable(
            bridge_pb2.RegisterVariableRequest(
                session_id=sid,
                variable=bridge_pb2.BridgeVariable(
                    name="x", spec_json='{"name": "x", "type": "complex"}', value_json="1"
                ),
            ),
            metadata=md,
        )
        assert bad_spec.failure.kind == Kind.BAD_REQUEST
        assert await bridge.store.variables(sid).get("counter") == 0  # nothing half-written
        deleted = await stub.DeleteVariable(
            bridge_pb2.DeleteVariableRequest(session_id=sid, name="counter"), metadata=md
        )
        assert not deleted.HasField("failure")
        again = await stub.DeleteVariable(
            bridge_pb2.DeleteVariableRequest(session_id=sid, name="counter"), metadata=md
        )
        assert again.failure.kind == Kind.VARIABLE_NOT_FOUND


class TestWatch:
    async def test_a_worker_watches_what_the_host_writes(self, bridge: Bridge) -> None:
        variables = bridge.store.variables(bridge.session_id)
        await variables.register("counter", "integer", 0)
        watch = bridge.stub.WatchVariables(
            bridge_pb2.WatchVariablesRequest(session_id=bridge.session_id, names=["counter"]),
            metadata=bridge.md(),
        )
        events = watch.__aiter__()
        assert (await events.__anext__()).started  # in place: what comes next is seen
        await variables.set("counter", 1)
        change = await events.__anext__()
        assert (change.name, value_of(change.old), value_of(change.new), change.source) == (
            "counter",
            0,
            1,
            "host",
        )
        await bridge.store.delete(bridge.session_id)  # the watch ends with the session
        assert [e async for e in events] == []

    async def test_a_watch_of_an_unknown_session_says_so(self, bridge: Bridge) -> None:
        watch = bridge.stub.WatchVariables(
            bridge_pb2.WatchVariablesRequest(session_id="gone"), metadata=bridge.md()
        )
        assert [e.failure.kind async for e in watch] == [Kind.SESSION_NOT_FOUND]


class TestHostTools:
    async def test_sync_and_async_tools_and_the_session_id(self, bridge: Bridge) -> None:
        def add(a: int, b: int) -> int:
            return a + b

        async def whose(session_id: str) -> str:
            return session_id

        bridge.tools.register(add)
        bridge.tools.register(whose, name="whose")

        async def call(name: str, args: bytes) -> Any:
            return await bridge.stub.CallHostTool(
                bridge_pb2.CallHostToolRequest(
                    session_id=bridge.session_id, name=name, args_json=args
                ),
                metadata=bridge.md(),
            )

        assert json.loads((await call("add", b'{"a": 1, "b": 2}')).result_json) == 3
        assert json.loads((await call("whose", b"")).result_json) == bridge.session_id
        missing = (await call("nope", b"{}")).failure
        assert missing.kind == Kind.HOST_TOOL_NOT_FOUND
        assert "'add'" in missing.message
        raised = (await call("add", b'{"a": 1}')).failure  # a missing argument: TypeError
        assert (raised.kind, raised.error_type) == (Kind.HOST_TOOL_FAILED, "TypeError")
        assert (await call("add", b"[1, 2]")).failure.kind == Kind.BAD_REQUEST

    async def test_a_result_json_cannot_carry_is_a_failure(self, bridge: Bridge) -> None:
        bridge.tools.register(lambda: {1, 2}, name="aset")
        reply = await bridge.stub.CallHostTool(
            bridge_pb2.CallHostToolRequest(name="aset", args_json=b"{}"), metadata=bridge.md()
        )
        assert reply.failure.kind == Kind.HOST_TOOL_FAILED
        assert "JSON" in reply.failure.message

    def test_registering_checks_its_arguments(self) -> None:
        tools = HostTools()
        with pytest.raises(ArgumentTypeError):
            tools.register(3)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="needs a name"):
            tools.register(lambda: 1)
        tools.register(len)
        with pytest.raises(ConfigError, match="registered already"):
            tools.register(len)
        assert tools.names() == ["len"]


class TestReviewFindings:
    """Each found by a review of the first version; each failed before its fix."""

    async def test_a_worker_cannot_write_as_the_host(self, bridge: Bridge) -> None:
        variables = bridge.store.variables(bridge.session_id)
        await variables.register("x", "integer", 0)
        async with variables.watch(["x"]) as changes:
            await bridge.stub.SetVariables(
                bridge_pb2.SetVariablesRequest(
                    session_id=bridge.session_id,
                    values=[bridge_pb2.BridgeVariable(name="x", value_json="1")],
                ),
                metadata=bridge.md(source="host"),
            )
            change = await changes.__anext__()
        assert change.source == "worker"

    async def test_a_host_tool_raising_anything_is_a_failure_and_the_host_goes_on(
        self, bridge: Bridge
    ) -> None:
        def exits() -> None:
            raise SystemExit(3)

        def interrupts() -> None:
            raise KeyboardInterrupt

        def looks_up() -> int:
            return {"a": 1}["b"]

        for fn in (exits, interrupts, looks_up):
            bridge.tools.register(fn)
        for name, error in (
            ("exits", "SystemExit"),
            ("interrupts", "KeyboardInterrupt"),
            ("looks_up", "KeyError"),  # not "no host tool": the tool's own LookupError
        ):
            reply = await bridge.stub.CallHostTool(
                bridge_pb2.CallHostToolRequest(name=name, args_json=b"{}"), metadata=bridge.md()
            )
            assert (reply.failure.kind, reply.failure.error_type) == (
                Kind.HOST_TOOL_FAILED,
                error,
            )

    async def test_a_sync_host_tool_runs_off_the_event_loop_with_its_callers_session(
        self, bridge: Bridge
    ) -> None:
        main = threading.current_thread()

        def where(session_id: str) -> list[Any]:
            return [threading.current_thread() is main, session_id]

        bridge.tools.register(where)
        reply = await bridge.stub.CallHostTool(
            bridge_pb2.CallHostToolRequest(
                session_id=bridge.session_id, name="where", args_json=b'{"session_id": "other"}'
            ),
            metadata=bridge.md(),
        )
        assert json.loads(reply.result_json) == [False, bridge.session_id]

    async def test_a_worker_cannot_register_a_pattern(self, bridge: Bridge) -> None:
        # Matched on the host's loop: (a+)+$ against "a" * 30 + "!" takes minutes.
        reply = await bridge.stub.RegisterVariable(
            bridge_pb2.RegisterVariableRequest(
                session_id=bridge.session_id,
                variable=wire("s", "string", "a", pattern="(a+)+$"),
            ),
            metadata=bridge.md(),
        )
        assert (reply.failure.kind, "pattern" in reply.failure.message) == (Kind.BAD_REQUEST, True)

    async def test_json_nested_past_the_limit_is_a_bad_request(self, bridge: Bridge) -> None:
        await bridge.store.variables(bridge.session_id).register("x", "string", "")
        reply = await bridge.stub.SetVariables(
            bridge_pb2.SetVariablesRequest(
                session_id=bridge.session_id,
                values=[bridge_pb2.BridgeVariable(name="x", value_json="[" * 100_000)],
            ),
            metadata=bridge.md(),
        )
        assert reply.failure.kind == Kind.BAD_REQUEST
        args = await bridge.stub.CallHostTool(
            bridge_pb2.CallHostToolRequest(name="x", args_json=b"[" * 100_000),
            metadata=bridge.md(),
        )
        assert args.failure.kind == Kind.BAD_REQUEST

    def test_a_watch_ended_behind_has_a_kind_of_its_own(self) -> None:
        from snakepit.errors import VariableError
        from snakepit.pool._bridge import _failure

        assert _failure(VariableError("fell behind")).kind == Kind.WATCH_ENDED


class TestTheWorkersClient:
    """snakepit.worker.HostBridge, and Context.call_host on it (found by a review)."""

    async def test_a_host_tool_that_never_answers_ends_at_the_calls_deadline(
        self, bridge: Bridge
    ) -> None:
        # Before: no deadline; the tool waited for ever.
        never = anyio.Event()

        async def hangs() -> None:
            await never.wait()  # never set

        bridge.tools.register(hangs)
        client = HostBridge(bridge_address(bridge), worker_token(bridge.secret, "w0"), "w0")
        try:
            with anyio.fail_after(10), pytest.raises(BridgeUnavailable, match="no answer within"):
                await client.call_host("hangs", {}, bridge.session_id, timeout=0.2)
        finally:
            await client.aclose()

    async def test_a_call_in_flight_when_the_bridge_closes_is_bridge_unavailable(
        self, bridge: Bridge
    ) -> None:
        # Before: a bare CancelledError the tool never asked for.
        never = anyio.Event()
        entered = anyio.Event()

        async def hangs() -> None:
            entered.set()
            await never.wait()  # never set

        bridge.tools.register(hangs)
        client = HostBridge(bridge_address(bridge), worker_token(bridge.secret, "w0"), "w0")
        seen: list[BaseException] = []

        async def call() -> None:
            try:
                await client.call_host("hangs", {}, bridge.session_id)
            except BaseException as exc:  # what the tool would see
                seen.append(exc)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await entered.wait()
                await client.aclose()  # the worker stops
        assert [type(e) for e in seen] == [BridgeUnavailable]
        with pytest.raises(BridgeUnavailable, match="closed"):
            await client.call_host("hangs", {}, bridge.session_id)

    def test_a_sync_tools_call_gives_up_when_the_call_is_cancelled(self) -> None:
        # Before: .result() with no timeout; a cancelled call's thread waited on.
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        started = threading.Event()

        class Stuck:
            async def call_host(self, *args: object) -> None:
                started.set()
                await asyncio.Event().wait()  # never set

        ctx = Context(1, "", None, logging.getLogger("t"), _bridge=Stuck(), _loop=loop)
        result: list[BaseException] = []

        def tool() -> None:
            try:
                ctx.call_host("x")
            except BaseException as exc:
                result.append(exc)

        worker = threading.Thread(target=tool)
        worker.start()
        started.wait(10)
        ctx.cancel_event.set()
        worker.join(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        assert [type(e) for e in result] == [BridgeUnavailable]
