"""``python -m snakepit.worker._forkserver``: import the worker runtime once, fork workers.

Starting ``python -m snakepit.worker`` costs ~150 ms of CPU, nearly all of it
imports (asyncio, grpc, protobuf). A pool's fork server pays that once; each
worker it forks is ready in a few milliseconds. It is itself started by exec
(never a fork of the host), imports modules but starts nothing — no thread,
no event loop, no gRPC server — and stays single-threaded, so a fork of it is
as clean as a fresh interpreter with those modules loaded.

The host talks to it over a ``SOCK_SEQPACKET`` socket (``--control-fd``):
spawn requests in, spawned/error/exit reports out, as
:mod:`snakepit._wire._forkserver_protocol` describes (both ends use it).

Each worker runs ``snakepit.worker``'s ``run(argv)`` in its own session
(process group), with ``--parent-pid`` this server's pid and its own
parent-death signal, as an exec'd worker does. The server exits on EOF of the
control socket or of its stdin (the host is gone), and on SIGTERM: it kills
the workers it still has (their whole trees), reaps them and leaves. The
host's death sends it SIGTERM (``PR_SET_PDEATHSIG``): it does the same then,
whatever its workers' tools do (one holding the GIL in C code included).

It is a child subreaper: what a worker killed outright (SIGKILL) leaves
behind in other sessions comes to it instead of init, and is killed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import itertools
import os
import selectors
import signal
import socket
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from snakepit._wire import _forkserver_protocol as protocol

from . import _main
from ._adapter_server import AdapterStartError
from ._descendants import become_subreaper, descendants, kill_tree

__all__ = ("main", "run")

_PR_SET_NAME = 15


class ForkServer:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.children: set[int] = set()
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.stopping = False

    def send(self, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
        with contextlib.suppress(OSError):  # the host is gone: the loop sees EOF next
            protocol.send(self.control, protocol.encode(message), fds)

    def serve(self) -> int:
        signal.signal(signal.SIGCHLD, _noop)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the host decides when we stop
        signal.set_wakeup_fd(self.wake_w)
        self.selector.register(self.control, selectors.EVENT_READ, "control")
        self.selector.register(0, selectors.EVENT_READ, "stdin")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.send({"op": protocol.READY, "pid": os.getpid()})
        while not self.stopping:
            for key, _ in self.selector.select():
                if key.data == "control":
                    self._on_control()
                elif key.data == "stdin":
                    if not _read_some(0):
                        self.stopping = True  # the host is gone
                else:
                    while _read_some(self.wake_r):
                        pass
                self._reap()
        self._stop_children()
        return 0

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _on_control(self) -> None:
        received = protocol.receive(self.control, protocol.MAX_REQUEST, 4)
        if received is None:
            return
        data, fds = received
        if not data:
            self.stopping = True  # the host closed the launcher
            return
        rid = None
        try:
            request = protocol.decode(data)
            rid = request.get("id")
            if request.get("op") != protocol.SPAWN or len(fds) not in (3, 4):
                raise ValueError(f"unexpected request {data[:200]!r} with {len(fds)} fds")
            pid = self._fork(request, fds)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            self.send({"op": protocol.FAILED, "id": rid, "message": message})
        else:
            self.children.add(pid)
            # A pidfd, opened before it can be reaped (we reap it): the host
            # watches and signals it without racing a reuse of its pid. A kernel
            # without pidfds (< 5.3, or a seccomp filter): the reports alone.
            try:
                pidfds = [os.pidfd_open(pid)]
            except (OSError, AttributeError):
                pidfds = []
            try:
                self.send({"op": protocol.SPAWNED, "id": rid, "pid": pid}, pidfds)
            finally:
                protocol.close_fds(pidfds)
        finally:
            protocol.close_fds(fds)

    def _fork(self, request: dict[str, Any], fds: list[int]) -> int:
        argv = [str(a) for a in request["argv"]]
        # No "env": the server's own, which the host started it with.
        env = request.get("env")
        cwd = request.get("cwd")
        server = os.getpid()  # before the fork: the server may die right after it
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:  # the worker: nothing below returns into the server's loop
            self._become_worker(fds, env, cwd)
            # As ``python -m snakepit.worker ...`` would have it; and a name in
            # ps/top (its command line is the server's).
            argv += ["--parent-pid", str(server)]
            if len(fds) > 3:
                argv += ["--ready-fd", str(fds[3])]
            sys.argv = [os.path.join(os.path.dirname(__file__), "__main__.py"), *argv]
            _set_name(argv)
            _main.run(argv)
        except SystemExit as exc:  # as the interpreter treats an uncaught one
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                with contextlib.suppress(Exception):
                    print(exc.code, file=sys.stderr)
        except BaseException:
            with contextlib.suppress(Exception):
                traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os._exit(code)
        raise AssertionError("unreachable")  # pragma: no cover

    def _become_worker(self, fds: list[int], env: dict[str, str] | None, cwd: str | None) -> None:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh interpreter
        self.selector.close()
        self.control.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        os.setsid()
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)  # dup2 clears close-on-exec on the copy
            os.close(fd)
        if len(fds) > 3:  # the ready channel stays where it is, private (close-on-exec)
            os.set_inheritable(fds[3], False)
        if cwd:
            os.chdir(cwd)
        if env is not None:
            os.environ.clear()
            os.environ.update({str(k): str(v) for k, v in env.items()})

    def _reap(self) -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            pid = info.si_pid
            if pid not in self.children:  # an orphan it adopted (a subreaper) exited
                os.waitpid(pid, 0)
                self._kill_adopted()  # its own children came to us
                continue
            # What is left of its process group goes, while its zombie still
            # holds the group id (no reused pid can be hit); then it is reaped.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            self._reaped(pid, os.waitpid(pid, 0)[1])
            self._kill_adopted()

    def _reaped(self, pid: int, status: int) -> None:
        self.children.discard(pid)
        self.send({"op": protocol.EXIT, "pid": pid, "code": os.waitstatus_to_exitcode(status)})

    def _kill_adopted(self) -> None:
        """SIGKILL what a dead worker left in other sessions (re-parented to us, the subreaper)."""
        # Only its own children that are not workers, and what is below them:
        # a live worker's processes are its own business.
        for child in descendants(depth=1):
            if child not in self.children:
                for pid in (child, *descendants(child)):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)

    def _stop_children(self) -> None:
        # The host stops its workers before closing us; whatever is left is
        # killed (its whole tree, in any session, and its group) and reaped,
        # so nothing outlives the server.
        for pid in self.children:
            kill_tree(pid)  # not reaped yet: the pid is still the worker's
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self._kill_adopted()
        signal.set_wakeup_fd(-1)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                self._reaped(pid, os.waitpid(pid, 0)[1])
        self.children.clear()
        self._kill_adopted()  # what came to us as the workers exited


def _set_name(argv: list[str]) -> None:
    """Name the process ``sp:<worker id>`` (Linux ``comm``, 15 bytes; best effort)."""
    worker_id = "worker"
    for flag, value in itertools.pairwise(argv):
        if flag == "--worker-id":
            worker_id = value
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, f"sp:{worker_id}".encode()[:15], 0, 0, 0)


def _noop(signum: int, frame: object) -> None:
    """SIGCHLD: the wakeup fd does the work; a handler must exist for it to fire."""


def _read_some(fd: int) -> bool:
    try:
        return bool(os.read(fd, 4096))
    except BlockingIOError:
        return False
    except OSError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fork server until the host closes it; return its exit code."""
    parser = argparse.ArgumentParser(prog="python -m snakepit.worker._forkserver")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--run-id", default="", help="the host's run id (orphan cleanup)")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit if this pid goes away")
    parser.add_argument("--preload", action="append", default=[], help="a module to import")
    args = parser.parse_args(argv)
    try:
        # SIGTERM, handled: the server ends its workers' whole trees before it
        # leaves (a worker whose tool holds the GIL in C code runs no code of
        # its own any more; the server runs none of the tools).
        _main.watch_parent(args.parent_pid, signal.SIGTERM)
    except AdapterStartError as exc:
        print(f"snakepit.worker._forkserver: {exc}", file=sys.stderr, flush=True)
        return exc.code
    for module in args.preload:
        importlib.import_module(module)
    # The workers' event loop when installed (--loop auto or uvloop): imported
    # once here, not by each forked worker. It starts no thread.
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401
    control = socket.socket(fileno=args.control_fd)
    control.set_inheritable(False)
    become_subreaper()
    return ForkServer(control).serve()


def run(argv: Sequence[str] | None = None) -> None:
    """Run the fork server and leave: ``os._exit``, no interpreter teardown to wait for."""
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
