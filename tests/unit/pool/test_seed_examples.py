"""The seed's pool and supervision examples, written with snakepit.testing.

The seed's "Pool Testing Pattern" (a pool starts its workers; concurrent
requests all complete) and its worker-supervisor restart test, on an
in-process pool: the tree under ``pool.supervisor`` is checked with the
same helpers a user would use on their own supervisors.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from snakepit.pool import InProcessLauncher, Pool
from snakepit.testing import (
    assert_all_children_alive,
    assert_child_count,
    assert_process_restarted,
    assert_tree,
    trace_supervision,
)

from ._helpers import workers_supervisor

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # the pool's channel is grpc.aio's / asyncio's

ECHO = "snakepit.testing.adapters:Echo"


def pool(**options: Any) -> Pool:
    return Pool(ECHO, launcher=InProcessLauncher(), health_interval=None, **options)


async def test_pool_starts_configured_number_of_workers() -> None:
    async with pool(size=2) as p:
        assert_tree(
            p.supervisor, {"sessions": "worker", "bridge": "worker", "workers": "supervisor"}
        )
        assert_child_count(workers_supervisor(p), 2)
        assert_all_children_alive(workers_supervisor(p))


async def test_pool_handles_concurrent_requests() -> None:
    async with pool(size=2) as p:
        results: dict[int, Any] = {}

        async def request(i: int) -> None:
            results[i] = await p.execute("echo", {"value": {"id": i}})

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(request, i)
        assert results == {i: {"id": i} for i in range(10)}


async def test_a_killed_worker_is_restarted_by_the_worker_supervisor() -> None:
    async with pool(size=2) as p:
        sup = workers_supervisor(p)
        old = sup.child("w0")
        assert old is not None
        async with trace_supervision(sup) as log:
            await old.kill()
            new = await assert_process_restarted(sup, "w0", old)
        assert new.generation == old.generation + 1
        assert len(log.restarts("w0")) == 1
        await p.wait_ready()
        assert_child_count(sup, 2)
        assert await p.execute("ping") == {"status": "pong"}
