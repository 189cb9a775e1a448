"""assert_no_leaks: tasks, child processes and file descriptors left behind by a block.

A snapshot is taken on entry and compared on exit. What is still finishing
gets a deadline to finish, waited for by event (a task's completion, a
child's pidfd: its exit, then its reaping); what is left after it is
reported, each item described well enough to find its source: a task's name
and where its coroutine is suspended, a process's pid, state and command
line, an fd's target.

Tasks are those of the running event loop, on asyncio and on trio. Child
processes are every descendant (children, grandchildren...); they and the
fds are read from ``/proc`` (Linux); elsewhere fds come from ``/dev/fd`` and
child processes are not checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import select
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

import anyio

__all__ = (
    "LeakCheck",
    "LeakOptions",
    "assert_no_leaks",
    "child_pids",
    "describe_process",
    "wait_exited",
)

#: Seconds that tasks and processes still finishing on exit get by default.
DEFAULT_GRACE = 1.0


# -- tasks ----------------------------------------------------------------------------------


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _trio_tasks() -> list[Any]:
    """The main task of this trio run and every task below it.

    System tasks (``spawn_system_task``: trio's own, and per-run helpers such
    as snakepit's OTP timer task, made on first use) live as long as the run:
    they are left out.
    """
    import trio

    task = trio.lowlevel.current_task()
    root = trio.lowlevel.current_root_task()
    while task.parent_nursery is not None and task.parent_nursery.parent_task is not root:
        task = task.parent_nursery.parent_task
    found: list[Any] = []
    stack = [task]
    while stack:
        task = stack.pop()
        found.append(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return found


#: asyncio tasks that are a test runner's plumbing, not the code under test: anyio's
#: pytest plugin wraps each fixture step and test in a new one.
_PLUMBING = ("TestRunner._call_in_runner_task",)


def _current_tasks() -> list[Any]:
    """The live tasks of the running loop (asyncio Tasks or trio Tasks)."""
    if _on_asyncio():
        return [
            t
            for t in asyncio.all_tasks()
            if not t.done() and getattr(t.get_coro(), "__qualname__", "") not in _PLUMBING
        ]
    return _trio_tasks()


def _where(coro: Any) -> str:
    """The chain of awaits a coroutine is suspended in: ``outer -> ... -> inner at file:line``."""
    names: list[str] = []
    frame = None
    current = coro
    for _ in range(12):
        this = getattr(current, "cr_frame", None) or getattr(current, "ag_frame", None)
        if this is None and names:
            break
        names.append(getattr(current, "__qualname__", None) or type(current).__name__)
        frame = this or frame
        current = getattr(current, "cr_await", None) or getattr(current, "ag_await", None)
        if current is None:
            break
    where = " -> ".join(names)
    if frame is None:
        return where
    return f"{where} at {frame.f_code.co_filename}:{frame.f_lineno}"


def _describe_task(task: Any) -> str:
    if isinstance(task, asyncio.Task):
        return f"task {task.get_name()!r}: {_where(task.get_coro())}"
    return f"task {task.name!r}: {_where(task.coro)}"


# -- child processes ------------------------------------------------------------------------


def child_pids(root: int | None = None) -> set[int] | None:
    """Every descendant of this process (or of ``root``), running or unreaped; None without /proc.

    Children, their children, and so on: a pool's workers forked by a fork
    server are grandchildren of the test process, and a leaked one must be
    seen as surely as a leaked child. Zombies count (exited, not yet reaped
    by their parent). A process whose parent exited is re-parented away (to
    init or a subreaper) and is no longer a descendant. ::

        before = child_pids()
        ...  # start and stop workers
        assert child_pids() == before

    Cheap enough to call around every test: one small read per thread of each
    descendant (``/proc/PID/task/TID/children``); a full ``/proc`` scan only
    on kernels built without ``CONFIG_PROC_CHILDREN``.
    """
    if not os.path.isdir("/proc/self/task"):
        return None
    root = os.getpid() if root is None else root
    if not _has_children_files():
        return _descendants_by_scan(root)
    found: set[int] = set()
    todo = [root]
    while todo:
        for pid in _children_of(todo.pop()):
            if pid not in found:  # a reused pid cannot make a cycle, but be sure
                found.add(pid)
                todo.append(pid)
    return found


@functools.cache
def _has_children_files() -> bool:
    """Whether ``/proc/PID/task/TID/children`` exists (``CONFIG_PROC_CHILDREN``)."""
    return os.path.exists(f"/proc/self/task/{threading.get_native_id()}/children")


def _children_of(pid: int) -> list[int]:
    """The children of ``pid`` (of all its threads); empty once it is gone."""
    base = f"/proc/{pid}/task"
    try:
        threads = os.listdir(base)
    except OSError:  # it was reaped meanwhile
        return []
    pids: list[int] = []
    for tid in threads:
        try:
            with open(f"{base}/{tid}/children", "rb") as children:
                pids.extend(map(int, children.read().split()))
        except OSError:  # that thread ended while we looked
            continue
    return pids


def _descendants_by_scan(root: int) -> set[int]:
    """The descendants of ``root`` from every process's parent pid (one pass over /proc)."""
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{name}/stat") as stat:
                ppid = int(_stat_fields(stat.read())[1])
            kids.setdefault(ppid, []).append(int(name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for pid in kids.get(todo.pop(), ()):
            if pid not in found:
                found.add(pid)
                todo.append(pid)
    return found


def _stat_fields(stat: str) -> list[str]:
    """The fields of /proc/PID/stat after the command name: state, ppid, pgrp, ..."""
    return stat.rsplit(")", 1)[1].split()


def _state(pid: int) -> str | None:
    """The process's state letter (``Z`` for a zombie), or None when it is gone."""
    try:
        return _stat_fields(Path(f"/proc/{pid}/stat").read_text())[0]
    except (OSError, IndexError):
        return None


def describe_process(pid: int) -> str:
    """``pid [state] cmdline`` for a report (``(gone)`` once it was reaped)."""
    state = _state(pid)
    if state is None:
        return f"pid {pid} (gone)"
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        raw = b""
    cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    if state in ("Z", "X"):
        return f"pid {pid} [{state}: exited, never reaped] {cmdline}".rstrip()
    return f"pid {pid} [{state}] {cmdline}".rstrip()


async def wait_exited(pid: int) -> None:
    """Return once ``pid`` has exited (zombie or gone); by its pidfd, no polling.

    Returns at once where pidfds are missing (the caller's deadline and
    re-check decide then).
    """
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, AttributeError, OSError):
        return
    try:
        await anyio.wait_readable(fd)
    finally:
        os.close(fd)


#: ``PIDFD_THREAD`` (``linux/pidfd.h``): ``pidfd_open`` of a single thread (Linux 6.9).
_PIDFD_THREAD = os.O_EXCL


@functools.cache
def _pidfd_reports_reaping() -> bool:
    """Whether a pidfd reports EPOLLHUP once its process is reaped (Linux >= 6.9).

    Before, a pidfd turns readable at the exit and then never changes. Probed
    once, on a thread of ours: a thread is released the moment it ends, so its
    pidfd (``PIDFD_THREAD``, which came with the same kernel) hangs up at once.
    """
    if not hasattr(os, "pidfd_open") or not hasattr(select, "epoll"):
        return False
    started, release = threading.Event(), threading.Event()
    tids: list[int] = []

    def body() -> None:
        tids.append(threading.get_native_id())
        started.set()
        release.wait()

    thread = threading.Thread(target=body, name="snakepit-pidfd-probe", daemon=True)
    thread.start()
    started.wait()
    try:
        fd = os.pidfd_open(tids[0], _PIDFD_THREAD)
    except OSError:  # EINVAL: no PIDFD_THREAD, an older kernel
        return False
    finally:
        release.set()
        thread.join()
    try:
        poller = select.poll()
        poller.register(fd, 0)  # no events asked: only a hang-up wakes it
        return bool(poller.poll(1000))  # the thread is released as it ends: ~at once
    finally:
        os.close(fd)


async def _wait_reaped(pids: set[int]) -> None:
    """Wait until ``pids`` have exited and been reaped by their parents.

    Reaping is done by whoever owns the process (asyncio's child watcher,
    trio's waiter, ``Popen.wait``, a fork server for its workers). Since
    Linux 6.9 a pidfd reports it: EPOLLHUP once the process is released. One
    epoll set holds a pidfd per process, registered for no event (EPOLLHUP
    always counts), so it turns readable only when one is reaped, not at the
    exit; the event loop waits on it. The caller's deadline bounds the wait.
    Older kernels: :func:`_wait_reaped_by_polling`.
    """
    if not _pidfd_reports_reaping():
        await _wait_reaped_by_polling(pids)
        return
    poller = select.epoll()
    fds: dict[int, int] = {}
    try:
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue  # reaped already
            fds[fd] = pid
            poller.register(fd, 0)
        # A pidfd pins its process: one still our descendant now is the one we listed
        # (a pid reaped before pidfd_open and reused by a stranger would not be).
        ours = child_pids() or set()
        for fd in [fd for fd, pid in fds.items() if pid not in ours]:
            poller.unregister(fd)
            os.close(fds.pop(fd))
        while fds:
            for fd, _ in poller.poll(0):
                poller.unregister(fd)
                os.close(fd)
                del fds[fd]
            if fds:
                await anyio.wait_readable(poller.fileno())
    finally:
        for fd in fds:
            os.close(fd)
        poller.close()


async def _wait_reaped_by_polling(pids: set[int]) -> None:
    """:func:`_wait_reaped` where pidfds do not report reaping (Linux < 6.9, no pidfds).

    The exits are waited for by pidfd; the reaping, which then sends no event,
    by re-reading the descendants with a backoff from 1 ms to 50 ms.
    """
    for pid in pids:
        await wait_exited(pid)
    delay = 0.001
    while True:
        left = child_pids()
        if left is None or not (pids & left):
            return
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.05)


# -- file descriptors -----------------------------------------------------------------------


def _fd_dir() -> str | None:
    for path in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(path):
            return path
    return None


def _shared_fork_servers() -> tuple[frozenset[int], set[int]]:
    """The pids and fds of the process's shared fork servers: no test's leak.

    They outlive the test that started them, on purpose (see
    :class:`~snakepit.pool.SharedForkServers`); their workers are the pools'.
    """
    if "snakepit.pool" not in sys.modules:
        return frozenset(), set()
    from snakepit.pool import default_fork_servers

    shared = default_fork_servers()
    if shared is None:
        return frozenset(), set()
    return shared.pids, shared.held_fds()


def _open_fds() -> dict[int, str] | None:
    """Every open fd and what it points to; None where that cannot be listed."""
    base = _fd_dir()
    if base is None:
        return None
    fds: dict[int, str] = {}
    for name in os.listdir(base):
        try:
            fds[int(name)] = os.readlink(f"{base}/{name}")
        except (OSError, ValueError):
            continue  # the listing's own fd (closed by now), or one closed meanwhile
    return fds


def _hold_grpc() -> Any:
    """Make grpc.aio's poller now, and keep it until the returned channel is closed.

    grpc.aio makes its poller (two epoll fds, two eventfds, a socket pair) for
    its first channel or server and drops it after the last one is closed,
    its fds closed when the garbage collector gets to it. A channel that is
    never connected, made before the snapshot and closed after the check,
    keeps one poller across both, so the block is blamed for none of it.
    """
    if not _on_asyncio():
        return None  # grpc.aio runs on asyncio only
    from snakepit._wire._grpc_logging import import_grpc_quietly

    import_grpc_quietly()  # if it is the first import of grpc: its logging at ERROR
    import grpc.aio

    return grpc.aio.insecure_channel("unix:/nonexistent-snakepit-leak-check")


# -- the check ------------------------------------------------------------------------------


class LeakOptions(TypedDict, total=False):
    """The options of :func:`assert_no_leaks`, the keywords of :meth:`LeakCheck.snapshot`.

    Every key is optional; :meth:`LeakCheck.snapshot` holds the defaults.
    """

    #: Check the running event loop's tasks (asyncio or trio). Default True.
    tasks: bool
    #: Check this process's descendants (Linux ``/proc``). Default True.
    subprocesses: bool
    #: Check open file descriptors. Default True.
    fds: bool
    #: Seconds that tasks and processes still finishing get. Default 1.0.
    grace: float
    #: Called with ``(fd, target)``; True leaves that fd out. Default None.
    ignore_fds: Callable[[int, str], bool] | None
    #: Hold grpc.aio's shared poller from the snapshot to the check. Default None (auto).
    warm_grpc: bool | None


@dataclass(eq=False)
class LeakCheck:
    """A snapshot of tasks, child processes and fds, and the check against it.

    :func:`assert_no_leaks` is the usual way in; the ``otp_sandbox`` fixture
    uses this class directly (it snapshots at setup and checks at teardown)::

        check = await LeakCheck.snapshot(fds=False)
        await do_work()
        await check.verify()  # AssertionError listing what leaked

    :param ignore_fds: called with ``(fd, target)``; True leaves that fd out.
    """

    tasks: bool = True
    subprocesses: bool = True
    fds: bool = True
    grace: float = DEFAULT_GRACE
    ignore_fds: Callable[[int, str], bool] | None = None
    _tasks: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet, repr=False)
    _children: set[int] | None = field(default=None, repr=False)
    _fds: dict[int, str] | None = field(default=None, repr=False)
    _grpc: Any = field(default=None, repr=False)

    @classmethod
    async def snapshot(
        cls,
        *,
        tasks: bool = True,
        subprocesses: bool = True,
        fds: bool = True,
        grace: float = DEFAULT_GRACE,
        ignore_fds: Callable[[int, str], bool] | None = None,
        warm_grpc: bool | None = None,
    ) -> LeakCheck:
        """Take the snapshot now (see :func:`assert_no_leaks` for the options).

        :raises ValueError: ``grace`` is negative.
        """
        if not grace >= 0:
            raise ValueError(f"grace must be seconds >= 0, got {grace!r}")
        check = cls(tasks, subprocesses, fds, grace, ignore_fds)
        if fds and (warm_grpc or (warm_grpc is None and "grpc" in sys.modules)):
            check._grpc = _hold_grpc()
        if tasks:
            check._tasks.update(_current_tasks())
        if subprocesses:
            check._children = child_pids()
        if fds:
            check._fds = _open_fds()
        return check

    def _new_tasks(self) -> list[Any]:
        if not self.tasks:
            return []
        me = _current_task()
        return [t for t in _current_tasks() if t not in self._tasks and t is not me]

    def _new_children(self) -> set[int]:
        if self._children is None:
            return set()
        now = child_pids()
        return (now or set()) - self._children - _shared_fork_servers()[0]

    def _new_fds(self) -> dict[int, str]:
        if self._fds is None:
            return {}
        now = _open_fds() or {}
        ignore = self.ignore_fds
        shared = _shared_fork_servers()[1]
        return {
            fd: target
            for fd, target in now.items()
            if self._fds.get(fd) != target
            and fd not in shared
            and not (ignore is not None and ignore(fd, target))
        }

    async def leaks(self) -> list[str]:
        """Wait up to ``grace`` for what is finishing; describe what is left (empty: none).

        Called once: it ends the check.
        """
        try:
            with anyio.move_on_after(self.grace if self.grace < math.inf else None):
                await self._settle()
            found = [_describe_task(t) for t in self._new_tasks()]
            found += [describe_process(pid) for pid in sorted(self._new_children())]
            found += [f"fd {fd} -> {target}" for fd, target in sorted(self._new_fds().items())]
        finally:
            channel, self._grpc = self._grpc, None
            if channel is not None:
                with anyio.CancelScope(shield=True):
                    await channel.close()
        return found

    async def _settle(self) -> None:
        # Tasks first: a task that finishes may reap a process or close an fd.
        if self._new_tasks():
            if _on_asyncio():
                # A task that exits may have started others: until none is left.
                while pending := self._new_tasks():
                    await asyncio.wait(pending)
            else:
                await self._trio_tasks_finished()
        # Until reaped; a process that ends may have started others meanwhile.
        waited: set[int] = set()
        while children := self._new_children() - waited:
            await _wait_reaped(children)
            waited |= children

    async def _trio_tasks_finished(self) -> None:
        """Wait until the new trio tasks have exited: an instrument sees each exit."""
        import trio

        done = trio.Event()
        pending: set[Any] = set()

        class Watch(trio.abc.Instrument):
            def task_exited(self, task: trio.lowlevel.Task) -> None:
                pending.discard(task)
                if not pending:
                    done.set()

        watch = Watch()
        trio.lowlevel.add_instrument(watch)
        try:
            while True:  # a task that exits may have started others
                pending.update(self._new_tasks())
                if not pending:
                    return
                await done.wait()
                done = trio.Event()
        finally:
            trio.lowlevel.remove_instrument(watch)

    async def verify(self) -> None:
        """Raise AssertionError listing every leak (see :meth:`leaks`)."""
        found = await self.leaks()
        if found:
            listing = "\n".join(f"  {item}" for item in found)
            raise AssertionError(
                f"leaked {len(found)} resource(s) (still there {self.grace:g}s after the "
                f"block):\n{listing}"
            )


