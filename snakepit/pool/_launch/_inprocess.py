"""InProcessLauncher: workers whose adapter runs inside the host, behind the same channel.

The seam's second implementation (ARCHITECTURE.md, "Where workers run"): a
pool's scheduling, supervision, recycling and telemetry can be tested in
milliseconds, with the real gRPC channel between the pool and the adapter
but no process to spawn. There is no crash isolation: it is for tests.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from snakepit._wire._address import Address
from snakepit._wire._auth import new_secret
from snakepit.errors import WorkerStartError
from snakepit.worker import Adapter, AdapterServer
from snakepit.worker._adapter_server import AdapterStartError, maybe_await
from snakepit.worker._main import load_adapter

from .._config import PoolConfig
from ._base import WorkerBridge

__all__ = ("InProcessHandle", "InProcessLauncher")

logger = logging.getLogger("snakepit.pool")


@dataclass(eq=False)
class InProcessHandle:
    """A worker served in this process (a :class:`~snakepit.pool.WorkerHandle`).

    :meth:`kill` stops its server at once, so calls in flight fail as they
    would when a process dies (exit code ``-SIGKILL``); :meth:`aclose` stops
    it gracefully and runs the adapter's ``teardown()`` (exit code 0). A sync
    tool's thread cannot be killed: it runs on to its end.

    The stop runs in a task of its own (``kill()`` does not wait), which
    :meth:`wait` and :meth:`aclose` see to its end before they return; a
    failure of a stop that :meth:`kill` started is logged (its exit code is
    still ``-SIGKILL``), one of :meth:`aclose`'s raised.
    """

    #: The id the pool gave it.
    worker_id: str
    #: The unix socket address its server listens on.
    address: str
    _server: AdapterServer = field(repr=False)
    _adapter: Adapter = field(repr=False)
    #: Where it serves the channel's frames.
    frames_address: str | None = None
    #: None: it has no process of its own.
    pid: int | None = None
    #: What connections to it must prove they have (as a worker process's).
    secret: bytes | None = field(default=None, repr=False)
    _returncode: int | None = field(default=None, repr=False)
    _exited: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _stopping: asyncio.Task[None] | None = field(default=None, repr=False)
    #: The stop is kill()'s: its failure is logged, never raised.
    _killed: bool = field(default=False, repr=False)
    _on_stopped: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def returncode(self) -> int | None:
        """0 after a graceful stop, ``-SIGKILL`` after :meth:`kill`, None while serving."""
        return self._returncode

    def stderr_tail(self, lines: int = 20) -> str:
        """Always empty: it shares the host's stderr."""
        return ""

    async def wait(self) -> int:
        """Wait until it stopped (its stop task ended); return its exit code."""
        await self._exited.wait()
        if self._stopping is not None:
            await asyncio.wait([self._stopping])  # it ends right after it set _exited
        assert self._returncode is not None
        return self._returncode

    def kill(self) -> None:
        """Stop serving now: calls in flight fail as if its process had died."""
        if self._stopping is None:
            self._killed = True
            self._stopping = self._start_stop(-signal.SIGKILL, None)
            self._stopping.add_done_callback(_log_failure)

    async def aclose(self, grace: float = 5.0) -> int:
        """Finish calls in flight for up to ``grace`` seconds, stop, run ``teardown()``.

        After :meth:`kill`, it waits for that stop instead, whose failure was
        logged and is not raised again.

        :raises Exception: what the graceful stop (or ``teardown()``) raised.
        """
        if self._stopping is None:
            self._stopping = self._start_stop(0, grace)
        if not self._killed:
            # Shielded: the stop finishes even when the caller is cancelled.
            await asyncio.shield(self._stopping)
        return await self.wait()

    def _start_stop(self, code: int, grace: float | None) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(
            self._stop(code, grace=grace), name=f"snakepit in-process stop {self.worker_id}"
        )

    async def _stop(self, code: int, grace: float | None) -> None:
        try:
            if grace is None:
                await self._server.abort()
            else:
                await self._server.stop(grace)
                await maybe_await(self._adapter.teardown())
        finally:
            self._returncode = code
            self._exited.set()
            if self._on_stopped is not None:
                self._on_stopped()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("%s failed", task.get_name(), exc_info=exc)


class InProcessLauncher:
    """Runs each worker's adapter in this process, served on a private unix socket.

    ``Pool(adapter=..., launcher=InProcessLauncher())``: the pool works as with
    subprocesses (same channel, same supervision) and a worker starts in
    milliseconds. For tests of the pool's logic, not for production: a tool
    that crashes or blocks takes the host with it, and ``pid`` is None.
    """

    def __init__(self) -> None:
        # Made on the first start and removed when its last worker stops: a
        # launcher passed to a pool is not the pool's to close.
        self._dir: Path | None = None
        self._serving = 0

    def _socket_dir(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="snakepit-inproc-"))
            self._dir.chmod(0o700)
        return self._dir

    def _stopped(self) -> None:
        self._serving -= 1
        if self._serving == 0:
            self.close()

    async def start(
        self,
        config: PoolConfig,
        worker_id: str,
        run_id: str,
        *,
        bridge: WorkerBridge | None = None,
    ) -> InProcessHandle:
        """Load and set up ``config.adapter`` here and serve it; return when it serves.

        ``bridge`` is not handed to in-process adapters yet (their tools have no
        ``ctx.call_host``).

        :raises WorkerStartError: the adapter cannot be loaded, or ``setup()`` raised.
        """
        try:
            adapter = load_adapter(config.adapter)()
            await maybe_await(adapter.setup())
        except (AdapterStartError, Exception) as exc:
            raise WorkerStartError(
                worker_id,
                str(exc),
                returncode=None,
                stderr_tail="".join(traceback.format_exception(exc)).rstrip(),
            ) from exc
        self._serving += 1  # counted from now: a stop meanwhile keeps the directory
        secret = new_secret()
        try:
            with anyio.CancelScope(shield=True):  # milliseconds; never left half started
                server = await AdapterServer.start(
                    adapter,
                    listen=str(Address.unix(self._socket_dir() / f"{worker_id}.sock")),
                    adapter_path=config.adapter,
                    worker_id=worker_id,
                    max_concurrency=config.max_concurrency,
                    max_message_bytes=config.max_message_bytes,
                    allow_pickle=config.allow_pickle,
                    secret=secret,
                )
        except (AdapterStartError, OSError) as exc:
            self._stopped()
            await maybe_await(adapter.teardown())
            raise WorkerStartError(worker_id, str(exc), returncode=None, stderr_tail="") from exc
        worker = InProcessHandle(
            worker_id, server.address, server, adapter, server.frames_address, secret=secret
        )
        worker._on_stopped = self._stopped
        return worker

    async def aclose(self) -> None:
        """Remove the socket directory (the workers are stopped by then); see :meth:`close`."""
        self.close()

    def close(self) -> None:
        """Remove the socket directory (the workers are stopped by then)."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
