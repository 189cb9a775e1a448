"""python_worker, assert_healthy, assert_streaming_response: pass when right, fail clearly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from snakepit.testing._plugin import OTPSandbox
from snakepit.testing._workers import assert_healthy, assert_streaming_response, python_worker
from tests._procs import gone

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # worker processes are driven by grpc.aio

ECHO = "snakepit.testing.adapters:Echo"
ROOT = Path(__file__).resolve().parents[3]
BOTH = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])


@pytest.mark.otp(strict_leaks=True)  # the process, its pipes and the client: all gone
async def test_python_worker_serves_then_stops_and_reaps(
    otp_sandbox: OTPSandbox, tmp_path: Path
) -> None:
    async with python_worker(ECHO, tmp_dir=tmp_path, cwd=ROOT) as w:
        assert w.address.startswith("unix:")
        assert w.ready["pid"] == w.pid
        await assert_healthy(w)
        await assert_healthy(w.address, service="snakepit.v1.WorkerService")
        assert await w.client.execute("echo", {"value": [1, "a"]}) == [1, "a"]
        await assert_streaming_response(w.client.stream("count", {"n": 3}), [0, 1, 2])
        with pytest.raises(AssertionError) as wrong:
            await assert_streaming_response(w.client.stream("acount", {"n": 3}), [0, 2, 1])
        assert "chunk #1 is wrong: expected 2, got 1" in str(wrong.value)
        assert isinstance(w.stderr_tail(), str)

        with pytest.raises(AssertionError, match=r"service 'no\.such\.Service'"):
            await assert_healthy(w, service="no.such.Service")

        w.process.kill()  # planted: the worker dies
        await w.process.wait()
        with pytest.raises(AssertionError) as dead:
            await assert_healthy(w, timeout=2.0)
        message = str(dead.value)
        assert f"worker at {w.address} is not healthy" in message
        assert "the health check failed" in message
        assert "exited with code -9" in message
    assert w.returncode is not None
    assert gone(w.pid)


async def test_python_worker_start_failure_leaves_nothing() -> None:
    from snakepit.errors import WorkerStartError

    with pytest.raises(WorkerStartError, match="no_such_module"):
        async with python_worker("no_such_module:Adapter", ready_timeout=10.0):
            pytest.fail("entered a worker that did not start")


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_python_worker_needs_asyncio(anyio_backend: str) -> None:
    with pytest.raises(RuntimeError, match="asyncio"):
        async with python_worker(ECHO):
            pytest.fail("started on trio")


class Chunks:
    """An async iterator over ``items`` that may hang or raise at the end, and logs aclose()."""

    def __init__(self, items: list[Any], *, then: str = "end") -> None:
        self.items = list(items)
        self.then = then
        self.closed = False

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        await anyio.lowlevel.checkpoint()
        if self.items:
            return self.items.pop(0)
        if self.then == "hang":
            await anyio.Event().wait()
        if self.then == "raise":
            raise RuntimeError("remote went away")
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.closed = True


@BOTH
async def test_stream_in_order_then_end_passes(anyio_backend: str) -> None:
    stream = Chunks([1, 2, 3])
    await assert_streaming_response(stream, [1, 2, 3])
    assert not stream.closed  # it ended by itself


@BOTH
async def test_stream_wrong_order_names_the_first_wrong_chunk(anyio_backend: str) -> None:
    stream = Chunks([1, 3, 2])
    with pytest.raises(AssertionError) as caught:
        await assert_streaming_response(stream, [1, 2, 3])
    message = str(caught.value)
    assert "chunk #1 is wrong: expected 2, got 3" in message
    assert "received so far: [1, 3]" in message
    assert stream.closed


@BOTH
async def test_stream_missing_chunk(anyio_backend: str) -> None:
    with pytest.raises(AssertionError, match=r"ended after 2 of 3 chunks: chunk #2 \(3\)"):
        await assert_streaming_response(Chunks([1, 2]), [1, 2, 3])


@BOTH
async def test_stream_chunk_that_never_comes(anyio_backend: str) -> None:
    stream = Chunks([1], then="hang")
    with pytest.raises(AssertionError, match=r"no chunk #1 within 0.05s \(expected 2\)"):
        await assert_streaming_response(stream, [1, 2], chunk_timeout=0.05)
    assert stream.closed


@BOTH
async def test_stream_without_end(anyio_backend: str) -> None:
    stream = Chunks([1, 2], then="hang")
    with pytest.raises(AssertionError, match=r"did not end within 0\.05s after the 2 expected"):
        await assert_streaming_response(stream, [1, 2], chunk_timeout=0.05)
    assert stream.closed


@BOTH
async def test_stream_extra_chunk(anyio_backend: str) -> None:
    stream = Chunks([1, 2, 3])
    with pytest.raises(AssertionError, match="did not end after the 2 expected chunks: extra "):
        await assert_streaming_response(stream, [1, 2])
    assert stream.closed


@BOTH
async def test_stream_error_is_told_apart(anyio_backend: str) -> None:
    with pytest.raises(AssertionError, match=r"raised at chunk #1 .*RuntimeError") as caught:
        await assert_streaming_response(Chunks([1], then="raise"), [1, 2])
    assert isinstance(caught.value.__cause__, RuntimeError)
