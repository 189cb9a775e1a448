"""The host side of a fork server (``snakepit.worker._forkserver``).

A :class:`ForkServerClient` is one exec'd process per pool that has imported the
worker runtime; :meth:`ForkServerClient.spawn` asks it to fork a worker and returns
a :class:`ForkedProcess`, whose exit code the server reports when it reaps it.
A worker so started is ready in a few milliseconds instead of ~150 ms of
imports, and crashed workers are replaced as fast. The protocol is in
:mod:`snakepit._wire._forkserver_protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import select
import signal
import socket
import sys
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from snakepit._wire import _forkserver_protocol as protocol
from snakepit._wire._grpc_logging import quiet_environment
from snakepit.errors import exit_status
from snakepit.pool._launch._output import CHUNK, OutputLines

__all__ = ()

#: How many stderr lines of the server are kept for error messages.
STDERR_LINES = 50


class ForkServerError(Exception):
    """The fork server failed or is gone (the launcher turns it into WorkerStartError)."""


class RequestTooLarge(ForkServerError):
    """A spawn request does not fit in one message to the fork server (nothing was sent)."""


#: Seconds a host waits for the server's report of a worker it saw exit (a pidfd).
REPORT_GRACE = 2.0


class ForkedProcess:
    """A worker forked by a :class:`ForkServerClient`: its pid, its stdin, its exit code.

    The fork server is its parent and reaps it; :attr:`returncode` is set
    from the server's report (negative: the signal that killed it). The host
    also holds a pidfd of it: signals never hit a reused pid, and an exit the
    server fails to report (it is stopped, or gone) is still seen.
    """

    def __init__(
        self, pid: int, pidfd: int | None, stdin_fd: int | None, server: ForkServerClient
    ) -> None:
        self.pid = pid
        self.returncode: int | None = None
        #: Why the host reports it dead without the server's word, if so.
        self.lost_reason: str | None = None
        self._pidfd: int | None = pidfd
        self._stdin_fd = stdin_fd
        self._server = server
        self._exited = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    def _set_exit(self, code: int, lost: str | None = None) -> None:
        if self.returncode is None:
            self.returncode = code
            self.lost_reason = lost
        self._exited.set()
        if self._watcher is None or self._watcher.done():
            self._close_pidfd()

    def _close_pidfd(self) -> None:
        fd, self._pidfd = self._pidfd, None
        if fd is not None:
            os.close(fd)

    def _has_exited(self) -> bool:
        if self.returncode is not None or self._pidfd is None:
            return self.returncode is not None
        poller = select.poll()  # no limit on the fd number, unlike select()
        poller.register(self._pidfd, select.POLLIN)
        return bool(poller.poll(0))

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to its process group, unless it has exited (its pid may be reused)."""
        if not self._has_exited():
            signal_group(self.pid, signum)

    async def wait(self) -> int:
        """Wait for its exit code: the server's report, or a loss of the server.

        Returns once its watcher (if one was started) has ended too: its
        pidfd is closed and no task of it is left.
        """
        if not self._exited.is_set() and self._pidfd is not None and self._watcher is None:
            self._watcher = self._server._own(self._watch(self._pidfd), f"watch pid {self.pid}")
        await self._exited.wait()
        if self._watcher is not None:
            # Ended, not just told: it sees the report at once (asyncio.wait
            # neither raises its error, which is the server's, nor cancels it;
            # the server's callback has seen that error when it returns).
            await asyncio.wait([self._watcher])
        assert self.returncode is not None
        return self.returncode

    async def _watch(self, pidfd: int) -> None:
        # One per process, whoever waits. If it fails, the process is reported
        # lost (and killed): nobody else would see its exit, and wait() would
        # never return. Its error then goes to the server (_task_done), lost too.
        try:
            await self._watch_exit(pidfd)
        except BaseException as exc:
            if not self._exited.is_set():
                self.signal_group(signal.SIGKILL)
                self._set_exit(-signal.SIGKILL, lost=f"watching pid {self.pid} failed: {exc!r}")
            raise
        finally:
            self._close_pidfd()

    async def _watch_exit(self, pidfd: int) -> None:
        # Its exit seen on the pidfd, then the server's report expected soon after.
        loop = asyncio.get_running_loop()
        gone: asyncio.Future[None] = loop.create_future()
        loop.add_reader(pidfd, _wake, gone)
        report: asyncio.Future[Any] = loop.create_task(self._exited.wait())
        try:
            await asyncio.wait([gone, report], return_when=asyncio.FIRST_COMPLETED)
            if not report.done():  # exited, unreported: the server must answer soon
                await asyncio.wait([report], timeout=self._server.report_grace)
        finally:
            loop.remove_reader(pidfd)
            report.cancel()
            await asyncio.wait([report])  # ended, not just asked to
        if not self._exited.is_set():
            self._server._lose(
                f"the fork server did not report the exit of worker pid {self.pid}"
                f" within {self._server.report_grace:g}s"
            )

    def close_stdin(self) -> None:
        """Close the host's end of its stdin (EOF tells a worker the host is gone)."""
        fd, self._stdin_fd = self._stdin_fd, None
        if fd is not None:
            os.close(fd)


