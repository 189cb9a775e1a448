"""The bridge's access check: a worker touches only the sessions it serves.

A BridgeServer with a ``may_touch`` the test controls (a set of (worker,
session) pairs), called over gRPC as a worker would, with its own token.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import grpc
import pytest

from snakepit._wire._auth import new_secret
from snakepit._wire._bridge import AUTH_KEY, SOURCE_KEY, to_wire, worker_token
from snakepit._wire._proto.snakepit.v1 import bridge_pb2, bridge_pb2_grpc
from snakepit.pool._bridge import BridgeServer, HostTools
from snakepit.session import (
    MemoryBackend,
    SessionStore,
    SessionStoreConfig,
    SessionStoreRef,
    VariableSpec,
)

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

Kind = bridge_pb2.BridgeFailure.Kind


@dataclass
class Guarded:
    store: SessionStoreRef
    stub: Any  # BridgeServiceStub
    secret: bytes
    #: Sessions "a" and "b" of the store, by name.
    ids: dict[str, str]
    #: The (worker id, session id) pairs may_touch allows.
    allowed: set[tuple[str, str]] = field(default_factory=set)
    #: What may_touch was asked, in order.
    asked: list[tuple[str, str]] = field(default_factory=list)

    def may_touch(self, worker_id: str, session_id: str) -> bool:
        self.asked.append((worker_id, session_id))
        return (worker_id, session_id) in self.allowed

    def md(self, source: str) -> tuple[tuple[str, str], ...]:
        """The metadata of the worker ``source``'s calls: its id and its token."""
        return ((AUTH_KEY, worker_token(self.secret, source)), (SOURCE_KEY, source))


def whose(session_id: str) -> str:
    return session_id


@pytest.fixture
async def guarded(sock_dir: Path) -> AsyncIterator[Guarded]:
    config = SessionStoreConfig(backend=MemoryBackend(), clock=anyio.current_time)
    tools = HostTools()
    tools.register(whose)
    secret = new_secret()
    async with SessionStore.running(config) as store:
        ids = {name: (await store.create()).session_id for name in ("a", "b")}
        made = Guarded(store, None, secret, ids)
        server = await BridgeServer.start(
            str(sock_dir / "bridge.sock"),
            sessions=store,
            tools=tools,
            secret=secret,
            may_touch=made.may_touch,
        )
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                made.stub = bridge_pb2_grpc.BridgeServiceStub(channel)  # type: ignore[no-untyped-call]
                yield made
        finally:
            await server.aclose(grace=0)


def wire(name: str, type_: str, value: Any) -> bridge_pb2.BridgeVariable:
    spec = VariableSpec.make(name, type_)
    return to_wire(name, spec.to_json(), spec.encode(value))


async def failures(g: Guarded, source: str, session_id: str) -> list[bridge_pb2.BridgeFailure]:
    """The failure of each of the six calls, made by ``source`` for ``session_id`` (unset: none)."""
    md = g.md(source)
    replies: list[Any] = [
        await g.stub.RegisterVariable(
            bridge_pb2.RegisterVariableRequest(
                session_id=session_id, variable=wire("n", "integer", 1)
            ),
            metadata=md,
        ),
        await g.stub.GetVariables(
            bridge_pb2.GetVariablesRequest(session_id=session_id, all=True), metadata=md
        ),
        await g.stub.SetVariables(
            bridge_pb2.SetVariablesRequest(
                session_id=session_id,
                values=[bridge_pb2.BridgeVariable(name="n", value_json="2")],
            ),
            metadata=md,
        ),
        await g.stub.DeleteVariable(
            bridge_pb2.DeleteVariableRequest(session_id=session_id, name="n"), metadata=md
        ),
        await g.stub.CallHostTool(
            bridge_pb2.CallHostToolRequest(session_id=session_id, name="whose"), metadata=md
        ),
    ]
    watch = g.stub.WatchVariables(
        bridge_pb2.WatchVariablesRequest(session_id=session_id), metadata=md
    )
    replies.append(await watch.__aiter__().__anext__())  # its first event
    watch.cancel()
    return [r.failure for r in replies]


class TestTheCheck:
    async def test_a_worker_serving_the_session_does_everything(self, guarded: Guarded) -> None:
        a = guarded.ids["a"]
        guarded.allowed.add(("w1", a))
        assert all(not f.ByteSize() for f in await failures(guarded, "w1", a))
        # Each call asked once, with the token's worker id and the request's session.
        assert guarded.asked == [("w1", a)] * 6
        assert await guarded.store.variables(a).list() == []  # registered, set, deleted

    async def test_any_other_call_is_refused_as_an_unknown_session(self, guarded: Guarded) -> None:
        a, b = guarded.ids["a"], guarded.ids["b"]
        guarded.allowed |= {("w1", a), ("w2", b)}
        await guarded.store.variables(b).register("secret", "string", "b's")
        for source, session_id in (("w1", b), ("w2", a), ("w3", a), ("w1", "no-such-session")):
            seen = await failures(guarded, source, session_id)
            expected = f"worker '{source}' is not serving session '{session_id}'"
            assert [(f.kind, f.message) for f in seen] == [(Kind.SESSION_NOT_FOUND, expected)] * 6
        # Nothing was read, written or run: b's variable is as it was, a has none.
        assert await guarded.store.variables(b).get("secret") == "b's"
        assert await guarded.store.variables(a).list() == []

    async def test_a_host_tool_outside_any_session_is_let_through(self, guarded: Guarded) -> None:
        reply = await guarded.stub.CallHostTool(
            bridge_pb2.CallHostToolRequest(name="whose"), metadata=guarded.md("w9")
        )
        assert json.loads(reply.result_json) == ""
        assert guarded.asked == []  # not even asked

    async def test_a_watch_is_checked_when_it_starts_only(self, guarded: Guarded) -> None:
        a = guarded.ids["a"]
        variables = guarded.store.variables(a)
        await variables.register("n", "integer", 0)
        guarded.allowed.add(("w1", a))
        watch = guarded.stub.WatchVariables(
            bridge_pb2.WatchVariablesRequest(session_id=a), metadata=guarded.md("w1")
        )
        events = watch.__aiter__()
        assert (await events.__anext__()).started
        guarded.allowed.clear()  # the worker's call of the session ended
        await variables.set("n", 1)
        assert (await events.__anext__()).name == "n"  # the watch runs on (documented)
        watch.cancel()
        refused = guarded.stub.WatchVariables(
            bridge_pb2.WatchVariablesRequest(session_id=a), metadata=guarded.md("w1")
        )
        assert [e.failure.kind async for e in refused] == [Kind.SESSION_NOT_FOUND]  # then ends


def test_refusals_of_a_worker_are_logged_at_powers_of_two(caplog: pytest.LogCaptureFixture) -> None:
    # A hostile worker asking again and again cannot flood the host's log.
    from snakepit.pool._bridge import _Service

    class Context:
        def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
            return ((SOURCE_KEY, "w9"),)

    service = _Service(lambda: None, HostTools(), lambda worker, session: False)  # type: ignore[arg-type,return-value]
    with caplog.at_level("WARNING", logger="snakepit.bridge"):
        for _ in range(100):
            assert service._refused(Context(), "s") is not None
    counts = [r.getMessage().split("(")[-1] for r in caplog.records]
    assert counts == [f"{n} so far)" for n in (1, 2, 4, 8, 16, 32, 64)]
