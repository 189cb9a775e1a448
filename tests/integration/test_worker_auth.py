"""Issue #11, defect 11: only the host that started a worker can call it.

Real worker processes: a tool in one worker attacks another, and the
secret's way into a worker (stdin, a socket) is looked at from outside and
from a grandchild.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from snakepit.pool import Pool, WorkerConnection, default_fork_servers
from snakepit.pool._launch._forkserver_client import ForkServerClient, worker_channel
from snakepit.pool._launch._process import WorkerProcess, _unexpected_address, spawn_worker
from snakepit.pool._launch._shared import SharedForkServer

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

ROOT = Path(__file__).resolve().parents[2]
PROBER = "tests.integration._auth_adapters:Prober"


async def test_a_tool_in_one_worker_cannot_call_another() -> None:
    async with Pool(PROBER, size=2, cwd=ROOT) as pool:
        with anyio.fail_after(30):
            results = await pool.execute("probe_siblings")
        # The other worker's socket was found, and the pool's bridge (workers do
        # not have its secret yet either: what only knows the path is denied).
        assert len(results) == 2, results
        assert "bridge.sock" in results
        assert results.pop("bridge.sock") == {
            "bridge, no secret": "PERMISSION_DENIED",
            "bridge, wrong secret": "PERMISSION_DENIED",
        }
        (attempts,) = results.values()
        assert attempts == {
            "frames, no preface": "closed",
            "frames, no secret": "closed",
            "frames, wrong secret": "closed",
            "grpc, no secret": "UNAUTHENTICATED",
            "grpc, wrong secret": "UNAUTHENTICATED",
        }
        # the attacked worker serves its pool on
        replies = [await pool.execute("echo", {"value": i}) for i in range(8)]
        assert replies == list(range(8))
        assert pool.stats().degraded is None


@pytest.fixture(params=["spawn", "forkserver"])
async def prober(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    """A Prober worker process, exec'd or forked by a fork server.

    The fork server is the suite's shared one when there is one (a server
    start saved: these tests look at the worker, not at its server).
    """
    server = None
    forkserver: ForkServerClient | SharedForkServer | None = None
    if request.param == "forkserver":
        shared = default_fork_servers()
        if shared is None:
            forkserver = server = await ForkServerClient.start(cwd=ROOT)
        else:
            forkserver = shared._forkserver(
                python=None, env=os.environ, cwd=ROOT, run_id="", ready_timeout=30.0
            )
    try:
        worker = await spawn_worker(
            PROBER, f"unix:{tmp_path}/w.sock", cwd=ROOT, forkserver=forkserver
        )
        try:
            yield worker
        finally:
            await worker.aclose()
    finally:
        if server is not None:
            await server.aclose()


async def test_the_secret_is_not_on_the_command_line_nor_in_the_environment(
    prober: WorkerProcess,
) -> None:
    secret = prober.secret
    assert secret is not None
    for name in ("cmdline", "environ"):
        seen = Path(f"/proc/{prober.pid}/{name}").read_bytes()
        assert secret not in seen
        assert secret.hex().encode() not in seen
    # nor in what it wrote, its ready line, or a repr
    assert secret.hex() not in prober.stderr_tail(200)
    assert secret.hex() not in json.dumps(prober.ready)
    assert secret.hex() not in repr(prober)
    assert repr(secret) not in repr(prober)


async def test_nobody_else_can_read_the_secret_from_the_workers_stdin(
    prober: WorkerProcess,
) -> None:
    # Its stdin is a socket: a pipe could be opened through /proc and read.
    stdin = f"/proc/{prober.pid}/fd/0"
    with pytest.raises(OSError, match="No such device or address"), open(stdin, "rb") as f:
        f.read()
    for fd in (1, 2):  # its output: nobody else can write lines into the host's logs
        with pytest.raises(OSError, match="No such device or address"):
            open(f"/proc/{prober.pid}/fd/{fd}", "wb").close()
    async with WorkerConnection(prober.address, secret=prober.secret) as client:
        with anyio.fail_after(30):
            got = await client.execute("grandchild_reads")
    secret = prober.secret
    assert secret is not None
    assert got["own 0"]["target"].startswith("socket:")  # the worker's stdin, inherited
    assert "error" in got["parent stdin"]  # the worker's stdin cannot be opened
    read = "".join(entry.get("read", "") for entry in got.values())
    assert secret.hex() not in read


async def test_a_worker_told_to_read_a_secret_that_never_comes_exits(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "snakepit.worker", "--adapter", PROBER]
    argv += ["--listen", f"unix:{tmp_path}/w.sock", "--auth-stdin"]
    with anyio.fail_after(30):
        done = await anyio.run_process(
            argv, stdin=subprocess.DEVNULL, cwd=ROOT, check=False, start_new_session=True
        )
    assert done.returncode == 2
    assert b"--auth-stdin: stdin ended after 0 of the secret's 32 bytes" in done.stderr
    assert not (tmp_path / "w.sock").exists()  # it served nothing


def test_nobody_else_can_forge_the_ready_report() -> None:
    # The ready channel (and the output's) is a socket: a pipe could be opened
    # through /proc/<pid>/fd/N and a report naming another address written
    # into it (where the host would then send the worker's secret).
    ours, theirs = worker_channel()
    try:
        for fd in (ours, theirs):
            with pytest.raises(OSError, match="No such device or address"):
                open(f"/proc/{os.getpid()}/fd/{fd}", "wb").close()
        assert not os.get_inheritable(ours)
        assert not os.get_inheritable(theirs)
    finally:
        os.close(ours)
        os.close(theirs)


@pytest.mark.parametrize(
    ("listen", "ready", "wrong"),
    [
        ("unix:/r/w.sock", {"address": "unix:/r/w.sock", "frames": "unix:/r/w.sock.frames"}, ""),
        ("unix:/r/w.sock", {"address": "unix:/r/w.sock", "frames": None}, ""),
        ("unix:w.sock", {"address": "unix:/cwd/w.sock", "frames": "unix:/cwd/w.sock.frames"}, ""),
        ("unix:/r/w.sock", {"address": "unix:/evil.sock"}, "names the address"),
        ("unix:/r/w.sock", {"address": "unix:/r/w.sock", "frames": "unix:/e"}, "frames socket"),
        ("tcp:127.0.0.1:0", {"address": "tcp:127.0.0.1:4711"}, ""),
        ("tcp:127.0.0.1:0", {"address": "tcp:10.0.0.9:4711"}, "names the address"),
        ("tcp:127.0.0.1:0", {"address": "tcp:127.0.0.1:1", "frames": "unix:/x"}, "frames"),
    ],
)
def test_a_ready_report_must_name_the_address_the_host_chose(
    listen: str, ready: dict[str, object], wrong: str
) -> None:
    found = _unexpected_address(ready, listen, "/cwd")
    assert (wrong in found) if wrong else found == "", found
