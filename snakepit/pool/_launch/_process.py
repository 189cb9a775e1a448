"""Start a worker subprocess, read its ready report, stop and reap it.

The host side of ``python -m snakepit.worker``. Each worker is started by
exec, or forked by a fork server that was (never a bare fork of a host that
has grpc's threads running), in its own session and process group, with a
pipe on stdin whose EOF tells it the host is gone; it is stopped as trio
stops processes: SIGTERM to the group, a grace period, SIGKILL, reap.

A worker has three channels, each a unix socket (a pipe could be opened by
anyone of the same user through ``/proc/<pid>/fd/N``): stdin, whose first
bytes are the worker's secret (see :mod:`snakepit._wire._auth`); its output (stdout
and stderr both), read in chunks into bounded lines that go to a tail and to
``logging`` (:mod:`snakepit.pool._launch._output`); and a private one (``--ready-fd``) for
its ready report, which nothing a tool prints can reach. Its exit is seen
from the process (a pidfd), never from its channels closing: a grandchild
may hold them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio

from snakepit._wire._address import Address, AddressError
from snakepit._wire._auth import SECRET_BYTES, new_secret
from snakepit._wire._grpc_logging import quiet_environment
from snakepit.errors import ConfigError, WorkerStartError, exit_status
from snakepit.pool._launch._base import WorkerBridge
from snakepit.pool._launch._forkserver_client import (
    ForkServerError,
    RequestTooLarge,
    signal_group,
    stdin_with_secret,
    worker_channel,
)
from snakepit.pool._launch._output import OutputLines, OutputPump, read_ready_line
from snakepit.worker._descendants import kill_tree

__all__ = ("WorkerProcess",)

#: How many lines of a worker's output it keeps for error messages.
STDERR_LINES = 200


class _Spawned(Protocol):
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


class _ForkServer(Protocol):
    """What forks workers: a :class:`ForkServerClient`, or a shared server's handle."""

    async def spawn(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        timeout: float = 30.0,
        secret: bytes | None = None,
    ) -> tuple[_Spawned, int, int]: ...


class _ExecSpawned:
    """A worker the host started by exec; its exit seen on a pidfd, then reaped here."""

    def __init__(self, proc: subprocess.Popen[bytes], stdin_fd: int) -> None:
        self._proc = proc
        self.pid = proc.pid
        self._stdin_fd: int | None = stdin_fd
        self._pidfd: int | None = None
        with contextlib.suppress(OSError, AttributeError):  # no pidfds: a thread waits
            self._pidfd = os.pidfd_open(proc.pid)
        self._watcher: asyncio.Task[None] | None = None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def wait(self) -> int:
        # One watcher, whoever waits (and is cancelled): it reaps.
        if self._proc.returncode is None:
            if self._watcher is None:
                self._watcher = asyncio.get_running_loop().create_task(self._watch())
            await asyncio.shield(self._watcher)
        assert self._proc.returncode is not None
        return self._proc.returncode

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        gone: asyncio.Future[None] = loop.create_future()
        if self._pidfd is not None:
            loop.add_reader(self._pidfd, _wake, gone)
            try:
                await gone
            finally:
                loop.remove_reader(self._pidfd)
        else:
            pid = self.pid

            def wait_exit() -> None:
                with contextlib.suppress(ChildProcessError):
                    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
                loop.call_soon_threadsafe(_wake, gone)

            threading.Thread(target=wait_exit, name=f"snakepit-wait-{pid}", daemon=True).start()
            await gone
        # Its zombie still holds the group id: what is left of the group goes.
        signal_group(self.pid, signal.SIGKILL)
        self._proc.wait()  # exited: reaps at once
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def close_stdin(self) -> None:
        fd, self._stdin_fd = self._stdin_fd, None
        if fd is not None:
            os.close(fd)

    def signal_group(self, signum: int) -> None:
        # After the reap, too: a group member that outlived the leader keeps
        # the group id (which is then no other process's).
        if signum == signal.SIGKILL and self._proc.returncode is None:
            # The worker is its tools' subreaper: once it dies, what they
            # started in other sessions would go to init, out of reach. (A
            # fork server, a subreaper too, does this for the workers it forked.)
            kill_tree(self.pid)
        signal_group(self.pid, signum)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(eq=False)
