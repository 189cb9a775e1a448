"""A worker's side of authentication: the frames preface, a gRPC interceptor, warnings.

See :mod:`snakepit._wire._auth` for the protocol. A frames connection that does
not send the right preface within :data:`AUTH_TIMEOUT` is closed without a
word; a gRPC call without the right metadata ends with ``UNAUTHENTICATED``
before any of its request is read, except a health check (which tells only
whether the worker serves). Refusals are logged, one warning per
:data:`WARNING_INTERVAL` at most.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from snakepit._wire._auth import (
    FRAMES_ACCEPTED,
    FRAMES_MAGIC,
    METADATA_KEY,
    PREFACE_SIZE,
    check_preface,
    metadata_has_token,
)

__all__ = ()

logger = logging.getLogger("snakepit.worker")

#: Seconds a new frames connection has to send its preface (then it is closed).
AUTH_TIMEOUT = 5.0
#: At most one warning about refused connections per this many seconds.
WARNING_INTERVAL = 10.0
#: The RPCs open without the secret: a health check tells only SERVING or not.
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check"})
#: What a refused gRPC call is told (nothing about what was wrong).
REFUSED = "snakepit: authentication required"


class Refusals:
    """Counts refused connections and logs them, one warning per ``interval`` at most."""

    def __init__(
        self, interval: float = WARNING_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        #: How many connections and calls were refused so far.
        self.count = 0
        self._interval = interval
        self._clock = clock
        self._last: float | None = None
        self._unlogged = 0

    def refuse(self, what: str) -> None:
        """Count one refusal of ``what``; warn unless a warning went out lately."""
        self.count += 1
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more since the last warning)" if self._unlogged else ""
        self._last, self._unlogged = now, 0
        logger.warning("refused %s: not authenticated%s", what, more)


async def accept_frames(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    secret: bytes | None,
    refusals: Refusals,
    *,
    answer: bool = True,
) -> bool:
    """Read a frames connection's preface; True (and answered) if it is the right one.

    Without a secret (a worker started without authentication) any preface
    with the right magic is taken. The caller closes a refused connection.
    With ``answer`` False, an accepted connection is not answered: the
    caller sends :data:`~snakepit._wire._auth.FRAMES_ACCEPTED` itself.
    """
    try:
        preface = await asyncio.wait_for(reader.readexactly(PREFACE_SIZE), AUTH_TIMEOUT)
    except asyncio.IncompleteReadError:
        refusals.refuse("a frames connection (it closed before its preface)")
        return False
    except TimeoutError:
        refusals.refuse(f"a frames connection (no preface within {AUTH_TIMEOUT:g}s)")
        return False
    except (ConnectionError, OSError):
        return False  # gone already: nothing was asked
    if secret is None:  # no authentication: only the protocol is checked
        accepted = preface.startswith(FRAMES_MAGIC)
    else:
        accepted = check_preface(preface, secret)
    if not accepted:
        refusals.refuse("a frames connection (wrong preface)")
        return False
    if answer:
        writer.write(FRAMES_ACCEPTED)
    return True


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Ends every gRPC call without the worker's secret (:data:`OPEN_METHODS` aside)."""

    def __init__(self, secret: bytes, refusals: Refusals) -> None:
        self._token = secret.hex()
        self._refusals = refusals

    def _authorized(self, metadata: Any) -> bool:
        return metadata_has_token(metadata, METADATA_KEY, self._token)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        """The call's handler if it carries the secret, else one that refuses it."""
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if (
            handler is None
            or method in OPEN_METHODS
            or self._authorized(handler_call_details.invocation_metadata)
        ):
            return handler
        self._refusals.refuse(f"a gRPC call to {method}")
        return _refusing(handler)


async def _refuse(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED)


def _refusing(handler: Any) -> Any:
    """A handler of the same shape as ``handler`` that aborts (no request is deserialized)."""
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(_refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(_refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(_refuse)
    return grpc.unary_unary_rpc_method_handler(_refuse)
