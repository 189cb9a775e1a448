"""Workers forked by a pool's fork server (``start_method="forkserver"``, the default).

They must be indistinguishable from exec'd ones where it matters: their own
session and process group, the pool's environment and directory, exit codes
reported, nothing left behind; and a pool outlives its fork server's death
(its workers are replaced, each a restart).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from snakepit._wire._forkserver_protocol import MAX_REQUEST
from snakepit.errors import PoolStartError, WorkerError, WorkerStartError
from snakepit.pool import Pool, StartMethod, WorkerConnection, WorkerExited, default_fork_servers
from snakepit.pool._launch._forkserver_client import (
    ForkServerClient,
    ForkServerError,
    RequestTooLarge,
)
from snakepit.pool._launch._process import spawn_worker
from snakepit.pool._launch._shared import SharedForkServer
from tests._procs import descendant_pids, wait_exit

pytestmark = pytest.mark.anyio
# A test whose pool's fork server it stops, kills or inspects: its own, not a
# shared one. (The tests of ForkServerClient start their own anyway.)
OWN_SERVER = pytest.mark.snakepit_own_fork_server
anyio_backends = ("asyncio",)  # grpc.aio

ROOT = str(Path(__file__).resolve().parents[2])
ADAPTER = "tests.integration._process_adapters:Introspect"


@asynccontextmanager
async def a_fork_server() -> AsyncIterator[ForkServerClient | SharedForkServer]:
    """A fork server to spawn workers from, for a test about what comes through one.

    The suite's shared server when there is one (a server start saved: the
    same server process and protocol, driven from its own thread), else a
    new one, closed after.
    """
    shared = default_fork_servers()
    if shared is not None:
        yield shared._forkserver(
            python=None, env=os.environ, cwd=ROOT, run_id="", ready_timeout=30.0
        )
        return
    server = await ForkServerClient.start(cwd=ROOT)
    try:
        yield server
    finally:
        await server.aclose()


@OWN_SERVER
@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
async def test_a_worker_has_its_own_session_and_the_pools_env_and_cwd(
    start_method: StartMethod, tmp_path: Path
) -> None:
    env = {"SNAKEPIT_TEST_VALUE": "from the pool", "PYTHONPATH": ROOT}
    async with Pool(ADAPTER, size=1, env=env, cwd=str(tmp_path), start_method=start_method) as p:
        seen = await p.execute("process")
        ours = descendant_pids()
    assert seen["pgid"] == seen["sid"] == seen["pid"]  # a session and group of its own
    assert seen["cwd"] == str(tmp_path)
    assert seen["value"] == "from the pool"
    assert seen["argv"][0].endswith("snakepit/worker/__main__.py")
    assert seen["argv"][1:3] == ["--adapter", ADAPTER]
    if start_method == "spawn":
        assert seen["ppid"] == os.getpid()
    else:
        assert seen["ppid"] != os.getpid()  # forked by the pool's fork server,
        assert seen["ppid"] in ours  # which is ours
        assert seen["name"] == "sp:w0"


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
async def test_a_workers_grpc_logs_errors_only_though_the_hosts_environment_does_not_say_so(
    start_method: StartMethod, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ``import snakepit`` no longer sets GRPC_VERBOSITY in the host: the
    # launcher puts it in the worker's environment.
    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)
    async with Pool(ADAPTER, size=1, cwd=ROOT, start_method=start_method) as pool:
        seen = await pool.execute("process", {"variable": "GRPC_VERBOSITY"})
    assert seen["value"] == "ERROR"
    assert "GRPC_VERBOSITY" not in os.environ


async def test_no_task_of_a_fork_server_outlives_its_close(tmp_path: Path) -> None:
    # Its stderr's reader, the watchers of its workers: its own, ended by aclose.
    before = asyncio.all_tasks()
    server = await ForkServerClient.start(cwd=ROOT)
    try:
        workers = [
            await spawn_worker(ADAPTER, f"unix:{tmp_path}/w{i}.sock", cwd=ROOT, forkserver=server)
            for i in range(2)
        ]
        await workers[0].aclose()  # one stopped, one left for the server to stop
        assert any(not task.done() for task in server._tasks)
    finally:
        with anyio.fail_after(10):
            await server.aclose()
    with anyio.fail_after(10):
        assert await workers[1].wait() == -signal.SIGKILL
    assert {task for task in asyncio.all_tasks() - before if not task.done()} == set()


async def test_a_forked_workers_wait_and_close_return_with_its_watcher_ended(
    tmp_path: Path,
) -> None:
    # As an exec'd worker's (tests/unit/grpc/test_owned_tasks.py): before, both
    # returned while the watcher of its pidfd still ran, the pidfd still open.
    server = await ForkServerClient.start(cwd=ROOT)
    try:
        for i, end in enumerate(["kill and wait", "aclose"]):
            worker = await spawn_worker(
                ADAPTER, f"unix:{tmp_path}/w{i}.sock", cwd=ROOT, forkserver=server
            )
            before = asyncio.all_tasks()
            with anyio.fail_after(10):
                if end == "aclose":
                    await worker.aclose()
                else:
                    worker.kill()
                    assert await worker.wait() == -signal.SIGKILL
            assert {task for task in asyncio.all_tasks() - before if not task.done()} == set()
            assert getattr(worker._child, "_pidfd", 0) is None, end
    finally:
        await server.aclose()


@OWN_SERVER
async def test_a_killed_fork_server_takes_its_workers_and_the_pool_recovers() -> None:
    async with Pool(ADAPTER, size=2, cwd=ROOT) as pool, pool.subscribe() as events:
        first = await pool.execute("process")
        server = first["ppid"]
        old_workers = [w.pid for w in pool.workers() if w.pid is not None]
        os.kill(server, signal.SIGKILL)
        exits: list[WorkerExited] = []
        with anyio.fail_after(20):
            async for event in events:
                if isinstance(event, WorkerExited):
                    exits.append(event)
                    if len(exits) == 2:
                        break
            await pool.wait_ready()
        assert all(e.crashed for e in exits)
        await wait_exit(server, timeout=10)
        for pid in old_workers:  # gone, not only reported: orphans would escape the leak check
            await wait_exit(pid, timeout=10)
        after = await pool.execute("process")
        assert after["ppid"] != server  # a new fork server
        assert pool.stats().ready == 2


@OWN_SERVER
async def test_a_fork_server_that_cannot_start_is_a_pool_start_error() -> None:
    with pytest.raises(PoolStartError, match="fork server"):
        async with Pool(ADAPTER, size=1, cwd=ROOT, python="/bin/false"):
            pass


@OWN_SERVER
async def test_a_python_that_does_not_exist_is_a_pool_start_error() -> None:
    with pytest.raises(PoolStartError, match="no/such/python"):
        async with Pool(ADAPTER, size=1, cwd=ROOT, python="/no/such/python"):
            pass


async def test_closing_the_fork_server_kills_and_reaps_what_it_still_runs(
    tmp_path: Path,
) -> None:
    server = await ForkServerClient.start(cwd=ROOT)
    try:
        worker = await spawn_worker(ADAPTER, f"unix:{tmp_path}/w.sock", cwd=ROOT, forkserver=server)
        assert worker.pid in descendant_pids(server.pid)
    finally:
        await server.aclose()
    with anyio.fail_after(10):
        assert await worker.wait() == -signal.SIGKILL  # reported by the host: it is closed
    await wait_exit(worker.pid, timeout=10)  # and the process is really gone


async def test_exit_codes_and_signals_come_through_the_fork_server(tmp_path: Path) -> None:
    async with a_fork_server() as server:
        for i, (tool, args, code) in enumerate(
            [("exit", {"code": 7}, 7), ("segfault", {}, -signal.SIGSEGV)]
        ):
            worker = await spawn_worker(
                "tests.unit.grpc._adapters:All",
                f"unix:{tmp_path}/w{i}.sock",
                cwd=ROOT,
                forkserver=server,
            )
            async with WorkerConnection(worker.address, secret=worker.secret) as client:
                with pytest.raises(WorkerError):  # the call dies with the process
                    await client.execute(tool, args)
            with anyio.fail_after(10):
                assert await worker.wait() == code


async def test_a_fork_server_that_fails_at_start_reports_its_stderr(tmp_path: Path) -> None:
    # Standing in for an interpreter that cannot import snakepit.
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\necho 'No module named snakepit' >&2\nexit 1\n")
    python.chmod(0o755)
    expected = r"(?s)exited before it was ready.*exit code 1.*No module named snakepit"
    with pytest.raises(ForkServerError, match=expected):
        await ForkServerClient.start(python=str(python), cwd=tmp_path)


async def test_a_fork_server_that_stops_answering_is_killed(tmp_path: Path) -> None:
    server = await ForkServerClient.start(cwd=ROOT)
    try:
        os.kill(server.pid, signal.SIGSTOP)
        with pytest.raises(ForkServerError, match=r"did not answer within 0\.2s"):
            await server.spawn(["--adapter", ADAPTER], cwd=ROOT, timeout=0.2)
        assert not server.alive
    finally:
        await server.aclose()
    with pytest.raises(ForkServerError, match="did not answer"):
        await server.spawn([])


async def test_an_exit_the_stopped_server_cannot_report_is_still_seen(tmp_path: Path) -> None:
    server = await ForkServerClient.start(cwd=ROOT)
    try:
        worker = await spawn_worker(ADAPTER, f"unix:{tmp_path}/w.sock", cwd=ROOT, forkserver=server)
        server.report_grace = 0.1
        os.kill(server.pid, signal.SIGSTOP)  # it will not reap or report
        worker.kill()
        with anyio.fail_after(10):
            assert await worker.wait() == -signal.SIGKILL
        assert not server.alive  # a server that does not report is of no use: killed
        await wait_exit(server.pid, timeout=10)
    finally:
        await server.aclose()


async def test_many_spawns_at_once_with_a_large_environment(tmp_path: Path) -> None:
    # Not the server's own: it travels with each request, 8 x 40 kB, more than
    # the control socket holds at once.
    env = {**os.environ, "SNAKEPIT_TEST_VALUE": "x" * 40_000}
    workers = []
    async with a_fork_server() as server:
        try:

            async def start(i: int) -> None:
                workers.append(
                    await spawn_worker(
                        ADAPTER, f"unix:{tmp_path}/w{i}.sock", env=env, cwd=ROOT, forkserver=server
                    )
                )

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    for i in range(8):
                        tg.start_soon(start, i)
            assert len(workers) == 8
        finally:
            for worker in workers:
                await worker.aclose()


async def test_an_environment_past_the_default_socket_buffer_travels_with_a_spawn(
    tmp_path: Path,
) -> None:
    # Before: "cannot reach the fork server: [Errno 90] Message too long" past
    # ~208 KiB (the socket's default send buffer), far below MAX_REQUEST.
    env = {**os.environ, "SNAKEPIT_TEST_VALUE": "x" * 300_000}
    server = await ForkServerClient.start(cwd=ROOT)
    try:
        assert server.max_request >= 300_000 + 4096
        with anyio.fail_after(30):
            worker = await spawn_worker(
                ADAPTER, f"unix:{tmp_path}/w.sock", env=env, cwd=ROOT, forkserver=server
            )
        await worker.aclose()
    finally:
        await server.aclose()


async def test_an_environment_too_large_for_a_spawn_request_is_named_as_the_cause(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "SNAKEPIT_TEST_VALUE": "x" * (MAX_REQUEST + 1)}
    fds = set(os.listdir("/proc/self/fd"))
    server = await ForkServerClient.start(cwd=ROOT)
    try:
        with pytest.raises(WorkerStartError) as caught:
            await spawn_worker(
                ADAPTER, f"unix:{tmp_path}/w.sock", env=env, cwd=ROOT, forkserver=server
            )
        assert isinstance(caught.value.__cause__, RequestTooLarge)
        message = str(caught.value)
        assert "cannot be forked: its spawn request is " in message
        assert "the worker's environment is too large" in message
        assert 'start_method="spawn"' in message
        assert server.alive  # not the server's failure
    finally:
        await server.aclose()
    # None left open by it (another thread may close one of its own meanwhile).
    assert set(os.listdir("/proc/self/fd")) - fds == set()


async def test_workers_that_fail_at_once_all_report_their_exit(tmp_path: Path) -> None:
    # Exit reports right behind the spawn replies: none may be lost (no hang).
    async with a_fork_server() as server:

        async def start(i: int) -> None:
            with pytest.raises(WorkerStartError, match="exit code 2"):
                await spawn_worker(
                    "no_such_module_xyz:Thing",
                    f"unix:{tmp_path}/w{i}.sock",
                    cwd=ROOT,
                    forkserver=server,
                )

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i in range(8):
                    tg.start_soon(start, i)


async def test_sys_exit_in_setup_reads_as_in_a_fresh_interpreter(tmp_path: Path) -> None:
    async with a_fork_server() as server:
        with pytest.raises(WorkerStartError) as info:
            await spawn_worker(
                "tests.integration._process_adapters:ExitsInSetup",
                f"unix:{tmp_path}/w.sock",
                cwd=ROOT,
                forkserver=server,
            )
    assert info.value.returncode == 1
    assert "bad config: FOO is not set" in info.value.stderr_tail


async def test_closing_while_spawns_wait_for_room_fails_them(tmp_path: Path) -> None:
    # A stopped server reads nothing: spawns carrying a large environment fill
    # its socket and wait for room; closing the server must fail them all.
    # 12 x 200 kB: more than the socket holds, even grown to MAX_REQUEST (x2).
    env = {**os.environ, "SNAKEPIT_TEST_VALUE": "x" * 200_000}
    server = await ForkServerClient.start(cwd=ROOT)
    os.kill(server.pid, signal.SIGSTOP)
    outcomes: list[str] = []

    async def spawn() -> None:
        try:
            await server.spawn(["--adapter", ADAPTER], env=env, cwd=ROOT, timeout=30)
        except ForkServerError:
            outcomes.append("failed")

    try:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for _ in range(12):
                    tg.start_soon(spawn)
                await anyio.wait_all_tasks_blocked()
                await server.aclose(grace=0.2)
    finally:
        await server.aclose(grace=0)
    assert outcomes == ["failed"] * 12


async def test_workers_whose_pidfds_are_past_1023_are_signalled(tmp_path: Path) -> None:
    # select() cannot watch fds past 1023: a host with many open files.
    fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    server = None
    try:
        server = await ForkServerClient.start(cwd=ROOT)
        worker = await spawn_worker(ADAPTER, f"unix:{tmp_path}/w.sock", cwd=ROOT, forkserver=server)
        worker.kill()
        with anyio.fail_after(10):
            assert await worker.aclose(grace=1) == -signal.SIGKILL
    finally:
        for fd in fillers:
            os.close(fd)
        if server is not None:
            await server.aclose()


async def test_the_hosts_pidfds_of_forked_workers_are_not_inherited(tmp_path: Path) -> None:
    # Received close-on-exec: a process the host's own code starts (os.system,
    # close_fds=False) gets no pidfd of a worker.
    server = await ForkServerClient.start(cwd=ROOT)
    try:
        worker = await spawn_worker(
            "snakepit.testing.adapters:Echo", f"unix:{tmp_path}/w.sock", cwd=ROOT, forkserver=server
        )
        pidfd = worker._child._pidfd  # type: ignore[attr-defined]
        assert pidfd is not None
        assert not os.get_inheritable(pidfd)
        await worker.aclose(grace=2.0)
    finally:
        await server.aclose()
