"""snakepit.testing.adapters: they load in a worker process without the host side.

A worker imports its adapter by path (``snakepit.testing.adapters:DirectedFaults``):
what that import pulls in runs in every worker, so it must stay on the
worker's side (``snakepit.worker``), never the pool, the OTP core or grpc's
client side of the host.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import snakepit.testing.adapters as adapters
from snakepit.errors import RemoteError
from snakepit.testing import python_worker
from snakepit.worker import Adapter

ROOT = Path(__file__).resolve().parents[3]

#: Top-level parts of snakepit that only the host runs.
HOST_SIDE = ("otp", "pool", "bridge", "session", "_client", "_launch", "_forkserver")


def test_every_adapter_loads_without_the_host_side() -> None:
    code = (
        "import importlib, json, sys\n"
        "module = importlib.import_module('snakepit.testing.adapters')\n"
        f"for name in {list(adapters.__all__)!r}:\n"
        "    getattr(module, name)\n"
        f"host = sorted(m for m in sys.modules if m.startswith('snakepit.') "
        f"and m.split('.')[1] in {HOST_SIDE!r})\n"
        "host += sorted(m for m in sys.modules if m.startswith('snakepit.testing._'))\n"
        "print(json.dumps(host))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []


def test_every_name_is_an_adapter() -> None:
    for name in adapters.__all__:
        cls = getattr(adapters, name)
        assert issubclass(cls, Adapter), name
        assert cls.__module__ == adapters.__name__, f"{name} is defined in {cls.__module__}"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # worker processes: grpc.aio
async def test_directed_faults_in_a_worker_process(anyio_backend: str, tmp_path: Path) -> None:
    adapter = "snakepit.testing.adapters:DirectedFaults"
    async with python_worker(adapter, tmp_dir=tmp_path, cwd=ROOT) as w:
        assert await w.client.execute("maybe_fail", {"value": 3, "fail": False}) == 3
        with pytest.raises(RemoteError, match="injected fault"):
            await w.client.execute("maybe_fail", {"value": 3, "fail": True})
