"""PoolHost: the pool's own task, which owns its task groups from entering to the teardown."""

from __future__ import annotations

import asyncio
import logging

import anyio
from anyio.abc import TaskGroup, TaskStatus

from snakepit.otp import unwrapped_task_group

logger = logging.getLogger("snakepit.pool")


class PoolHost:
    """The task that holds a pool's task groups, so that any task may enter or close the pool.

    A task group can only be left by the task that entered it; the pool's
    groups live in a task of their own instead of the caller's. :attr:`group`
    holds the supervision tree's servers (none raises into it);
    :attr:`background` the pool's background work (recycling, housekeeping,
    the check-in of cancelled calls; each catches its own errors), in a group
    of its own so that it can be cancelled without cancelling the tree.
    """

    def __init__(self, owner: object) -> None:
        self._owner = owner  # named in the log line of a failure
        #: The tree's task group, once :meth:`start` returned.
        self.group: TaskGroup | None = None
        #: The background work's task group, from :meth:`start` to :meth:`stop_background`.
        self.background: TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None
        self._release: anyio.Event | None = None  # tells the task its group is empty
        self._background_done: anyio.Event | None = None

    async def start(self, name: str) -> TaskGroup:
        """Start the task (named ``name``) and its groups; return the tree's group.

        Call :meth:`stop` in any case afterwards, also when this raised.
        """
        loop = asyncio.get_running_loop()
        hosting: asyncio.Future[TaskGroup] = loop.create_future()
        self._release = anyio.Event()
        self._task = loop.create_task(self._run(hosting), name=name)
        self.group = group = await hosting
        await group.start(self._run_background)
        return group

    async def _run(self, hosting: asyncio.Future[TaskGroup]) -> None:
        # From start() to stop(): its task group holds the tree's servers and
        # the background group (none raises into it).
        assert self._release is not None
        try:
            async with unwrapped_task_group() as group:
                if not hosting.done():
                    hosting.set_result(group)
                await self._release.wait()  # set by stop() once the group is empty
        except BaseException as exc:
            if not hosting.done():
                hosting.set_exception(exc)
            raise

    async def _run_background(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        # A task group of this task's own, so that any task can cancel it
        # (stop_background) without cancelling the task that entered the pool.
        self._background_done = done = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                self.background = tg
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self.background = None  # nothing more can start there
            done.set()

    async def stop_background(self) -> None:
        """Cancel the background work and wait until it has ended."""
        if self.background is not None:
            self.background.cancel_scope.cancel()
            assert self._background_done is not None
            await self._background_done.wait()

    async def stop(self) -> None:
        """Let the task end (its group must be empty by now) and wait for it; never raises."""
        task = self._task
        if task is None:
            return
        assert self._release is not None
        self._release.set()
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            logger.error("%r: its task group failed", self._owner, exc_info=task.exception())
