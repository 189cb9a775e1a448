"""Fork servers shared by the pools of a process: :class:`SharedForkServers`.

A pool starts its own fork server by default, and stops it at its end:
~0.1 s of CPU each time (the imports the server makes once for its workers).
A process that opens many short-lived pools (a test suite: one per test) pays
that for every pool. Shared fork servers outlive the pools that use them, and
their event loops: they run in a thread of their own, with an asyncio loop of
their own, and a pool in any loop of the process forks its workers through
them. A pool's workers are still its own (forked for it, stopped at its end);
only the server that forks them is shared.

Opt in with :func:`set_default_fork_servers` (every pool's own launcher then
uses them), or per launcher (``LocalLauncher(forkservers=...)``); the pytest
plugin does it for a session with the ``snakepit_share_fork_servers`` ini
option. :meth:`SharedForkServers.close` stops the servers (with whatever
workers they still run) and the thread. If the process dies, the servers go
with it: each gets SIGTERM when the thread that started it ends
(``PR_SET_PDEATHSIG``) and kills its workers. A fork of the process (a
``multiprocessing`` "fork" child) has no such thread: there the default is
reset, and servers made before the fork refuse to serve.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import threading
from collections.abc import Callable, Collection, Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio

from snakepit._wire._grpc_logging import quiet_environment
from snakepit.errors import ConfigError

from ._forkserver_client import ForkedProcess, ForkServerClient, ForkServerError

__all__ = ("SharedForkServers", "default_fork_servers", "set_default_fork_servers")

T = TypeVar("T")

_default: SharedForkServers | None = None


def default_fork_servers() -> SharedForkServers | None:
    """The fork servers every pool's own launcher uses, or None (each starts its own)."""
    return _default


def set_default_fork_servers(shared: SharedForkServers | None) -> SharedForkServers | None:
    """Make every :class:`~snakepit.pool.LocalLauncher` made from now on use ``shared``.

    None goes back to a fork server per launcher. Returns the previous
    default, to put back. Launchers made before keep what they had.
    """
    global _default
    previous, _default = _default, shared
    return previous


def _forget_default_in_a_fork() -> None:
    global _default
    _default = None  # its thread is not in this process


os.register_at_fork(after_in_child=_forget_default_in_a_fork)


