"""The worker -> host bridge's server: a session's variables and the host's tools, for tools.

:class:`BridgeServer` serves ``snakepit.v1.BridgeService`` (protos/snakepit/v1/
bridge.proto) with grpc.aio on a unix socket. Every call names its worker
(:data:`~snakepit._wire._bridge.SOURCE_KEY`) and carries that worker's token
(:data:`~snakepit._wire._bridge.AUTH_KEY`, :func:`~snakepit._wire._bridge.worker_token`
of the bridge's secret): a process that knows only the socket's path gets
``PERMISSION_DENIED``, and a worker cannot write as another. Variables are
read and written through the session store's :class:`SessionVariables`
(values checked against their specs here, on the host: a worker's value is
never trusted), and :class:`HostTools` holds the functions tools may call
(``pool.register_host_tool``). What a caller can act on (an unknown session
or variable, a value that breaks its spec, a host tool that is missing or
raised) comes back as a ``BridgeFailure`` in the reply; the server goes on.

A worker touches only the sessions it serves: with ``may_touch`` (a pool's
:meth:`~snakepit.pool._sessions.SessionRouter.may_touch`), a call naming a
session that is neither pinned to the calling worker nor in a call in flight
on it is refused as ``SESSION_NOT_FOUND`` (whether the session exists is not
said). A watch is checked when it starts (it then runs until it ends).

Next to the gRPC socket, at :func:`~snakepit._wire._address.frames_path` of
its path, the same unary calls are served as length-prefixed frames (the
framed lane, :mod:`snakepit.pool._bridge_lane`: a fraction of a gRPC call's
cost), by the same handlers; workers use it for every unary call, and gRPC
for watches.
"""

from __future__ import annotations

# First: grpc is imported with its logging quieted (before any module below imports it).
from snakepit._wire import _grpc_logging  # noqa: F401  # isort: skip

import asyncio
import contextlib
import functools
import hmac
import inspect
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import anyio
import grpc
from anyio.abc import TaskGroup

from snakepit._wire._address import frames_path
from snakepit._wire._auth import metadata_has_token
from snakepit._wire._bridge import (
    AUTH_KEY,
    DEFAULT_MAX_MESSAGE,
    SOURCE_KEY,
    from_wire_value,
    message_limits,
    to_wire,
    worker_token,
)
from snakepit._wire._coherence import CoherencePage, page_path
from snakepit._wire._proto.snakepit.v1 import bridge_pb2, bridge_pb2_grpc
from snakepit.errors import (
    ArgumentTypeError,
    ConfigError,
    SessionError,
    SessionNotFound,
    VariableError,
    VariableExists,
    VariableNotFound,
    VariableValidationError,
)
from snakepit.otp import ExitReason, GenServer, unwrapped_task_group
from snakepit.session import SessionStoreRef, VariableRecord, VariableSpec

from ._bridge_lane import Handler, LaneServer
from ._coherence import _Followers

__all__ = ("Bridge", "BridgeArgs", "BridgeServer", "HostTools")

logger = logging.getLogger("snakepit.bridge")

Kind = bridge_pb2.BridgeFailure.Kind
HostTool = Callable[..., Any]
#: Whether the worker (its id) may touch the session (its id): see :class:`BridgeArgs`.
MayTouch = Callable[[str, str], bool]


