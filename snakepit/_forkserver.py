"""The host side of a fork server (``snakepit.worker._forkserver``).

A :class:`ForkServer` is one exec'd process per pool that has imported the
worker runtime; :meth:`ForkServer.spawn` asks it to fork a worker and returns
a :class:`ForkedProcess`, whose exit code the server reports when it reaps it.
A worker so started is ready in a few milliseconds instead of ~150 ms of
imports, and crashed workers are replaced as fast. See the worker side's
docstring for the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

__all__ = ("ForkServer", "ForkServerError", "ForkedProcess")

#: How many stderr lines of the server are kept for error messages.
STDERR_LINES = 50


class ForkServerError(Exception):
    """The fork server failed or is gone (the launcher turns it into WorkerStartError)."""


class ForkedProcess:
    """A worker forked by a :class:`ForkServer`: its pid, its stdin, its exit code.

    The fork server is its parent and reaps it; :attr:`returncode` is set
    from the server's report (negative: the signal that killed it).
    """

    def __init__(self, pid: int, stdin_fd: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._stdin_fd: int | None = stdin_fd
        self._exited = asyncio.Event()

    def _set_exit(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
        self._exited.set()

    async def wait(self) -> int:
        """Wait for the server's report of its exit; return the exit code."""
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def close_stdin(self) -> None:
        """Close the host's end of its stdin (EOF tells a worker the host is gone)."""
        fd, self._stdin_fd = self._stdin_fd, None
        if fd is not None:
            os.close(fd)


class ForkServer:
    """One running fork server; start with :meth:`start`, stop with :meth:`aclose`."""

    def __init__(
        self, proc: asyncio.subprocess.Process, control: socket.socket, stderr: deque[str]
    ) -> None:
        self._proc = proc
        self._control = control
        self._stderr = stderr
        self._children: dict[int, ForkedProcess] = {}
        self._replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._pending: dict[int, int] = {}  # spawn reply -> the stdin fd it carries
        self._lost: str | None = None
        self._pumps: list[asyncio.Task[None]] = []
        self._closed = False

    @property
    def pid(self) -> int:
        """The server's pid."""
        return self._proc.pid

    @property
    def alive(self) -> bool:
        """False once it exited or its control socket closed."""
        return self._lost is None and not self._closed

    @classmethod
    async def start(
        cls,
        *,
        python: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        run_id: str = "",
        ready_timeout: float = 30.0,
        on_spawn: Any = None,
    ) -> ForkServer:
        """Start ``python -m snakepit.worker._forkserver`` and wait for its ready message.

        :raises ForkServerError: it exited or did not report ready in time
            (the message has its stderr tail); nothing is left running.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [
            python or sys.executable,
            "-m",
            "snakepit.worker._forkserver",
            "--control-fd",
            str(theirs.fileno()),
            "--run-id",
            run_id,
            "--parent-pid",
            str(os.getpid()),
        ]
        try:
            with anyio.CancelScope(shield=True):  # as spawn_worker: never left unreaped
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                    start_new_session=True,
                    env=dict(env) if env is not None else None,
                    cwd=cwd,
                    pass_fds=(theirs.fileno(),),
                )
        except OSError as exc:
            ours.close()
            raise ForkServerError(f"cannot start {argv[0]}: {exc}") from exc
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        stderr: deque[str] = deque(maxlen=STDERR_LINES)
        server = cls(proc, ours, stderr)
        assert proc.stderr is not None
        server._pumps.append(asyncio.get_running_loop().create_task(_pump(proc.stderr, stderr)))
        asyncio.get_running_loop().add_reader(ours.fileno(), server._on_readable)
        try:
            if on_spawn is not None:
                on_spawn(proc.pid)
            try:
                ready = await asyncio.wait_for(server._replies.get(), ready_timeout)
            except TimeoutError:
                raise ForkServerError(
                    f"fork server not ready within {ready_timeout:g}s{server._tail()}"
                ) from None
            if ready.get("op") != "ready":
                raise ForkServerError(f"fork server did not start{server._tail()}")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await server.aclose(grace=0)
            raise
        return server

    def _tail(self) -> str:
        code = self._proc.returncode
        status = f" (exit code {code})" if code is not None else ""
        tail = "\n".join(self._stderr)
        return f"{status}: {tail}" if tail else status

    def _on_readable(self) -> None:
        while True:
            try:
                data = self._control.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._lose("the fork server exited")
                return
            message = json.loads(data)
            match message.get("op"):
                case "exit":
                    child = self._children.pop(message["pid"], None)
                    if child is not None:
                        # What is left of its process group goes too (its leader is reaped).
                        _signal_group(child.pid, signal.SIGKILL)
                        child._set_exit(int(message["code"]))
                case _:  # ready, spawned, error: the answer to the request waiting
                    self._replies.put_nowait(message)

    def _lose(self, why: str) -> None:
        if self._lost is not None:
            return
        self._lost = why
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self._control.fileno())
        # Nobody reaps its workers now: kill them (they also got their parent-death
        # signal) and report them killed.
        for child in self._children.values():
            _signal_group(child.pid, signal.SIGKILL)
            child._set_exit(-signal.SIGKILL)
        self._children.clear()
        self._replies.put_nowait({"op": "lost", "message": why})

    async def spawn(
        self, argv: list[str], *, env: Mapping[str, str], cwd: str | Path | None
    ) -> tuple[ForkedProcess, int, int]:
        """Fork a worker running ``snakepit.worker`` with ``argv``.

        Returns the process and the host's ends of its stdout and stderr
        pipes (file descriptors the caller owns).

        :raises ForkServerError: the server refused or is gone.
        """
        pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(3)]
        theirs = [pipes[0][0], pipes[1][1], pipes[2][1]]
        ours = [pipes[0][1], pipes[1][0], pipes[2][0]]
        request = {"op": "spawn", "argv": argv, "env": dict(env), "cwd": str(cwd or "")}
        try:
            async with self._lock:  # replies come in the order of requests
                if not self.alive:
                    raise ForkServerError(self._lost or "the fork server is closed")
                socket.send_fds(self._control, [json.dumps(request).encode()], theirs)
                reply = await self._replies.get()
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        if reply.get("op") != "spawned":
            for fd in ours:
                os.close(fd)
            raise ForkServerError(str(reply.get("message", reply)) + self._tail())
        child = ForkedProcess(int(reply["pid"]), ours[0])
        self._children[child.pid] = child
        return child, ours[1], ours[2]

    async def aclose(self, grace: float = 5.0) -> None:
        """Close the control socket: the server kills what it still runs and exits; reap it."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._control.fileno())
            self._control.close()
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._proc.wait()), grace)
        except TimeoutError:
            _signal_group(self._proc.pid, signal.SIGKILL)
            await self._proc.wait()
        for child in self._children.values():  # reaped with the server, unreported
            child._set_exit(-signal.SIGKILL)
        self._children.clear()
        pumps = [t for t in self._pumps if not t.done()]
        if pumps:
            await asyncio.wait(pumps)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def _pump(stream: asyncio.StreamReader, sink: deque[str]) -> None:
    while line := await stream.readline():
        sink.append(line.decode(errors="replace").rstrip("\n"))