def _current_task() -> Any:
    if _on_asyncio():
        return asyncio.current_task()
    import trio

    return trio.lowlevel.current_task()


@asynccontextmanager
async def assert_no_leaks(**options: Unpack[LeakOptions]) -> AsyncIterator[LeakCheck]:
    """Fail if the block leaves tasks, child processes or open fds behind.

    ::

        async with assert_no_leaks():
            async with Pool(adapter="myapp:Model", size=2) as pool:
                await pool.execute("ping")

    On exit, tasks started in the block that are still running get up to
    ``grace`` seconds to finish (each one's completion is waited for: a
    done-callback on asyncio, an instrument on trio), child processes to
    exit and be reaped by their owner (both seen on a pidfd). What is left
    is listed in the ``AssertionError``: task names and where each is
    suspended, pids with state and command line, fds with their targets.
    Nothing is cleaned up: the leak is yours.

    Only a block that exits normally is checked: an exception from the block
    propagates unchanged. The keywords are :class:`LeakOptions`, the same as
    :meth:`LeakCheck.snapshot` takes:

    :param tasks: check the running event loop's tasks (asyncio or trio).
    :param subprocesses: check this process's descendants: children,
        grandchildren (a fork server's workers)... (Linux ``/proc``).
    :param fds: check open file descriptors (``/proc/self/fd`` or ``/dev/fd``).
    :param ignore_fds: called with ``(fd, target)``; True leaves that fd out
        (e.g. a library's lazily made, process-wide poller).
    :param warm_grpc: hold grpc.aio's shared poller (two epoll fds, two
        eventfds, a socket pair, made for the first channel or server and
        dropped after the last) from the snapshot to the check, so the block
        is not blamed for it. None (the default): when grpc is imported
        already and the loop is asyncio's.
    :raises AssertionError: something leaked.
    """
    check = await LeakCheck.snapshot(**options)
    yield check
    await check.verify()
