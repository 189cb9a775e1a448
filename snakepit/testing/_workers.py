"""Real worker processes in tests: python_worker, assert_healthy, assert_streaming_response.

A worker started here runs ``python -m snakepit.worker`` in its own process
group, and is stopped as a pool stops it (SIGTERM, a grace period, SIGKILL,
reaped); on top of that the exit checks that nothing of its process group is
left running. Worker processes are driven through grpc.aio, so these helpers
need the asyncio backend (``assert_streaming_response`` runs on any).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ._leaks import _on_asyncio, _stat_fields, child_pids, describe_process, wait_exited

if TYPE_CHECKING:
    from snakepit.pool import WorkerConnection, WorkerProcess

__all__ = ("PythonWorker", "assert_healthy", "assert_streaming_response", "python_worker")

#: The longest unix socket path Linux takes is 107 bytes; leave room for ".frames".
_MAX_SOCKET_DIR = 80


@dataclass(eq=False)
class PythonWorker:
    """A worker process started by :func:`python_worker`.

    ::

        async with python_worker("snakepit.testing.adapters:Echo") as w:
            assert await w.client.execute("echo", {"value": 1}) == 1
            print(w.pid, w.address, w.stderr_tail())
    """

    #: The process (a :class:`~snakepit.pool.WorkerProcess`): ``kill()``, ``wait()``,
    #: ``returncode``.
    process: WorkerProcess
    #: A connected client, or None when started with ``connect=False``.
    client_or_none: WorkerConnection | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """Where it listens (``unix:PATH`` or ``tcp:HOST:PORT``), from its ready line."""
        return self.process.address

    @property
    def pid(self) -> int:
        """Its pid, also its process group id."""
        return self.process.pid

    @property
    def ready(self) -> dict[str, Any]:
        """Its ready line, parsed (address, pid, tools, protocol version...)."""
        return self.process.ready

    @property
    def returncode(self) -> int | None:
        """Its exit code once reaped (negative: the signal that killed it), else None."""
        return self.process.returncode

    @property
    def client(self) -> WorkerConnection:
        """The connected :class:`~snakepit.pool.WorkerConnection`.

        :raises RuntimeError: started with ``connect=False``.
        """
        if self.client_or_none is None:
            raise RuntimeError("this worker was started with connect=False: it has no client")
        return self.client_or_none

    def stderr_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines it wrote to stderr (its logs and tracebacks)."""
        return self.process.stderr_tail(lines)


