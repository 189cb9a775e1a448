"""Start a worker subprocess, read its ready line, stop and reap it.

The host side of ``python -m snakepit.worker``. Each worker is started by
exec, or forked by a fork server that was (never a bare fork of a host that
has grpc's threads running), in its own session and process group, with a
pipe on stdin whose EOF tells it the host is gone; it is stopped as trio
stops processes: SIGTERM to the group, a grace period, SIGKILL, reap.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio

from snakepit._forkserver import ForkServer, ForkServerError, pump_lines, signal_group
from snakepit.errors import ConfigError, WorkerStartError

__all__ = ("WorkerProcess", "spawn_worker")

#: How many stderr lines a worker keeps for error messages.
STDERR_LINES = 200


class _Child(Protocol):
    """The process under a WorkerProcess: exec'd by the host, or forked by a fork server."""

    pid: int

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int:
        """Wait until it exited and is reaped (what was left of its group is killed)."""
        ...

    def close_stdin(self) -> None: ...

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to its process group (not once it is known to be reaped)."""
        ...


class _ExecChild:
    """A worker the host started by exec (``asyncio.create_subprocess_exec``)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self.pid = proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def wait(self) -> int:
        # The exit is seen from the process itself (a pidfd), not from its pipes
        # closing: asyncio's Process.wait waits for those, and a grandchild that
        # inherited them would hide the death. What is left of its process
        # group is killed then (a member that outlived it keeps the group id).
        if self._proc.returncode is None:
            await _exited(self.pid)
            signal_group(self.pid, signal.SIGKILL)
        return await self._proc.wait()

    def close_stdin(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()

    def signal_group(self, signum: int) -> None:
        # After the reap, too: a group member that outlived the leader keeps
        # the group id (which is then no other process's).
        signal_group(self.pid, signum)


@dataclass(eq=False)
class WorkerProcess:
    """A running worker subprocess (its own process group), ready to be called."""

    #: The id given with ``--worker-id``.
    worker_id: str
    #: The address it listens on (``unix:PATH`` or ``tcp:HOST:PORT``).
    address: str
    #: Its pid (also its process group id).
    pid: int
    #: The ready line it printed, parsed.
    ready: dict[str, Any]
    _child: _Child = field(repr=False)
    _stderr: deque[str] = field(repr=False)
    _pump: asyncio.Task[None] = field(repr=False)
    _drains: list[asyncio.Task[None]] = field(default_factory=list, repr=False)

    @property
    def frames_address(self) -> str | None:
        """Its frames socket (``unix:PATH``) from the ready line, or None (tcp)."""
        frames = self.ready.get("frames")
        return frames if isinstance(frames, str) else None

    @property
    def returncode(self) -> int | None:
        """Its exit code once reaped (negative: the signal that killed it), else None."""
        return self._child.returncode

    def stderr_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines it wrote to stderr."""
        return "\n".join(list(self._stderr)[-lines:])

    async def wait(self) -> int:
        """Wait for the process to exit and return its exit code.

        Reaped by the host, or by the fork server that forked it (which
        reports the code); if that server is lost, the worker is killed and
        reported as killed.

        Whatever is left of its process group is killed then, which closes
        the pipes a grandchild may have inherited.
        """
        code = await self._child.wait()
        # Both pipes to their end, so their transports close (Process.wait
        # returns without waiting for them when the process was reaped already).
        # asyncio.wait, not gather: a cancelled wait() must not cancel the pumps,
        # or the pipes never reach EOF and their transports are left open.
        pumps = [t for t in (self._pump, *self._drains) if not t.done()]
        if pumps:
            await asyncio.wait(pumps)
        self._child.close_stdin()
        return code

    def kill(self) -> None:
        """SIGKILL its whole process group now (``wait()`` reaps it)."""
        self._child.signal_group(signal.SIGKILL)

    async def aclose(self, grace: float = 5.0) -> int:
        """Stop it: SIGTERM to the group, ``grace`` seconds, then SIGKILL; reap.

        Safe to call more than once; returns the exit code.
        """
        if self._child.returncode is None:
            self._child.signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self._child.wait()), grace)
            except TimeoutError:
                self._child.signal_group(signal.SIGKILL)
        # A group member that outlived the leader goes too.
        self._child.signal_group(signal.SIGKILL)
        self._child.close_stdin()
        return await self.wait()


async def _exited(pid: int) -> None:
    """Return once ``pid`` has exited (Linux pidfd; elsewhere at once)."""
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, AttributeError, OSError):
        return  # already gone, or no pidfd: fall back to the pipes
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def _drain(stream: asyncio.StreamReader) -> None:
    # After the ready line the worker sends its stdout to stderr; read to EOF.
    while await stream.read(65536):
        pass


async def spawn_worker(
    adapter: str,
    listen: str,
    *,
    worker_id: str = "worker",
    run_id: str = "",
    max_concurrency: int = 1,
    python: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    ready_timeout: float = 30.0,
    extra_args: Sequence[str] = (),
    on_spawn: Callable[[int], object] | None = None,
    forkserver: ForkServer | None = None,
) -> WorkerProcess:
    """Start ``python -m snakepit.worker`` and return once it printed its ready line.

    :param adapter: ``package.module:Class``.
    :param listen: ``unix:PATH`` (its directory is created 0700) or ``tcp:HOST:PORT``.
    :param env: the worker's whole environment (default: the host's).
    :param on_spawn: called with the pid as soon as the process exists.
    :param forkserver: fork the worker from this fork server (its ``python``
        is the server's) instead of starting a new interpreter.
    :raises WorkerStartError: it exited or printed no ready line within
        ``ready_timeout``; the message has its exit code and stderr tail.
        Nothing is left running.
    :raises ConfigError: an invalid argument.
    """
    if ready_timeout <= 0:
        raise ConfigError("ready_timeout", f"must be > 0, got {ready_timeout!r}")
    args = [
        "--adapter",
        adapter,
        "--listen",
        listen,
        "--worker-id",
        worker_id,
        "--run-id",
        run_id,
        "--max-concurrency",
        str(max_concurrency),
        *extra_args,
    ]
    if forkserver is not None:
        child, stdout, stderr_stream = await _fork(
            forkserver, worker_id, args, env, cwd, ready_timeout
        )
    else:
        child, stdout, stderr_stream = await _exec(python, args, env, cwd)
    stderr: deque[str] = deque(maxlen=STDERR_LINES)
    pump = asyncio.get_running_loop().create_task(pump_lines(stderr_stream, stderr))
    worker = WorkerProcess(worker_id, "", child.pid, {}, child, stderr, pump)
    try:
        if on_spawn is not None:
            on_spawn(child.pid)  # inside: if it fails, the process is still reaped
        try:
            line = await asyncio.wait_for(stdout.readline(), ready_timeout)
        except TimeoutError:
            raise await _failed(worker, f"no ready line within {ready_timeout:g}s") from None
        if not line:
            raise await _failed(worker, "it exited before its ready line")
        try:
            ready = json.loads(line)
            address = ready["address"]
        except (ValueError, KeyError, TypeError):
            raise await _failed(worker, f"unreadable ready line {line[:200]!r}") from None
    except BaseException:
        with anyio.CancelScope(shield=True):  # reap it even when we were cancelled
            await worker.aclose(grace=0)
        raise
    worker.ready = ready
    worker.address = address
    worker._drains.append(asyncio.get_running_loop().create_task(_drain(stdout)))
    return worker


_Started = tuple[_Child, asyncio.StreamReader, asyncio.StreamReader]


async def _exec(
    python: str | None,
    args: list[str],
    env: Mapping[str, str] | None,
    cwd: str | Path | None,
) -> _Started:
    argv = [python or sys.executable, "-m", "snakepit.worker", *args]
    argv += ["--parent-pid", str(os.getpid())]
    # Shielded: cancelled half way, asyncio kills the new process and waits for
    # it, but an anyio cancel scope cancels that wait too and the process is
    # left unreaped. Spawning takes milliseconds; a cancel lands just after.
    with anyio.CancelScope(shield=True):
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
    assert proc.stdout is not None
    assert proc.stderr is not None
    return _ExecChild(proc), proc.stdout, proc.stderr


async def _fork(
    forkserver: ForkServer,
    worker_id: str,
    args: list[str],
    env: Mapping[str, str] | None,
    cwd: str | Path | None,
    timeout: float,
) -> _Started:
    # Shielded for the same reason as _exec: a fork the server made is reaped.
    with anyio.CancelScope(shield=True):
        try:
            child, out_fd, err_fd = await forkserver.spawn(args, env=env, cwd=cwd, timeout=timeout)
        except ForkServerError as exc:
            raise WorkerStartError(
                worker_id, f"the fork server failed: {exc}", returncode=None, stderr_tail=""
            ) from exc
        readers: list[asyncio.StreamReader] = []
        try:
            for fd in (out_fd, err_fd):
                readers.append(await _read_pipe(fd))  # closes fd if it fails
        except BaseException:
            if not readers:
                os.close(err_fd)
            child.close_stdin()
            child.signal_group(signal.SIGKILL)  # the server reaps it
            raise
        stdout, stderr = readers
    return child, stdout, stderr


async def _read_pipe(fd: int) -> asyncio.StreamReader:
    """A StreamReader on the read end ``fd`` of a pipe (closed at EOF)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(loop=loop)
    pipe = os.fdopen(fd, "rb", buffering=0)
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    except BaseException:
        pipe.close()
        raise
    return reader


async def _failed(worker: WorkerProcess, cause: str) -> WorkerStartError:
    await worker.aclose(grace=0.5)
    code = worker.returncode
    if code is not None and code < 0:
        cause += f" (killed by {signal.Signals(-code).name})"
    elif code is not None:
        cause += f" (exit code {code})"
    return WorkerStartError(
        worker.worker_id, cause, returncode=code, stderr_tail=worker.stderr_tail()
    )
