"""The messages of one call: its request built, its reply or stream chunk decoded.

Shared by the unary and streaming calls of :class:`~snakepit.pool.WorkerConnection`
and the multiplexed ones of :class:`~snakepit.pool.Multiplexer`.
"""

from __future__ import annotations

from typing import Any, Final

from snakepit._wire._codec import JSON, PICKLE, CodecError, decode, encode_into, loads_json
from snakepit._wire._frames import ENVELOPE
from snakepit._wire._proto.snakepit.v1 import worker_pb2
from snakepit.errors import ConfigError, PayloadError, PayloadTooLarge

from ._grpc_errors import error_from_info

DEFAULT_MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
#: What :func:`chunk_value` returns for a stream's end marker.
END: Final = object()


def result_of(response: worker_pb2.ExecuteResponse, tool: str, codec: str) -> Any:
    if response.WhichOneof("outcome") == "error":
        raise error_from_info(response.error, tool)
    result = response.result
    try:
        if not result.has_markers and result.codec == JSON:  # the usual reply
            return loads_json(result.data)
        return decode(result, allow_pickle=codec == PICKLE)
    except CodecError as exc:
        raise PayloadError(f"{tool}: cannot decode the result: {exc}") from exc


def chunk_value(chunk: worker_pb2.StreamChunk, tool: str, codec: str) -> Any:
    """A stream chunk's value, :data:`END` for the end marker; raises the error one carries."""
    item = chunk.WhichOneof("item")
    if item == "error":
        raise error_from_info(chunk.error, tool)
    if item != "chunk":
        return END
    try:
        return decode(chunk.chunk, allow_pickle=codec == PICKLE)
    except CodecError as exc:
        raise PayloadError(f"{tool}: cannot decode a chunk: {exc}") from exc


def fill_request(
    request: worker_pb2.ExecuteRequest,
    rid: int,
    tool: str,
    args: Any,
    timeout: float | None,
    session_id: str,
    session_metadata: bytes,
    limit: int,
    codec: str,
) -> None:
    """Fill the fresh ``request`` in place; its size is checked against ``limit``.

    ``session_metadata`` is the session's metadata in its wire form
    (:func:`snakepit._wire._session.encode_metadata`); b"" (no session, or no
    metadata) leaves the field unset and costs nothing.

    :raises ConfigError: ``timeout`` is not None or > 0.
    :raises PayloadError: the arguments cannot be encoded.
    :raises PayloadTooLarge: the request is over the message limit.
    """
    if timeout is not None and not timeout > 0:
        raise ConfigError("timeout", f"must be None or > 0, got {timeout!r}")
    # A fresh request: fields left at their defaults ("", 0) are not set.
    request.request_id = rid
    request.tool = tool
    if session_id:
        request.session_id = session_id
    if session_metadata:
        request.session_metadata = session_metadata
    if timeout:
        request.timeout = timeout
    if not args and codec == JSON:  # no arguments: what encode_into writes for {}
        payload = request.args
        payload.codec = JSON
        payload.data = b"{}"
    else:
        try:
            encode_into(request.args, {} if args is None else args, codec=codec, root="args")
        except CodecError as exc:
            raise PayloadError(
                f"{tool}: cannot encode the arguments: {exc}",
                path=exc.path,
                type_name=exc.type_name,
            ) from exc
    size = request.ByteSize()
    if size > limit - ENVELOPE:
        raise PayloadTooLarge(
            f"{tool}: the arguments are {size} bytes, over the {limit}-byte message limit",
            size=size,
            limit=limit,
        )
