"""The one mapper of lower-layer failures to snakepit's public errors.

What a worker reports (an ``ErrorInfo`` in a reply) by :func:`error_from_info`;
what grpc.aio raises by :func:`grpc_errors`, around every gRPC call of a
:class:`~snakepit.pool.WorkerConnection` (:func:`error_from_grpc` for the
channel's own tasks). No bare ``grpc.RpcError`` reaches a user.
"""

from __future__ import annotations

# First: grpc is imported with its logging quieted (before any module below imports it).
from snakepit._wire import _grpc_logging  # noqa: F401  # isort: skip

import asyncio
import contextlib
from collections.abc import Iterator

import grpc

from snakepit._wire._codec import error_details
from snakepit._wire._proto.snakepit.v1 import worker_pb2
from snakepit.errors import (
    ExecutionTimeout,
    InvalidArguments,
    PayloadError,
    PayloadTooLarge,
    QueueTimeout,
    RemoteError,
    ToolNotFound,
    WorkerError,
    WorkerStopping,
    WorkerUnavailable,
)

Kind = worker_pb2.ErrorInfo.Kind

#: The details of the status grpc sets itself when a batch of a call failed.
_CORE_BATCH_FAILED = "Internal error from Core"


def error_from_info(info: worker_pb2.ErrorInfo, tool: str) -> WorkerError | QueueTimeout:
    """The public error for an ErrorInfo a worker sent back.

    A call whose tool never started in the worker (NOT_STARTED: its timeout
    passed while it waited for its session's previous end) is a
    :class:`~snakepit.errors.QueueTimeout`, like a call that found no free
    worker in time: the worker is not at fault and is not replaced (a
    DEADLINE_EXCEEDED, a tool that ran out of time, is an ExecutionTimeout).
    """
    kind = info.kind
    if kind == Kind.REMOTE:
        return RemoteError(info.type, info.message, info.traceback)
    if kind == Kind.TOOL_NOT_FOUND:
        return ToolNotFound("ToolNotFound", info.message)
    if kind == Kind.INVALID_ARGUMENTS:
        return InvalidArguments("InvalidArguments", info.message)
    if kind == Kind.PAYLOAD_TOO_LARGE:
        return PayloadTooLarge(info.message)
    if kind == Kind.DEADLINE_EXCEEDED:
        return ExecutionTimeout(f"{tool}: the worker's deadline passed", tool=tool)
    if kind == Kind.NOT_STARTED:  # the worker says why (a slot, a session's end)
        return QueueTimeout(
            info.message
            or f"{tool}: the call's timeout passed while it waited in the worker;"
            " the tool did not run"
        )
    if kind == Kind.UNAVAILABLE:
        return WorkerStopping(f"{tool}: {info.message}")
    if kind == Kind.CODEC:
        path, type_name = error_details(info.message)
        return PayloadError(f"{tool}: {info.message}", path=path, type_name=type_name)
    if kind == Kind.CANCELLED:
        return WorkerError(f"{tool}: the call was cancelled in the worker")
    return WorkerError(f"{tool}: {info.type or 'error'}: {info.message}")


def error_from_rpc(exc: grpc.RpcError, tool: str) -> WorkerError:
    """The public error for a failed gRPC call (the transport, not the tool), caused by ``exc``."""
    code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
    details = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        error: WorkerError = PayloadTooLarge(f"{tool}: {details}")
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        error = ExecutionTimeout(f"{tool}: no reply in time", tool=tool)
    elif code == grpc.StatusCode.UNAUTHENTICATED:
        error = WorkerUnavailable(
            f"{tool}: the worker refused the call: authentication failed"
            " (a missing or wrong secret)"
        )
    else:
        error = WorkerUnavailable(f"{tool}: the connection to the worker failed: {details}")
    error.__cause__ = exc
    return error


def error_from_grpc(exc: Exception, what: str) -> WorkerError | None:
    """The public error for what a grpc.aio call raised, caused by it; None if not grpc's.

    :param what: the call, to start the message (a tool's name, ``"Describe"``).
    """
    if isinstance(exc, grpc.RpcError):  # the call failed: its status code says how
        return error_from_rpc(exc, what)
    if isinstance(exc, grpc.aio.BaseError):  # UsageError: the channel is closed
        error = WorkerUnavailable(f"{what}: {exc}")
        error.__cause__ = exc
        return error
    return None


def ended_under_a_write(exc: Exception) -> bool:
    """Whether ``exc`` is grpc's when a stream's peer ended it as a message was written.

    grpc then fails the write with a status of its own (``INTERNAL``,
    "Internal error from Core"), which also replaces the peer's status for a
    read that follows; or with ``InvalidStateError`` if the peer's status came
    in first. Neither says why the peer ended the stream.
    """
    if isinstance(exc, asyncio.InvalidStateError):
        return True
    return (
        isinstance(exc, grpc.aio.AioRpcError)
        and exc.code() == grpc.StatusCode.INTERNAL
        and exc.details() == _CORE_BATCH_FAILED
    )


@contextlib.contextmanager
def grpc_errors(what: str) -> Iterator[None]:
    """Raise the public error (:func:`error_from_grpc`) for a grpc.aio error inside the block.

    Every gRPC call of a :class:`WorkerConnection` runs in one: no bare
    ``grpc.RpcError`` (or ``grpc.aio.UsageError``) reaches a user.

    :param what: the call, to start the message (a tool's name, ``"Describe"``).
    :raises WorkerError: the mapped error (``WorkerUnavailable``,
        ``ExecutionTimeout``, ``PayloadTooLarge``), chained to grpc's.
    """
    try:
        yield
    except (grpc.RpcError, grpc.aio.BaseError) as exc:
        error = error_from_grpc(exc, what)
        assert error is not None
        raise error from exc
