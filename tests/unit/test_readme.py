"""The README's code examples run as shown."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from snakepit.pool import WorkerConnection
from snakepit.pool._launch._process import spawn_worker

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
OTP_TOUR = next(b for b in BLOCKS if "from snakepit.otp import" in b)
ADAPTER = next(b for b in BLOCKS if "class Model(Adapter)" in b)


@pytest.mark.anyio
async def test_the_otp_tour_runs(anyio_backend: Any) -> None:
    namespace: dict[str, Any] = {}
    exec(OTP_TOUR.replace("anyio.run(main)", ""), namespace)
    await namespace["main"]()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_adapter_example_serves(tmp_path: Path, anyio_backend: str) -> None:
    (tmp_path / "readme_model.py").write_text(ADAPTER)
    sock = Path(tmp_path / "s")
    sock.mkdir(mode=0o700)
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    worker = await spawn_worker(
        "readme_model:Model", f"unix:{sock}/w.sock", env=env, python=sys.executable
    )
    try:
        async with WorkerConnection(worker.address, secret=worker.secret) as client:
            assert await client.execute("predict", {"x": 21}) == 42.0
            assert [t async for t in client.stream("tokens", {"text": "a b c"})] == ["a", "b", "c"]
            with anyio.fail_after(10):
                (spec,) = [t for t in (await client.describe()).tools if t.name == "predict"]
            assert spec.doc == "Score one input."
    finally:
        await worker.aclose()


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_every_python_block_compiles(block: str) -> None:
    compile(block, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_telemetry_example_reads_events(anyio_backend: str) -> None:
    import snakepit
    from snakepit.pool import InProcessLauncher

    block = next(b for b in BLOCKS if "async def watch" in b)
    namespace: dict[str, Any] = {}
    exec(block, namespace)
    pool = snakepit.Pool("snakepit.testing.adapters:Echo", size=1, launcher=InProcessLauncher())
    async with anyio.create_task_group() as tg:
        tg.start_soon(namespace["watch"], pool)
        await anyio.wait_all_tasks_blocked()
        async with pool:
            assert await pool.execute("ping") == {"status": "pong"}
    # the stream ended with the pool, and so did watch()
