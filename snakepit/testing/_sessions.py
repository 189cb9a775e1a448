"""A pool's sessions in tests: cleanup_sessions, assert_no_sessions.

Both go through the pool's session store (``pool.sessions``): a deletion here
is a delete like any other, so the worker a session was pinned to runs
``Adapter.on_session_end`` and the store's ``on_end`` is called. A pool that
is not running (never entered, or closed) has no sessions to clean up or to
find. A degraded pool's store still runs (it outlives the workers): its
sessions are deleted too, with no worker left to run their hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from snakepit.pool import Pool
    from snakepit.session import SessionStoreRef

__all__ = ("assert_no_sessions", "cleanup_sessions")

#: How many session ids an assert_no_sessions failure names before "and N more".
NAMED: Final = 10


def _store(pool: Pool) -> SessionStoreRef | None:
    """The pool's running store, or None if the pool is not running."""
    from snakepit.errors import PoolClosed

    try:
        return pool.sessions  # a degraded pool's too: its store outlives its workers
    except PoolClosed:
        return None


async def cleanup_sessions(pool: Pool, *, timeout: float | None = 5.0) -> int:
    """Delete every session of ``pool``'s store; return how many were deleted.

    ::

        async with Pool("myapp.adapters:Model", size=2) as pool:
            try:
                await run_the_test(pool)
            finally:
                await cleanup_sessions(pool)

    Each deletion is ``pool.sessions.delete(id)``: the session's worker runs
    ``Adapter.on_session_end`` (in the background, as after any delete) and
    the store's ``on_end`` is called. Sessions created meanwhile are deleted
    too (it lists again until the store is empty); one that expired first is
    not counted. With a shared backend (Redis) every session the backend
    holds is deleted, those of other pools on it included. A pool that is not
    running returns 0. The ``snakepit_pool`` fixture calls it before it
    closes each pool.

    :param timeout: seconds for each call of the store (None: no limit).
    :raises CallTimeout: the store did not answer a call within ``timeout``.
    :raises SessionError: the pool runs but its store does not (restarting
        after a crash).
    """
    store = _store(pool)
    if store is None:
        return 0
    deleted = 0
    seen: set[str] = set()  # a store that kept what it deleted must not loop this forever
    while True:
        ids = [r.session_id for r in await store.list(timeout=timeout)]
        new = [i for i in ids if i not in seen]
        if not new:
            return deleted
        for session_id in new:
            seen.add(session_id)
            if await store.delete(session_id, timeout=timeout) is not None:
                deleted += 1


async def assert_no_sessions(pool: Pool, *, timeout: float | None = 5.0) -> None:
    """Raise AssertionError if ``pool``'s store has a session; the message names them.

    ::

        async with pool.session() as s:
            await s.execute("predict", {"x": 1})
        await assert_no_sessions(pool)  # the block deleted it

    The message names the first sessions left (oldest first: id, affinity,
    and the worker it is pinned to), then says how many more there are.
    Expired sessions do not count. A pool that is not running has none.

    :param timeout: seconds for the store to answer (None: no limit).
    :raises CallTimeout: the store did not answer within ``timeout``.
    """
    store = _store(pool)
    if store is None:
        return
    records = await store.list(timeout=timeout)
    if not records:
        return
    named = ", ".join(
        f"{r.session_id!r} ({r.affinity}, "
        + ("not pinned" if r.worker_id is None else f"pinned to {r.worker_id}")
        + ")"
        for r in records[:NAMED]
    )
    more = f", and {len(records) - NAMED} more" if len(records) > NAMED else ""
    raise AssertionError(
        f"expected no sessions in {pool!r}, found {len(records)}: {named}{more} "
        "(delete them in the test, or with cleanup_sessions(pool))"
    )