def _group_members(pgid: int) -> list[int]:
    """Processes still running (not zombies) in process group ``pgid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = _stat_fields(stat.read_text())
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                found.append(int(stat.parent.name))
    return found


async def _check_no_orphans(pgid: int, timeout: float) -> None:
    if child_pids() is None:
        return  # no /proc: nothing to look at
    members = _group_members(pgid)
    with anyio.move_on_after(timeout):
        for pid in members:  # SIGKILLed by aclose(): they exit within moments
            await wait_exited(pid)
    left = _group_members(pgid)
    if left:
        listing = "\n".join(f"  {describe_process(pid)}" for pid in left)
        raise AssertionError(
            f"worker process group {pgid} still has processes {timeout:g}s after "
            f"SIGKILL:\n{listing}"
        )


def _socket_dir(tmp_dir: str | os.PathLike[str] | None) -> tuple[Path, bool]:
    """The directory for the socket, and whether we made it (and remove it)."""
    if tmp_dir is not None and len(str(tmp_dir)) <= _MAX_SOCKET_DIR:
        path = Path(tmp_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path, False
    path = Path(tempfile.mkdtemp(prefix="sp-"))
    path.chmod(0o700)
    return path, True


@asynccontextmanager
async def python_worker(
    adapter: str,
    *,
    tmp_dir: str | os.PathLike[str] | None = None,
    listen: str | None = None,
    worker_id: str = "test-worker",
    max_concurrency: int = 1,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    ready_timeout: float = 30.0,
    stop_grace: float = 5.0,
    orphan_timeout: float = 5.0,
    connect: bool = True,
    extra_args: Sequence[str] = (),
) -> AsyncIterator[PythonWorker]:
    """Run a worker process for an ``async with`` block (asyncio backend).

    ::

        async with python_worker("myapp.adapters:Model", tmp_dir=tmp_path) as w:
            await assert_healthy(w)
            assert await w.client.execute("predict", {"x": 1}) == 2

    Enters once the worker printed its ready line (no port guessing: a unix
    socket in ``tmp_dir``, or pass ``listen="tcp:127.0.0.1:0"`` and read the
    port back from ``w.address``). On exit: the client is closed, the process
    group gets SIGTERM, ``stop_grace`` seconds, then SIGKILL, the worker is
    reaped, and the group is checked to be empty.

    With shared fork servers set as the process's default
    (:func:`~snakepit.pool.set_default_fork_servers`, as the pytest plugin's
    ``snakepit_share_fork_servers`` option does), the worker is forked from
    them, as a pool's worker would be (~10 ms of CPU instead of ~130 for a
    new interpreter); otherwise it is a new interpreter.

    :param tmp_dir: where the socket goes; a path too long for a unix socket
        (or None) gets a short private temporary directory, removed after.
    :param connect: open ``w.client`` (a WorkerConnection) too.
    :raises WorkerStartError: it exited or printed no ready line within
        ``ready_timeout`` (the message has its exit code and stderr tail).
    :raises AssertionError: on exit, a process of its group outlived SIGKILL
        by ``orphan_timeout`` seconds (checked when the block did not raise).
    :raises RuntimeError: not on asyncio (worker processes are driven by grpc.aio).
    """
    if not _on_asyncio():
        raise RuntimeError("python_worker needs the asyncio backend (grpc.aio)")
    from snakepit.pool import WorkerConnection, default_fork_servers
    from snakepit.pool._launch._process import spawn_worker

    directory = None if cwd is None else Path(cwd)
    shared = default_fork_servers()
    forkserver = None
    if shared is not None:  # the server for this environment and directory
        forkserver = shared._forkserver(
            python=None,
            env=os.environ if env is None else env,
            cwd=directory,
            run_id="",
            ready_timeout=ready_timeout,
        )
    sock_dir, own_dir = _socket_dir(tmp_dir)
    try:
        process = await spawn_worker(
            adapter,
            listen or f"unix:{sock_dir}/{worker_id}.sock",
            worker_id=worker_id,
            max_concurrency=max_concurrency,
            env=env,
            cwd=directory,
            ready_timeout=ready_timeout,
            extra_args=extra_args,
            forkserver=forkserver,
        )
        worker = PythonWorker(process)
        failed = True
        try:
            if connect:
                worker.client_or_none = WorkerConnection(process.address, secret=process.secret)
            yield worker
            failed = False
        finally:
            with anyio.CancelScope(shield=True):
                if worker.client_or_none is not None:
                    await worker.client_or_none.aclose()
                await process.aclose(grace=stop_grace)
                if not failed:
                    await _check_no_orphans(process.pid, orphan_timeout)
    finally:
        if own_dir:
            shutil.rmtree(sock_dir, ignore_errors=True)


async def assert_healthy(
    worker: PythonWorker | WorkerProcess | str,
    *,
    service: str = "",
    timeout: float = 5.0,
) -> None:
    """Raise AssertionError unless the worker's ``grpc.health.v1`` check answers SERVING.

    ::

        async with python_worker("snakepit.testing.adapters:Echo") as w:
            await assert_healthy(w)
            await assert_healthy(w.address, service="snakepit.v1.WorkerService")

    :param worker: a :class:`PythonWorker` (its client is used), a
        ``WorkerProcess`` (its secret is used), or an address (``unix:PATH`` /
        ``tcp:HOST:PORT``; a health check needs no secret).
    :param service: the service to check; ``""`` is the whole server.
    :raises AssertionError: another status, or the check failed (unreachable,
        ``timeout``); the message has the worker's exit code and stderr tail
        when they are known.
    """
    from snakepit.errors import SnakepitError
    from snakepit.pool import WorkerConnection

    address = worker if isinstance(worker, str) else worker.address
    client = worker.client_or_none if isinstance(worker, PythonWorker) else None
    try:
        if client is not None:
            status = await client.health(service, timeout=timeout)
        else:
            process = worker.process if isinstance(worker, PythonWorker) else worker
            secret = None if isinstance(process, str) else process.secret
            async with WorkerConnection(address, secret=secret) as own:
                status = await own.health(service, timeout=timeout)
    except SnakepitError as exc:
        problem = f"the health check failed: {type(exc).__name__}: {exc}"
    else:
        if status == "SERVING":
            return
        problem = f"the health check answered {status}"
    message = f"worker at {address} is not healthy (service {service!r}): {problem}"
    if not isinstance(worker, str):
        code = worker.returncode
        if code is not None:
            message += f"\nits process exited with code {code}"
        tail = worker.stderr_tail()
        if tail:
            message += f"\nits stderr (last lines):\n{tail}"
    raise AssertionError(message)


async def assert_streaming_response(
    stream: AsyncIterable[Any],
    expected_chunks: Sequence[Any],
    *,
    chunk_timeout: float = 1.0,
) -> None:
    """Raise AssertionError unless ``stream`` yields exactly ``expected_chunks``, then ends.

    ::

        await assert_streaming_response(client.stream("count", {"n": 3}), [0, 1, 2])

    Each chunk must come within ``chunk_timeout`` seconds and equal the
    expected one, in order; then the stream must end (within
    ``chunk_timeout`` too). The message names the first wrong chunk's index,
    expected vs got, and what came so far; a missing chunk, a missing end, an
    extra chunk and an error raised by the stream are told apart. On failure
    the stream is closed (``aclose()``, which cancels a remote call).

    :raises AssertionError: the stream differs.
    """
    expected = list(expected_chunks)
    iterator = aiter(stream)
    got: list[Any] = []

    def fail(problem: str, cause: BaseException | None = None) -> AssertionError:
        error = AssertionError(
            f"{problem}\n  received so far: {got!r}\n  expected:        {expected!r}"
        )
        error.__cause__ = cause
        return error

    done = False
    try:
        for index, want in enumerate(expected):
            try:
                with anyio.fail_after(chunk_timeout):
                    chunk = await anext(iterator)
            except StopAsyncIteration:
                done = True
                raise fail(
                    f"the stream ended after {index} of {len(expected)} chunks: chunk #{index} "
                    f"({want!r}) and {len(expected) - index - 1} after it are missing"
                ) from None
            except TimeoutError:
                raise fail(
                    f"no chunk #{index} within {chunk_timeout:g}s (expected {want!r})"
                ) from None
            except Exception as exc:
                done = True
                raise fail(
                    f"the stream raised at chunk #{index} (expected {want!r}): "
                    f"{type(exc).__name__}: {exc}",
                    exc,
                ) from exc
            got.append(chunk)
            if chunk != want:
                raise fail(f"chunk #{index} is wrong: expected {want!r}, got {chunk!r}")
        try:
            with anyio.fail_after(chunk_timeout):
                extra = await anext(iterator)
        except StopAsyncIteration:
            done = True
            return
        except TimeoutError:
            raise fail(
                f"the stream did not end within {chunk_timeout:g}s after the "
                f"{len(expected)} expected chunks"
            ) from None
        except Exception as exc:
            done = True
            raise fail(
                f"the stream raised instead of ending after the {len(expected)} expected "
                f"chunks: {type(exc).__name__}: {exc}",
                exc,
            ) from exc
        got.append(extra)
        raise fail(
            f"the stream did not end after the {len(expected)} expected chunks: "
            f"extra chunk #{len(expected)}: {extra!r}"
        )
    finally:
        if not done:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
