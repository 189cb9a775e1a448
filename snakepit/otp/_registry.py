"""Registry: names that follow the current instance of a server."""

from __future__ import annotations

from typing import Any

import anyio

from snakepit.errors import ConfigError, NameNotFound, NameTaken, WaitTimeout

from ._reasons import ExitReason
from ._ref import DEFAULT_TIMEOUT, ServerRef, check_timeout

__all__ = ("Registry",)


class Registry:
    """Unique names for live servers.

    A server started with ``name=`` and ``registry=`` (directly or as a
    supervisor's child) holds the name from before its ``init`` runs (so a
    duplicate fails at once) until it exits; the ``wait_*`` methods wake
    once the holder has finished ``init``, so after a restart the name maps to the
    replacement: callers by name reach the current instance. Not global: each
    pool or test makes its own.
    """

    def __init__(self) -> None:
        self._names: dict[str, ServerRef[Any, Any]] = {}
        self._waiters: dict[str, list[anyio.Event]] = {}

    def __repr__(self) -> str:
        return f"<Registry {sorted(self._names)!r}>"

    def __len__(self) -> int:
        return len(self._names)

    def register(self, name: str, ref: ServerRef[Any, Any]) -> None:
        """Register ``ref`` under ``name`` until it exits.

        :raises ConfigError: ``name`` is not a non-empty string.
        :raises NameTaken: a live server holds ``name``.
        :raises ServerExited: ``ref`` is dead.
        """
        if not isinstance(name, str) or not name:
            raise ConfigError("name", f"must be a non-empty string, got {name!r}")
        holder = self._names.get(name)
        if holder is not None and holder.alive:
            raise NameTaken(name, holder)
        if not ref.alive:
            raise ref._exited()
        self._names[name] = ref

        def unregister_on_exit(dead: ServerRef[Any, Any], _reason: ExitReason) -> None:
            if self._names.get(name) is dead:
                del self._names[name]

        ref.link(unregister_on_exit)
        if ref._started:
            self._announce(name)

    def _announce(self, name: str) -> None:
        # Wake the waiters on ``name`` once its holder has finished ``init``.
        for event in self._waiters.pop(name, ()):
            event.set()

    def unregister(self, name: str) -> None:
        """Remove ``name`` (the server keeps running). Unknown names are ignored."""
        self._names.pop(name, None)

    def whereis(self, name: str) -> ServerRef[Any, Any] | None:
        """Return the live server registered as ``name``, or None."""
        ref = self._names.get(name)
        return ref if ref is not None and ref.alive else None

    def lookup(self, name: str) -> ServerRef[Any, Any]:
        """Return the live server registered as ``name``.

        :raises NameNotFound: no live server holds it.
        """
        ref = self.whereis(name)
        if ref is None:
            raise NameNotFound(name)
        return ref

    def names(self) -> list[str]:
        """The names held by live servers, sorted."""
        return sorted(n for n, r in self._names.items() if r.alive)

    async def call(
        self, name: str, request: Any, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> Any:
        """``call`` the server registered as ``name`` now.

        :raises NameNotFound: no live server holds ``name``.
        :raises CallTimeout, ServerExited: as :meth:`ServerRef.call`.
        """
        return await self.lookup(name).call(request, timeout=timeout)

    def cast(self, name: str, message: Any) -> None:
        """``cast`` to the server registered as ``name``; dropped if there is none."""
        ref = self.whereis(name)
        if ref is not None:
            ref.cast(message)

    async def wait_registered(
        self, name: str, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> ServerRef[Any, Any]:
        """Wait until a live server holds ``name`` and return it.

        :raises WaitTimeout: nothing registered ``name`` within ``timeout``.
        """
        return await self._wait_for(name, None, timeout)

    async def wait_rebound(
        self,
        name: str,
        old_ref: ServerRef[Any, Any],
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> ServerRef[Any, Any]:
        """Wait until ``name`` is held by a live server other than ``old_ref``.

        Event-driven: wakes on each registration of ``name``, never polls.

        :raises WaitTimeout: no other server took ``name`` within ``timeout``.
        """
        return await self._wait_for(name, old_ref, timeout)

    async def _wait_for(
        self, name: str, old_ref: ServerRef[Any, Any] | None, timeout: float | None
    ) -> ServerRef[Any, Any]:
        check_timeout(timeout)
        with anyio.move_on_after(timeout if timeout is not None else float("inf")):
            while True:
                ref = self.whereis(name)
                if ref is not None and ref is not old_ref and ref._started:
                    return ref
                event = anyio.Event()
                waiters = self._waiters.setdefault(name, [])
                waiters.append(event)
                try:
                    await event.wait()
                finally:
                    if not event.is_set():  # timed out or cancelled: leave no trace
                        waiters.remove(event)
                        if not waiters:
                            del self._waiters[name]
        current = self.whereis(name)
        raise WaitTimeout(
            f"name {name!r} was not re-registered within {timeout}s (still {current!r})",
            timeout=timeout,
        )
