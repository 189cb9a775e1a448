"""SharedForkServers: fork servers that outlive the pools, and event loops, that use them.

Real processes. Each test makes its own SharedForkServers and closes it (the
suite's own, shared by this process's pools, is left alone).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from snakepit import Pool
from snakepit.errors import ConfigError, PoolStartError
from snakepit.pool import LocalLauncher, SharedForkServers, default_fork_servers
from snakepit.pool._launch._forkserver_client import ForkServerError
from snakepit.pool._launch._shared import set_default_fork_servers
from snakepit.testing import assert_no_leaks
from tests._procs import descendant_pids, gone, wait_exit

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # pools: grpc.aio

ADAPTER = "snakepit.testing.adapters:Echo"


def parent_of(pid: int) -> int:
    """The parent pid of ``pid`` (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


@pytest.fixture
def own_shared() -> Iterator[SharedForkServers]:
    """A SharedForkServers of the test's own, closed after it."""
    servers = SharedForkServers()
    try:
        yield servers
    finally:
        servers.close()
    assert servers.pids == frozenset()


@pytest.fixture
def shared(request: pytest.FixtureRequest) -> SharedForkServers:
    """The suite's own shared fork servers (a server start saved per test), else a new one.

    For tests that neither close them nor count every server they have.
    """
    default = default_fork_servers()
    if default is not None:
        return default
    made: SharedForkServers = request.getfixturevalue("own_shared")
    return made


async def use_pool(shared: SharedForkServers, size: int = 2, cwd: Path | None = None) -> set[int]:
    """Open a pool on ``shared``, call it, close it; the parents of its workers."""
    async with Pool(
        ADAPTER, size=size, launcher=LocalLauncher(forkservers=shared), cwd=cwd
    ) as pool:
        assert await pool.execute("echo", {"value": 1}) == 1
        workers = {w.pid for w in pool.workers()}
        assert None not in workers
        parents = {parent_of(pid) for pid in workers if pid is not None}
    for pid in workers:
        assert pid is not None
        assert gone(pid)  # the pool's workers end with it
    return parents


class TestSharing:
    def test_pools_in_successive_event_loops_fork_from_one_server(
        self, own_shared: SharedForkServers
    ) -> None:
        first = asyncio.run(use_pool(own_shared))
        second = asyncio.run(use_pool(own_shared))
        assert first == second == set(own_shared.pids)  # one server, both loops' workers
        (server,) = own_shared.pids
        assert not gone(server)
        own_shared.close()
        assert gone(server)  # reaped by close

    async def test_a_server_killed_between_pools_is_replaced(
        self, shared: SharedForkServers
    ) -> None:
        (server,) = await use_pool(shared)
        os.kill(server, signal.SIGKILL)
        await wait_exit(server)
        (replacement,) = await use_pool(shared)
        assert replacement != server
        assert replacement in shared.pids
        assert server not in shared.pids

    async def test_past_max_servers_the_idle_one_is_stopped(self, tmp_path: Path) -> None:
        servers = SharedForkServers(max_servers=1)
        try:
            (first,) = await use_pool(servers, size=1)
            (second,) = await use_pool(servers, size=1, cwd=tmp_path)  # another key
            assert first != second
            assert gone(first)
            assert servers.pids == {second}
        finally:
            servers.close()

    async def test_pytests_current_test_variable_does_not_make_another_server(
        self, shared: SharedForkServers, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("PYTEST_CURRENT_TEST", "one")
        first = await use_pool(shared, size=1)
        monkeypatch.setenv("PYTEST_CURRENT_TEST", "two")
        assert await use_pool(shared, size=1) == first

    async def test_the_default_is_taken_by_launchers_made_while_it_is_set(
        self, shared: SharedForkServers
    ) -> None:
        previous = set_default_fork_servers(shared)
        try:
            async with Pool(ADAPTER, size=1) as pool:
                (worker,) = pool.workers()
                assert worker.pid is not None
                assert parent_of(worker.pid) in shared.pids
        finally:
            assert set_default_fork_servers(previous) is shared
        assert default_fork_servers() is previous


class TestEnds:
    async def test_close_kills_the_workers_a_server_still_runs(self) -> None:
        servers = SharedForkServers()
        try:
            async with Pool(ADAPTER, size=2, launcher=LocalLauncher(forkservers=servers)) as pool:
                workers = [w.pid for w in pool.workers()]
                servers.close()  # under a running pool: its workers go with the server
                for pid in workers:
                    assert pid is not None
                    await wait_exit(pid)
        finally:
            servers.close()  # idempotent

    async def test_a_pool_on_closed_servers_is_a_pool_start_error(self) -> None:
        servers = SharedForkServers()
        servers.close()
        with pytest.raises(PoolStartError, match="the shared fork servers are closed"):
            async with Pool(ADAPTER, size=1, launcher=LocalLauncher(forkservers=servers)):
                pass  # pragma: no cover - it does not start

    async def test_cancelled_at_every_step_of_a_pool_start_nothing_is_left(
        self, shared: SharedForkServers
    ) -> None:
        # Cancelled after 1, 4, 16, 64... loop passes (the others' awaits
        # fall in between), until a pool starts, is called and closes first.
        before = descendant_pids() - set(shared.pids)
        steps = 0
        while True:
            steps = max(steps + 1, steps * 4)
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:

                    async def cancel_after(n: int) -> None:
                        for _ in range(n):
                            await anyio.lowlevel.checkpoint()
                        scope.cancel()

                    tg.start_soon(cancel_after, steps)
                    async with Pool(
                        ADAPTER, size=2, launcher=LocalLauncher(forkservers=shared)
                    ) as pool:
                        assert await pool.execute("echo", {"value": 1}) == 1
                        tg.cancel_scope.cancel()
            assert descendant_pids() - set(shared.pids) == before, f"after {steps} steps"
            if not scope.cancel_called:
                break


class TestBadArguments:
    @pytest.mark.parametrize("value", [0, -1, True, 1.5, "2"])
    def test_max_servers(self, value: object) -> None:
        with pytest.raises(ConfigError, match="max_servers"):
            SharedForkServers(max_servers=value)  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", ["PYTEST_CURRENT_TEST", [1]])
    def test_ignore_env(self, value: object) -> None:
        with pytest.raises(ConfigError, match="ignore_env"):
            SharedForkServers(ignore_env=value)  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", ["json", [1], [""]])
    def test_preload(self, value: object) -> None:
        with pytest.raises(ConfigError, match="preload"):
            SharedForkServers(preload=value)  # type: ignore[arg-type]


PRELOADED = """
import os

from snakepit.testing.adapters import Echo
from snakepit.worker import tool

IMPORTED_IN = os.getpid()


class Mine(Echo):
    @tool
    def where(self) -> dict[str, int]:
        return {"imported_in": IMPORTED_IN, "pid": os.getpid(), "ppid": os.getppid()}
"""


class TestPreload:
    @pytest.mark.parametrize("preload", [True, False])
    async def test_a_preloaded_module_is_imported_by_the_server_before_it_forks(
        self, preload: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "preloaded_adapter.py").write_text(PRELOADED)
        monkeypatch.chdir(tmp_path)  # the server's sys.path[0]
        servers = SharedForkServers(preload=("preloaded_adapter",) if preload else ())
        assert servers.preload == (("preloaded_adapter",) if preload else ())
        try:
            launcher = LocalLauncher(forkservers=servers)
            async with Pool("preloaded_adapter:Mine", size=1, launcher=launcher) as pool:
                seen = await pool.execute("where")
            assert seen["ppid"] in servers.pids
            # Preloaded: imported once, by the server; else by the worker.
            assert seen["imported_in"] == (seen["ppid"] if preload else seen["pid"])
        finally:
            servers.close()

    async def test_a_module_that_cannot_be_preloaded_fails_the_start(self) -> None:
        servers = SharedForkServers(preload=("no_such_module_for_snakepit",))
        try:
            launcher = LocalLauncher(forkservers=servers)
            with pytest.raises(PoolStartError, match="no_such_module_for_snakepit"):
                async with Pool(ADAPTER, size=1, launcher=launcher, max_restarts=0):
                    pass  # pragma: no cover - it does not start
            assert servers.pids == frozenset()
        finally:
            servers.close()


class TestLeakChecks:
    async def test_a_shared_server_started_in_a_checked_block_is_no_leak(
        self, shared: SharedForkServers
    ) -> None:
        # Its process and its fds outlive the block on purpose; the pool's
        # workers do not, and would be reported.
        previous = set_default_fork_servers(shared)
        try:
            async with assert_no_leaks(), Pool(ADAPTER, size=1) as pool:
                assert await pool.execute("echo", {"value": 1}) == 1
            assert shared.pids
            assert shared.held_fds()  # its control socket and pipes, at least
        finally:
            set_default_fork_servers(previous)


class TestReviewFindings:
    """Each found by a review of the first version; each failed before its fix."""

    async def test_a_pool_with_no_cwd_gets_a_server_of_the_current_directory(
        self, own_shared: SharedForkServers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Before: the key had no directory, and the server of the first pool
        # (its sys.path[0] that pool's directory) forked the second pool's
        # workers: an adapter next to the new directory did not import.
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            (tmp_path / name / f"adapter_{name}.py").write_text(
                "from snakepit.testing.adapters import Echo as Mine\n"
            )
        for name in ("a", "b"):
            monkeypatch.chdir(tmp_path / name)
            async with Pool(
                f"adapter_{name}:Mine", size=1, launcher=LocalLauncher(forkservers=own_shared)
            ) as pool:
                assert await pool.execute("echo", {"value": name}) == name
        assert len(own_shared.pids) == 2

    def test_a_fork_of_the_process_does_not_use_them(self, shared: SharedForkServers) -> None:
        # Before: a fork (multiprocessing's "fork") inherited the default, and
        # its pools waited for ever on a thread that is not in the fork.
        previous = set_default_fork_servers(shared)
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                code = 0
                try:
                    if default_fork_servers() is not None:
                        code = 1
                    handle = shared._forkserver(
                        python=None, env={}, cwd=None, run_id="", ready_timeout=1
                    )
                    coro = handle.spawn(["--help"])
                    try:
                        coro.send(None)
                        code = 2
                    except ForkServerError as exc:
                        code = 0 if "this is a fork" in str(exc) else 3
                    except StopIteration:
                        code = 4
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        finally:
            set_default_fork_servers(previous)

    async def test_a_call_cut_short_by_close_is_a_fork_server_error(
        self, own_shared: SharedForkServers
    ) -> None:
        # Before: a CancelledError in the caller's task, which nobody cancelled.
        never = threading.Event()

        async def forever() -> None:
            await asyncio.Event().wait()

        async with anyio.create_task_group() as tg:

            async def call() -> None:
                with pytest.raises(ForkServerError, match="were closed"):
                    await own_shared._call(forever())
                never.set()

            tg.start_soon(call)
            await anyio.wait_all_tasks_blocked()
            await anyio.to_thread.run_sync(own_shared.close)
        assert never.is_set()

    async def test_two_keys_at_once_past_max_servers_both_start(self, tmp_path: Path) -> None:
        # Before: the second key's start stopped the first key's server, idle
        # between the handle given to its pool and the fork: that pool failed.
        servers = SharedForkServers(max_servers=1)
        try:
            results = []

            async def use(cwd: Path | None) -> None:
                results.append(await use_pool(servers, size=2, cwd=cwd))

            async with anyio.create_task_group() as tg:
                tg.start_soon(use, None)
                tg.start_soon(use, tmp_path)
            assert len(results) == 2
        finally:
            servers.close()

    async def test_a_result_that_comes_in_as_the_caller_gives_up_is_discarded(
        self, shared: SharedForkServers
    ) -> None:
        # Before: dropped: a fork that came in then stayed the server's, alive.
        ended = threading.Event()
        discarded: list[str] = []

        async def quick() -> str:
            ended.set()
            return "forked"

        task = asyncio.ensure_future(shared._call(quick(), discard=discarded.append))
        await anyio.lowlevel.checkpoint()  # the call is sent
        ended.wait(10)  # it ended there; its result is not delivered here yet
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert discarded == ["forked"]

    async def test_a_server_that_fails_to_start_leaves_no_pid(
        self, own_shared: SharedForkServers, tmp_path: Path
    ) -> None:
        # Before: its pid stayed in pids, exempt from leak checks for good.
        python = tmp_path / "python"
        python.write_text("#!/bin/sh\nexit 3\n")
        python.chmod(0o755)
        with pytest.raises(PoolStartError, match="the fork server failed"):
            async with Pool(
                ADAPTER,
                size=1,
                python=str(python),
                launcher=LocalLauncher(forkservers=own_shared),
                max_restarts=0,
            ):
                pass  # pragma: no cover - it does not start
        assert own_shared.pids == frozenset()
