"""Orphan cleanup: a pool starting under a run directory kills what a dead run left there."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from snakepit import Pool
from snakepit.errors import ConfigError, ExecutionTimeout
from snakepit.pool import StartMethod
from snakepit.testing import wait_exited
from tests._procs import descendant_pids, wait_exit

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)

ROOT = Path(__file__).resolve().parents[2]
ECHO = "snakepit.testing.adapters:Echo"

HOST = """
import sys, anyio, snakepit

async def main():
    async with snakepit.Pool({adapter!r}, size=2, run_dir=sys.argv[1]) as pool:
        print(" ".join(str(w.pid) for w in pool.workers()), flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)  # until killed

anyio.run(main)
"""


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A short private base directory (unix socket paths are limited to ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="sp-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _runs(base: Path) -> set[str]:
    return {p.name for p in base.iterdir() if p.is_dir()}


async def test_workers_left_by_a_sigkilled_host_are_killed_by_the_next_pool(
    run_dir: Path,
) -> None:
    # A host is SIGKILLed while its workers and their fork server are stopped
    # (SIGSTOP): they cannot notice its death, so they stay, as after any host
    # crash they survive. (Running, they would leave by themselves: the fork
    # server dies with the host, and each worker sees its parent die.)
    host = subprocess.Popen(
        [sys.executable, "-c", HOST.format(adapter=ECHO), str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        start_new_session=True,
    )
    assert host.stdin is not None
    assert host.stdout is not None
    try:
        line = await anyio.to_thread.run_sync(host.stdout.readline)
        orphans = [int(p) for p in line.split()]
        assert len(orphans) == 2
        for pid in sorted(descendant_pids(host.pid) - set(orphans)) + orphans:
            os.kill(pid, signal.SIGSTOP)  # the fork server first
        host.kill()
        host.wait()
        (dead_run,) = _runs(run_dir)
        for pid in orphans:
            os.kill(pid, 0)  # still there

        async with Pool(ECHO, size=1, run_dir=run_dir) as pool:
            for pid in orphans:
                await wait_exit(pid, timeout=10)
            assert dead_run not in _runs(run_dir)
            assert not (run_dir / f"{dead_run}.lock").exists()
            assert await pool.execute("ping") == {"status": "pong"}
        assert _runs(run_dir) == set()  # its own run is removed at exit
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
        host.stdin.close()
        host.stdout.close()


async def test_a_live_run_is_left_alone(run_dir: Path) -> None:
    async with Pool(ECHO, size=1, run_dir=run_dir) as first:
        (pid,) = [w.pid for w in first.workers()]
        async with Pool(ECHO, size=1, run_dir=run_dir) as second:
            assert len(_runs(run_dir)) == 2
            assert await second.execute("ping") == {"status": "pong"}
        assert [w.pid for w in first.workers()] == [pid]
        assert await first.execute("ping") == {"status": "pong"}


async def test_a_reused_pid_is_not_killed(run_dir: Path) -> None:
    # A dead run's pid file names a process that is not its worker (the pid was reused).
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    assert bystander.stdin is not None
    try:
        (run_dir / "deadbeef0000.lock").write_bytes(b"snakepit run 1\n")
        (run_dir / "deadbeef0000").mkdir()
        (run_dir / "deadbeef0000" / "w0.pid").write_text(f"{bystander.pid}\n")
        async with Pool(ECHO, size=1, run_dir=run_dir):
            assert "deadbeef0000" not in _runs(run_dir)
        assert bystander.poll() is None
    finally:
        bystander.stdin.close()
        bystander.wait()


async def test_a_run_dir_open_to_others_is_a_config_error(run_dir: Path) -> None:
    run_dir.chmod(0o755)
    with pytest.raises(ConfigError, match="run_dir"):
        async with Pool(ECHO, size=1, run_dir=run_dir):
            pass


async def test_a_run_dir_too_long_for_sockets_is_a_config_error(run_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"run_dir.*too long"):
        async with Pool(ECHO, size=1, run_dir=run_dir / ("x" * 100)):
            pass


def test_run_dir_must_be_a_path() -> None:
    with pytest.raises(ConfigError, match="run_dir"):
        Pool(ECHO, run_dir=3)  # type: ignore[arg-type]


async def test_files_that_are_not_runs_are_left_alone(run_dir: Path) -> None:
    # A base shared with other things: only a run's own lock and directory go.
    (run_dir / "cache").mkdir()
    (run_dir / "cache" / "precious.txt").write_text("keep me")
    (run_dir / "cache.lock").touch()
    (run_dir / "0123456789ab.lock").write_bytes(b"not ours")
    (run_dir / "0123456789ab").mkdir()
    async with Pool(ECHO, size=1, run_dir=run_dir):
        pass
    assert (run_dir / "cache" / "precious.txt").read_text() == "keep me"
    assert (run_dir / "cache.lock").exists()
    assert (run_dir / "0123456789ab").is_dir()


HOSTILE_HOST = """
import sys, anyio, snakepit

async def main():
    pool = snakepit.Pool(
        "tests.integration._process_adapters:Hostile", size=1, run_dir=sys.argv[1]
    )
    async with pool:
        left = await pool.execute("orphan_holding_pipes", {{"fifo": sys.argv[2]}})
        print(" ".join(str(w.pid) for w in pool.workers()), left, flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)  # until killed

anyio.run(main)
"""


async def test_what_the_tools_of_a_dead_run_left_is_killed_too(
    run_dir: Path, tmp_path: Path
) -> None:
    # As above (everything of the dead run stopped, so it cannot clean up),
    # and its worker's tool left a process in a session of its own.
    fifo = tmp_path / "hold"
    os.mkfifo(fifo)
    hold = os.open(fifo, os.O_RDWR)  # that process runs while it is open
    host = subprocess.Popen(
        [sys.executable, "-c", HOSTILE_HOST.format(), str(run_dir), str(fifo)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        start_new_session=True,
    )
    assert host.stdin is not None
    assert host.stdout is not None
    pids: list[int] = []
    try:
        line = await anyio.to_thread.run_sync(host.stdout.readline)
        worker, left = (int(p) for p in line.split())
        pids = sorted(descendant_pids(host.pid))
        assert {worker, left} <= set(pids)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        host.kill()
        host.wait()
        async with Pool(ECHO, size=1, run_dir=run_dir):
            for pid in pids:
                await wait_exit(pid, timeout=10)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        os.close(hold)
        host.stdin.close()
        host.stdout.close()


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
async def test_a_timeout_kill_takes_what_the_tools_started_in_other_sessions(
    start_method: StartMethod, tmp_path: Path
) -> None:
    # The pool kills a worker (a call timed out) with a process its tool
    # started in a session of its own: that process goes too, whether the
    # worker was forked by the fork server (a subreaper) or exec'd by the host.
    fifo = tmp_path / "hold"
    os.mkfifo(fifo)
    hold = os.open(fifo, os.O_RDWR)  # the process left behind runs while it is open
    orphan = 0
    try:
        async with Pool(
            "tests.integration._process_adapters:Hostile",
            size=1,
            cwd=str(ROOT),
            start_method=start_method,
            health_interval=None,
        ) as pool:
            orphan = await pool.execute("orphan_holding_pipes", {"fifo": str(fifo)})
            with pytest.raises(ExecutionTimeout):
                await pool.execute("block", timeout=0.2)
            with anyio.fail_after(5):
                await wait_exited(orphan)
    finally:
        if orphan:
            with contextlib.suppress(ProcessLookupError):
                os.kill(orphan, signal.SIGKILL)
        os.close(hold)
