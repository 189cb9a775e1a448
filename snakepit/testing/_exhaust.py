"""exhaust: hold file descriptors, tasks or child processes for an ``async with`` block.

Everything held is released on exit, whatever the block did: fds closed,
tasks ended, processes told to exit, killed after a deadline, and reaped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Literal, TypeAlias

import anyio
from anyio.abc import Process

from snakepit.errors import ConfigError, check_int
from snakepit.otp import unwrapped_task_group

from ._common import DEFAULT_DEADLINE

__all__ = (
    "Exhaustion",
    "exhaust",
)


#: What :func:`exhaust` takes up.
ExhaustKind: TypeAlias = Literal["fds", "tasks", "subprocesses"]


@dataclass(frozen=True, slots=True)
class Exhaustion:
    """What :func:`exhaust` holds for the duration of its block.

    ::

        async with exhaust("fds", 100) as held:
            assert held.count == 100 and len(held.fds) == 100
    """

    kind: ExhaustKind
    #: How many are held (fewer than asked for fds when the table filled up).
    count: int
    #: The file descriptors held ("fds").
    fds: tuple[int, ...] = ()
    #: The idle child processes, each its own process group ("subprocesses").
    pids: tuple[int, ...] = ()


@asynccontextmanager
async def exhaust(
    kind: ExhaustKind, n: int, *, timeout: float = DEFAULT_DEADLINE
) -> AsyncIterator[Exhaustion]:
    """Hold ``n`` file descriptors, tasks or child processes for an ``async with`` block.

    ``"fds"`` opens ``os.devnull`` ``n`` times (stopping early, with the
    table full, at EMFILE: ``count`` says how many). ``"tasks"`` starts ``n``
    tasks that wait on an event; the block runs once all of them are waiting.
    ``"subprocesses"`` starts ``n`` idle processes, each in its own process
    group. On exit everything is released: fds closed, tasks ended, processes
    told to exit (stdin closed), their groups killed after ``timeout``, reaped.

    ::

        async with exhaust("subprocesses", 5) as held:
            await check_it_still_works()

    :raises ConfigError: an unknown ``kind``, or ``n`` < 0.
    """
    check_int("n", n, 0)
    if kind == "fds":
        held: AbstractAsyncContextManager[Exhaustion] = _hold_fds(n)
    elif kind == "tasks":
        held = _hold_tasks(n, timeout)
    elif kind == "subprocesses":
        held = _hold_processes(n, timeout)
    else:
        raise ConfigError("kind", f"must be 'fds', 'tasks' or 'subprocesses', got {kind!r}")
    async with held as exhaustion:
        yield exhaustion


@asynccontextmanager
async def _hold_fds(n: int) -> AsyncIterator[Exhaustion]:
    fds: list[int] = []
    try:
        for _ in range(n):
            try:
                fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE):
                    raise
                break  # the table is full: that is what exhaustion means
        yield Exhaustion("fds", len(fds), fds=tuple(fds))
    finally:
        for fd in fds:
            os.close(fd)


@asynccontextmanager
async def _hold_tasks(n: int, timeout: float) -> AsyncIterator[Exhaustion]:
    release = anyio.Event()
    waiting = anyio.Event()
    count = 0

    async def idle() -> None:
        nonlocal count
        count += 1
        if count == n:
            waiting.set()
        await release.wait()

    async with unwrapped_task_group() as tg:
        try:
            for _ in range(n):
                tg.start_soon(idle)
            if n:
                with anyio.fail_after(timeout):
                    await waiting.wait()
            yield Exhaustion("tasks", n)
        finally:
            release.set()


def _idle_command() -> list[str]:
    cat = shutil.which("cat")  # reads stdin until it is closed: idle, and starts in ~1 ms
    return [cat] if cat else [sys.executable, "-c", "import sys; sys.stdin.buffer.read()"]


@asynccontextmanager
async def _hold_processes(n: int, grace: float) -> AsyncIterator[Exhaustion]:
    procs: list[Process] = []
    try:
        command = _idle_command()
        for _ in range(n):
            procs.append(
                await anyio.open_process(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        yield Exhaustion("subprocesses", n, pids=tuple(p.pid for p in procs))
    finally:
        with anyio.CancelScope(shield=True):
            for proc in procs:
                await _reap(proc, grace)


async def _reap(proc: Process, grace: float) -> None:
    if proc.stdin is not None:
        with contextlib.suppress(OSError, anyio.BrokenResourceError):
            await proc.stdin.aclose()  # EOF: it exits on its own
    with anyio.move_on_after(grace):
        await proc.wait()
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # unreaped, so the group id is still ours
        await proc.wait()