class HostTools:
    """The functions a pool's tools may call on the host (``ctx.call_host(name, args)``).

    A host tool takes the call's arguments as keywords (a JSON object) and
    returns something JSON-able; it may be a coroutine function. With a
    parameter named ``session_id`` it gets the calling tool's session id.
    """

    def __init__(self) -> None:
        self._tools: dict[str, HostTool] = {}
        # Whether each takes the caller's session id (its signature, read once).
        self._takes_session: dict[str, bool] = {}

    def register(self, fn: HostTool, *, name: str | None = None) -> str:
        """Add ``fn`` under ``name`` (default: its ``__name__``); return the name.

        :raises ArgumentTypeError: ``fn`` is not callable, or ``name`` not a str.
        :raises ConfigError: the name is empty or taken.
        """
        if not callable(fn):
            raise ArgumentTypeError("fn", f"a host tool is a callable, got {fn!r}")
        if name is None:
            name = getattr(fn, "__name__", "")
        if not isinstance(name, str):
            raise ArgumentTypeError("name", f"must be a str, got {name!r}")
        if not name or name == "<lambda>":
            raise ConfigError("name", "a host tool needs a name (pass name=...)")
        if name in self._tools:
            raise ConfigError("name", f"a host tool {name!r} is registered already")
        self._tools[name] = fn
        self._takes_session[name] = "session_id" in _parameters(fn)
        return name

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._tools)

    def get(self, name: str) -> HostTool | None:
        """The host tool registered as ``name``, or None."""
        return self._tools.get(name)

    async def call(self, name: str, args: Mapping[str, Any], session_id: str) -> Any:
        """Run the host tool ``name`` with ``args``; what it returns.

        A sync function runs in a worker thread (the host's event loop goes
        on meanwhile); a coroutine function in the caller's task.

        :raises LookupError: no such host tool (looked up before it runs:
            a LookupError the tool raises is its own).
        """
        fn = self._tools.get(name)
        if fn is None:
            raise LookupError(name)
        kwargs = dict(args)
        kwargs.pop("session_id", None)  # the caller's session, not what its args claim
        if self._takes_session.get(name, False):
            kwargs["session_id"] = session_id
        if inspect.iscoroutinefunction(fn):
            return await fn(**kwargs)
        result = await anyio.to_thread.run_sync(functools.partial(fn, **kwargs))
        if inspect.isawaitable(result):
            result = await result
        return result


def _parameters(fn: HostTool) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}


class BridgeServer:
    """The bridge of one pool, serving on ``unix:PATH`` (see the module's docstring).

    Start with :meth:`start`, stop with :meth:`aclose`.
    """

    def __init__(self, server: grpc.aio.Server, address: str, _lane: LaneServer) -> None:
        self._server = server
        self._lane = _lane
        self._stopped = False
        #: Where it listens (``unix:PATH``).
        self.address = address
        #: Where it serves the framed lane (``unix:PATH.frames``).
        self.lane_address = f"unix:{_lane.path}"

    @classmethod
    async def start(
        cls,
        path: str,
        *,
        sessions: SessionStoreRef | Callable[[], SessionStoreRef],
        tools: HostTools,
        secret: bytes,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE,
        may_touch: MayTouch | None = None,
        _followers: Any = None,
    ) -> BridgeServer:
        """Serve on the unix socket ``path`` (it must not exist), and the lane next to it.

        :param max_message_bytes: the largest request or reply (a host tool's
            arguments and result, a variable's value), as the pool's calls'.
        :param may_touch: whether a worker (its id) may touch a session (its
            id) now; None lets every worker touch every session (a server
            without a pool, in tests).
        :param _followers: (private: the pool's Bridge's) what follows the
            sessions whose variables workers read by name, so their caches see
            other processes' writes; None: nothing is followed.

        :param sessions: the session store, or what returns the running one
            (a pool's: its store may have been restarted).
        :raises OSError: the socket cannot be bound.
        """
        server = grpc.aio.server(
            interceptors=[_Auth(secret)], options=message_limits(max_message_bytes)
        )
        store = sessions if callable(sessions) else (lambda: sessions)
        service = _Service(store, tools, may_touch, _followers)
        bridge_pb2_grpc.add_BridgeServiceServicer_to_server(service, server)  # type: ignore[no-untyped-call]
        address = f"unix:{path}"
        if server.add_insecure_port(address) == 0:
            raise OSError(f"cannot listen on {address}")
        handlers: dict[str, Handler] = {
            "register_variable": service.RegisterVariable,
            "get_variables": service.GetVariables,
            "set_variables": service.SetVariables,
            "delete_variable": service.DeleteVariable,
            "call_host_tool": service.CallHostTool,
        }
        # Shielded: grpc's start cancelled half-way breaks its server (its
        # serving task then fails with InvalidStateError, and so does stop);
        # the lane's, a listening socket nobody would close.
        with anyio.CancelScope(shield=True):
            await server.start()
            try:
                lane = await LaneServer.start(
                    frames_path(path),
                    handlers,
                    authorize=functools.partial(_authorized, secret),
                    max_message_bytes=max_message_bytes,
                )
            except BaseException:
                await server.stop(0)
                raise
        return cls(server, address, lane)

    async def aclose(self, grace: float = 1.0) -> None:
        """Stop serving (shielded).

        gRPC calls in flight get ``grace`` seconds and watches end; the lane's
        connections close at once, their calls cancelled. Once is enough
        (a second stop returns at once: grpc's would wait for ever).
        """
        if self._stopped:
            return
        self._stopped = True
        with anyio.CancelScope(shield=True):
            await self._lane.aclose()
            await self._server.stop(grace)


