"""The default launcher: worker processes on this host (exec'd, or forked from a fork server)."""

from __future__ import annotations

import asyncio
import os

import anyio

from snakepit._wire._address import Address
from snakepit.errors import WorkerStartError

from .._config import PoolConfig
from ._base import WorkerBridge
from ._forkserver_client import ForkServerClient, ForkServerError
from ._process import WorkerProcess, spawn_worker
from ._rundir import RunDir
from ._shared import SharedForkServer, SharedForkServers, default_fork_servers

__all__ = ("LocalLauncher",)


class LocalLauncher:
    """Workers as subprocesses of this host, each in its own process group, on unix sockets.

    The sockets live in this run's private directory under ``run_dir``
    (default: one base per user, see :func:`~snakepit.pool.default_run_base`),
    with the workers' pids. The first start claims it: workers left by a
    dead earlier run under the same base are killed and its files removed.
    With ``start_method="forkserver"`` (the default) the first start also
    starts the run's fork server, and the workers are forked from it (or
    from shared fork servers, see ``forkservers``).
    :meth:`aclose` stops its fork server and removes this run's files.

    :param forkservers: fork the workers from these shared fork servers,
        which outlive this launcher (default: the process's default, see
        :func:`~snakepit.pool.set_default_fork_servers`; if None, a fork
        server of its own).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str] | None = None,
        *,
        forkservers: SharedForkServers | None = None,
    ) -> None:
        self._base = run_dir
        self._run: RunDir | None = None
        self._shared = forkservers if forkservers is not None else default_fork_servers()
        self._forkservers: dict[tuple[object, ...], ForkServerClient] = {}
        self._forkserver_lock = asyncio.Lock()

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

    async def start(
        self,
        config: PoolConfig,
        worker_id: str,
        run_id: str,
        *,
        bridge: WorkerBridge | None = None,
    ) -> WorkerProcess:
        """Spawn ``python -m snakepit.worker`` for ``config.adapter``; return when ready.

        With ``bridge``, the worker gets the bridge's address (``--bridge``)
        and its token on stdin, after its secret.

        :raises ConfigError: ``run_dir`` is unusable (not private, too long).
        :raises WorkerStartError: the worker failed before its ready line.
        """
        run = self.open(run_id)
        env = config.worker_env(os.environ)
        forkserver = None
        if config.start_method == "forkserver":
            forkserver = await self._forkserver(config, env, run, worker_id)
        return await spawn_worker(
            config.adapter,
            str(Address.unix(run.socket(worker_id))),
            worker_id=worker_id,
            run_id=run.run_id,
            max_concurrency=config.max_concurrency,
            python=config.python,
            env=env,
            cwd=config.cwd,
            ready_timeout=config.startup_timeout,
            extra_args=[
                "--max-message-mb",
                str(config.max_message_mb),
                *(["--allow-pickle"] if config.allow_pickle else []),
                "--loop",
                config.worker_loop,
            ],
            on_spawn=lambda pid: run.record(worker_id, pid),
            forkserver=forkserver,
            bridge=bridge,
        )

    async def _forkserver(
        self, config: PoolConfig, env: dict[str, str], run: RunDir, worker_id: str
    ) -> ForkServerClient | SharedForkServer:
        if self._shared is not None:  # found or started by each fork
            return self._shared._forkserver(
                python=config.python,
                env=env,
                cwd=config.cwd,
                run_id=run.run_id,
                ready_timeout=config.startup_timeout,
            )
        # One per interpreter, environment and directory (a pool has one); one
        # that died is replaced.
        key = (config.python, config.cwd, tuple(sorted(env.items())))
        async with self._forkserver_lock:
            server = self._forkservers.get(key)
            if server is not None and server.alive:
                return server
            if server is not None:
                await server.aclose(grace=0)
            # The host's environment changed (or the server died): servers
            # left with no worker go, rather than wait for the pool's end.
            for old_key, old in list(self._forkservers.items()):
                if not old.alive or old.idle:
                    del self._forkservers[old_key]
                    await old.aclose(grace=0)
            try:
                server = await ForkServerClient.start(
                    python=config.python,
                    env=env,
                    cwd=config.cwd,
                    run_id=run.run_id,
                    ready_timeout=config.startup_timeout,
                    on_spawn=lambda pid: run.record(f"forkserver-{pid}", pid),
                )
            except ForkServerError as exc:
                raise WorkerStartError(
                    worker_id, f"the fork server failed: {exc}", returncode=None, stderr_tail=""
                ) from exc
            self._forkservers[key] = server
            return server

    async def aclose(self) -> None:
        """Stop the fork server, remove this run's directory and release its lock.

        The workers are stopped by then (the pool stops them first); a worker
        the fork server still runs is killed with it.
        """
        servers, self._forkservers = list(self._forkservers.values()), {}
        with anyio.CancelScope(shield=True):
            for server in servers:
                await server.aclose()
        if self._run is not None:
            self._run.close()