class SharedForkServers:
    """Fork servers that outlive the pools and event loops that use them.

    One server per interpreter, environment and directory (the key a
    launcher uses; a pool with no ``cwd`` counts the process's current
    directory), up to ``max_servers``: past that, one that runs no worker is
    stopped. A server that died is replaced on the next start. Thread-safe: a
    pool in any asyncio loop of the process can use it.

    A worker whose environment differs from its server's gets its own (it
    travels with the fork request, which must then fit in one message of the
    server's socket); the variables in ``ignore_env`` do not count in the
    key, so that one server serves them all: by default pytest's
    ``PYTEST_CURRENT_TEST``, which names each test in turn. What a server
    fixed when it started (hash seed, rlimits, umask) holds for every pool
    it forks for.

    Each server imports the modules in ``preload`` before it forks its first
    worker (see :meth:`ForkServerClient.start`): a worker whose adapter's
    module is one of them does not import it again.

    :param max_servers: how many servers it keeps (>= 1).
    :param ignore_env: environment variables that do not count in the key.
    :param preload: modules every server imports at its start; only modules
        whose import starts no thread, event loop or process.
    :raises ConfigError: ``max_servers`` is not a positive int, or
        ``ignore_env`` or ``preload`` is not a collection of names.
    """

    def __init__(
        self,
        *,
        max_servers: int = 4,
        ignore_env: Collection[str] = ("PYTEST_CURRENT_TEST",),
        preload: Collection[str] = (),
    ) -> None:
        if isinstance(max_servers, bool) or not isinstance(max_servers, int) or max_servers < 1:
            raise ConfigError("max_servers", f"must be an int >= 1, got {max_servers!r}")
        if isinstance(ignore_env, str) or not all(isinstance(n, str) for n in ignore_env):
            raise ConfigError(
                "ignore_env", f"must be a collection of variable names, got {ignore_env!r}"
            )
        if isinstance(preload, str) or not all(isinstance(m, str) and m for m in preload):
            raise ConfigError("preload", f"must be a collection of module names, got {preload!r}")
        self._max = max_servers
        self._ignore_env = frozenset(ignore_env)
        self._preload = tuple(preload)
        self._owner = os.getpid()
        self._loop = asyncio.new_event_loop()
        # Touched in the servers' thread only.
        self._servers: dict[tuple[object, ...], ForkServerClient] = {}
        self._starting: asyncio.Lock | None = None  # one start at a time (made there)
        self._calls: set[asyncio.Task[Any]] = set()  # what pools asked, running there
        self._closing = False  # no new server from now on
        # Under _lock: what other threads read.
        self._lock = threading.Lock()
        self._closed = False  # close() was called
        self._stopped = False  # the loop is stopping: nothing more goes to it
        self._pids: set[int] = set()
        self._clients: list[ForkServerClient] = []
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="snakepit shared fork servers", daemon=True
        )
        self._thread.start()

    @property
    def pids(self) -> frozenset[int]:
        """The pids of the servers running now (not their workers)."""
        with self._lock:
            return frozenset(self._pids)

    @property
    def preload(self) -> tuple[str, ...]:
        """The modules each server imports at its start."""
        return self._preload

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def held_fds(self) -> set[int]:
        """The file descriptors of this process that its servers hold (Linux; else empty).

        Each server's control socket, this process's ends of its stdin and
        stderr pipes, and a pidfd of it: leak checks leave them out.
        """
        with self._lock:
            servers = {s.pid: s.control_fd for s in self._clients}
        fds = set(servers.values())
        theirs: set[str] = set()
        for pid in servers:
            for fd in (0, 2):
                with contextlib.suppress(OSError):
                    theirs.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        with contextlib.suppress(OSError):
            for name in os.listdir("/proc/self/fd"):
                with contextlib.suppress(OSError, ValueError):
                    target = os.readlink(f"/proc/self/fd/{name}")
                    if target in theirs:
                        fds.add(int(name))
                    elif target == "anon_inode:[pidfd]" and _pidfd_pid(int(name)) in servers:
                        fds.add(int(name))  # asyncio's watcher of it (Python 3.12+)
        return fds

    def close(self, grace: float = 5.0) -> None:
        """Stop every server (their workers are killed with them) and the thread.

        Blocks until the servers are reaped (each gets ``grace`` seconds to
        stop, all at once). Idempotent. Call it when no pool uses them any
        more: a pool still running loses its workers, and one starting then
        fails with :class:`~snakepit.errors.PoolStartError`.

        :raises ConfigError: called from the servers' own thread.
        """
        if threading.current_thread() is self._thread:
            raise ConfigError("close", "cannot be called from the shared fork servers' thread")
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if os.getpid() != self._owner:
            return  # a fork: the thread and the servers are the parent's
        try:
            asyncio.run_coroutine_threadsafe(self._close_all(grace), self._loop).result()
        finally:
            with self._lock:
                # Whatever was queued before this runs before the stop (FIFO);
                # what comes after runs inline (see _run_sync).
                self._stopped = True
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    async def _close_all(self, grace: float) -> None:
        self._closing = True  # a start under way ends without a server
        while self._servers:  # their workers' waits end as each is reaped
            servers, self._servers = list(self._servers.values()), {}
            await asyncio.gather(*(self._drop(s, grace) for s in servers))
        calls = list(self._calls)
        for task in calls:
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        with self._lock:
            self._pids.clear()
            self._clients.clear()

    # -- from a pool's loop ------------------------------------------------------------

    def _key(self, python: str | None, env: Mapping[str, str], cwd: str | Path | None) -> Any:
        kept = sorted((k, v) for k, v in env.items() if k not in self._ignore_env)
        return (python, os.path.abspath(cwd if cwd is not None else os.getcwd()), tuple(kept))

    async def _call(
        self, work: Coroutine[Any, Any, T], discard: Callable[[T], None] | None = None
    ) -> T:
        """Run ``work`` in the servers' loop and return what it returns.

        Cancelling the caller cancels ``work`` there and waits for it to end
        (what it started is cleaned up by the time the caller goes on); a
        result that came in anyway goes to ``discard``.

        :raises ForkServerError: the servers are closed, or this is a fork of
            the process that made them.
        """
        done: concurrent.futures.Future[T] = concurrent.futures.Future()
        task: asyncio.Task[T] | None = None
        asked_to_cancel = False

        def start() -> None:
            nonlocal task
            task = self._loop.create_task(work)
            self._calls.add(task)
            task.add_done_callback(finished)

        def finished(ended: asyncio.Task[T]) -> None:
            self._calls.discard(ended)
            if ended.cancelled():
                if asked_to_cancel:
                    done.cancel()
                else:  # by close()
                    done.set_exception(ForkServerError("the shared fork servers were closed"))
            elif (exc := ended.exception()) is not None:
                done.set_exception(exc)
            else:
                done.set_result(ended.result())

        def cancel() -> None:
            nonlocal asked_to_cancel
            asked_to_cancel = True
            if task is not None and not task.done():  # start ran first: FIFO
                task.cancel()

        try:
            self._check_usable()
            with self._lock:
                if self._stopped:
                    raise ForkServerError("the shared fork servers are closed")
                self._loop.call_soon_threadsafe(start)
        except BaseException:
            work.close()
            raise
        waiter = asyncio.wrap_future(done)
        try:
            return await asyncio.shield(waiter)
        except asyncio.CancelledError:
            if waiter.done() and waiter.cancelled():
                raise
            with self._lock:
                if not self._stopped:
                    self._loop.call_soon_threadsafe(cancel)
            with anyio.CancelScope(shield=True):  # not re-cancelled at every step meanwhile
                while not waiter.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(waiter)
            if discard is not None and not waiter.cancelled() and waiter.exception() is None:
                discard(waiter.result())  # it came in before the cancel got there
            raise

    def _run_sync(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the servers' thread and return its result (it must be quick).

        Inline once the servers are closed (nothing runs there any more).
        """
        self._check_usable()
        if threading.current_thread() is self._thread:
            return fn()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)

        with self._lock:
            if self._stopped:
                return fn()
            self._loop.call_soon_threadsafe(run)  # before any stop: it runs
        return future.result()

    def _discard_spawn(self, started: tuple[ForkedProcess, int, int]) -> None:
        # A fork whose caller gave up as it came in: killed, its pipes closed.
        child, out_fd, ready_fd = started

        def kill() -> None:
            child.signal_group(signal.SIGKILL)
            child.close_stdin()

        self._run_sync(kill)
        for fd in (out_fd, ready_fd):
            os.close(fd)

    def _check_usable(self) -> None:
        if os.getpid() != self._owner:
            raise ForkServerError(
                f"shared fork servers belong to the process that made them ({self._owner});"
                " this is a fork of it, where their thread does not run"
            )

    def _forkserver(
        self,
        *,
        python: str | None,
        env: Mapping[str, str],
        cwd: str | Path | None,
        run_id: str,
        ready_timeout: float,
    ) -> SharedForkServer:
        """A handle that forks from the server for this interpreter, environment and directory.

        The server is found (or started) by each fork, in the same step.
        """
        key = self._key(python, env, cwd)
        start = (python, dict(env), cwd, run_id, ready_timeout)
        return SharedForkServer(self, key, start)

    # -- in the servers' thread --------------------------------------------------------

    async def _spawn(
        self,
        key: Any,
        start: tuple[str | None, dict[str, str], str | Path | None, str, float],
        argv: list[str],
        env: Mapping[str, str] | None,
        cwd: str | Path | None,
        timeout: float,
        secret: bytes | None,
    ) -> tuple[ForkedProcess, int, int]:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:  # a pool's workers start at once: one server for them all
            server = await self._find_or_start(key, *start)
        # No await in between: the request is the server's before another start
        # could see it idle and stop it.
        return await server.spawn(argv, env=env, cwd=cwd, timeout=timeout, secret=secret)

    async def _find_or_start(
        self,
        key: Any,
        python: str | None,
        env: dict[str, str],
        cwd: str | Path | None,
        run_id: str,
        ready_timeout: float,
    ) -> ForkServerClient:
        self._refuse_if_closing()
        server = self._servers.pop(key, None)
        if server is not None and server.alive:
            self._servers[key] = server  # the most recently used last
            return server
        if server is not None:
            await self._drop(server)
        for old_key, old in list(self._servers.items()):
            if not old.alive:
                del self._servers[old_key]
                await self._drop(old)
        while len(self._servers) >= self._max:
            idle = [k for k, s in self._servers.items() if s.idle]
            if not idle:
                break  # all busy: one more for now
            await self._drop(self._servers.pop(idle[0]))
        started: list[int] = []
        try:
            server = await ForkServerClient.start(
                python=python,
                env=env,
                cwd=cwd,
                run_id=run_id,
                ready_timeout=ready_timeout,
                on_spawn=lambda pid: self._started(pid, started),
                preload=self._preload,
            )
        except BaseException:
            with self._lock:  # reaped by start
                self._pids.difference_update(started)
            raise
        try:
            self._refuse_if_closing()  # close() began while it started
        except ForkServerError:
            await self._drop(server)
            raise
        self._servers[key] = server
        with self._lock:
            self._clients.append(server)
        return server

    def _refuse_if_closing(self) -> None:
        if self._closing:
            raise ForkServerError("the shared fork servers are closed")

    def _started(self, pid: int, started: list[int]) -> None:
        started.append(pid)
        with self._lock:
            self._pids.add(pid)

    async def _drop(self, server: ForkServerClient, grace: float = 0.0) -> None:
        await server.aclose(grace=grace)
        with self._lock:
            self._pids.discard(server.pid)
            if server in self._clients:
                self._clients.remove(server)


class SharedForkServer:
    """A pool's handle on :class:`SharedForkServers`: it forks; the servers are not its own.

    It has :meth:`ForkServerClient.spawn`'s signature; the processes it
    returns are used from the pool's loop.
    """

    def __init__(self, shared: SharedForkServers, key: Any, start: Any) -> None:
        self._shared = shared
        self._key = key
        self._start = start

    async def spawn(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        timeout: float = 30.0,
        secret: bytes | None = None,
    ) -> tuple[SharedChild, int, int]:
        """Fork a worker (see :meth:`ForkServerClient.spawn`), starting the server if need be."""
        shared = self._shared
        if env is None:  # the caller's, not what the server started with
            env = quiet_environment(self._start[1])
        child, out_fd, ready_fd = await shared._call(
            shared._spawn(self._key, self._start, argv, env, cwd, timeout, secret),
            discard=shared._discard_spawn,
        )
        return SharedChild(shared, child), out_fd, ready_fd


class SharedChild:
    """A worker forked by a shared server, seen from its pool's loop.

    Its :class:`ForkedProcess` lives in the servers' thread; what changes it
    (a wait, a signal, closing its stdin) runs there.
    """

    def __init__(self, shared: SharedForkServers, child: ForkedProcess) -> None:
        self._shared = shared
        self._child = child
        self.pid = child.pid

    @property
    def returncode(self) -> int | None:
        """Its exit code once the server reported it (negative: the signal)."""
        return self._child.returncode

    @property
    def lost_reason(self) -> str | None:
        """Why it is reported dead without the server's word, if so."""
        return self._child.lost_reason

    async def wait(self) -> int:
        """Wait for its exit code (see :meth:`ForkedProcess.wait`).

        Once the servers are closed it has one: closing them ended it.
        """
        code = self._child.returncode
        if code is not None and self._shared.closed:
            return code
        try:
            return await self._shared._call(self._child.wait())
        except ForkServerError:
            if self._child.returncode is None:
                raise
            return self._child.returncode

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to its process group, unless it has exited."""
        self._shared._run_sync(lambda: self._child.signal_group(signum))

    def close_stdin(self) -> None:
        """Close the host's end of its stdin."""
        self._shared._run_sync(self._child.close_stdin)


def _pidfd_pid(fd: int) -> int | None:
    """The pid a pidfd of this process refers to (from /proc/self/fdinfo), or None."""
    with contextlib.suppress(OSError), open(f"/proc/self/fdinfo/{fd}") as info:
        for line in info:
            if line.startswith("Pid:"):
                return int(line.split()[1])
    return None
