"""Adapters whose tools read, write and watch their session's variables.

(``ctx.session.variables``, through the worker's bridge.)
"""

from __future__ import annotations

from typing import Any

from snakepit.errors import SnakepitError
from snakepit.worker import Adapter, Context, tool


def _variables(ctx: Context) -> Any:
    assert ctx.session is not None, "a call of a session"
    return ctx.session.variables


class Variables(Adapter):
    """Each operation from an async tool and from a sync one; errors as their type names."""

    @tool
    async def get(self, ctx: Context, name: str) -> Any:
        """The value of ``name``."""
        return await _variables(ctx).get(name)

    @tool
    def get_sync(self, ctx: Context, name: str) -> Any:
        """The value of ``name``, from a sync tool."""
        return _variables(ctx).get(name)

    @tool
    async def set(self, ctx: Context, name: str, value: Any) -> int:
        """Write ``value``; its version."""
        version: int = await _variables(ctx).set(name, value)
        return version

    @tool
    def set_sync(self, ctx: Context, name: str, value: Any) -> int:
        """Write ``value`` from a sync tool; its version."""
        version: int = _variables(ctx).set(name, value)
        return version

    @tool
    async def add(self, ctx: Context, name: str, n: int = 1) -> int:
        """``update(name, +n)``; the value written."""
        value: int = await _variables(ctx).update(name, lambda v: v + n)
        return value

    @tool
    def add_sync(self, ctx: Context, name: str, n: int = 1) -> int:
        """``update(name, +n)`` from a sync tool."""
        value: int = _variables(ctx).update(name, lambda v: v + n)
        return value

    @tool
    async def register(
        self, ctx: Context, name: str, type: str, value: Any, constraints: dict[str, Any]
    ) -> int:
        """Register a variable; its version."""
        variable = await _variables(ctx).register(name, type, value, **constraints)
        return int(variable.version)

    @tool
    async def snapshot(self, ctx: Context) -> dict[str, Any]:
        """Every variable's value and version (``list()``), and ``get_many`` of their names."""
        found = await _variables(ctx).list()
        names = [v.name for v in found]
        values = await _variables(ctx).get_many(names)
        assert values == {v.name: v.value for v in found}
        return {v.name: [v.value, v.version] for v in found}

    @tool
    async def set_many(self, ctx: Context, values: dict[str, Any]) -> dict[str, int]:
        """``set_many(values)``."""
        versions: dict[str, int] = await _variables(ctx).set_many(values)
        return versions

    @tool
    async def delete(self, ctx: Context, name: str) -> None:
        """Remove ``name``."""
        await _variables(ctx).delete(name)

    @tool
    async def attempt(self, ctx: Context, op: str, args: list[Any]) -> list[str]:
        """``op(*args)``: what it raised, [type name, its classes' names], or ["ok", repr]."""
        try:
            result = getattr(_variables(ctx), op)(*args)
            if hasattr(result, "__await__"):
                result = await result
        except SnakepitError as exc:
            return [type(exc).__name__, " ".join(c.__name__ for c in type(exc).__mro__), str(exc)]
        return ["ok", repr(result)]

    @tool
    def attempt_sync(self, ctx: Context, op: str, args: list[Any]) -> list[str]:
        """:meth:`attempt` from a sync tool."""
        try:
            result = getattr(_variables(ctx), op)(*args)
        except SnakepitError as exc:
            return [type(exc).__name__, " ".join(c.__name__ for c in type(exc).__mro__), str(exc)]
        return ["ok", repr(result)]

    @tool
    async def read_around_host(self, ctx: Context, name: str) -> list[Any]:
        """Read ``name`` (cached), have the host set it (host tool ``host_sets``), read it again."""
        before = await _variables(ctx).get(name)
        again = await _variables(ctx).get(name)  # from the cache
        await ctx.call_host("host_sets", {"name": name})
        after = await _variables(ctx).get(name)
        return [before, again, after]

    @tool
    def read_around_host_sync(self, ctx: Context, name: str) -> list[Any]:
        """:meth:`read_around_host` from a sync tool."""
        before = _variables(ctx).get(name)
        again = _variables(ctx).get(name)
        ctx.call_host("host_sets", {"name": name})
        after = _variables(ctx).get(name)
        return [before, again, after]

    @tool
    async def double_tensor(self, ctx: Context, name: str) -> list[Any]:
        """Read the tensor ``name`` as a numpy array, write it back doubled (a numpy array)."""
        tensor = await _variables(ctx).get(name)
        array = tensor.to_numpy()
        await _variables(ctx).set(name, array * 2)
        return [type(tensor).__name__, list(array.shape), str(array.dtype)]

    @tool
    def cache_counts(self, ctx: Context) -> list[int]:
        """The worker's cache's hits and misses so far."""
        cache = ctx._bridge.cache
        return [cache.hits, cache.misses]

    @tool
    async def watch_until(self, ctx: Context, name: str, value: Any) -> list[list[Any]]:
        """Watch ``name`` (tell the host tool ``watching`` once in place) until it is ``value``."""
        seen = []
        async with _variables(ctx).watch([name]) as changes:
            await ctx.call_host("watching", {})
            async for change in changes:
                seen.append([change.name, change.old, change.new, change.version, change.source])
                if change.new == value:
                    break
        return seen