def _authorized(secret: bytes, worker_id: str, token: str) -> bool:
    """Whether ``token`` is the worker ``worker_id``'s (a lane's hello; constant-time compare)."""
    if not worker_id or len(worker_id) > MAX_SOURCE or not token.isascii():
        return False
    return hmac.compare_digest(token, worker_token(secret, worker_id))


class _Auth(grpc.aio.ServerInterceptor):
    """Ends every call without a worker's token for the worker id it names."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _ok(self, metadata: Any) -> bool:
        source = ""
        for key, value in metadata or ():
            if key == SOURCE_KEY and isinstance(value, str):
                source = value
        if not source or len(source) > MAX_SOURCE:
            return False
        return metadata_has_token(metadata, AUTH_KEY, worker_token(self._secret, source))

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or self._ok(handler_call_details.invocation_metadata):
            return handler
        logger.warning("refused a bridge call to %s: no token", handler_call_details.method)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(_deny)  # (a coroutine serves either)
        return grpc.unary_unary_rpc_method_handler(_deny)


async def _deny(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, "a worker's bridge token is needed")


def _failure(exc: BaseException) -> bridge_pb2.BridgeFailure:
    """What a caller is told of ``exc`` (a snakepit error, or a host tool's)."""
    if isinstance(exc, SessionNotFound):
        return bridge_pb2.BridgeFailure(kind=Kind.SESSION_NOT_FOUND, message=str(exc))
    if isinstance(exc, VariableNotFound):
        return bridge_pb2.BridgeFailure(
            kind=Kind.VARIABLE_NOT_FOUND, message=str(exc), variable=exc.name
        )
    if isinstance(exc, VariableExists):
        return bridge_pb2.BridgeFailure(
            kind=Kind.VARIABLE_EXISTS, message=str(exc), variable=exc.name
        )
    if isinstance(exc, VariableValidationError):
        return bridge_pb2.BridgeFailure(
            kind=Kind.VALIDATION,
            message=str(exc),
            variable=exc.variable,
            constraint=exc.constraint,
        )
    if isinstance(exc, SessionError) and not isinstance(exc, VariableError):
        return bridge_pb2.BridgeFailure(kind=Kind.BACKEND, message=str(exc))
    if type(exc) is VariableError:  # a watch that fell behind
        return bridge_pb2.BridgeFailure(kind=Kind.WATCH_ENDED, message=str(exc))
    return bridge_pb2.BridgeFailure(
        kind=Kind.BAD_REQUEST, message=str(exc), error_type=type(exc).__name__
    )


# RecursionError: JSON nested past the interpreter's limit.
_EXPECTED = (SessionError, ConfigError, ValueError, RecursionError)


def _wire(record: VariableRecord) -> bridge_pb2.BridgeVariable:
    return to_wire(
        record.name,
        record.spec,
        record.value,
        record.version,
        record.uid,
        record.source,
        record.updated_at,
    )


#: Sources only the host writes as (a worker that claims one is "worker").
_RESERVED_SOURCES = frozenset({"host", "expired", "deleted"})


#: The longest worker id a call may name.
MAX_SOURCE = 256
#: Workers whose refusals are counted; past it, each new one's first refusal is logged alone.
MAX_REFUSERS = 1024


def _source(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    # The worker id its token was checked for (see _Auth).
    for key, value in context.invocation_metadata() or ():
        if key == SOURCE_KEY and isinstance(value, str) and value:
            return "worker" if value in _RESERVED_SOURCES else value
    return "worker"


Reply = TypeVar("Reply")
_Handler: TypeAlias = Callable[[Any, Any, Any], Awaitable[Reply]]


def _answered(reply: Callable[..., Reply]) -> Callable[[_Handler[Reply]], _Handler[Reply]]:
    """A variable handler's frame: the access check, then expected failures as replies.

    What a caller can act on (:data:`_EXPECTED`) goes back as
    ``reply(failure=...)``; the handler itself only does its work.
    """

    def wrap(handler: _Handler[Reply]) -> _Handler[Reply]:
        @functools.wraps(handler)
        async def answer(self: _Service, request: Any, context: Any) -> Reply:
            refused = self._refused(context, request.session_id)
            if refused is not None:
                return reply(failure=refused)
            try:
                return await handler(self, request, context)
            except _EXPECTED as exc:
                return reply(failure=_failure(exc))

        return answer

    return wrap


class _Service(bridge_pb2_grpc.BridgeServiceServicer):
    def __init__(
        self,
        store: Callable[[], SessionStoreRef],
        tools: HostTools,
        may_touch: MayTouch | None = None,
        followers: _Followers | None = None,
    ) -> None:
        self._store = store
        self._tools = tools
        self._may_touch = may_touch
        self._followers = followers
        self._refusals: dict[str, int] = {}  # by worker id

    def _refused(self, context: Any, session_id: str) -> bridge_pb2.BridgeFailure | None:
        """Why the calling worker may not touch ``session_id``; None if it may.

        It may while it serves the session (pinned to it, or a call of it in
        flight on it). Refused as SESSION_NOT_FOUND whether the session exists
        or not: a worker learns nothing of the sessions it does not serve.
        """
        may_touch = self._may_touch
        if may_touch is None:
            return None
        source = _source(context)
        if may_touch(source, session_id):
            return None
        # Logged at the 1st, 2nd, 4th, 8th... refusal of a worker: a hostile one
        # cannot flood the host's log.
        count = self._refusals.get(source, 0) + 1
        if count > 1 or len(self._refusals) < MAX_REFUSERS:
            self._refusals[source] = count
        if count & (count - 1) == 0:
            logger.warning(
                "refused worker %r a bridge call for a session it does not serve (%d so far)",
                source,
                count,
            )
        return bridge_pb2.BridgeFailure(
            kind=Kind.SESSION_NOT_FOUND,
            message=f"worker {source!r} is not serving session {session_id!r}",
        )

    @property
    def _sessions(self) -> SessionStoreRef:
        return self._store()  # SessionError while the store is being restarted

    @_answered(bridge_pb2.RegisterVariableReply)
    async def RegisterVariable(
        self,
        request: bridge_pb2.RegisterVariableRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> bridge_pb2.RegisterVariableReply:
        """Register a variable (its spec and first value checked here)."""
        wire = request.variable
        spec = VariableSpec.from_json(json.loads(wire.spec_json))
        if spec.pattern is not None:
            # Matched with re on the host: a pattern of a worker's could
            # take the host's loop exponential time.
            raise ConfigError("pattern", "a variable with a pattern is registered by the host")
        value = spec.decode(from_wire_value(wire.value_json, wire.data))
        variables = self._sessions.variables(request.session_id)
        variables.source = _source(context)
        await variables.register(spec.name, spec.type, value, **_constraints(spec))
        record = (await variables._records([spec.name]))[spec.name]
        return bridge_pb2.RegisterVariableReply(variable=_wire(record))

    @_answered(bridge_pb2.GetVariablesReply)
    async def GetVariables(
        self, request: bridge_pb2.GetVariablesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bridge_pb2.GetVariablesReply:
        """Read variables (all of them, or by name) at one instant."""
        variables = self._sessions.variables(request.session_id)
        names = None if request.all else list(request.names)
        followers = self._followers
        if (
            names is not None
            and followers is not None
            and not followers.following(request.session_id)
        ):
            # What the worker caches: another process's writes must reach its page.
            backend, _ = await variables._backend()
            await followers.follow(backend, request.session_id)
        records = await variables._records(names)
        return bridge_pb2.GetVariablesReply(variables=[_wire(r) for r in records.values()])

    @_answered(bridge_pb2.SetVariablesReply)
    async def SetVariables(
        self, request: bridge_pb2.SetVariablesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bridge_pb2.SetVariablesReply:
        """Write values, all or none, checked against their specs; a CAS where asked."""
        variables = self._sessions.variables(request.session_id)
        variables.source = _source(context)
        values = {w.name: from_wire_value(w.value_json, w.data) for w in request.values}
        expect = {
            w.name: (w.uid, w.version if w.version > 0 else None) for w in request.values if w.uid
        }
        written = await variables._write_stored(values, expect)
        if written is None:
            return bridge_pb2.SetVariablesReply(conflict=True)
        return bridge_pb2.SetVariablesReply(variables=[_wire(r) for r in written.values()])

    @_answered(bridge_pb2.DeleteVariableReply)
    async def DeleteVariable(
        self,
        request: bridge_pb2.DeleteVariableRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> bridge_pb2.DeleteVariableReply:
        """Remove a variable."""
        variables = self._sessions.variables(request.session_id)
        variables.source = _source(context)
        await variables.delete(request.name)
        return bridge_pb2.DeleteVariableReply()

    async def WatchVariables(
        self,
        request: bridge_pb2.WatchVariablesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[bridge_pb2.VariableChangeEvent]:
        """``started``, then the session's changes in order; ends with the session.

        The worker is checked when the watch starts only: a watch started in
        a call of the session runs on after it (until the session ends, the
        worker closes it, or it falls behind).
        """
        refused = self._refused(context, request.session_id)
        if refused is not None:
            yield bridge_pb2.VariableChangeEvent(failure=refused)
            return
        try:
            variables = self._sessions.variables(request.session_id)
            backend, _ = await variables._backend()
            names = frozenset(request.names) if request.names else None
            async with backend.watch_variables(request.session_id, names, 1024) as events:
                yield bridge_pb2.VariableChangeEvent(started=True)
                async for event in events:
                    change = bridge_pb2.VariableChangeEvent(name=event.name, source=event.source)
                    if event.old is not None:
                        change.old.CopyFrom(_wire(event.old))
                    if event.new is not None:
                        change.new.CopyFrom(_wire(event.new))
                    yield change
        except _EXPECTED as exc:
            yield bridge_pb2.VariableChangeEvent(failure=_failure(exc))

    async def CallHostTool(
        self, request: bridge_pb2.CallHostToolRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bridge_pb2.CallHostToolReply:
        """Run a host tool; its result as JSON, or why it failed.

        With a ``session_id``, the worker must serve that session; "" (a call
        outside any session) is let through.
        """
        refused = self._refused(context, request.session_id) if request.session_id else None
        if refused is not None:
            return bridge_pb2.CallHostToolReply(failure=refused)
        try:
            args = json.loads(request.args_json or b"{}")
            if not isinstance(args, dict):
                raise ArgumentTypeError("args", f"must be a JSON object, got {args!r}")
        except (ValueError, RecursionError, ArgumentTypeError) as exc:
            return bridge_pb2.CallHostToolReply(failure=_failure(exc))
        if self._tools.get(request.name) is None:
            return bridge_pb2.CallHostToolReply(
                failure=bridge_pb2.BridgeFailure(
                    kind=Kind.HOST_TOOL_NOT_FOUND,
                    message=f"no host tool {request.name!r} (registered: {self._tools.names()})",
                )
            )
        try:
            result = await self._tools.call(request.name, args, request.session_id)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # the caller gave up (its deadline, or the bridge stops)
            failure = _host_tool_failed(request.name, exc)  # one the host tool raised itself
            return bridge_pb2.CallHostToolReply(failure=failure)
        except BaseException as exc:  # the host tool's own, whatever it is: back to the tool
            return bridge_pb2.CallHostToolReply(failure=_host_tool_failed(request.name, exc))
        try:
            encoded = json.dumps(result, allow_nan=False).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            return bridge_pb2.CallHostToolReply(
                failure=bridge_pb2.BridgeFailure(
                    kind=Kind.HOST_TOOL_FAILED,
                    message=f"host tool {request.name!r} returned what JSON cannot carry: {exc}",
                    error_type=type(exc).__name__,
                )
            )
        return bridge_pb2.CallHostToolReply(result_json=encoded)


def _host_tool_failed(name: str, exc: BaseException) -> bridge_pb2.BridgeFailure:
    return bridge_pb2.BridgeFailure(
        kind=Kind.HOST_TOOL_FAILED,
        message=f"host tool {name!r} raised {type(exc).__name__}: {_text(exc)}",
        error_type=type(exc).__name__,
    )


def _text(exc: BaseException) -> str:
    """``str(exc)``, or what can be said of it when its ``__str__`` raises."""
    try:
        return str(exc)
    except Exception:  # a hostile __str__: the failure is still the host tool's
        return f"<{type(exc).__name__} whose str() raised>"


def _constraints(spec: VariableSpec) -> dict[str, Any]:
    data = dict(spec.to_json())
    for key in ("name", "type"):
        data.pop(key, None)
    return data


@dataclass
class BridgeArgs:
    """What a pool's :class:`Bridge` serves, kept across the restarts of the server."""

    #: The gRPC unix socket's path (in the pool's run directory); the lane's
    #: is next to it (``frames_path(path)``).
    path: str
    #: The running session store (the pool's tree's).
    store: Callable[[], SessionStoreRef]
    #: The pool's host tools.
    tools: HostTools
    #: What bridge calls must carry (handed to the workers).
    secret: bytes
    #: The largest message (the pool's ``max_message_bytes``).
    max_message_bytes: int = DEFAULT_MAX_MESSAGE
    #: Whether a worker (its id) may touch a session (its id) now: the pool's
    #: sessions' check (pinned to it, or a call of it in flight on it). None:
    #: every worker may touch every session.
    may_touch: MayTouch | None = None
    #: The gRPC server of the last start: a start stops one a kill left serving.
    serving: BridgeServer | None = None
    #: The workers' read caches' counters (``page_path(path)``), for the pool's
    #: life (not the server's: workers keep it mapped); None: workers do not cache.
    _page: Any = field(default=None, repr=False)

    @property
    def page(self) -> Any:
        """The pool's coherence page (workers' caches' counters), or None."""
        return self._page

    def close_page(self) -> None:
        """Unmap the coherence page and remove its file (the pool's last step)."""
        page, self._page = self._page, None
        if page is not None:
            page.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(page.path)

    async def stop(self) -> None:
        """Stop the server if one serves, and remove its sockets (gRPC's and the lane's)."""
        serving, self.serving = self.serving, None
        if serving is not None:
            await serving.aclose(grace=0)
        for path in (self.path, frames_path(self.path)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _coherence_page(bridge_path: str) -> CoherencePage | None:
    """A new coherence page beside the bridge's socket; None if it cannot be made.

    Without one, workers do not cache their reads of variables.
    """
    try:
        return CoherencePage.create(page_path(bridge_path))
    except OSError as exc:
        logger.warning(
            "no coherence page for %s (workers will not cache variables): %s", bridge_path, exc
        )
        return None


class Bridge(GenServer[Any, Any, BridgeArgs]):
    """A pool's bridge in its supervision tree (``"bridge"``, after ``"sessions"``).

    Serves a :class:`BridgeServer` on ``BridgeArgs.path`` while it runs; a
    restart (after a crash, or a kill) serves again at the same address.
    """

    _tg: TaskGroup

    def lifespan(self) -> AbstractAsyncContextManager[object]:
        """Hold the task group of the followed sessions' watches."""
        return self._helpers()

    @contextlib.asynccontextmanager
    async def _helpers(self) -> AsyncIterator[None]:
        async with unwrapped_task_group() as tg:
            self._tg = tg
            try:
                yield
            finally:
                tg.cancel_scope.cancel()

    async def init(self, arg: Any) -> BridgeArgs:
        """Stop what a killed predecessor left, then serve."""
        if not isinstance(arg, BridgeArgs):
            raise ArgumentTypeError("arg", f"a Bridge takes BridgeArgs, got {arg!r}")
        await arg.stop()
        serving = await BridgeServer.start(
            arg.path,
            sessions=arg.store,
            tools=arg.tools,
            secret=arg.secret,
            max_message_bytes=arg.max_message_bytes,
            may_touch=arg.may_touch,
            _followers=_Followers(self._tg, lambda: arg.page),
        )
        arg.serving = serving  # before any await: a cancel from here on leaves it to stop()
        return arg

    async def terminate(self, reason: ExitReason, state: BridgeArgs) -> None:
        """Stop serving; the socket goes."""
        await state.stop()
