"""Where worker processes run: the Launcher seam (``Launcher`` and ``WorkerHandle``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .._config import PoolConfig

__all__ = ("Launcher", "WorkerBridge", "WorkerHandle")


@dataclass(frozen=True, slots=True)
class WorkerBridge:
    """How one worker reaches its pool's bridge: where, and its own token (never logged)."""

    #: The bridge's address (``unix:PATH``).
    address: str
    #: The worker's token (``snakepit._wire._bridge.worker_token``: 64 hex digits).
    token: str

    def __repr__(self) -> str:
        return f"WorkerBridge({self.address!r})"


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
    def secret(self) -> bytes | None:
        """What connections to it must prove they have (None: it takes any)."""
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

    async def start(
        self,
        config: PoolConfig,
        worker_id: str,
        run_id: str,
        *,
        bridge: WorkerBridge | None = None,
    ) -> WorkerHandle:
        """Start one worker and return once it reported ready.

        :param bridge: hand the worker its pool's bridge (its address and
            the worker's token), or None.
        :raises WorkerStartError: it failed before its ready line.
        """
        ...

    async def aclose(self) -> None:
        """Release what the launcher holds (its socket directory, a fork server)."""
        ...
