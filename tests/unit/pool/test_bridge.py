"""A pool's bridge: a child of its tree, serving its host tools and its sessions' variables.

Called over gRPC as a worker would (the worker's side of the bridge comes next).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from snakepit._wire._bridge import AUTH_KEY, SOURCE_KEY, worker_token
from snakepit._wire._proto.snakepit.v1 import bridge_pb2, bridge_pb2_grpc
from snakepit.errors import ConfigError
from snakepit.pool import InProcessLauncher, Pool
from snakepit.testing import wait_for_restart

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # pools: grpc.aio

ADAPTER = "snakepit.testing.adapters:Echo"


@asynccontextmanager
async def bridge_of(pool: Pool) -> AsyncIterator[tuple[Any, tuple[tuple[str, str], ...]]]:
    """A stub on the pool's bridge, and the metadata its calls need."""
    address = pool.bridge_address
    assert address is not None
    assert pool._bridge is not None
    async with grpc.aio.insecure_channel(address) as channel:
        stub = bridge_pb2_grpc.BridgeServiceStub(channel)  # type: ignore[no-untyped-call]
        yield stub, ((AUTH_KEY, worker_token(pool._bridge.secret, "w0")), (SOURCE_KEY, "w0"))


async def call_host(stub: Any, md: Any, name: str, args: dict[str, Any]) -> Any:
    reply = await stub.CallHostTool(
        bridge_pb2.CallHostToolRequest(name=name, args_json=json.dumps(args).encode()),
        metadata=md,
    )
    assert not reply.HasField("failure"), reply.failure
    return json.loads(reply.result_json)


class TestTheBridgeOfAPool:
    async def test_it_serves_host_tools_and_variables_from_the_run_directory(self) -> None:
        pool = Pool(ADAPTER, size=1)
        pool.register_host_tool(lambda x: x * 2, name="double")  # before the start
        async with pool:
            address = pool.bridge_address
            assert address is not None
            path = address.removeprefix("unix:")
            run = pool._own_launcher.run if pool._own_launcher else None
            assert run is not None
            assert os.path.dirname(path) == str(run.path)  # in the pool's run directory

            async def triple(x: int) -> int:
                return x * 3

            pool.register_host_tool(triple)  # and after
            async with pool.session() as s, bridge_of(pool) as (stub, md):
                assert await call_host(stub, md, "double", {"x": 2}) == 4
                assert await call_host(stub, md, "triple", {"x": 2}) == 6
                await s.variables.register("counter", "integer", 7)
                await s.execute("noop")  # pinned to w0: it may touch the session
                got = await stub.GetVariables(
                    bridge_pb2.GetVariablesRequest(session_id=s.session_id, all=True),
                    metadata=md,
                )
                assert [(v.name, v.value_json) for v in got.variables] == [("counter", "7")]
        assert not os.path.exists(path)  # the socket goes with the pool

    async def test_a_killed_bridge_is_restarted_at_the_same_address(self) -> None:
        async with Pool(ADAPTER, size=1, launcher=InProcessLauncher()) as pool:
            pool.register_host_tool(lambda: "pong", name="ping")
            address = pool.bridge_address
            old = pool.supervisor.child("bridge")
            assert old is not None
            await old.kill()
            await wait_for_restart(pool.supervisor, "bridge", old, timeout=10)
            assert pool.bridge_address == address
            async with bridge_of(pool) as (stub, md):
                assert await call_host(stub, md, "ping", {}) == "pong"
        assert pool._bridge_run is not None
        assert not pool._bridge_run.path.exists()  # its own run directory, without a launcher's

    async def test_the_bridge_directory_of_a_killed_host_is_swept_by_the_next_pool(self) -> None:
        # Before: a private mkdtemp, left in /tmp (with its page) by a host killed -9.
        import shutil
        import tempfile

        from snakepit.pool._launch._rundir import RunDir

        base = Path(tempfile.mkdtemp(prefix="sp-"))  # short: socket paths are limited
        dead = RunDir.claim(base, "0123456789ab")
        (dead.path / "bridge.sock.page").write_bytes(b"x")
        os.close(dead._lock_fd or -1)  # the kernel drops a dead host's lock
        dead._lock_fd = None
        try:
            async with Pool(ADAPTER, size=1, launcher=InProcessLauncher(), run_dir=base) as pool:
                assert not dead.path.exists()
                assert pool._bridge_run is not None
                assert pool._bridge_run.path.parent == base.absolute()
        finally:
            shutil.rmtree(base, ignore_errors=True)

    async def test_a_host_tool_without_a_name_or_twice_is_a_config_error(self) -> None:
        pool = Pool(ADAPTER, size=1)
        with pytest.raises(ConfigError, match="needs a name"):
            pool.register_host_tool(lambda: 1)
        pool.register_host_tool(len)
        with pytest.raises(ConfigError, match="registered already"):
            pool.register_host_tool(len)
        await pool.aclose()
