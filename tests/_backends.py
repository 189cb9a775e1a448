"""Session backends for tests, built by delegation."""

from __future__ import annotations

from types import EllipsisType

from snakepit.session import SessionBackend, SessionRecord

__all__ = ("DelegatingBackend",)


class DelegatingBackend:
    """A SessionBackend whose session methods are ``inner``'s (subclass it to change one).

    It has no variable methods: a ``VariableBackend`` it is not.
    """

    def __init__(self, inner: SessionBackend) -> None:
        self.inner = inner

    async def create(self, record: SessionRecord, *, limit: int | None) -> bool:
        return await self.inner.create(record, limit=limit)

    async def get(self, session_id: str) -> SessionRecord | None:
        return await self.inner.get(session_id)

    async def replace(self, record: SessionRecord) -> bool:
        return await self.inner.replace(record)

    async def touch(self, session_id: str, now: float) -> SessionRecord | None:
        return await self.inner.touch(session_id, now)

    async def pin(
        self,
        session_id: str,
        worker_id: str | None,
        now: float,
        *,
        only_if_pinned_to: str | EllipsisType | None = ...,
    ) -> SessionRecord | None:
        return await self.inner.pin(session_id, worker_id, now, only_if_pinned_to=only_if_pinned_to)

    async def delete(
        self, session_id: str, *, expired_at: float | None = None
    ) -> SessionRecord | None:
        return await self.inner.delete(session_id, expired_at=expired_at)

    async def records(self) -> list[SessionRecord]:
        return await self.inner.records()

    async def count(self) -> int:
        return await self.inner.count()

    async def due(self, now: float) -> list[SessionRecord]:
        return await self.inner.due(now)

    async def aclose(self) -> None:
        await self.inner.aclose()
