"""A session's metadata on the wire (``snakepit._wire._session``): compact JSON both ways."""

from __future__ import annotations

import json
import math
from types import MappingProxyType
from typing import Any

import pytest

from snakepit._wire._session import MetadataError, decode_metadata, encode_metadata


class TestEncode:
    @pytest.mark.parametrize("empty", [None, {}, MappingProxyType({})])
    def test_no_metadata_is_no_bytes(self, empty: Any) -> None:
        assert encode_metadata(empty) == b""

    def test_compact_utf8_json(self) -> None:
        data = encode_metadata({"user": "adà", "tags": [1, 2.5, None, True], "n": {}})
        assert data == '{"user":"adà","tags":[1,2.5,null,true],"n":{}}'.encode()
        assert json.loads(data) == {"user": "adà", "tags": [1, 2.5, None, True], "n": {}}

    def test_any_mapping(self) -> None:
        assert encode_metadata(MappingProxyType({"a": 1})) == b'{"a":1}'

    @pytest.mark.parametrize(
        "bad", [{"x": object()}, {"x": math.nan}, {"x": math.inf}, {"x": b"raw"}, {"x": "\ud800"}]
    )
    def test_what_json_cannot_carry_raises_naming_the_field(self, bad: dict[str, Any]) -> None:
        with pytest.raises(MetadataError, match="session_metadata"):
            encode_metadata(bad)


class TestDecode:
    def test_no_bytes_is_empty(self) -> None:
        assert decode_metadata(b"") == {}

    def test_round_trip(self) -> None:
        metadata = {"user": "adà", "tags": [1, 2.5, None, True], "n": {"deep": ["x"]}}
        assert decode_metadata(encode_metadata(metadata)) == metadata

    def test_a_new_dict_each_time(self) -> None:
        data = b'{"tags":[1]}'
        first = decode_metadata(data)
        first["tags"].append(2)
        assert decode_metadata(data) == {"tags": [1]}

    @pytest.mark.parametrize(
        "bad",
        [
            b"{not json",
            b"[1]",
            b"1",
            b'"s"',
            b"null",
            b"\xff\xfe",
            b'{"x":NaN}',
            b'{"x":-Infinity}',
        ],
    )
    def test_what_is_not_a_json_object_raises_naming_the_field(self, bad: bytes) -> None:
        with pytest.raises(MetadataError, match="session_metadata"):
            decode_metadata(bad)

    def test_deep_nesting_raises_rather_than_crashing(self) -> None:
        with pytest.raises(MetadataError, match="session_metadata"):
            decode_metadata(b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
