"""Adapter.tools: what a subclass inherits, overrides, renames or mixes in.

An inherited tool reuses its base's description (it is not described again
for every subclass); these tests pin that the result is what describing it
afresh gives.
"""

from __future__ import annotations

from typing import Any

from snakepit.worker import Adapter, tool
from snakepit.worker._adapter import ToolInfo, _describe


def shape(info: ToolInfo) -> tuple[Any, ...]:
    """A tool's description without its per-describe objects (checks, logger)."""
    params = [(p.name, p.annotation, p.required, p.default) for p in info.params]
    return (info.name, info.attr, info.kind, info.doc, info.returns, info.wants_ctx, params)


class Mixin:
    """Not an adapter: its tools are described for each adapter that mixes it in."""

    @tool
    def mixed(self, flag: bool = False) -> bool:
        """From a mixin."""
        return flag


class Base(Adapter):
    @tool
    def echo(self, value: int) -> int:
        """Echo an int."""
        return value

    @tool(name="renamed")
    def original(self, text: str | None = None) -> str:
        """A tool under another name."""
        return text or ""

    @tool
    async def stream(self, n: int) -> Any:
        """Count to n."""
        for i in range(n):
            yield i


class Child(Mixin, Base):
    @tool
    def echo(self, value: str, ctx: Any = None) -> str:  # type: ignore[override]
        """Echo a str (overrides Base.echo)."""
        return value

    @tool
    def extra(self) -> None:
        """Only in Child."""


class GrandChild(Child):
    pass


def test_inherited_tools_keep_their_bases_description() -> None:
    assert GrandChild.tools["renamed"] is Base.tools["renamed"]
    assert GrandChild.tools["stream"] is Base.tools["stream"]
    assert GrandChild.tools["echo"] is Child.tools["echo"]
    assert GrandChild.tools["extra"] is Child.tools["extra"]


def test_an_override_is_described_anew() -> None:
    assert shape(Base.tools["echo"])[-1] == [("value", "int", True, "")]
    assert shape(Child.tools["echo"])[-1] == [("value", "str", True, "")]
    assert Child.tools["echo"].wants_ctx
    assert not Base.tools["echo"].wants_ctx
    assert Base.tools["echo"].params[0].check is not None
    assert Base.tools["echo"].params[0].check(1)
    assert not Base.tools["echo"].params[0].check("1")


def test_every_class_has_what_describing_afresh_gives() -> None:
    for cls in (Base, Child, GrandChild):
        for name, info in cls.tools.items():
            fresh = _describe(cls, info.attr, name, getattr(cls, info.attr))
            assert shape(info) == shape(fresh), (cls.__name__, name)
    assert set(GrandChild.tools) == {"echo", "renamed", "stream", "extra", "mixed"}
    assert set(Base.tools) == {"echo", "renamed", "stream"}


def test_a_tool_renamed_after_its_class_was_made_is_described_under_its_new_name() -> None:
    class Late(Adapter):
        @tool
        def first(self) -> int:
            """One."""
            return 1

    tool(name="second")(Late.first)  # the same function, marked with another name

    class After(Late):
        pass

    assert set(After.tools) == {"second"}
    assert After.tools["second"].name == "second"
    assert set(Late.tools) == {"first"}
