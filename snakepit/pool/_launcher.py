"""Where worker processes run: the Launcher seam and the local launcher."""

from __future__ import annotations

import os
from typing import Protocol

from snakepit._launch import WorkerProcess, spawn_worker

from ._config import PoolConfig
from ._rundir import RunDir

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
    def frames_address(self) -> str | None:
        """Where it serves the channel's frames (``unix:PATH``), or None: use gRPC."""
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

    The sockets live in this run's private directory under ``run_dir``
    (default: one base per user, see :func:`~snakepit.pool.default_run_base`),
    with the workers' pids. The first start claims it: workers left by a
    dead earlier run under the same base are killed and its files removed.
    :meth:`close` removes this run's files.
    """

    def __init__(self, run_dir: str | os.PathLike[str] | None = None) -> None:
        self._base = run_dir
        self._run: RunDir | None = None

    @property
    def run(self) -> RunDir | None:
        """The run directory, once claimed (by :meth:`open` or the first start)."""
        return self._run

    def open(self, run_id: str) -> RunDir:
        """Claim the run directory for ``run_id`` now (done by the first start otherwise).

        :raises ConfigError: ``run_dir`` is unusable (not private, too long).
        """
        if self._run is None:
            self._run = RunDir.claim(self._base, run_id)
        return self._run

    async def start(self, config: PoolConfig, worker_id: str, run_id: str) -> WorkerProcess:
        """Spawn ``python -m snakepit.worker`` for ``config.adapter``; return when ready.

        :raises ConfigError: ``run_dir`` is unusable (not private, too long).
        :raises WorkerStartError: the worker failed before its ready line.
        """
        run = self.open(run_id)
        return await spawn_worker(
            config.adapter,
            f"unix:{run.socket(worker_id)}",
            worker_id=worker_id,
            run_id=run.run_id,
            max_concurrency=config.max_concurrency,
            python=config.python,
            env=config.worker_env(os.environ),
            cwd=config.cwd,
            ready_timeout=config.startup_timeout,
            extra_args=["--max-message-mb", str(config.max_message_mb)],
            on_spawn=lambda pid: run.record(worker_id, pid),
        )

    def close(self) -> None:
        """Remove this run's directory and release its lock (the workers are stopped by then)."""
        if self._run is not None:
            self._run.close()
