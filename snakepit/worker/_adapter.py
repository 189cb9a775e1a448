"""Adapter and @tool: what a user writes to run code inside a worker."""

from __future__ import annotations

import inspect
import logging
import types
import typing
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

__all__ = ("Adapter", "ToolInfo", "ToolParam", "tool")

F = TypeVar("F", bound=Callable[..., Any])

_TOOL_ATTR = "__snakepit_tool__"
#: The parameter name through which a tool receives its :class:`~snakepit.worker.Context`.
CTX_PARAM = "ctx"

ToolKind = Literal["sync", "async", "generator", "async_generator"]


class ArgumentError(Exception):
    """The arguments of a call do not fit the tool's signature (sent as INVALID_ARGUMENTS)."""


@dataclass(frozen=True, slots=True)
class ToolParam:
    """One parameter of a tool, as its signature and type hints give it."""

    name: str
    annotation: str
    required: bool
    default: str
    #: The runtime check for JSON-shaped hints (None: anything goes).
    check: Callable[[object], bool] | None


@dataclass(frozen=True, slots=True)
class ToolInfo:
    """A tool of an adapter class: name, kind, parameters and documentation."""

    name: str
    attr: str
    kind: ToolKind
    doc: str
    params: tuple[ToolParam, ...]
    returns: str
    wants_ctx: bool
    #: The logger a call's Context carries (made once per tool, not per call).
    logger: logging.Logger

    @property
    def streaming(self) -> bool:
        """True for generators and async generators (called with ExecuteStream)."""
        return self.kind in ("generator", "async_generator")

    def bind(self, args: object) -> dict[str, Any]:
        """Check ``args`` against the signature; return the keyword arguments.

        :raises ArgumentError: not a mapping, unknown or missing names, or a
            value whose type does not match a JSON-shaped hint.
        """
        if not isinstance(args, dict):
            raise ArgumentError(f"{self.name}: arguments must be an object, got {_type(args)}")
        params = self.params
        if not args and not params:
            return args  # the usual call of a tool without parameters
        known = {p.name: p for p in params}
        unknown = sorted(set(args) - known.keys())
        if unknown:
            raise ArgumentError(f"{self.name}: unexpected argument(s) {', '.join(unknown)}")
        missing = [p.name for p in params if p.required and p.name not in args]
        if missing:
            raise ArgumentError(f"{self.name}: missing required argument(s) {', '.join(missing)}")
        for name, value in args.items():
            param = known[name]
            if param.check is not None and not param.check(value):
                raise ArgumentError(
                    f"{self.name}: argument {name!r} must be {param.annotation}, got {_type(value)}"
                )
        return args


@typing.overload
def tool(fn: F, /) -> F: ...


@typing.overload
def tool(*, name: str | None = None) -> Callable[[F], F]: ...


def tool(fn: F | None = None, /, *, name: str | None = None) -> Any:
    """Mark an :class:`Adapter` method as a tool callable from the host.

    Usable bare (``@tool``) or with a name (``@tool(name="predict")``). The
    method may be sync, ``async``, a generator or an async generator (the last
    two are streaming tools). A parameter named ``ctx`` receives the call's
    :class:`~snakepit.worker.Context`; every other parameter is an argument
    the caller passes by name. Sync tools run in worker threads, so the worker
    keeps answering health checks and cancellations while they compute.
    """

    def mark(func: F) -> F:
        if not callable(func):
            raise TypeError(f"@tool applies to functions, got {func!r}")
        setattr(func, _TOOL_ATTR, name or func.__name__)
        return func

    return mark(fn) if fn is not None else mark


