"""A worker's client of its pool's bridge: what ``ctx.call_host`` goes through.

Made by the worker's main when it was started with ``--bridge ADDRESS`` and
its token on stdin (after its secret); one grpc.aio channel in the worker's
event loop, opened on first use. Every call names the worker and carries its
token. Failures come back as :class:`~snakepit.errors.BridgeError`
subclasses. No host import: the wire forms are ``snakepit._wire``'s.
"""

from __future__ import annotations

# First: grpc is imported with its logging quieted (before any module below imports it).
from snakepit._wire import _grpc_logging  # noqa: F401  # isort: skip

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc

from snakepit._wire._bridge import AUTH_KEY, DEFAULT_MAX_MESSAGE, SOURCE_KEY, message_limits
from snakepit._wire._proto.snakepit.v1 import bridge_pb2, bridge_pb2_grpc
from snakepit.errors import (
    ArgumentTypeError,
    BridgeError,
    BridgeUnavailable,
    HostToolFailed,
    HostToolNotFound,
)

from ._tool_variables import _VariableCache

__all__ = ("HostBridge",)

Kind = bridge_pb2.BridgeFailure.Kind


class HostBridge:
    """The worker's end of its pool's bridge (see the module's docstring)."""

    def __init__(
        self,
        address: str,
        token: str,
        worker_id: str,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        self.address = address
        self._limits = message_limits(max_message_bytes)
        self._metadata = ((AUTH_KEY, token), (SOURCE_KEY, worker_id))
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._closed = False
        #: The worker's cache of its tools' variable reads (``ctx.session.variables``).
        self.cache = _VariableCache(address)

    def __repr__(self) -> str:
        return f"<HostBridge {self.address}>"

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called (the worker is stopping)."""
        return self._closed

    def _stopping(self) -> bool:
        return self._closed

    def _connect(self) -> Any:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self.address, options=self._limits)
            self._stub = bridge_pb2_grpc.BridgeServiceStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

    async def call_host(
        self,
        name: str,
        args: Mapping[str, Any] | None,
        session_id: str,
        timeout: float | None = None,
    ) -> Any:
        """Run the host tool ``name`` with ``args``; what it returned.

        :param timeout: seconds to wait for the answer (the tool's call's
            deadline), or None.
        :raises ArgumentTypeError: ``name`` is not a str, or ``args`` not a
            mapping of JSON-able values.
        :raises HostToolNotFound: the host has no such tool.
        :raises HostToolFailed: it raised (``error_type`` names what).
        :raises BridgeUnavailable: the bridge cannot be reached (the host is
            gone), did not answer within ``timeout``, or the worker is stopping.
        """
        if not isinstance(name, str):
            raise ArgumentTypeError("name", f"a host tool's name is a str, got {name!r}")
        if args is not None and not isinstance(args, Mapping):
            raise ArgumentTypeError("args", f"must be a mapping, got {type(args).__name__}")
        try:
            encoded = json.dumps(dict(args or {}), allow_nan=False).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise ArgumentTypeError("args", f"must be JSON-able: {exc}") from exc
        if self.closed:
            raise BridgeUnavailable("the worker is stopping: its bridge is closed")
        request = bridge_pb2.CallHostToolRequest(
            session_id=session_id, name=name, args_json=encoded
        )
        reply = await self._unary("CallHostTool", request, timeout, f"host tool {name!r}")
        if reply.HasField("failure"):
            raise _error(reply.failure)
        return json.loads(reply.result_json)

    async def _unary(self, method: str, request: Any, timeout: float | None, what: str) -> Any:
        # One unary call of the service; transport trouble as BridgeUnavailable.
        if self.closed:
            raise BridgeUnavailable("the worker is stopping: its bridge is closed")
        try:
            return await getattr(self._connect(), method)(
                request, metadata=self._metadata, timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise BridgeUnavailable(
                    f"{what}: no answer within the call's {timeout:g}s"
                ) from exc
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise BridgeUnavailable(
                    f"{what}: the request or its answer is larger than the"
                    f" bridge takes ({exc.details()})"
                ) from exc
            raise BridgeUnavailable(
                f"the bridge at {self.address} failed: {exc.code().name}: {exc.details()}"
            ) from exc
        except (grpc.RpcError, grpc.aio.UsageError) as exc:  # the channel closed under it
            raise BridgeUnavailable(f"the bridge at {self.address} failed: {exc}") from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            stopping = self._stopping()  # (set while the call waited: read it again)
            if stopping and task is not None and not task.cancelling():
                # grpc's, as the channel was closed at the worker's stop: not the tool's.
                raise BridgeUnavailable("the worker stopped during the call to the host") from None
            raise

    async def _register_variable(
        self, request: bridge_pb2.RegisterVariableRequest, timeout: float | None
    ) -> bridge_pb2.RegisterVariableReply:
        """Send a RegisterVariable; its reply (a failure in it is the caller's to raise).

        :raises BridgeUnavailable: the bridge cannot be reached, or did not answer in time.
        """
        reply: bridge_pb2.RegisterVariableReply = await self._unary(
            "RegisterVariable", request, timeout, "register"
        )
        return reply

    async def _get_variables(
        self, request: bridge_pb2.GetVariablesRequest, timeout: float | None
    ) -> bridge_pb2.GetVariablesReply:
        """Send a GetVariables; its reply (see :meth:`_register_variable`)."""
        reply: bridge_pb2.GetVariablesReply = await self._unary(
            "GetVariables", request, timeout, "get"
        )
        return reply

    async def _set_variables(
        self, request: bridge_pb2.SetVariablesRequest, timeout: float | None
    ) -> bridge_pb2.SetVariablesReply:
        """Send a SetVariables; its reply (see :meth:`_register_variable`)."""
        reply: bridge_pb2.SetVariablesReply = await self._unary(
            "SetVariables", request, timeout, "set"
        )
        return reply

    async def _delete_variable(
        self, request: bridge_pb2.DeleteVariableRequest, timeout: float | None
    ) -> bridge_pb2.DeleteVariableReply:
        """Send a DeleteVariable; its reply (see :meth:`_register_variable`)."""
        reply: bridge_pb2.DeleteVariableReply = await self._unary(
            "DeleteVariable", request, timeout, "delete"
        )
        return reply

    @contextlib.asynccontextmanager
    async def _watch_variables(
        self, request: bridge_pb2.WatchVariablesRequest
    ) -> AsyncIterator[AsyncIterator[bridge_pb2.VariableChangeEvent]]:
        """A watch's events (its first is ``started``), ended when the block is left.

        :raises BridgeUnavailable: the bridge cannot be reached, or the stream broke.
        """
        if self.closed:
            raise BridgeUnavailable("the worker is stopping: its bridge is closed")
        call = self._connect().WatchVariables(request, metadata=self._metadata)
        try:
            yield _events(call, self.address)
        finally:
            call.cancel()

    async def aclose(self) -> None:
        """Close the channel (if it was opened); later calls raise BridgeUnavailable."""
        self._closed = True
        self.cache.close()
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()


async def _events(call: Any, address: str) -> AsyncIterator[bridge_pb2.VariableChangeEvent]:
    try:
        async for event in call:
            yield event
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.CANCELLED:
            return
        raise BridgeUnavailable(
            f"the bridge at {address} ended a watch: {exc.code().name}: {exc.details()}"
        ) from exc
    except (grpc.RpcError, grpc.aio.UsageError) as exc:
        raise BridgeUnavailable(f"the bridge at {address} ended a watch: {exc}") from exc


def _error(failure: bridge_pb2.BridgeFailure) -> BridgeError:
    if failure.kind == Kind.HOST_TOOL_NOT_FOUND:
        return HostToolNotFound(failure.message)
    if failure.kind == Kind.HOST_TOOL_FAILED:
        return HostToolFailed(failure.message, failure.error_type)
    return BridgeError(failure.message)
