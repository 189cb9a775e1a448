"""unwrapped_task_group: a task group whose one error leaves as itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskGroup

__all__ = ("unwrapped_task_group",)


@asynccontextmanager
async def unwrapped_task_group() -> AsyncIterator[TaskGroup]:
    """Return a task group whose one exception comes out as itself, not in an ExceptionGroup.

    For groups whose tasks do not raise (servers catch their own errors), or
    of which at most one fails: the one exception that leaves is raised
    plain, so ``except Exception`` sees it (the ``Cancelled`` that trio adds
    for the other tasks is dropped). Several errors still leave as an
    ExceptionGroup. Use it in :meth:`GenServer.lifespan` for a server's
    helper tasks, and to own servers that ``start()`` promises to raise
    plain errors from. Callers of ``running()`` and ``start()`` rely on it.
    """
    own: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg:
            yield tg
    except BaseExceptionGroup as group:
        # trio reports the Cancelled of children that died in a cancellation next
        # to the body's own error; the error is what leaves (anyio drops those
        # Cancelled on asyncio). Kept, they make a BaseExceptionGroup that no
        # `except Exception` catches and that crosses supervisors.
        _, errors = group.split(anyio.get_cancelled_exc_class())
        if errors is None or len(errors.exceptions) != 1:
            raise
        own = errors.exceptions[0]
    if own is not None:
        raise own
