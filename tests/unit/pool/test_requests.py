"""Building a call's request (``snakepit.pool._requests.fill_request``): the session fields."""

from __future__ import annotations

import pytest

from snakepit._wire._codec import JSON
from snakepit._wire._proto.snakepit.v1 import worker_pb2
from snakepit._wire._session import encode_metadata
from snakepit.errors import PayloadTooLarge
from snakepit.pool._requests import DEFAULT_MAX_MESSAGE_BYTES, fill_request


def request(
    session_id: str = "", session_metadata: bytes = b"", limit: int = DEFAULT_MAX_MESSAGE_BYTES
) -> worker_pb2.ExecuteRequest:
    built = worker_pb2.ExecuteRequest()
    fill_request(built, 7, "tool", {"x": 1}, None, session_id, session_metadata, limit, JSON)
    return built


def test_session_id_and_metadata_are_sent() -> None:
    metadata = encode_metadata({"user": "ada"})
    built = request("s-1", metadata)
    decoded = worker_pb2.ExecuteRequest.FromString(built.SerializeToString())
    assert decoded.session_id == "s-1"
    assert decoded.session_metadata == b'{"user":"ada"}'
    assert decoded.request_id == 7
    assert decoded.tool == "tool"


def test_no_metadata_adds_no_byte() -> None:
    assert request("s-1").ByteSize() == request("s-1", b"").ByteSize()
    assert request().session_metadata == b""
    assert request().SerializeToString() == request("", b"").SerializeToString()
    with_metadata = request("s-1", b'{"a":1}')
    assert with_metadata.ByteSize() == request("s-1").ByteSize() + 2 + len(b'{"a":1}')


def test_metadata_counts_toward_the_message_limit() -> None:
    limit = 8 * 1024
    with pytest.raises(PayloadTooLarge):
        request("s", b'{"a":"' + b"x" * limit + b'"}', limit=limit)