class ForkServerClient:
    """One running fork server; start with :meth:`start`, stop with :meth:`aclose`."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        control: socket.socket,
        stderr: deque[str],
        env: dict[str, str],
    ) -> None:
        self._proc = proc
        self._control = control
        self._stderr = stderr
        #: The environment it runs with, which its workers inherit.
        self.env = env
        #: Seconds to wait for its report of a worker seen to exit (then it is lost).
        self.report_grace = REPORT_GRACE
        self._children: dict[int, ForkedProcess] = {}
        #: Requests waiting for their answer, by id (0: the ready message), with
        #: the stdin fd of the worker asked for.
        self._waiting: dict[int, tuple[asyncio.Future[Any], int | None]] = {}
        self._ids = itertools.count(1)
        self._send_lock = asyncio.Lock()
        self._fd = control.fileno()  # its number, for the loop, even once closed
        self._room: asyncio.Future[None] | None = None
        self._lost: str | None = None
        #: Its tasks (its stderr's reader, watchers of its workers): ended by aclose.
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        #: The largest spawn request it can be sent (its worker's environment, mostly).
        self.max_request = protocol.fit_send_buffer(control)

    @property
    def pid(self) -> int:
        """The server's pid."""
        return self._proc.pid

    @property
    def control_fd(self) -> int:
        """The number of this process's end of its control socket."""
        return self._fd

    @property
    def idle(self) -> bool:
        """True while no worker it forked is running or being forked."""
        return not self._children and not self._waiting

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
        preload: Sequence[str] = (),
    ) -> ForkServerClient:
        """Start ``python -m snakepit.worker._forkserver`` and wait for its ready message.

        :param env: its environment, and its workers' (default: the host's),
            with ``GRPC_VERBOSITY=ERROR`` added unless it sets it.
        :param on_spawn: called with its pid as soon as the process exists.
        :param preload: modules the server imports before it reports ready, so
            that its workers find them imported (an adapter's module: its
            import, in each worker, is then done once). Only modules whose
            import starts nothing (no thread, no event loop, no process): a
            fork of a process with threads can hang. One that cannot be
            imported fails the start.
        :raises ForkServerError: it could not be started, exited, or did not
            report ready in time (the message has its exit code and stderr
            tail); nothing is left running.
        """
        env = quiet_environment(env)
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
        for module in preload:
            argv += ["--preload", module]
        try:
            with anyio.CancelScope(shield=True):  # as spawn_worker: never left unreaped
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                    start_new_session=True,
                    env=env,
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
        server = cls(proc, ours, deque(maxlen=STDERR_LINES), env)
        loop = asyncio.get_running_loop()
        assert proc.stderr is not None
        server._own(
            pump_lines(proc.stderr, server._stderr, logging.getLogger("snakepit.forkserver")),
            "stderr",
        )
        ready: asyncio.Future[Any] = loop.create_future()
        server._waiting[0] = (ready, None)
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

    def _own(self, work: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        """Run ``work`` in a task of this server's, which :meth:`aclose` ends.

        Its failure is the server's: it is lost with the error.
        """
        task = asyncio.get_running_loop().create_task(work, name=f"snakepit forkserver {what}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._lose(f"the fork server's {task.get_name()!r} failed: {exc!r}")

    def _tail(self) -> str:
        code = self._proc.returncode
        status = "" if code is None else f" ({exit_status(code)})"
        tail = "\n".join(self._stderr)
        return f"{status}\n--- stderr (last lines) ---\n{tail}" if tail else status

    def _on_readable(self) -> None:
        while True:
            received = protocol.receive(self._control, protocol.MAX_REPLY, 1)
            if received is None:
                return
            data, fds = received
            if not data:
                self._lose("the fork server exited", kill_server=False)
                return
            try:
                self._on_message(protocol.decode(data), fds)
            except (ValueError, KeyError, TypeError) as exc:
                protocol.close_fds(fds)
                self._lose(f"the fork server sent an unreadable message: {exc}")
                return

    def _on_message(self, message: dict[str, Any], fds: list[int]) -> None:
        op = message["op"]
        if op == protocol.EXIT:
            # Every field read before the child is taken: if one is unreadable,
            # the server is lost with the child still here to be reported.
            pid, code = int(message["pid"]), int(message["code"])
            child = self._children.pop(pid, None)
            if child is not None:
                child._set_exit(code)
            return
        rid = int(message.get("id") or 0)
        spawned = op == protocol.SPAWNED
        pid = int(message["pid"]) if spawned else 0  # checked before anything is taken
        waiter, stdin_fd = self._waiting.pop(rid, (None, None))
        if spawned:
            # Without a pidfd (an old kernel) the server's reports alone tell its exit.
            pidfd = fds.pop() if fds else None
            # Registered now, before anything else is read: its exit report may
            # be in the very next message.
            child = ForkedProcess(pid, pidfd, stdin_fd, self)
            self._children[child.pid] = child
            if waiter is None or waiter.done():  # its spawn was cancelled
                child.signal_group(signal.SIGKILL)
                child.close_stdin()
            else:
                waiter.set_result(child)
        else:
            if stdin_fd is not None:  # no worker to give it to
                os.close(stdin_fd)
            if waiter is not None and not waiter.done():
                if op == protocol.READY:
                    waiter.set_result(message)
                else:
                    waiter.set_exception(ForkServerError(str(message.get("message", message))))
        protocol.close_fds(fds)  # none expected here

    def _lose(self, why: str, *, kill: bool = True, kill_server: bool = True) -> None:
        """The server is gone or useless: every worker it ran is reported dead (and killed)."""
        if self._lost is not None:
            return
        self._lost = why
        self._stop_io(why)
        if kill_server and self._proc.returncode is None:
            signal_group(self.pid, signal.SIGKILL)  # it cannot be trusted any more
        # Nobody reaps its workers now (its own parent-death signal stops each):
        # kill them, and report them killed.
        for child in self._children.values():
            if kill:
                child.signal_group(signal.SIGKILL)
            child._set_exit(-signal.SIGKILL, lost=why)
        self._children.clear()
        waiting, self._waiting = self._waiting, {}
        for waiter, stdin_fd in waiting.values():
            if stdin_fd is not None:
                os.close(stdin_fd)
            if not waiter.done():
                waiter.set_exception(ForkServerError(why))

    async def spawn(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        timeout: float = 30.0,
        secret: bytes | None = None,
    ) -> tuple[ForkedProcess, int, int]:
        """Fork a worker running ``snakepit.worker`` with ``argv``.

        Returns the process and the host's ends of its output pipe (its
        stdout and stderr) and of its ready pipe (``--ready-fd``): file
        descriptors the caller owns.

        :param env: the worker's environment (default: the server's; another
            one travels with the request and must fit in a message).
        :param cwd: its directory (default: the host's current one).
        :param secret: the first bytes of its stdin (a unix socket then, not
            a pipe; see :func:`stdin_with_secret`), for ``--auth-stdin``.
        :raises RequestTooLarge: the request (with ``env``) does not fit in
            one message; the server is still fine.
        :raises ForkServerError: the server refused, is gone, or did not
            answer within ``timeout`` seconds (then it is killed: a fork
            server that hangs is of no use).
        """
        if not self.alive:
            raise ForkServerError(self._lost or "the fork server is closed")
        rid = next(self._ids)
        request: dict[str, Any] = {"op": protocol.SPAWN, "id": rid, "argv": argv}
        request["cwd"] = str(cwd if cwd is not None else os.getcwd())
        if env is not None and dict(env) != self.env:
            request["env"] = dict(env)
        data = protocol.encode(request)
        if len(data) > self.max_request:  # else the kernel's EMSGSIZE: "Message too long"
            raise RequestTooLarge(
                f"its spawn request is {len(data)} bytes, more than the fork server"
                f" takes ({self.max_request}): the worker's environment is too large to"
                " travel with it; start the fork server with that environment, or use"
                ' start_method="spawn"'
            )
        pipes: list[tuple[int, int]] = []
        try:
            pipes.append(
                stdin_with_secret(secret) if secret is not None else os.pipe2(os.O_CLOEXEC)
            )
            pipes.append(worker_channel())
            pipes.append(worker_channel())
        except OSError as exc:
            for fd in itertools.chain.from_iterable(pipes):
                os.close(fd)
            raise ForkServerError(f"cannot make the worker's pipes: {exc}") from exc
        # Its stdin, stdout and stderr (one pipe), ready report: the worker's
        # ends go to it, ours stay.
        (in_r, in_w), (out_r, out_w), (ready_r, ready_w) = pipes
        theirs, ours = [in_r, out_w, ready_w], [in_w, out_r, ready_r]
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        self._waiting[rid] = (answer, ours[0])
        try:
            try:
                await self._send(data, [in_r, out_w, out_w, ready_w])
            finally:
                for fd in theirs:
                    os.close(fd)
            try:
                child = await asyncio.wait_for(asyncio.shield(answer), timeout)
            except TimeoutError:
                self._lose(f"the fork server did not answer within {timeout:g}s")
                raise ForkServerError(self._lost or "") from None
        except BaseException:
            if self._waiting.pop(rid, None) is not None:  # else _lose or the answer took it
                os.close(ours[0])
            if answer.done() and not answer.cancelled() and answer.exception() is None:
                orphan = answer.result()  # it came just as we gave up: it goes
                orphan.signal_group(signal.SIGKILL)
                orphan.close_stdin()
            for fd in ours[1:]:
                os.close(fd)
            raise
        assert isinstance(child, ForkedProcess)
        return child, ours[1], ours[2]

    async def _send(self, data: bytes, fds: list[int]) -> None:
        # One sender at a time: the loop has one writer callback per fd.
        async with self._send_lock:
            await self._send_now(data, fds)

    async def _send_now(self, data: bytes, fds: list[int]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.alive:
                raise ForkServerError(self._lost or "the fork server is closed")
            try:
                protocol.send(self._control, data, fds)
                return
            except BlockingIOError:  # its socket is full: wait for room
                self._room = room = loop.create_future()
                loop.add_writer(self._fd, _wake, room)
                try:
                    await room  # or failed by _lose / aclose
                finally:
                    self._room = None
                    with contextlib.suppress(ValueError, OSError):
                        loop.remove_writer(self._fd)
            except OSError as exc:
                raise ForkServerError(f"cannot reach the fork server: {exc}") from exc

    def _stop_io(self, why: str) -> None:
        """Leave the control socket alone: no reader, no writer; a sender waiting fails."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(self._fd)
        with contextlib.suppress(ValueError, OSError):
            loop.remove_writer(self._fd)
        room, self._room = self._room, None
        if room is not None and not room.done():
            room.set_exception(ForkServerError(why))

    async def aclose(self, grace: float = 5.0) -> None:
        """Close the control socket: the server kills what it still runs and exits; reap it."""
        clean = False
        try:
            if not self._closed:
                self._closed = True
                self._stop_io("the fork server is closed")
                self._control.close()
                if self._proc.stdin is not None:
                    self._proc.stdin.close()
            try:
                await asyncio.wait_for(asyncio.shield(self._proc.wait()), grace)
                clean = True
            except TimeoutError:
                signal_group(self._proc.pid, signal.SIGKILL)
                await self._proc.wait()
        finally:
            # Exited by itself: it killed and reaped what it still ran (unreported).
            # Otherwise what it ran is killed here.
            self._lose("the fork server is closed", kill=not clean, kill_server=False)
        # Its stderr's reader ends at the EOF of a reaped server; the watchers of
        # its workers once they are reported dead, as _lose just did.
        if self._tasks:
            await asyncio.wait(self._tasks)


def stdin_with_secret(secret: bytes) -> tuple[int, int]:
    """A worker's stdin (its end, ours), both close-on-exec, with ``secret`` waiting in it.

    A unix socket, not a pipe: anyone of the same user can open a pipe through
    ``/proc/<pid>/fd/0`` and take (or replace) what waits in it; a socket
    cannot be opened so. Its EOF, as a pipe's, tells the worker the host is gone.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        ours.sendall(secret)  # far below the socket's buffer: never blocks
        ours.shutdown(socket.SHUT_RD)  # what the worker (or a child) writes there is refused
    except BaseException:
        ours.close()
        theirs.close()
        raise
    return theirs.detach(), ours.detach()


def worker_channel() -> tuple[int, int]:
    """A one-way channel from a worker to the host (our end to read, its end to write).

    For its output and its ready report. Both ends close-on-exec. A unix
    socket, not a pipe, for the reason of :func:`stdin_with_secret`: anyone
    of the same user could open a pipe through ``/proc/<pid>/fd/N`` and write
    into it (a forged ready report naming another address, where the host
    would then send the worker's secret; forged log lines).
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        ours.shutdown(socket.SHUT_WR)  # the host only reads
        theirs.shutdown(socket.SHUT_RD)  # the worker only writes
    except BaseException:
        ours.close()
        theirs.close()
        raise
    return ours.detach(), theirs.detach()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def signal_group(pgid: int, signum: int) -> None:
    """``killpg``, quietly when the group is gone (or not ours)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def pump_lines(
    stream: asyncio.StreamReader, sink: deque[str], logger: logging.Logger | None = None
) -> None:
    """Read ``stream`` to its end in chunks, keeping its last lines (bounded) in ``sink``."""
    lines = OutputLines(sink, logger)
    while data := await stream.read(CHUNK):
        lines.feed(data)
    lines.close()
