"""Fixtures that start real worker processes and check that each one is reaped."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from snakepit._wire._auth import new_secret
from snakepit.pool import WorkerConnection, default_fork_servers
from snakepit.pool._launch._process import WorkerProcess, spawn_worker
from snakepit.worker import AdapterServer
from tests._procs import gone

from ._adapters import All

ROOT = Path(__file__).resolve().parents[3]

Spawn = Callable[..., Awaitable[WorkerProcess]]


def exited(pid: int) -> bool:
    """True once ``pid`` has exited: gone, or a zombie waiting for its (new) parent.

    An orphan is reparented to pid 1 (or a subreaper), which reaps it when it
    gets to it; in some containers pid 1 never does, so a zombie counts.
    """
    if gone(pid):
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state in ("Z", "X")


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A private (0700) directory with a short path (unix socket paths are limited)."""
    path = Path(tempfile.mkdtemp(prefix="sp-"))
    path.chmod(0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def spawn(sock_dir: Path) -> AsyncIterator[Spawn]:
    """Start workers (cwd = the repo, so ``tests.*`` adapters import); reap them all after."""
    started: list[WorkerProcess] = []
    counter = iter(range(1000))

    async def start(
        adapter: str = "snakepit.testing.adapters:Echo", *, exec_: bool = False, **kwargs: Any
    ) -> WorkerProcess:
        n = next(counter)
        kwargs.setdefault("listen", f"unix:{sock_dir}/w{n}.sock")
        kwargs.setdefault("worker_id", f"w{n}")
        kwargs.setdefault("cwd", ROOT)
        listen = kwargs.pop("listen")
        shared = default_fork_servers()
        if not exec_ and shared is not None and not {"python", "forkserver"} & kwargs.keys():
            # Forked, as a pool's workers are by default: ~10 ms of CPU, not ~130.
            kwargs["forkserver"] = shared._forkserver(
                python=None,
                env=os.environ,
                cwd=kwargs["cwd"],
                run_id="",
                ready_timeout=30.0,
            )
        worker = await spawn_worker(adapter, listen, **kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        await worker.aclose(grace=2.0)
        assert worker.returncode is not None
        assert gone(worker.pid), f"worker {worker.worker_id} (pid {worker.pid}) was not reaped"


@dataclass
class Served:
    """A worker's server running in the test's own event loop (no process)."""

    address: str
    frames_address: str | None
    #: What its connections must have (as ``WorkerProcess.secret``).
    secret: bytes | None = None
    #: The server itself (in-process only).
    server: AdapterServer | None = field(default=None, repr=False, compare=False)


@asynccontextmanager
async def serve_all(
    sock_dir: Path, name: str, **options: Any
) -> AsyncIterator[tuple[Served, WorkerConnection]]:
    """Every test tool (Echo, Hang, Gated...) served in-process as ``name``, and a client to it.

    ``options`` go to ``AdapterServer.start`` (``max_message_bytes`` also to the client).
    """
    adapter = All()
    adapter.setup()
    secret = new_secret()
    server = await AdapterServer.start(
        adapter,
        listen=f"unix:{sock_dir}/{name}.sock",
        adapter_path="tests.unit.grpc._adapters:All",
        worker_id=name,
        secret=secret,
        **options,
    )
    limit = {k: v for k, v in options.items() if k == "max_message_bytes"}
    try:
        async with WorkerConnection(server.address, secret=secret, **limit) as client:
            yield Served(server.address, server.frames_address, secret, server), client
    finally:
        await server.abort()
        adapter.teardown()


@pytest.fixture
async def echo(sock_dir: Path) -> AsyncIterator[tuple[Served, WorkerConnection]]:
    """Every test tool (Echo, Hang, Gated...) served in-process, and a client to it.

    The protocol is the same as a worker process's (the same AdapterServer);
    tests about the process itself (signals, exit, host death, kills) use
    :func:`echo_process` or :func:`spawn`.
    """
    async with serve_all(sock_dir, "inproc") as served:
        yield served


@pytest.fixture
async def echo_process(spawn: Spawn) -> AsyncIterator[tuple[WorkerProcess, WorkerConnection]]:
    """A worker process with every test tool (Echo, Hang, Crash, Gated) and a client to it."""
    worker = await spawn("tests.unit.grpc._adapters:All")
    async with WorkerConnection(worker.address, secret=worker.secret) as client:
        yield worker, client
