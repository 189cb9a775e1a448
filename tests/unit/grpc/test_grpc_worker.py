"""The worker process: ready line, lifecycle, parent death, bad adapters, tools.

The seed's gRPC worker examples and the readiness tests run their worker with
the harness (``python_worker``, ``assert_healthy``); the tests of signals, exits
and tools use the ``spawn`` and ``echo`` fixtures of conftest.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from snakepit.errors import (
    ExecutionTimeout,
    InvalidArguments,
    PayloadError,
    PayloadTooLarge,
    RemoteError,
    ToolNotFound,
    WorkerStartError,
    WorkerUnavailable,
)
from snakepit.pool._connection import open_frames_multiplexer
from snakepit.pool._launch._process import WorkerProcess
from snakepit.pool._worker_connection import WorkerConnection
from snakepit.testing import assert_healthy, python_worker
from snakepit.worker import PROTOCOL_VERSION
from tests._procs import gone, wait_exit

from .conftest import ROOT, Served, Spawn, exited

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

Echo = tuple[Served, WorkerConnection]
EchoProcess = tuple[WorkerProcess, WorkerConnection]

ECHO = "snakepit.testing.adapters:Echo"


def make_fifo(directory: Path, name: str = "gate") -> Path:
    path = directory / name
    os.mkfifo(path)
    return path


class TestSeedExamples:
    """The seed's "gRPC Worker Testing Pattern", on a real worker process.

    The seed's setup waits for ``{:grpc_ready, port}`` instead of sleeping:
    :func:`python_worker` enters once the worker printed its ready line, and
    the port is the one the worker bound (``tcp:127.0.0.1:0``, read back from
    that line), never a guessed ``50100 + rand(1000)``, which collides under
    xdist. ``assert_genserver_responsive`` becomes :func:`assert_healthy` (the
    worker's ``grpc.health.v1`` service). The seed's third example, "worker
    recovers from server crash", is the pool's job here (its worker
    supervisor starts a replacement process):
    ``tests/unit/pool/test_seed_examples.py::test_a_killed_worker_is_restarted_by_the_worker_supervisor``.
    """

    async def test_worker_starts_grpc_server_and_connects(self) -> None:
        async with python_worker(ECHO, listen="tcp:127.0.0.1:0") as w:
            host, _, port = w.address.removeprefix("tcp:").rpartition(":")
            assert host == "127.0.0.1"
            assert int(port) > 0
            assert w.ready["address"] == w.address
            await assert_healthy(w.address)  # a connection of its own to that port
            await assert_healthy(w)  # and w.client's
        assert w.returncode == 0  # stopped by SIGTERM, cleanly

    async def test_worker_handles_commands(self, sock_dir: Path) -> None:
        async with python_worker(ECHO, tmp_dir=sock_dir) as w:
            assert await w.client.execute("ping", timeout=5) == {"status": "pong"}


class TestReady:
    async def test_ready_line(self, sock_dir: Path) -> None:
        # python_worker takes no run_id: the worker's last --run-id argument wins
        run_id = ["--run-id", "run-1"]
        async with python_worker(ECHO, tmp_dir=sock_dir, worker_id="alpha", extra_args=run_id) as w:
            ready = w.ready
            assert ready["event"] == "ready"
            assert ready["address"] == w.address == f"unix:{sock_dir}/alpha.sock"
            assert ready["pid"] == w.pid
            assert ready["worker_id"] == "alpha"
            assert ready["run_id"] == "run-1"
            assert ready["protocol_version"] == PROTOCOL_VERSION
            assert {"ping", "echo", "count", "acount"} <= set(ready["tools"])

    async def test_socket_is_private(self, sock_dir: Path) -> None:
        async with python_worker(ECHO, listen=f"unix:{sock_dir}/sub/w.sock") as w:
            path = Path(w.address.removeprefix("unix:"))
            assert path == sock_dir / "sub" / "w.sock"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    async def test_shared_directory_is_refused(self, sock_dir: Path) -> None:
        shared = sock_dir / "shared"
        shared.mkdir(mode=0o755)
        shared.chmod(0o755)
        with pytest.raises(WorkerStartError, match="open to other users"):
            async with python_worker(ECHO, listen=f"unix:{shared}/w.sock"):
                pytest.fail("the worker started")

    async def test_health_is_serving(self, echo: Echo) -> None:
        served, _ = echo
        await assert_healthy(served.address)
        await assert_healthy(served.address, service="snakepit.v1.WorkerService")
        with pytest.raises(AssertionError, match="not healthy"):
            await assert_healthy(served.address, service="no.such.Service")


class TestBadAdapter:
    @pytest.mark.parametrize(
        ("adapter", "expected"),
        [
            ("no_such_module_xyz:Thing", "cannot import module 'no_such_module_xyz'"),
            ("tests.unit.grpc._adapters:Missing", "has no attribute 'Missing'"),
            ("tests.unit.grpc._adapters:NotAnAdapter", "is not a subclass of"),
            ("just-a-module", "expected 'package.module:ClassName'"),
            ("tests.unit.grpc._adapters:BadSetup", "setup() raised RuntimeError"),
        ],
    )
    async def test_bad_adapter_exits_with_one_clear_line(
        self, sock_dir: Path, adapter: str, expected: str
    ) -> None:
        with pytest.raises(WorkerStartError) as info:
            async with python_worker(adapter, tmp_dir=sock_dir, cwd=ROOT):
                pytest.fail("the worker started")
        error = info.value
        assert error.returncode not in (None, 0)
        last_line = error.stderr_tail.strip().splitlines()[-1]
        assert last_line.startswith("snakepit.worker: ")
        assert expected in last_line
        assert "exited before its ready line" in str(error)

    async def test_async_setup(self, sock_dir: Path) -> None:
        async with python_worker(
            "tests.unit.grpc._adapters:AsyncSetup", tmp_dir=sock_dir, cwd=ROOT
        ) as w:
            assert await w.client.execute("ready_flag") == "yes"


class TestLifecycle:
    async def test_stdin_eof_ends_the_worker(self, spawn: Spawn) -> None:
        worker = await spawn()
        worker._child.close_stdin()
        with anyio.fail_after(10):
            code = await worker.wait()
        assert code == 0
        assert gone(worker.pid)

    async def test_sigterm_finishes_the_call_in_flight_then_tears_down(
        self, spawn: Spawn, sock_dir: Path
    ) -> None:
        worker = await spawn("snakepit.testing.adapters:Gated")
        gate = make_fifo(sock_dir)
        client = WorkerConnection(worker.address, secret=worker.secret)
        async with client, anyio.create_task_group() as tg:
            results: list[Any] = []

            async def call() -> None:
                results.append(await client.execute("wait_gate", {"path": str(gate)}))

            tg.start_soon(call)
            # open() of a FIFO returns once the tool has opened the other end
            writer = await anyio.to_thread.run_sync(open, gate, "wb")
            os.kill(worker.pid, signal.SIGTERM)
            with anyio.fail_after(10):
                # Its health says when the stop has begun: a call sent before
                # that is accepted, and queues behind the gated one for good.
                while await client.health() == "SERVING":
                    pass
            with pytest.raises(WorkerUnavailable):  # no new calls once stopping
                await client.execute("ping")
            writer.close()
        assert results == ["opened"]
        with anyio.fail_after(10):
            assert await worker.wait() == 0
        assert "teardown ran" in worker.stderr_tail()

    async def test_sigterm_grace_cancels_a_stuck_call(self, spawn: Spawn, sock_dir: Path) -> None:
        worker = await spawn("snakepit.testing.adapters:Gated", extra_args=["--grace", "0.2"])
        gate = make_fifo(sock_dir)
        client = WorkerConnection(worker.address, secret=worker.secret)
        async with client, anyio.create_task_group() as tg:
            errors: list[BaseException] = []

            async def call() -> None:
                try:
                    await client.execute("wait_gate", {"path": str(gate)})
                except WorkerUnavailable as exc:
                    errors.append(exc)

            tg.start_soon(call)
            writer = await anyio.to_thread.run_sync(open, gate, "wb")  # the tool is running
            try:
                os.kill(worker.pid, signal.SIGTERM)
                # the sync tool never returns: after the grace period the call is
                # cancelled and the worker exits anyway, without joining that thread
                with anyio.fail_after(10):
                    assert await worker.wait() == 0
            finally:
                writer.close()
        assert len(errors) == 1

    async def test_worker_exits_when_its_host_is_sigkilled(self, sock_dir: Path) -> None:
        host_script = (
            "import asyncio, sys\n"
            "from snakepit.pool._launch._process import spawn_worker\n"
            "async def main():\n"
            "    w = await spawn_worker(\n"
            f"        'snakepit.testing.adapters:Echo', 'unix:{sock_dir}/o.sock')\n"
            "    print(w.pid, flush=True)\n"
            "    await asyncio.Event().wait()\n"
            "asyncio.run(main())\n"
        )
        host = subprocess.Popen(
            [sys.executable, "-c", host_script],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            assert host.stdout is not None
            line = await anyio.to_thread.run_sync(host.stdout.readline)
            worker_pid = int(line)
            host.kill()
            host.wait()
            await wait_exit(worker_pid, timeout=10)
            assert exited(worker_pid)
        finally:
            if host.poll() is None:
                host.kill()
                host.wait()
            if host.stdout is not None:
                host.stdout.close()


class TestTools:
    async def test_sync_async_and_ctx(self, echo: Echo) -> None:
        _, client = echo
        assert await client.execute("echo", {"value": [1, "a", None]}) == [1, "a", None]
        assert await client.execute("aecho", {"value": {"k": 1.5}}) == {"k": 1.5}
        assert await client.execute("add", {"a": 1, "b": 2.5}) == 3.5
        info = await client.execute("info", session_id="s1", timeout=30)
        assert info["session_id"] == "s1"
        assert info["has_deadline"] is True
        assert info["request_id"] > 0

    async def test_streaming_tools(self, echo: Echo) -> None:
        _, client = echo
        assert [x async for x in client.stream("count", {"n": 5})] == [0, 1, 2, 3, 4]
        assert [x async for x in client.stream("acount", {"n": 3})] == [0, 1, 2]
        items: list[int] = []

        async def drain() -> None:
            async for x in client.stream("fail_midstream", {"after": 2}):
                items.append(x)

        with pytest.raises(RemoteError, match="failed after 2 items"):
            await drain()
        assert items == [0, 1]

    async def test_closing_a_stream_early_cancels_it(self, echo: Echo) -> None:
        _, client = echo
        stream = client.stream("hang_stream")
        assert await stream.__anext__() == 0
        await stream.aclose()
        assert await client.execute("ping") == {"status": "pong"}

    async def test_tool_exception_keeps_type_message_and_traceback(self, echo: Echo) -> None:
        _, client = echo
        with pytest.raises(RemoteError) as info:
            await client.execute("fail", {"message": "boom"})
        error = info.value
        assert error.type_name == "ValueError"
        assert error.message == "boom"
        assert "raise ValueError(message)" in error.traceback
        assert await client.execute("ping") == {"status": "pong"}  # still serving

    async def test_unknown_tool(self, echo: Echo) -> None:
        _, client = echo
        with pytest.raises(ToolNotFound, match="no tool 'nope'"):
            await client.execute("nope")

    @pytest.mark.parametrize(
        ("args", "match"),
        [
            ({}, "missing required argument"),
            ({"a": 1, "b": 2, "c": 3}, "unexpected argument"),
            ({"a": "1", "b": 2}, "argument 'a' must be float"),
            ({"a": True, "b": 2}, "argument 'a' must be float"),
        ],
    )
    async def test_invalid_arguments(self, echo: Echo, args: dict[str, Any], match: str) -> None:
        _, client = echo
        with pytest.raises(InvalidArguments, match=match):
            await client.execute("add", args)

    async def test_streaming_tool_called_as_unary_is_rejected(self, echo: Echo) -> None:
        _, client = echo
        with pytest.raises(InvalidArguments, match="streaming tool"):
            await client.execute("count", {"n": 1})

    async def test_a_result_with_no_json_form_raises_payload_error(self, echo: Echo) -> None:
        # Issue 11, defect 8: it came back as an Unserializable placeholder, silently.
        _, client = echo
        with pytest.raises(PayloadError, match="set at result") as info:
            await client.execute("unserializable")
        assert (info.value.path, info.value.type_name) == ("result", "set")
        assert await client.execute("echo", {"value": 1}) == 1  # the worker serves on

    async def test_bytes_travel_as_bytes(self, echo: Echo) -> None:
        _, client = echo
        assert await client.execute("echo", {"value": b"\x00\xff" * 10}) == b"\x00\xff" * 10

    async def test_describe(self, spawn: Spawn) -> None:
        worker = await spawn("tests.unit.grpc._adapters:Typed", worker_id="typed")
        async with WorkerConnection(worker.address, secret=worker.secret) as client:
            described = await client.describe()
        assert described.adapter == "tests.unit.grpc._adapters:Typed"
        assert described.worker_id == "typed"
        assert described.protocol_version == PROTOCOL_VERSION
        (spec,) = described.tools
        assert spec.name == "scale"
        assert spec.doc.startswith("Multiply every value by factor.")
        assert [(p.name, p.annotation, p.required, p.default) for p in spec.parameters] == [
            ("values", "list[float]", True, ""),
            ("factor", "float", False, "2.0"),
            ("label", "str | None", False, "None"),
        ]
        assert spec.returns == "list[float]"


class TestCancellation:
    async def test_cancelling_an_async_tool(self, echo: Echo) -> None:
        _, client = echo
        with anyio.move_on_after(0.05):
            await client.execute("hang")
        assert await client.execute("ping") == {"status": "pong"}

    async def test_cancelling_a_sync_tool_sets_ctx_cancelled(self, echo: Echo) -> None:
        _, client = echo
        with pytest.raises(ExecutionTimeout):
            await client.execute("hang_sync", timeout=0.05)
        # max_concurrency=1: this runs only once hang_sync saw ctx.cancelled and returned
        with anyio.fail_after(10):
            assert await client.execute("noop_sync") is None


class TestMessageSize:
    async def test_oversize_arguments_and_results(self, spawn: Spawn) -> None:
        worker = await spawn(extra_args=["--max-message-mb", "1"])
        async with WorkerConnection(
            worker.address, max_message_bytes=1024 * 1024, secret=worker.secret
        ) as client:
            with pytest.raises(PayloadTooLarge, match="arguments"):
                await client.execute("echo", {"value": b"x" * (2 * 1024 * 1024)})
            with pytest.raises(PayloadTooLarge, match="result"):
                await client.execute("blob", {"size": 2 * 1024 * 1024})
            assert await client.execute("ping") == {"status": "pong"}
            assert len(await client.execute("blob", {"size": 512 * 1024})) == 512 * 1024


def test_the_worker_imports_nothing_from_the_host_side() -> None:
    code = (
        "import sys, snakepit.worker, snakepit.worker._forkserver, snakepit.testing.adapters\n"
        "host = [m for m in sys.modules if m.startswith('snakepit.') and m.split('.')[1] in "
        "('otp', 'pool', 'bridge', 'session', '_client', '_launch')]\n"
        "print(json.dumps(host))"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import json\n" + code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert json.loads(out.stdout) == []


HOSTILE = "tests.unit.grpc._adapters:Hostile"

#: What each hostile tool raises, and the type the caller's RemoteError names.
HOSTILE_TYPES = {
    "keyboard_interrupt": "KeyboardInterrupt",
    "system_exit": "SystemExit",
    "cancelled": "asyncio.exceptions.CancelledError",
    "base": "tests.unit.grpc._adapters._Custom",
    "generator_exit": "GeneratorExit",
    "broken_str": "tests.unit.grpc._adapters._BrokenStr",
    "broken_everything": "tests.unit.grpc._adapters._BrokenEverything",
    "huge": "ValueError",
}


class TestEveryEndGetsAReply:
    """Issue #11, defect 6: every way a tool can end produces a reply; the worker serves on."""

    async def test_tools_raising_anything(self, spawn: Spawn) -> None:
        worker = await spawn(HOSTILE)
        assert worker.frames_address is not None
        mux = await open_frames_multiplexer(worker.frames_address, secret=worker.secret)
        try:
            for tool in ("raise_sync", "raise_async"):
                for kind, type_name in HOSTILE_TYPES.items():
                    with anyio.fail_after(10), pytest.raises(RemoteError) as info:
                        await mux.execute(tool, {"kind": kind})
                    error = info.value
                    assert error.type_name == type_name, (tool, kind)
                    assert len(error.message) < 20_000, (tool, kind)  # bounded
                    assert len(error.traceback) < 80_000, (tool, kind)
            for tool in ("raise_in_generator", "raise_in_async_generator"):
                for kind, type_name in HOSTILE_TYPES.items():
                    items: list[Any] = []

                    async def drain(
                        tool: str = tool, kind: str = kind, items: list[Any] = items
                    ) -> None:
                        async for item in mux.stream(tool, {"kind": kind}):
                            items.append(item)

                    with anyio.fail_after(10), pytest.raises(RemoteError) as info:
                        await drain()
                    assert items == [0]
                    assert info.value.type_name == type_name, (tool, kind)
            with anyio.fail_after(10):
                assert await mux.execute("ping") == {"status": "pong"}  # still serving
                state = await mux.execute("slot_state")
            assert state == {"size": 1, "free": 0, "waiting": 0, "waited": 0, "in_flight": 1}
            assert worker.returncode is None
        finally:
            await mux.aclose()

    async def test_a_broken_str_keeps_what_can_be_had(self, spawn: Spawn) -> None:
        worker = await spawn(HOSTILE)
        async with WorkerConnection(worker.address, secret=worker.secret) as client:
            with anyio.fail_after(10), pytest.raises(RemoteError) as info:
                await client.execute("raise_sync", {"kind": "broken_str"})
            assert "str() of the" in info.value.message
            assert "raise _hostile(kind)" in info.value.traceback
            with anyio.fail_after(10), pytest.raises(RemoteError) as info:
                await client.execute("raise_async", {"kind": "huge"})
            assert info.value.message.startswith("xxxx")
            assert "characters cut" in info.value.message
