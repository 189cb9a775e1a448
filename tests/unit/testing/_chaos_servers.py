"""What the chaos helpers' tests run on: supervisors of quiet servers, in-process pools.

Pools use the in-process launcher (asyncio only: grpc.aio). No timers: every wait in these
tests is a server's exit, ``wait_stable()``, ``wait_ready()`` or an event.
"""

from __future__ import annotations

from typing import Any

import pytest

from snakepit.otp import ChildSpec, GenServer, Restart, Strategy
from snakepit.otp import SupervisorSpec as Spec
from snakepit.pool import InProcessLauncher, Pool

asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])

DIRECTED = "snakepit.testing.adapters:DirectedFaults"
STOCK = "snakepit.testing.adapters:FaultInjecting"


class Quiet(GenServer[str, Any, int]):
    """A child that answers ``"ping"`` and logs its crashes quietly."""

    async def handle_call(self, request: str, state: int) -> tuple[Any, int]:
        return "pong", state

    def log_crash(self, reason: object) -> None:
        pass


def spec(
    *ids: str,
    restart: Restart = "permanent",
    strategy: Strategy = "one_for_one",
    max_restarts: int = 100,
) -> Spec:
    children = [ChildSpec(i, Quiet, 0, restart=restart) for i in ids]
    return Spec(children, strategy=strategy, max_restarts=max_restarts, max_seconds=3600)


def in_process_pool(launcher: InProcessLauncher, adapter: str, size: int = 2) -> Pool:
    return Pool(adapter, size=size, launcher=launcher, health_interval=None)
