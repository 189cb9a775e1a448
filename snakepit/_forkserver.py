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
import itertools
import json
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import Callable, Mapping
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
        #: Requests waiting for their answer, by id (0: the ready message).
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._lost: str | None = None
        self._pumps: list[asyncio.Task[None]] = []
        self._closed = False

    @property
    def pid(self) -> int:
        """The server's pid."""
        return self._proc.pid

    @property
    def alive(self) -> bool:
        """False once it exited, stopped answering, or was closed."""
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
        on_spawn: Callable[[int], object] | None = None,
    ) -> ForkServer:
        """Start ``python -m snakepit.worker._forkserver`` and wait for its ready message.

        :param on_spawn: called with its pid as soon as the process exists.
        :raises ForkServerError: it could not be started, exited, or did not
            report ready in time (the message has its exit code and stderr
            tail); nothing is left running.
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
        server = cls(proc, ours, deque(maxlen=STDERR_LINES))
        loop = asyncio.get_running_loop()
        assert proc.stderr is not None
        server._pumps.append(loop.create_task(_pump(proc.stderr, server._stderr)))
        ready = server._waiting[0] = loop.create_future()
        loop.add_reader(ours.fileno(), server._on_readable)
        failure = None
        try:
            if on_spawn is not None:
                on_spawn(proc.pid)
            try:
                await asyncio.wait_for(ready, ready_timeout)
            except TimeoutError:
                failure = f"not ready within {ready_timeout:g}s"
            except ForkServerError:
                failure = "it exited before it was ready"
        except BaseException:
            with anyio.CancelScope(shield=True):
                await server.aclose(grace=0)
            raise
        if failure is not None:
            with anyio.CancelScope(shield=True):
                await server.aclose(grace=0)  # reaped, and its stderr read to the end
            raise ForkServerError(failure + server._tail())
        return server

    def _tail(self) -> str:
        code = self._proc.returncode
        status = f" (exit code {code})" if code is not None and code >= 0 else ""
        if code is not None and code < 0:
            status = f" (killed by {signal.Signals(-code).name})"
        tail = "\n".join(self._stderr)
        return f"{status}\n--- stderr (last lines) ---\n{tail}" if tail else status

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
            if message.get("op") == "exit":
                child = self._children.pop(message["pid"], None)
                if child is not None:
                    # What is left of its process group goes too (its leader is reaped).
                    _signal_group(child.pid, signal.SIGKILL)
                    child._set_exit(int(message["code"]))
                continue
            # ready, spawned, error: the answer to a request. Nobody waits for the
            # answer of a cancelled spawn: its worker, its stdin closed, exits.
            waiter = self._waiting.pop(int(message.get("id") or 0), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message)

    def _lose(self, why: str, *, kill: bool = True) -> None:
        if self._lost is not None:
            return
        self._lost = why
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self._control.fileno())
        # Nobody reaps its workers now: kill them (they also got their parent-death
        # signal) and report them killed.
        for child in self._children.values():
            if kill:
                _signal_group(child.pid, signal.SIGKILL)
            child._set_exit(-signal.SIGKILL)
        self._children.clear()
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            if not waiter.done():
                waiter.set_exception(ForkServerError(why))

    async def spawn(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str],
        cwd: str | Path | None,
        timeout: float = 30.0,
    ) -> tuple[ForkedProcess, int, int]:
        """Fork a worker running ``snakepit.worker`` with ``argv``.

        Returns the process and the host's ends of its stdout and stderr
        pipes (file descriptors the caller owns).

        :raises ForkServerError: the server refused, is gone, or did not
            answer within ``timeout`` seconds (then it is killed: a fork
            server that hangs is of no use).
        """
        if not self.alive:
            raise ForkServerError(self._lost or "the fork server is closed")
        rid = next(self._ids)
        request = {"op": "spawn", "id": rid, "argv": argv, "env": dict(env), "cwd": str(cwd or "")}
        pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(3)]
        theirs = [pipes[0][0], pipes[1][1], pipes[2][1]]
        ours = [pipes[0][1], pipes[1][0], pipes[2][0]]
        answer = self._waiting[rid] = asyncio.get_running_loop().create_future()
        try:
            try:
                socket.send_fds(self._control, [json.dumps(request).encode()], theirs)
            except OSError as exc:
                self._waiting.pop(rid, None)
                raise ForkServerError(f"cannot reach the fork server: {exc}") from exc
            finally:
                for fd in theirs:
                    os.close(fd)
            try:
                reply = await asyncio.wait_for(asyncio.shield(answer), timeout)
            except TimeoutError:
                self._waiting.pop(rid, None)
                answer.cancel()
                self._lose(f"the fork server did not answer within {timeout:g}s")
                _signal_group(self.pid, signal.SIGKILL)
                raise ForkServerError(self._lost or "") from None
            if reply.get("op") != "spawned":
                raise ForkServerError(str(reply.get("message", reply)))
        except BaseException:
            self._waiting.pop(rid, None)
            for fd in ours:
                os.close(fd)
            raise
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
        # What it still ran was killed and reaped by it, unreported.
        self._lose("the fork server is closed", kill=False)
        pumps = [t for t in self._pumps if not t.done()]
        if pumps:
            await asyncio.wait(pumps)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def _pump(stream: asyncio.StreamReader, sink: deque[str]) -> None:
    while line := await stream.readline():
        sink.append(line.decode(errors="replace").rstrip("\n"))
