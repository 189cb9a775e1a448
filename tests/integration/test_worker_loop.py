"""The workers' event loop (``worker_loop``): uvloop when installed, asyncio's on request."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import anyio
import pytest

from snakepit.errors import ArgumentTypeError, ConfigError
from snakepit.pool import Pool, PoolConfig
from snakepit.worker._adapter_server import AdapterStartError
from snakepit.worker._main import loop_factory

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

ADAPTER = "snakepit.testing.adapters:Echo"
HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


def test_worker_loop_is_checked() -> None:
    assert PoolConfig(adapter=ADAPTER).worker_loop == "auto"
    with pytest.raises(ConfigError, match=r"worker_loop.*'auto', 'asyncio' or 'uvloop'.*'tokio'"):
        PoolConfig(adapter=ADAPTER, worker_loop="tokio")  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError, match=r"worker_loop.*must be a str"):
        PoolConfig(adapter=ADAPTER, worker_loop=1)  # type: ignore[arg-type]


def test_uvloop_required_but_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec

    def without_uvloop(name: str, *args: Any) -> Any:
        return None if name == "uvloop" else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_uvloop)
    with pytest.raises(ConfigError, match=r"worker_loop.*needs the uvloop package"):
        Pool(ADAPTER, worker_loop="uvloop")
    # Another Python's packages are its own: its worker says so when it starts.
    assert PoolConfig(adapter=ADAPTER, worker_loop="uvloop", python=sys.executable)
    # The worker's side: "uvloop" fails, "auto" falls back to asyncio's loop.
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    with pytest.raises(AdapterStartError, match=r"--loop uvloop: cannot import uvloop"):
        loop_factory("uvloop")
    assert loop_factory("auto") is loop_factory("asyncio")


async def test_pools_serve_calls_on_each_worker_loop() -> None:
    expected = {"asyncio": "asyncio", "auto": "uvloop" if HAVE_UVLOOP else "asyncio"}
    got: dict[str, Any] = {}

    async def serve(loop: Any) -> None:
        async with Pool(ADAPTER, size=1, worker_loop=loop) as pool:
            assert await pool.execute("noop_sync") is None
            assert await pool.execute("echo", {"value": b"x" * 70_000}) == b"x" * 70_000
            got[loop] = await pool.execute("event_loop")

    async with anyio.create_task_group() as tg:
        for loop in expected:
            tg.start_soon(serve, loop)
    assert got == expected


@pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop is not installed (snakepit[uvloop])")
def test_auto_takes_uvloop_when_installed() -> None:
    import uvloop

    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("uvloop") is uvloop.new_event_loop
