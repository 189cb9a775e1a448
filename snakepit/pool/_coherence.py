"""_Followers: the coherence page kept right for writes the pool's own code does not make.

A pool bumps its coherence page (:mod:`snakepit._wire._coherence`) itself
after each write it makes through :class:`~snakepit.session.SessionVariables`
(its host code's and its workers', through the bridge), before the write
returns. A backend shared with other processes (Redis: pools on other
hosts) is also written by them. So the first time a worker reads a
session's variables through the bridge, the bridge *follows* that session:
a watch of the backend, in place before that read is answered, bumps the
counter of each variable it sees change, and the session's counter when the
session ends or the watch is ended (fell behind, the backend failed). A
worker's cached value of a variable another host wrote is then dropped as
soon as that change's notification reaches this host.

One watch per followed session, until the session ends or the pool stops.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from snakepit._wire._coherence import CoherencePage
from snakepit.errors import SessionError
from snakepit.session import VariableBackend

__all__ = ()

logger = logging.getLogger("snakepit.bridge")

#: Changes a follower may fall behind by before its watch is ended (and restarted).
FOLLOW_BUFFER = 4096


class _Followers:
    """The sessions a pool's bridge follows for its workers' caches (see the module's docstring)."""

    def __init__(self, tg: TaskGroup, page: Callable[[], CoherencePage | None]) -> None:
        self._tg = tg
        self._page = page
        self._following: dict[str, anyio.Event] = {}

    def __len__(self) -> int:
        return len(self._following)

    def following(self, session_id: str) -> bool:
        """True once a watch of ``session_id`` is in place (:meth:`follow` has nothing to do)."""
        started = self._following.get(session_id)
        return started is not None and started.is_set()

    async def follow(self, backend: VariableBackend, session_id: str) -> None:
        """Make sure a watch of ``session_id`` is in place (return once it is).

        A session whose watch cannot start (it is gone) is not followed; the
        read that asked goes on and finds that out itself.
        """
        if self._page() is None:
            return
        started = self._following.get(session_id)
        if started is None:
            started = self._following[session_id] = anyio.Event()
            try:
                await self._tg.start(self._watch, backend, session_id, started)
            except BaseException:
                self._forget(session_id, started)
                raise
        await started.wait()

    def _forget(self, session_id: str, started: anyio.Event) -> None:
        if self._following.get(session_id) is started:
            del self._following[session_id]
        started.set()  # (whoever waits on a watch that never started goes on)

    def _bump_session(self, session_id: str) -> None:
        page = self._page()
        if page is not None:
            page.session_changed(session_id)

    async def _watch(
        self,
        backend: VariableBackend,
        session_id: str,
        started: anyio.Event,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            async with backend.watch_variables(session_id, None, FOLLOW_BUFFER) as events:
                started.set()
                task_status.started()
                async for event in events:
                    page = self._page()
                    if page is not None:
                        page.variables_written(session_id, (event.name,))
        except SessionError as exc:  # gone, fell behind, the backend failed
            logger.debug("stopped following session %r: %s", session_id, exc)
        finally:
            # Whatever it missed from here on: every cached variable of it goes.
            self._bump_session(session_id)
            self._forget(session_id, started)
            _started_once(task_status)


def _started_once(task_status: TaskStatus[Any]) -> None:
    """Report a start that did not happen (a watch that failed at once), if not done yet."""
    with contextlib.suppress(RuntimeError):  # reported already
        task_status.started()
