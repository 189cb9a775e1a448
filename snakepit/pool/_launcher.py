"""Where worker processes run: the Launcher seam and the local launcher."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

from snakepit._launch import WorkerProcess, spawn_worker

from ._config import PoolConfig

__all__ = ("Launcher", "LocalLauncher", "WorkerHandle")


class WorkerHandle(Protocol):
    """A started worker process, wherever it runs."""

    @property
    def worker_id(self) -> str:
        """The id the pool gave it."""
        ...

    @property
    def address(self) -> str:
        """Where its server listens (``unix:PATH`` or ``tcp:HOST:PORT``)."""
        ...

    @property
    def pid(self) -> int | None:
        """Its process id, or None when it has no process of its own."""
        ...

    @property
    def returncode(self) -> int | None:
        """Its exit code once it exited (negative: killed by that signal)."""
        ...

    async def wait(self) -> int:
        """Wait until it exited; return its exit code."""
        ...

    def kill(self) -> None:
        """Kill it (and whatever it started) now."""
        ...

    async def aclose(self, grace: float = 5.0) -> int:
        """Stop it: SIGTERM, ``grace`` seconds, SIGKILL; wait for it."""
        ...

    def stderr_tail(self, lines: int = 20) -> str:
        """The last lines it wrote to stderr."""
        ...


class Launcher(Protocol):
    """Starts worker processes for a pool (a subprocess here; an actor on a cluster)."""

    async def start(self, config: PoolConfig, worker_id: str, run_id: str) -> WorkerHandle:
        """Start one worker and return once it reported ready.

        :raises WorkerStartError: it failed before its ready line.
        """
        ...

    def close(self) -> None:
        """Release what the launcher holds (its socket directory)."""
        ...


class LocalLauncher:
    """Workers as subprocesses of this host, each in its own process group, on unix sockets.

    The sockets live in a private (0700) directory made for this launcher and
    removed by :meth:`close`.
    """

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="snakepit-"))
        self._dir.chmod(0o700)

    async def start(self, config: PoolConfig, worker_id: str, run_id: str) -> WorkerProcess:
        """Spawn ``python -m snakepit.worker`` for ``config.adapter``; return when ready."""
        return await spawn_worker(
            config.adapter,
            f"unix:{self._dir}/{worker_id}.sock",
            worker_id=worker_id,
            run_id=run_id,
            max_concurrency=config.max_concurrency,
            python=config.python,
            env=config.worker_env(os.environ),
            cwd=config.cwd,
            ready_timeout=config.startup_timeout,
            extra_args=["--max-message-mb", str(config.max_message_mb)],
        )

    def close(self) -> None:
        """Remove the socket directory (the workers are stopped by then)."""
        for path in self._dir.glob("*"):
            path.unlink(missing_ok=True)
        self._dir.rmdir()
