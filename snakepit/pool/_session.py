"""PoolSession: a session of a pool, as ``pool.session()`` gives it."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from snakepit.session import SessionRecord, SessionVariables

if TYPE_CHECKING:
    from ._pool import Pool

__all__ = ("PoolSession",)


class PoolSession:
    """A session of a pool: its calls go to the worker it is pinned to.

    Made by :meth:`Pool.session`; calls through it are
    ``pool.execute(..., session_id=session.session_id)``. Tools see
    ``ctx.session_id`` and ``ctx.session.metadata``; with affinity, the same
    worker process serves the session's calls, so an adapter may keep
    per-session state (freed in ``Adapter.on_session_end``).
    """

    __slots__ = ("_pool", "record", "session_id")

    def __init__(self, pool: Pool, record: SessionRecord) -> None:
        self._pool = pool
        #: The session's id.
        self.session_id = record.session_id
        #: Its record when it was created or resumed (:meth:`info` reads the current one).
        self.record = record

    def __repr__(self) -> str:
        return f"<PoolSession {self.session_id!r} {self.record.affinity}>"

    async def execute(
        self,
        tool: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        retries: int = 0,
    ) -> Any:
        """Run ``tool`` in this session: :meth:`Pool.execute` with its ``session_id``."""
        return await self._pool.execute(
            tool, args, timeout=timeout, retries=retries, session_id=self.session_id
        )

    def stream(
        self, tool: str, args: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> AsyncGenerator[Any, None]:
        """Run a streaming ``tool`` in this session: :meth:`Pool.stream` with its ``session_id``."""
        return self._pool.stream(tool, args, timeout=timeout, session_id=self.session_id)

    async def info(self) -> SessionRecord:
        """Its current record (the worker it is pinned to, when it was last used).

        :raises SessionNotFound: it was deleted or expired.
        """
        return await self._pool.sessions.get(self.session_id)

    @property
    def variables(self) -> SessionVariables:
        """Its typed variables (``register``, ``get``, ``set``, ``update``, ``watch``...)."""
        return self._pool.sessions.variables(self.session_id)

    async def delete(self) -> None:
        """End it now (its worker's ``on_session_end`` runs); deleting twice is no error."""
        await self._pool.sessions.delete(self.session_id)
