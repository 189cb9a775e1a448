"""assert_no_leaks: passes on a clean block, names each leaked task, process and fd."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest

from snakepit.testing import _leaks
from snakepit.testing._leaks import (
    LeakCheck,
    _descendants_by_scan,
    _wait_reaped,
    assert_no_leaks,
    child_pids,
)

pytestmark = pytest.mark.anyio

#: Deadline for things planted to leak: each such test waits it out once.
SHORT = 0.05


async def forever() -> None:
    await anyio.Event().wait()


@pytest.fixture
def popen() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; each is stopped and reaped after the test."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait()


async def test_clean_block_passes() -> None:
    async with assert_no_leaks():
        r, w = os.pipe()
        os.close(r)
        os.close(w)
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.lowlevel.checkpoint)
        proc = await anyio.open_process(["true"])
        await proc.wait()
        await proc.aclose()


async def test_leaked_task_is_named_with_where_it_waits() -> None:
    async with anyio.create_task_group() as outer:
        with pytest.raises(AssertionError) as caught:
            async with assert_no_leaks(grace=SHORT):
                outer.start_soon(forever, name="planted-leak")
        outer.cancel_scope.cancel()
    message = str(caught.value)
    assert "leaked 1 resource(s)" in message
    assert "task 'planted-leak'" in message
    assert "forever" in message


async def test_task_still_finishing_is_waited_for() -> None:
    release = anyio.Event()

    async def finishing() -> None:
        await release.wait()
        await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as outer, assert_no_leaks():
        outer.start_soon(finishing)
        outer.start_soon(forever)
        # Both still run when the block ends, and end on their own just after.
        release.set()
        outer.cancel_scope.cancel()


@asynccontextmanager
async def running_grandchild() -> AsyncIterator[tuple[int, int]]:
    """``(shell, sleeper)``: a live ``sh`` whose own child runs ``sleep``.

    Entered once the shell printed its child's pid (a readiness line); on exit
    both are killed (they are a process group of their own) and the shell is
    reaped, which reaps nothing else: the sleeper was the shell's to reap.
    """
    script = "sleep 1000 & echo $!; wait"
    proc = await anyio.open_process(["sh", "-c", script], start_new_session=True)
    try:
        assert proc.stdout is not None
        line = b""
        with anyio.fail_after(10):
            while not line.endswith(b"\n"):
                line += await proc.stdout.receive()
        yield proc.pid, int(line)
    finally:
        with anyio.CancelScope(shield=True):
            os.killpg(proc.pid, signal.SIGKILL)  # the shell is unreaped: the group id is ours
            await proc.aclose()


async def test_child_pids_are_every_descendant() -> None:
    async with running_grandchild() as (shell, sleeper):
        found = child_pids()
        assert found is not None
        assert {shell, sleeper} <= found
        # The same without CONFIG_PROC_CHILDREN: one scan of every process's parent.
        assert {shell, sleeper} <= _descendants_by_scan(os.getpid())
    assert child_pids() == found - {shell, sleeper}


async def test_a_leaked_grandchild_is_listed() -> None:
    async with AsyncExitStack() as outlives_the_check:
        with pytest.raises(AssertionError) as caught:
            async with assert_no_leaks(grace=SHORT, fds=False):
                shell, sleeper = await outlives_the_check.enter_async_context(running_grandchild())
    message = str(caught.value)
    # Each named with its state (R or S: sleep may not be asleep yet) and command.
    assert re.search(rf"pid {sleeper} \[[RS]\] sleep 1000\n?", message), message
    assert re.search(rf"pid {shell} \[[RS]\] sh -c sleep 1000 & echo \$!; wait", message), message


async def test_leaked_child_process_is_listed(popen: list[subprocess.Popen[bytes]]) -> None:
    with pytest.raises(AssertionError) as caught:
        async with assert_no_leaks(grace=SHORT, fds=False):
            popen.append(subprocess.Popen(["cat"], stdin=subprocess.PIPE))
    pid = popen[0].pid
    assert f"pid {pid} [" in str(caught.value)
    assert "cat" in str(caught.value)


async def exit_unreaped(popen: list[subprocess.Popen[bytes]]) -> None:
    popen.append(proc := subprocess.Popen(["true"]))
    fd = os.pidfd_open(proc.pid)
    try:
        await anyio.wait_readable(fd)  # it exited; nobody waits for it
    finally:
        os.close(fd)


async def test_unreaped_child_is_listed(popen: list[subprocess.Popen[bytes]]) -> None:
    with pytest.raises(AssertionError, match="exited, never reaped"):
        async with assert_no_leaks(grace=SHORT, fds=False):
            await exit_unreaped(popen)


@pytest.mark.parametrize("by_pidfd", [True, False], ids=["pidfd", "polling"])
async def test_an_exited_child_is_waited_for_until_it_is_reaped(
    popen: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch, by_pidfd: bool
) -> None:
    if by_pidfd and not _leaks._pidfd_reports_reaping():
        pytest.skip("this kernel's pidfds do not report reaping (Linux < 6.9)")
    monkeypatch.setattr(_leaks, "_pidfd_reports_reaping", lambda: by_pidfd)
    await exit_unreaped(popen)
    proc = popen[0]
    with anyio.move_on_after(SHORT) as scope:
        await _wait_reaped({proc.pid})
    assert scope.cancelled_caught, "it returned for a zombie: exited is not reaped"

    async def reap() -> None:  # runs once the wait below is parked
        proc.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reap)
        with anyio.fail_after(5):
            await _wait_reaped({proc.pid})
    assert proc.pid not in (child_pids() or set())


async def test_exiting_child_is_waited_for() -> None:
    async with anyio.create_task_group() as outer, assert_no_leaks():
        proc = await anyio.open_process(["cat"], stdout=subprocess.DEVNULL)
        outer.start_soon(proc.aclose)  # closes stdin: cat exits, then it is reaped


async def test_open_fd_is_listed_with_its_target() -> None:
    with pytest.raises(AssertionError) as caught:
        async with assert_no_leaks(grace=SHORT):
            r, w = os.pipe()
    os.close(r)
    os.close(w)
    assert f"fd {r} -> pipe:[" in str(caught.value)
    assert f"fd {w} -> pipe:[" in str(caught.value)


async def test_ignored_fds_and_disabled_checks() -> None:
    async with assert_no_leaks(ignore_fds=lambda fd, target: target.startswith("pipe:")):
        r, w = os.pipe()
    async with assert_no_leaks(fds=False):
        r2, w2 = os.pipe()
    for fd in (r, w, r2, w2):
        os.close(fd)


async def test_an_error_in_the_block_is_not_masked() -> None:
    fds: list[int] = []

    async def fail_with_a_pipe_open() -> None:
        async with assert_no_leaks(grace=SHORT):
            fds.extend(os.pipe())
            raise KeyError("mine")

    with pytest.raises(KeyError):
        await fail_with_a_pipe_open()
    for fd in fds:
        os.close(fd)


async def test_snapshot_rejects_a_negative_grace() -> None:
    with pytest.raises(ValueError, match="grace"):
        await LeakCheck.snapshot(grace=-1)
