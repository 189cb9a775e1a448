"""An adapter whose tools attack the run's other workers and look for the worker's secret."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc

from snakepit._wire._auth import SECRET_BYTES, frames_preface
from snakepit._wire._codec import encode_into
from snakepit._wire._frames import pack
from snakepit._wire._proto.snakepit.v1 import (
    bridge_pb2,
    bridge_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)
from snakepit.testing.adapters import Echo
from snakepit.worker import tool

#: What a grandchild runs: it reads whatever it can from the fds it inherited
#: and from its parent worker's stdin, and prints it (hex) as JSON.
GRANDCHILD = """
import json, os, select, sys
got = {}
for name in os.listdir("/proc/self/fd"):
    fd = int(name)
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    entry = got[f"own {fd}"] = {"target": target}
    if not target.startswith(("pipe:", "socket:")):
        continue
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if poller.poll(0):
            entry["read"] = os.read(fd, 65536).hex()
    except OSError as exc:
        entry["error"] = type(exc).__name__
try:
    with open(f"/proc/{os.getppid()}/fd/0", "rb", buffering=0) as f:
        got["parent stdin"] = {"read": f.read(65536).hex()}
except OSError as exc:
    got["parent stdin"] = {"error": type(exc).__name__}
print(json.dumps(got))
"""


def _own_socket() -> Path:
    """This worker's socket, from its command line (``--listen unix:PATH``)."""
    listen = sys.argv[sys.argv.index("--listen") + 1]
    return Path(listen.removeprefix("unix:"))


def _ping_frame() -> bytes:
    """A valid frame with one call, longer than a preface (no waiting for the rest)."""
    frame = worker_pb2.ClientFrame()
    request = frame.execute.add()
    request.request_id = 1
    request.tool = "echo"
    encode_into(request.args, {"value": "x" * 64}, root="args")
    return pack(frame)


async def _frames_attempt(path: Path, preface: bytes) -> str:
    """Send ``preface`` and a call on a new frames connection; what came back."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(preface + _ping_frame())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(65536), 10)
    except ConnectionError:
        return "closed"
    finally:
        writer.close()
    return "closed" if not data else f"answered {data!r}"


async def _grpc_attempt(path: Path, metadata: tuple[tuple[str, str], ...] | None) -> str:
    """A unary Execute of ``ping`` on the worker's gRPC socket; the status it ended with."""
    async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
        stub: Any = worker_pb2_grpc.WorkerServiceStub(channel)  # type: ignore[no-untyped-call]
        request = worker_pb2.ExecuteRequest(request_id=1, tool="ping")
        encode_into(request.args, {}, root="args")
        try:
            await stub.Execute(request, timeout=10, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
    return "OK"


async def _bridge_attempt(path: Path, metadata: tuple[tuple[str, str], ...] | None) -> str:
    """A CallHostTool on the pool's bridge socket; the status it ended with."""
    async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
        stub: Any = bridge_pb2_grpc.BridgeServiceStub(channel)  # type: ignore[no-untyped-call]
        request = bridge_pb2.CallHostToolRequest(name="anything", args_json=b"{}")
        try:
            await stub.CallHostTool(request, timeout=10, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
    return "OK"


class Prober(Echo):
    """Echo, plus tools that try to reach the other workers and the secret."""

    @tool
    async def probe_siblings(self) -> dict[str, dict[str, str]]:
        """Try to call every other worker (and the bridge) in this worker's socket directory."""
        own = _own_socket()
        results = {}
        for sock in sorted(own.parent.glob("*.sock")):
            if sock == own:
                continue
            frames = Path(f"{sock}.frames")
            if sock.name == "bridge.sock":  # the pool's bridge: its secret is not ours either
                results[sock.name] = {
                    "bridge, no secret": await _bridge_attempt(sock, None),
                    "bridge, wrong secret": await _bridge_attempt(
                        sock, (("snakepit-bridge-auth", os.urandom(SECRET_BYTES).hex()),)
                    ),
                }
                continue
            results[sock.name] = {
                "frames, no preface": await _frames_attempt(frames, b""),
                "frames, no secret": await _frames_attempt(frames, frames_preface(None)),
                "frames, wrong secret": await _frames_attempt(
                    frames, frames_preface(os.urandom(SECRET_BYTES))
                ),
                "grpc, no secret": await _grpc_attempt(sock, None),
                "grpc, wrong secret": await _grpc_attempt(
                    sock, (("snakepit-auth", os.urandom(SECRET_BYTES).hex()),)
                ),
            }
        return results

    @tool
    def grandchild_reads(self) -> dict[str, Any]:
        """Start a grandchild with every inheritable fd; what it could read."""
        done = subprocess.run(
            [sys.executable, "-c", GRANDCHILD],
            capture_output=True,
            close_fds=False,
            check=True,
            timeout=30,
        )
        result: dict[str, Any] = json.loads(done.stdout)
        return result
