"""Adapters whose tools call their host through the bridge (``ctx.call_host``)."""

from __future__ import annotations

from typing import Any

from snakepit.errors import BridgeError
from snakepit.worker import Adapter, Context, tool


class Caller(Adapter):
    """Tools that call a host tool, from an async tool and from a sync one."""

    @tool
    async def ask(self, ctx: Context, name: str, args: dict[str, Any] | None = None) -> Any:
        """Await the host tool ``name``'s result."""
        return await ctx.call_host(name, args)

    @tool
    def ask_sync(self, ctx: Context, name: str, args: dict[str, Any] | None = None) -> Any:
        """The host tool ``name``'s result, from a worker thread (it blocks)."""
        return ctx.call_host(name, args)

    @tool
    async def ask_each(self, ctx: Context, names: list[str]) -> list[Any]:
        """Call the host tools ``names`` one after the other (no arguments); their results."""
        return [await ctx.call_host(name) for name in names]

    @tool
    async def ask_catching(self, ctx: Context, name: str, args: Any = None) -> dict[str, str]:
        """What the tool sees when the call fails: its type, and what the host tool raised."""
        try:
            await ctx.call_host(name, args)
        except BridgeError as exc:
            return {"type": type(exc).__name__, "error_type": getattr(exc, "error_type", "")}
        return {"type": "none", "error_type": ""}

    @tool
    def ask_catching_sync(self, ctx: Context, name: str, args: Any = None) -> dict[str, str]:
        """:meth:`ask_catching`, from a sync tool."""
        try:
            ctx.call_host(name, args)
        except BridgeError as exc:
            return {"type": type(exc).__name__, "error_type": getattr(exc, "error_type", "")}
        return {"type": "none", "error_type": ""}
