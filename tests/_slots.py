"""Waiting, without a timer, for a pool's slots of cancelled calls to come back."""

from __future__ import annotations

import anyio

from snakepit.pool import Pool


async def all_checked_in(pool: Pool, timeout: float = 10.0) -> None:
    """Return once every cancelled call's end came from its worker, and its slot is back.

    A cancelled call's slot is checked in in the background, once its worker
    says the call ended; a call sent ahead (prefetch) behind it may end first.
    """
    with anyio.fail_after(timeout):
        for worker in pool._tree.workers.values():
            if worker.usable and worker.mux is not None:
                for rid in worker.mux.left_running:
                    assert await worker.mux.settled(rid)
        await anyio.wait_all_tasks_blocked()
