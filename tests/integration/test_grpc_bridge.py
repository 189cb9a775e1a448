"""The worker -> host bridge, end to end: tools of real worker processes call the host.

(The seed's "full gRPC bridge integration": its variables part comes with
``ctx.session.variables``; see docs/sessions.md.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import grpc
import pytest

from snakepit._wire._bridge import AUTH_KEY, SOURCE_KEY, worker_token
from snakepit._wire._proto.snakepit.v1 import bridge_pb2, bridge_pb2_grpc
from snakepit.pool import InProcessLauncher, Pool, PoolSession

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # pools: grpc.aio

ROOT = Path(__file__).resolve().parents[2]
CALLER = "tests.integration._bridge_adapters:Caller"


def double(x: int) -> int:
    return x * 2


async def whose(session_id: str) -> str:
    return session_id


def fails(why: str) -> None:
    raise ValueError(why)


@pytest.fixture
async def pool() -> Pool:
    made = Pool(CALLER, size=2, cwd=ROOT, max_concurrency=2)
    for fn in (double, whose, fails):
        made.register_host_tool(fn)
    return made


class TestCallHost:
    async def test_async_and_sync_tools_call_host_tools(self, pool: Pool) -> None:
        async with pool:
            assert await pool.execute("ask", {"name": "double", "args": {"x": 21}}) == 42
            assert await pool.execute("ask_sync", {"name": "double", "args": {"x": 4}}) == 8
            async with pool.session() as s:  # the host tool sees the calling tool's session
                assert await s.execute("ask", {"name": "whose"}) == s.session_id
                assert await s.execute("ask_sync", {"name": "whose"}) == s.session_id

    @pytest.mark.parametrize("tool", ["ask_catching", "ask_catching_sync"])
    async def test_failures_reach_the_tool_typed_and_the_pool_stays_healthy(
        self, pool: Pool, tool: str
    ) -> None:
        async with pool:
            cases: list[tuple[dict[str, Any], dict[str, str]]] = [
                ({"name": "nope"}, {"type": "HostToolNotFound", "error_type": ""}),
                (
                    {"name": "fails", "args": {"why": "on purpose"}},
                    {"type": "HostToolFailed", "error_type": "ValueError"},
                ),
                (  # a missing argument: the host tool's TypeError
                    {"name": "double"},
                    {"type": "HostToolFailed", "error_type": "TypeError"},
                ),
            ]
            for args, seen in cases:
                assert await pool.execute(tool, args) == seen
            assert await pool.execute("ask", {"name": "double", "args": {"x": 1}}) == 2
            assert pool.stats().degraded is None

    async def test_args_json_cannot_carry_are_refused_in_the_tool(self, pool: Pool) -> None:
        from snakepit.errors import RemoteError

        async with pool:
            with pytest.raises(RemoteError, match="ArgumentTypeError"):  # not a mapping
                await pool.execute("ask_catching", {"name": "double", "args": [1, 2]})

    async def test_a_worker_without_a_bridge_says_so(self) -> None:
        # The in-process launcher hands no bridge to its adapters (yet).
        async with Pool(CALLER, size=1, launcher=InProcessLauncher()) as p:
            assert await p.execute("ask_catching", {"name": "double"}) == {
                "type": "BridgeUnavailable",
                "error_type": "",
            }


async def test_a_bridge_token_that_is_not_one_is_a_config_error(tmp_path: Path) -> None:
    from snakepit.errors import ConfigError
    from snakepit.pool import WorkerBridge
    from snakepit.pool._launch._process import spawn_worker

    for token in ("zz" * 32, "ab" * 31, ""):
        with pytest.raises(ConfigError, match="bridge"):
            await spawn_worker(
                CALLER, f"unix:{tmp_path}/w.sock", bridge=WorkerBridge("unix:/x", token)
            )


class TestReviewFindings:
    """Each found by a review; each failed before its fix."""

    async def test_a_launcher_written_before_the_bridge_still_starts_workers(self) -> None:
        from snakepit.pool import PoolConfig, WorkerHandle

        class OldLauncher:
            """start() without bridge=, as launchers were before it."""

            def __init__(self) -> None:
                self._inner = InProcessLauncher()

            async def start(self, config: PoolConfig, worker_id: str, run_id: str) -> WorkerHandle:
                return await self._inner.start(config, worker_id, run_id)

            async def aclose(self) -> None:
                await self._inner.aclose()

        launcher = OldLauncher()
        try:
            # Not a Launcher of today (no bridge=): what such code does, typed or not.
            async with Pool(CALLER, size=1, launcher=launcher) as p:  # type: ignore[arg-type]
                assert await p.execute("ask_catching", {"name": "double"}) == {
                    "type": "BridgeUnavailable",
                    "error_type": "",
                }
        finally:
            await launcher.aclose()


async def test_the_testing_adapter_calls_the_host() -> None:
    async with Pool("snakepit.testing.adapters:HostCaller", size=1) as p:
        p.register_host_tool(lambda x: x + 1, name="inc")
        assert await p.execute("call_host", {"name": "inc", "args": {"x": 1}}) == 2
        assert await p.execute("call_host_sync", {"name": "inc", "args": {"x": 2}}) == 3


class TestHostileHostTools:
    """Found by an attack from outside; each failed before its fix."""

    async def test_an_exception_whose_str_raises_is_host_tool_failed(self) -> None:
        # Before: the bridge's handler died on it: UNKNOWN, BridgeUnavailable.
        class Broken(Exception):
            def __str__(self) -> str:
                raise RuntimeError("no str")

        def broken() -> None:
            raise Broken

        async with Pool(CALLER, size=1, cwd=ROOT) as p:
            p.register_host_tool(broken)
            for tool in ("ask_catching", "ask_catching_sync"):
                assert await p.execute(tool, {"name": "broken"}) == {
                    "type": "HostToolFailed",
                    "error_type": "Broken",
                }

    async def test_a_host_tool_raising_cancelled_error_is_host_tool_failed(self) -> None:
        # Before: the bridge took it for its own cancellation and sent no answer:
        # the tool waited for ever (or its deadline).
        import asyncio

        async def acancel() -> None:
            raise asyncio.CancelledError

        def cancel() -> None:
            raise asyncio.CancelledError

        async with Pool(CALLER, size=1, cwd=ROOT) as p:
            p.register_host_tool(acancel)
            p.register_host_tool(cancel)
            for name in ("acancel", "cancel"):
                for tool in ("ask_catching", "ask_catching_sync"):
                    assert await p.execute(tool, {"name": name}) == {
                        "type": "HostToolFailed",
                        "error_type": "CancelledError",
                    }

    async def test_results_and_arguments_up_to_the_pools_message_limit_pass(self) -> None:
        # Before: gRPC's default 4 MiB: a 5 MiB result was RESOURCE_EXHAUSTED.
        def big(n: int) -> str:
            return "x" * n

        async with Pool(CALLER, size=1, cwd=ROOT, max_message_mb=16) as p:
            p.register_host_tool(big)
            n = 5 * 1024 * 1024
            assert len(await p.execute("ask", {"name": "big", "args": {"n": n}})) == n
            # 20 MiB: past the 16 MiB limit (not far past it: building and
            # encoding a 100 MiB result cost ~1 s of CPU for the same answer).
            too_big = await p.execute("ask_catching", {"name": "big", "args": {"n": 4 * n}})
            assert too_big == {"type": "BridgeUnavailable", "error_type": ""}
            assert await p.execute("ask", {"name": "big", "args": {"n": 3}}) == "xxx"


class TestAWorkerTouchesOnlyTheSessionsItServes:
    """The bridge lets a worker touch a session only while it serves it.

    Pinned to it, or a call of it in flight on it; anything else is refused as
    SESSION_NOT_FOUND. The workers' side of variables is not built yet: the
    test talks to the pool's bridge as a worker would, with its token.
    """

    async def test_pinned_or_in_flight_else_refused(self) -> None:
        entered, release = anyio.Event(), anyio.Event()

        async def gate() -> str:
            entered.set()
            await release.wait()
            return "open"

        pool = Pool(CALLER, size=2, cwd=ROOT, max_concurrency=1)
        pool.register_host_tool(gate)
        pool.register_host_tool(whose)
        async with pool, pool.session() as a, pool.session() as b:
            assert pool.bridge_address is not None
            assert pool._bridge is not None
            secret = pool._bridge.secret
            await a.variables.register("note", "string", "a's")
            await b.variables.register("note", "string", "b's")

            async def slot_of(session: PoolSession) -> str:
                pin = (await session.info()).worker_id
                return next(w.worker_id for w in pool.workers() if w.pin_id == pin)

            async with grpc.aio.insecure_channel(pool.bridge_address) as channel:
                stub = bridge_pb2_grpc.BridgeServiceStub(channel)  # type: ignore[no-untyped-call]

                async def read(worker_id: str, session_id: str) -> Any:
                    """What ``worker_id`` reads of ``session_id``'s "note", or its failure."""
                    reply = await stub.GetVariables(
                        bridge_pb2.GetVariablesRequest(session_id=session_id, names=["note"]),
                        metadata=(
                            (AUTH_KEY, worker_token(secret, worker_id)),
                            (SOURCE_KEY, worker_id),
                        ),
                    )
                    if reply.HasField("failure"):
                        assert reply.failure.message == (
                            f"worker {worker_id!r} is not serving session {session_id!r}"
                        )
                        return bridge_pb2.BridgeFailure.Kind.Name(reply.failure.kind)
                    return [v.value_json for v in reply.variables]

                async with anyio.create_task_group() as tg:
                    results: list[Any] = []

                    async def first_call() -> None:
                        # Blocks in the host tool "gate", then asks whose session it runs in.
                        results.append(await a.execute("ask_each", {"names": ["gate", "whose"]}))

                    tg.start_soon(first_call)
                    await entered.wait()
                    x = await slot_of(a)  # a is pinned to x, whose one slot is taken
                    assert await b.execute("ask", {"name": "whose"}) == b.session_id
                    y = await slot_of(b)  # b went to the other worker
                    assert x != y
                    # Each worker reads its own session's variables, not the other's.
                    assert await read(x, a.session_id) == ['"a\'s"']
                    assert await read(y, b.session_id) == ['"b\'s"']
                    assert await read(x, b.session_id) == "SESSION_NOT_FOUND"
                    assert await read(y, a.session_id) == "SESSION_NOT_FOUND"
                    assert await read(y, "no-such-session") == "SESSION_NOT_FOUND"  # the same
                    # A hint call of a while x is busy runs on y: a is pinned to y now.
                    assert await a.execute("ask", {"name": "whose"}) == a.session_id
                    assert await slot_of(a) == y
                    # x still runs a's first call: it may touch a until that call ends.
                    assert await read(x, a.session_id) == ['"a\'s"']
                    release.set()
                assert results == [["open", a.session_id]]  # its call_host after the move
                # The call ended: x neither is pinned nor runs a call of a.
                assert await read(x, a.session_id) == "SESSION_NOT_FOUND"
                assert await read(y, a.session_id) == ['"a\'s"']
