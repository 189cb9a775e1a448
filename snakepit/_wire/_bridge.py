"""The bridge's wire forms, shared by the host (the server) and the worker (its client).

A stored variable (a :class:`~snakepit.session.VariableRecord`'s fields) as a
``BridgeVariable``: its spec and value as JSON text, a tensor's items as raw
bytes in ``data`` (not base64 in the JSON), and back; the metadata keys of
a bridge call. No host import: the worker runtime uses it too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any, Final

from snakepit._wire._proto.snakepit.v1 import bridge_pb2

__all__ = (
    "AUTH_KEY",
    "DEFAULT_MAX_MESSAGE",
    "SOURCE_KEY",
    "from_wire_value",
    "message_limits",
    "to_wire",
    "to_wire_value",
    "worker_token",
)

#: The largest bridge message by default (as a pool's ``max_message_mb``: 64 MiB).
DEFAULT_MAX_MESSAGE: Final = 64 * 1024 * 1024

#: The metadata key of a bridge call's token (its worker's, hex).
AUTH_KEY: Final = "snakepit-bridge-auth"
#: The metadata key naming who calls (a worker's id), as watches report it.
SOURCE_KEY: Final = "snakepit-bridge-source"


def message_limits(max_message_bytes: int) -> list[tuple[str, int]]:
    """The gRPC options of a bridge's server and client: send and receive up to this."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


def worker_token(secret: bytes, worker_id: str) -> str:
    """The bridge token of the worker ``worker_id`` of a pool whose bridge secret is ``secret``.

    Each worker gets its own: a call's :data:`SOURCE_KEY` is the worker id
    its token was made for, so no worker can write as another (or as the host).
    """
    return hmac.new(secret, b"bridge:" + worker_id.encode(), hashlib.sha256).hexdigest()


def to_wire_value(value: Any) -> tuple[str, bytes]:
    """A stored value (``VariableSpec.encode``'s form) as (JSON text, raw bytes).

    A tensor's base64 items go as bytes; everything else as JSON.
    """
    if isinstance(value, Mapping) and isinstance(value.get("data"), str) and "dtype" in value:
        rest = {k: v for k, v in value.items() if k != "data"}
        return json.dumps(rest, allow_nan=False), base64.b64decode(value["data"])
    return json.dumps(value, allow_nan=False), b""


def from_wire_value(value_json: str, data: bytes) -> Any:
    """The inverse of :func:`to_wire_value`.

    :raises ValueError: ``value_json`` is not JSON.
    """
    value = json.loads(value_json)
    if data or (isinstance(value, dict) and "dtype" in value and "data" not in value):
        if not isinstance(value, dict):
            raise ValueError("a value with raw bytes must be a tensor's JSON object")
        value = {**value, "data": base64.b64encode(data).decode("ascii")}
    return value


def to_wire(
    name: str,
    spec: Mapping[str, Any],
    value: Any,
    version: int = 0,
    uid: str = "",
    source: str = "",
    updated_at: float = 0.0,
) -> bridge_pb2.BridgeVariable:
    """A variable's stored form as a ``BridgeVariable``."""
    value_json, data = to_wire_value(value)
    return bridge_pb2.BridgeVariable(
        name=name,
        spec_json=json.dumps(dict(spec), allow_nan=False),
        value_json=value_json,
        data=data,
        version=version,
        uid=uid,
        source=source,
        updated_at=updated_at,
    )