class Adapter:
    """Base class of the code a worker runs: ``setup``, ``teardown`` and ``@tool`` methods.

    ::

        class Model(Adapter):
            def setup(self) -> None:
                self.weights = load()

            @tool
            def predict(self, x: float) -> float:
                "Score one input."
                return self.weights * x

    The worker makes one instance per process, calls ``setup()`` before it
    reports ready and ``teardown()`` when it stops; both may be ``async``.
    Tool specs (name, docstring, parameters, return hint) come from the
    signatures and are served by ``Describe``; arguments are checked against
    them before each call.
    """

    #: The tools of this class, by name (collected when the class is created).
    tools: ClassVar[dict[str, ToolInfo]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, ToolInfo] = {}
        own: dict[str, tuple[object, ToolInfo]] = {}
        for klass in reversed(cls.__mro__):
            # A base adapter's tools were described when it was made: an
            # inherited tool (the same function under the same attribute and
            # name) has the same description, and ToolInfo is frozen.
            # Describing it again for every subclass (signature, type hints)
            # was most of the cost of importing a module of adapters, which
            # each forked worker does.
            described = _OWN_TOOLS.get(klass, {})
            for attr, value in vars(klass).items():
                tool_name = getattr(value, _TOOL_ATTR, None)
                if tool_name is None:
                    continue
                seen = described.get(attr)
                if seen is not None and seen[0] is value and seen[1].name == tool_name:
                    info = seen[1]
                else:
                    info = _describe(cls, attr, tool_name, value)
                found[tool_name] = info
                if klass is cls:
                    own[attr] = (value, info)
        cls.tools = found
        _OWN_TOOLS[cls] = own

    def setup(self) -> Any:
        """Prepare the process (load models, open files); sync or async."""

    def teardown(self) -> Any:
        """Release what ``setup`` took; sync or async. Runs on a graceful stop."""

    def on_session_end(self, session_id: str) -> Any:
        """Free what this worker kept for a session that ended; sync or async.

        Called in the worker that served the session's calls when the session
        is deleted or expires, so that per-session state
        (``self.state[session_id]``) does not outlive it; the default does
        nothing. It runs in the background once no call of that session runs
        in this worker (a cancelled call counts until its tool really ended),
        and a call of the session that comes meanwhile (the id used again)
        waits for it to return before its tool starts (if the call's timeout
        passes first, it raises :class:`~snakepit.errors.QueueTimeout` in the
        host: its tool did not run, and the worker is not replaced; calls and
        ends keep the order the host sent them in). The ends of one id run in
        the order they came; those of different sessions do not wait for each
        other: an ``async`` hook runs on the worker's event loop, a sync
        one on the worker's one hook thread (never on a tool thread; sync
        hooks run there one after another, so a slow one delays the next sync
        hooks, not the tools). What it raises is logged on the worker's stderr
        (logger ``snakepit.worker``) and the worker goes on serving. One still
        running when the worker stops is cancelled (an ``async`` one) or
        abandoned (a sync one), as a tool would be. A worker that died or was
        replaced is not called: its state went with it.

        It may be called for a session id this adapter holds nothing for (a
        session that served its calls in another worker, or none at all: the
        host may tell every worker a session was pinned to), and more than once
        for one id over time (an id used again by a new session): free what
        there is, and do nothing (without raising) when there is nothing.

        :param session_id: the id of the session that ended.
        """


#: Per adapter class, the tools its own body defines: attribute -> (function, description).
_OWN_TOOLS: weakref.WeakKeyDictionary[type, dict[str, tuple[object, ToolInfo]]] = (
    weakref.WeakKeyDictionary()
)


def _describe(cls: type, attr: str, name: str, func: Callable[..., Any]) -> ToolInfo:
    if inspect.isasyncgenfunction(func):
        kind: ToolKind = "async_generator"
    elif inspect.isgeneratorfunction(func):
        kind = "generator"
    elif inspect.iscoroutinefunction(func):
        kind = "async"
    else:
        kind = "sync"
    signature = inspect.signature(func)
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable forward references: fall back to the raw text
        hints = {}
    params: list[ToolParam] = []
    wants_ctx = False
    for i, param in enumerate(signature.parameters.values()):
        if i == 0 and param.name == "self":
            continue
        if param.name == CTX_PARAM:
            wants_ctx = True
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise TypeError(
                f"{cls.__name__}.{attr}: tool parameters are passed by name; "
                f"{param.name!r} is {param.kind.description}"
            )
        hint = hints.get(param.name, param.annotation)
        required = param.default is inspect.Parameter.empty
        params.append(
            ToolParam(
                name=param.name,
                annotation=_hint_text(hint),
                required=required,
                default="" if required else repr(param.default),
                check=_checker(hint),
            )
        )
    returns = hints.get("return", signature.return_annotation)
    return ToolInfo(
        name=name,
        attr=attr,
        kind=kind,
        doc=inspect.getdoc(func) or "",
        params=tuple(params),
        returns=_hint_text(returns),
        wants_ctx=wants_ctx,
        logger=logging.getLogger(f"snakepit.tool.{name}"),
    )


def _hint_text(hint: Any) -> str:
    if hint is inspect.Parameter.empty or hint is inspect.Signature.empty:
        return ""
    if isinstance(hint, str):
        return hint
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__qualname__ if hint.__module__ != "builtins" else hint.__name__
    return str(hint).replace("typing.", "")


# JSON-shaped hints are checked at run time; anything else is the tool's business.
_SIMPLE: dict[Any, Callable[[object], bool]] = {
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
    bool: lambda v: isinstance(v, bool),
    bytes: lambda v: isinstance(v, bytes),
    list: lambda v: isinstance(v, list),
    dict: lambda v: isinstance(v, dict),
    type(None): lambda v: v is None,
    None: lambda v: v is None,
}


def _checker(hint: Any) -> Callable[[object], bool] | None:
    if hint in _SIMPLE:
        return _SIMPLE[hint]
    origin = typing.get_origin(hint)
    if origin in (list, dict):
        return _SIMPLE[origin]
    if origin in (typing.Union, types.UnionType):
        checks = [_checker(arg) for arg in typing.get_args(hint)]
        if any(c is None for c in checks):
            return None
        return lambda v: any(c(v) for c in checks if c is not None)
    return None


def _type(value: object) -> str:
    return type(value).__name__