class WorkerProcess:
    """A running worker subprocess (its own process group), ready to be called."""

    #: The id given with ``--worker-id``.
    worker_id: str
    #: The address it listens on (``unix:PATH`` or ``tcp:HOST:PORT``).
    address: str
    #: Its pid (also its process group id).
    pid: int
    #: The ready report it sent, parsed.
    ready: dict[str, Any]
    _child: _Spawned = field(repr=False)
    _stderr: deque[str] = field(repr=False)
    _pump: OutputPump | None = field(default=None, repr=False)
    #: What its connections must prove they have (``WorkerConnection(address, secret=...)``).
    secret: bytes | None = field(default=None, repr=False)

    @property
    def frames_address(self) -> str | None:
        """Its frames socket (``unix:PATH``) from the ready report, or None (tcp)."""
        frames = self.ready.get("frames")
        return frames if isinstance(frames, str) else None

    @property
    def returncode(self) -> int | None:
        """Its exit code once reaped (negative: the signal that killed it), else None."""
        return self._child.returncode

    def stderr_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines it wrote to stdout or stderr (each cut at 4 KiB)."""
        return "\n".join(list(self._stderr)[-lines:])

    async def wait(self) -> int:
        """Wait for the process to exit and return its exit code.

        Reaped by the host, or by the fork server that forked it (which
        reports the code); if that server is lost, the worker is killed and
        reported as killed. The exit is seen from the process itself: a
        grandchild holding its pipes does not delay it. What it wrote is
        read to that point and its pipes are closed.
        """
        code = await self._child.wait()
        if self._pump is not None:
            await self._pump.finish()
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
    forkserver: _ForkServer | None = None,
    secret: bytes | None = None,
    bridge: WorkerBridge | None = None,
) -> WorkerProcess:
    """Start ``python -m snakepit.worker`` and return once it reported ready.

    :param adapter: ``package.module:Class``.
    :param listen: ``unix:PATH`` (its directory is created 0700) or ``tcp:HOST:PORT``.
    :param env: the worker's whole environment (default: the host's), with
        ``GRPC_VERBOSITY=ERROR`` added unless it sets it.
    :param on_spawn: called with the pid as soon as the process exists.
    :param forkserver: fork the worker from this fork server (its ``python``
        is the server's) instead of starting a new interpreter.
    :param secret: what connections to it must have (default: a fresh random
        one); it goes to the worker on its stdin, never its command line or
        environment, and is the returned process's ``secret``.
    :param bridge: its pool's bridge: the address goes on its command line
        (``--bridge``), its token on its stdin after the secret.
    :raises WorkerStartError: it could not be started, exited, or sent no
        ready report within ``ready_timeout``; the message has its exit code
        and output tail. Nothing is left running.
    :raises ConfigError: an invalid argument.
    """
    if ready_timeout <= 0:
        raise ConfigError("ready_timeout", f"must be > 0, got {ready_timeout!r}")
    if secret is None:
        secret = new_secret()
    elif not isinstance(secret, bytes) or len(secret) != SECRET_BYTES:
        raise ConfigError("secret", f"must be {SECRET_BYTES} bytes")
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
        "--auth-stdin",
    ]
    stdin_data = secret
    if bridge is not None:
        try:
            token = bytes.fromhex(bridge.token)
        except (TypeError, ValueError):
            token = b""
        if len(token) != SECRET_BYTES:
            raise ConfigError("bridge", f"its token must be {SECRET_BYTES * 2} hex digits")
        args += ["--bridge", bridge.address]
        stdin_data += token
    if forkserver is not None:  # no env: the server's own (quieted when it started)
        env = None if env is None else quiet_environment(env)
        child, out_fd, ready_fd = await _fork(
            forkserver, worker_id, args, env, cwd, ready_timeout, stdin_data
        )
    else:
        child, out_fd, ready_fd = _exec(
            worker_id, python, args, quiet_environment(env), cwd, stdin_data
        )
    tail: deque[str] = deque(maxlen=STDERR_LINES)
    lines = OutputLines(tail, logging.getLogger(f"snakepit.worker.{worker_id}"))
    worker = WorkerProcess(worker_id, "", child.pid, {}, child, tail, secret=secret)
    fds = [out_fd, ready_fd]
    try:
        if on_spawn is not None:
            on_spawn(child.pid)  # inside: if it fails, the process is still reaped
        worker._pump = await OutputPump.start(fds.pop(0), lines)
        try:
            async with asyncio.timeout(ready_timeout):
                line = await read_ready_line(fds.pop(0), child.wait)
        except TimeoutError:
            raise await _failed(worker, f"no ready line within {ready_timeout:g}s") from None
        if not line:
            raise await _failed(worker, "it exited before its ready line")
        try:
            ready = json.loads(line)
            address = ready["address"]
        except (ValueError, KeyError, TypeError):
            raise await _failed(worker, f"unreadable ready line {line[:200]!r}") from None
        wrong = _unexpected_address(ready, listen, cwd)
        if wrong:
            raise await _failed(worker, f"its ready report {wrong}")
    except BaseException:
        for fd in fds:
            os.close(fd)
        with anyio.CancelScope(shield=True):  # reap it even when we were cancelled
            await worker.aclose(grace=0)
        raise
    worker.ready = ready
    worker.address = address
    return worker


def _unexpected_address(ready: dict[str, Any], listen: str, cwd: str | Path | None) -> str:
    """What is wrong with the addresses a ready report names, or "" (they are ours).

    The host sends the worker's secret to that address: it must be the one
    the host chose, never one that a forged report could name.
    """
    address, frames = ready.get("address"), ready.get("frames")
    try:
        chosen = Address.parse(listen, cwd=cwd)
    except AddressError as exc:  # the worker refuses it before any report
        return f"cannot be checked against {listen!r}: {exc}"
    if chosen.kind == "unix":
        expected = str(chosen)
        if address != expected:
            return f"names the address {address!r}, not {expected!r}"
        if frames is not None and frames != str(chosen.frames):
            return f"names the frames socket {frames!r}, not the one of {expected!r}"
        return ""
    host = chosen.host
    try:
        reported = Address.parse(address) if isinstance(address, str) else None
    except AddressError:
        reported = None
    if reported is None or reported.kind != "tcp" or reported.host != host:
        return f"names the address {address!r}, not one on {host!r}"
    if chosen.port != 0 and reported.port != chosen.port:  # port 0: the worker picks one
        return f"names the address {address!r}, not the chosen {str(chosen)!r}"
    if frames is not None:
        return f"names a frames socket {frames!r} for a tcp address"
    return ""


_Started = tuple[_Spawned, int, int]


def _exec(
    worker_id: str,
    python: str | None,
    args: list[str],
    env: dict[str, str],
    cwd: str | Path | None,
    secret: bytes,
) -> _Started:
    # The pipes: its stdin, with the secret in it; its stdout and stderr, both
    # one pipe; its ready report.
    pipes: list[tuple[int, int]] = []
    try:
        pipes.append(stdin_with_secret(secret))
        pipes.append(worker_channel())
        pipes.append(worker_channel())
    except OSError as exc:
        for fd in itertools.chain.from_iterable(pipes):
            os.close(fd)
        raise WorkerStartError(
            worker_id, f"cannot make its pipes: {exc}", returncode=None, stderr_tail=""
        ) from exc
    (in_r, in_w), (out_r, out_w), (ready_r, ready_w) = pipes
    argv = [python or sys.executable, "-m", "snakepit.worker", *args]
    argv += ["--parent-pid", str(os.getpid()), "--ready-fd", str(ready_w)]
    try:
        # Synchronous, as asyncio's own subprocess start is: a fork and an exec,
        # milliseconds, and nothing to cancel half way.
        proc = subprocess.Popen(
            argv,
            stdin=in_r,
            stdout=out_w,
            stderr=out_w,
            pass_fds=(ready_w,),
            start_new_session=True,
            env=env,
            cwd=cwd,
        )
    except OSError as exc:
        for fd in (in_w, out_r, ready_r):
            os.close(fd)
        raise WorkerStartError(
            worker_id, f"cannot start {argv[0]}: {exc}", returncode=None, stderr_tail=""
        ) from exc
    finally:
        for fd in (in_r, out_w, ready_w):
            os.close(fd)
    return _ExecSpawned(proc, in_w), out_r, ready_r


async def _fork(
    forkserver: _ForkServer,
    worker_id: str,
    args: list[str],
    env: Mapping[str, str] | None,
    cwd: str | Path | None,
    timeout: float,
    secret: bytes,
) -> _Started:
    # Shielded: a fork the server made is always handed over, to be reaped.
    with anyio.CancelScope(shield=True):
        try:
            started = await forkserver.spawn(args, env=env, cwd=cwd, timeout=timeout, secret=secret)
        except RequestTooLarge as exc:  # not the server's failure: it is fine
            raise WorkerStartError(
                worker_id, f"cannot be forked: {exc}", returncode=None, stderr_tail=""
            ) from exc
        except ForkServerError as exc:
            raise WorkerStartError(
                worker_id, f"the fork server failed: {exc}", returncode=None, stderr_tail=""
            ) from exc
    return started


async def _failed(worker: WorkerProcess, cause: str) -> WorkerStartError:
    await worker.aclose(grace=0.5)
    code = worker.returncode
    if code is not None:
        cause += f" ({exit_status(code)})"
    return WorkerStartError(
        worker.worker_id, cause, returncode=code, stderr_tail=worker.stderr_tail()
    )
