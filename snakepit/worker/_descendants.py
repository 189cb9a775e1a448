"""A worker's descendants: kept under it (a child subreaper), listed, and ended.

A worker is a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``): a process
its tools started whose parent exits (a daemon's double fork, a shell's
background job) is re-parented to the worker, not to init, in whatever
session or process group it runs. So the worker's descendants are all it
ever started that still lives, and it can end them all before it exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import time

__all__ = ()  # internal to the worker

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process a child subreaper; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        return False


def _children(pid: int, parents: dict[int, list[int]] | None) -> list[int]:
    if parents is not None:
        return parents.get(pid, [])
    found: list[int] = []
    base = f"/proc/{pid}/task"
    try:
        threads = os.listdir(base)
    except OSError:
        return found
    for tid in threads:
        with contextlib.suppress(OSError, ValueError), open(f"{base}/{tid}/children", "rb") as f:
            found.extend(map(int, f.read().split()))
    return found


def _parents_by_scan() -> dict[int, list[int]]:
    """Every process's children, from each one's parent pid (kernels without ``children``)."""
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{name}/stat", "rb") as stat:
                    ppid = int(stat.read().rsplit(b")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(name))
    return kids


def descendants(root: int | None = None, *, depth: int = 0) -> list[int]:
    """The descendants of ``root`` (default: this process), parents before children (Linux).

    :param depth: how many generations (1: children only); 0 for all.
    """
    root = os.getpid() if root is None else root
    if not os.path.isdir("/proc/self/task"):
        return []
    tid = os.listdir("/proc/self/task")[0]
    parents = None if os.path.exists(f"/proc/self/task/{tid}/children") else _parents_by_scan()
    found: list[int] = []
    seen = {root}
    todo = [(root, 1)]
    while todo:
        parent, level = todo.pop(0)
        for pid in _children(parent, parents):
            if pid not in seen:
                seen.add(pid)
                found.append(pid)
                if level != depth:
                    todo.append((pid, level + 1))
    return found


def _signal_tree(root: int, signum: int, keep: dict[int, int] | None = None) -> list[int]:
    """Send ``signum`` to each descendant of ``root``; return the pids seen.

    A pidfd is opened for each first and the listing taken again: a pid
    still listed is pinned by its pidfd, so no reused pid is ever hit.

    :param keep: where to put the pidfds of the processes signalled (the
        caller closes them) instead of closing them here.
    """
    pids = descendants(root)
    pidfds: dict[int, int] = {}
    try:
        for pid in pids:
            with contextlib.suppress(OSError, AttributeError):
                pidfds[pid] = os.pidfd_open(pid)
        still = set(descendants(root))
        for pid in pids:
            if pid not in still:
                continue
            with contextlib.suppress(OSError):
                if pid in pidfds:
                    signal.pidfd_send_signal(pidfds[pid], signum)
                    if keep is not None:
                        keep[pid] = pidfds.pop(pid)
                else:
                    os.kill(pid, signum)
    finally:
        for fd in pidfds.values():
            os.close(fd)
    return pids


def kill_tree(root: int) -> None:
    """SIGKILL ``root`` and every process below it, in any session or group.

    ``root`` is stopped first, then its descendants, so that none starts a
    process that the listing misses; then all are killed, below first. For a
    parent that must end a child's whole tree (the child must not be reaped
    yet: its pid is then still its own). Each process it stopped is killed
    through its pidfd at the end, even one no longer below ``root`` (its
    parent exited meanwhile and it moved to init): none is left stopped.
    """
    stopped: dict[int, int] = {}
    try:
        with contextlib.suppress(ProcessLookupError):
            os.kill(root, signal.SIGSTOP)
        _signal_tree(root, signal.SIGSTOP, keep=stopped)
        _signal_tree(root, signal.SIGKILL)
    except OSError:  # no listing (out of fds...): the root at least, never left stopped
        pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(root, signal.SIGKILL)
        for fd in stopped.values():
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            os.close(fd)


def _reap_children() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_descendants(timeout: float = 0.5) -> bool:
    """SIGKILL every descendant of this process and reap its children, for up to ``timeout`` s.

    Descendants whose parent dies come to this process (a subreaper) and are
    killed in the next round; returns True once none is left. For a process
    that is about to exit: it reaps children it did not start itself.
    """
    deadline = time.monotonic() + timeout
    while True:
        if not _signal_tree(os.getpid(), signal.SIGKILL):
            return True
        _reap_children()
        left = deadline - time.monotonic()
        if left <= 0:
            return not descendants()
        _wait_for_a_child(min(left, 0.05))


def _wait_for_a_child(timeout: float) -> None:
    """Block until a child of ours exits (its pidfd), or ``timeout`` seconds."""
    poller = select.poll()
    fds = []
    try:
        for pid in _children(os.getpid(), None):
            with contextlib.suppress(OSError, AttributeError):
                fd = os.pidfd_open(pid)
                fds.append(fd)
                poller.register(fd, select.POLLIN)
        poller.poll(timeout * 1000)
    finally:
        for fd in fds:
            os.close(fd)
