"""The payload codec (snakepit/_wire/_codec.py): round trips, markers, typed errors, engines."""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime
import decimal
import enum
import json
import math
import pickle
import socket
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepit._wire import _codec
from snakepit._wire._codec import (
    JSON,
    PICKLE,
    CodecError,
    Unserializable,
    decode,
    encode,
    encode_into,
)
from snakepit._wire._proto.snakepit.v1 import worker_pb2
from tests._budget import THOROUGH

from ._engines import AVAILABLE, engine, needs_orjson, round_trip

ENGINE_PAIRS = [
    ("json", "json"),
    pytest.param("orjson", "orjson", marks=needs_orjson),
    pytest.param("orjson", "json", marks=needs_orjson),
    pytest.param("json", "orjson", marks=needs_orjson),
]


def same(a: object, b: object) -> bool:
    """Equal, with exact types, NaN equal to NaN and the sign of zero kept."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        assert isinstance(b, float)
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def strict_json(data: bytes) -> Any:
    """Parse as a strict RFC 8259 JSON text in UTF-8 (no NaN or Infinity literals)."""

    def reject(name: str) -> Any:
        raise AssertionError(f"{name} literal on the wire")

    return json.loads(data.decode("utf-8"), parse_constant=reject)


# -- round trips ----------------------------------------------------------------------------

surrogates = st.sampled_from(["\ud800", "\udfff", "\udc80"])
odd_text = st.builds(
    lambda a, s, b: a + s + b, st.text(max_size=3), surrogates, st.text(max_size=3)
)
keys = st.text(max_size=8) | st.just("__snakepit__") | odd_text
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # nan, inf, -inf and -0.0 included
    | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 2**63, 2**64, -(2**63) - 1])
    | st.text(max_size=8)
    | st.just("__snakepit__")
    | odd_text
    | st.binary(max_size=8)
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60 * THOROUGH, deadline=None)
@given(value=values)
def test_round_trip_keeps_values_and_types(value: object) -> None:
    # Every engine's payload is strict JSON and decodes to the value with every engine.
    for encoder in AVAILABLE:
        with engine(encoder):
            payload = encode(value)
        strict_json(payload.data)
        for decoder in AVAILABLE:
            with engine(decoder):
                assert same(decode(payload), value), (encoder, decoder)


TRICKY = [
    {"a": None, "b": math.nan, "c": [math.inf, -math.inf, -0.0]},
    {1: "int key", None: "none key", 2.5: "float key", "s": {"t": (1, 2)}},
    {"__snakepit__": [b"\x00", Unserializable("set", "{3}")], "big": [2**64, -(2**63) - 1, 2**63]},
    ["\ud800", {"\udcff": "\u00e9"}],
]


@pytest.mark.parametrize(("encoder", "decoder"), ENGINE_PAIRS)
@pytest.mark.parametrize("value", TRICKY, ids=["nan-and-null", "keys", "escapes", "surrogates"])
def test_engines_are_interchangeable(encoder: str, decoder: str, value: object) -> None:
    with engine("json"):
        expected = decode(encode(value))
    with engine(encoder):
        payload = encode(value)
    with engine(decoder):
        assert same(decode(payload), expected)


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, -0.0, [1.5, math.nan], {"a": None, "b": math.nan}],
    ids=repr,
)
def test_non_finite_floats_travel_as_markers(json_engine: str, value: object) -> None:
    payload = encode(value)
    assert payload.has_markers or value == -0.0
    assert b"NaN" not in payload.data
    assert b"Infinity" not in payload.data
    assert same(decode(payload), value)


def test_plain_data_has_no_markers_and_is_plain_json(json_engine: str) -> None:
    value = {"x": 1, "y": "abc", "z": [1.5, None, True, "é"]}
    payload = encode(value)
    assert payload.codec == JSON
    assert not payload.has_markers
    assert list(payload.blobs) == []
    assert json.loads(payload.data) == value


@pytest.mark.parametrize(
    "value",
    [{}, None, [], True, 0, "é\u2028", {"x": [1.5, None, {}], "y": {"z": 'a"b'}}, 2**63 - 1],
)
def test_plain_data_is_json_dumps_bytes(value: object) -> None:
    # The no-arguments and None fast paths and json's C encoder called directly write
    # exactly what json.dumps writes.
    payload = encode(value)
    expected = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    assert payload.data == expected.encode()
    assert not payload.has_markers
    assert same(decode(payload), value)


def test_plain_data_does_not_walk(json_engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_walk(*args: object) -> object:
        raise AssertionError("walked")

    monkeypatch.setattr(_codec._Encoding, "walk", no_walk)
    monkeypatch.setattr(_codec, "_restore", no_walk)
    # bytes and Unserializable values are handled by the encoder's default= hook
    value = {"x": 1, "y": "abc", "blob": b"\x00\x01", "s": Unserializable.of({1}), "id": 2**63 - 1}
    payload = encode(value)
    assert payload.has_markers
    monkeypatch.undo()
    assert decode(payload) == {
        "id": 2**63 - 1,
        "x": 1,
        "y": "abc",
        "blob": b"\x00\x01",
        "s": Unserializable("set", "{1}"),
    }


def test_decode_does_not_walk_without_markers(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_walk(*args: object) -> object:
        raise AssertionError("walked")

    monkeypatch.setattr(_codec, "_restore", no_walk)
    assert decode(encode({"x": 1, "y": "abc"})) == {"x": 1, "y": "abc"}
    # With has_markers false, a marker-shaped object is data, taken as it is.
    raw = b'{"__snakepit__":"bytes","index":0}'
    assert decode(worker_pb2.Payload(codec=JSON, data=raw)) == json.loads(raw)


# -- bytes ------------------------------------------------------------------------------------


def test_bytes_travel_out_of_band(json_engine: str) -> None:
    blob = b"\x00out-of-band\xff" * 100
    payload = encode({"blob": blob, "n": 1})
    assert blob not in payload.data
    assert base64.b64encode(blob)[:16] not in payload.data
    assert list(payload.blobs) == [blob]
    assert payload.has_markers
    assert len(payload.data) < 100
    assert decode(payload) == {"blob": blob, "n": 1}


@pytest.mark.parametrize("value", [b"", b"\x00\xff raw", bytearray(b"ba"), memoryview(b"mv")])
def test_top_level_bytes(json_engine: str, value: bytes | bytearray | memoryview) -> None:
    payload = encode(value)
    assert list(payload.blobs) == [bytes(value)]
    assert payload.has_markers
    result = decode(payload)
    assert type(result) is bytes
    assert result == bytes(value)


def test_bytes_like_values_decode_as_bytes(json_engine: str) -> None:
    value = [b"a", bytearray(b"b"), memoryview(b"c"), [b"d"]]
    result = round_trip(value)
    assert result == [b"a", b"b", b"c", [b"d"]]
    assert [type(x) for x in result[:3]] == [bytes, bytes, bytes]


# -- JSON semantics ---------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    PAIR = (1, 2)


class Level(enum.IntEnum):
    HIGH = 3


Point = collections.namedtuple("Point", "x y")


class Thing:
    pass


@dataclasses.dataclass
class Record:
    n: int


class MyFloat(float):
    pass


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ((1, (2, 3)), [1, [2, 3]]),
        (Point(1, 2), [1, 2]),
        (uuid.UUID(int=5), "00000000-0000-0000-0000-000000000005"),
        (Color.RED, "red"),
        (Color.PAIR, [1, 2]),
        (Level.HIGH, 3),
        (
            {1: "a", 2.5: "b", None: "c", False: "d"},
            {"1": "a", "2.5": "b", "null": "c", "false": "d"},
        ),
        ({math.nan: 1, math.inf: 2, -math.inf: 3}, {"NaN": 1, "Infinity": 2, "-Infinity": 3}),
        (
            {Level.HIGH: 1, Color.RED: 2, uuid.UUID(int=1): 3},
            {"3": 1, "red": 2, str(uuid.UUID(int=1)): 3},
        ),
        ([2**63 - 1, -(2**63), 2**64 - 1], [2**63 - 1, -(2**63), 2**64 - 1]),
        ([2**64, -(2**63) - 1, 10**30], [2**64, -(2**63) - 1, 10**30]),
        (MyFloat(1.5), 1.5),
        ([MyFloat("nan")], [math.nan]),
        ({"s": "\ud800"}, {"s": "\ud800"}),
        ({"\udcff": "k"}, {"\udcff": "k"}),
    ],
    ids=repr,
)
def test_json_semantics(json_engine: str, value: object, expected: object) -> None:
    payload = encode(value)
    strict_json(payload.data)
    assert same(decode(payload), expected)


@pytest.mark.parametrize("padding", [0, 1000], ids=["short", "long"])
def test_ints_outside_64_bits_travel_as_markers(json_engine: str, padding: int) -> None:
    in_range = ["x" * padding, 2**64 - 1, -(2**63), 10**19]
    payload = encode(in_range)
    assert not payload.has_markers
    assert strict_json(payload.data) == in_range
    outside = [*in_range, 2**64, -(2**63) - 1]
    payload = encode(outside)
    assert payload.has_markers
    assert b"18446744073709551616" not in payload.data
    assert same(decode(payload), outside)


def test_ints_beyond_str_conversion_limit(json_engine: str) -> None:
    huge = 10**5000
    assert round_trip([huge, -huge]) == [huge, -huge]


# -- values with no faithful form: a typed error, or a placeholder on request --------------------

NO_FORM = [
    (lambda: {1, 2}, "set"),
    (lambda: frozenset(), "frozenset"),
    (object, "object"),
    (lambda: lambda: None, "function"),
    (Thing, f"{__name__}.Thing"),
    (lambda: Record(1), f"{__name__}.Record"),
    (lambda: datetime.date(2020, 1, 2), "datetime.date"),
    (lambda: datetime.datetime(2020, 1, 2, 3, 4), "datetime.datetime"),
    (lambda: decimal.Decimal("1.10"), "decimal.Decimal"),
    (lambda: 1j, "complex"),
]


@pytest.mark.parametrize(("make", "type_name"), NO_FORM, ids=[t for _, t in NO_FORM])
def test_no_faithful_form_raises_naming_type_and_path(
    json_engine: str, make: Any, type_name: str
) -> None:
    # Issue 11, defect 8: these became an Unserializable placeholder without an error.
    with pytest.raises(CodecError) as info:
        encode({"a": [1, {"b": make()}]})
    assert info.value.path == 'result["a"][1]["b"]'
    assert info.value.type_name == type_name
    assert str(info.value).startswith(f'cannot encode {type_name} at result["a"][1]["b"]: ')
    assert _codec.error_details(str(info.value)) == (info.value.path, type_name)


@pytest.mark.parametrize(("make", "type_name"), NO_FORM, ids=[t for _, t in NO_FORM])
def test_placeholders_are_an_explicit_opt_in(json_engine: str, make: Any, type_name: str) -> None:
    value = make()
    payload = encode({"a": [1, value]}, placeholders=True)
    assert payload.has_markers
    result = decode(payload)
    assert result["a"][1] == Unserializable(type_name, repr(value))
    assert result["a"][0] == 1


def test_unserializable_of_describes_a_value_on_purpose(json_engine: str) -> None:
    stand_in = Unserializable.of({1})
    assert stand_in == Unserializable("set", "{1}")
    assert Unserializable.of(stand_in) is stand_in
    assert round_trip({"s": stand_in, stand_in: 1}) == {"s": stand_in, stand_in: 1}


def test_socket_has_no_faithful_form(json_engine: str) -> None:
    with socket.socket() as sock:
        with pytest.raises(CodecError, match=r"socket\.socket at result\.?\[\"sock\"\]"):
            encode({"sock": sock})
        result = round_trip({"sock": sock}, placeholders=True)
    assert result["sock"].type_name == "socket.socket"
    assert result["sock"].repr.startswith("<socket.socket")


def test_long_and_broken_reprs(json_engine: str) -> None:
    class Long:
        def __repr__(self) -> str:
            return "x" * 10_000

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    class Odd:
        def __repr__(self) -> str:
            return "odd \ud800"

    long, broken, odd = round_trip([Long(), Broken(), Odd()], placeholders=True)
    assert odd.repr == "odd \\ud800"
    assert len(long.repr) == 200
    assert long.repr.endswith("...")
    assert broken.type_name.endswith("Broken")
    assert "RuntimeError" in broken.repr
    with pytest.raises(CodecError, match=r"Broken at result\[1\]"):
        encode([1, Broken()])


def test_unsupported_key_raises_at_its_dict(json_engine: str) -> None:
    with pytest.raises(CodecError) as info:
        encode({"k": {(1, 2): "t"}}, root="args")
    assert (info.value.path, info.value.type_name) == ('args["k"]', "tuple")
    assert "dict key" in str(info.value)
    assert round_trip({(1, 2): "t", "k": 1}, placeholders=True) == {
        Unserializable("tuple", "(1, 2)"): "t",
        "k": 1,
    }


def test_unserializable_is_relayed_unchanged(json_engine: str) -> None:
    stand_in = Unserializable("mod.Thing", "<Thing>")
    assert round_trip([stand_in]) == [stand_in]
    assert round_trip([stand_in], placeholders=True) == [stand_in]


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"a": [1, 2, {3}]}, 'args["a"][2]'),
        ([object()], "args[0]"),
        (Thing(), "args"),
        ({"a b": {"c": [lambda: 0]}}, 'args["a b"]["c"][0]'),
        ({1: {"k": {(1,): 2}}}, 'args[1]["k"]'),
        ({'q"]: ': [1, {2}]}, 'args["q\\"]: "][1]'),
        ({"\ud800": {1}}, 'args["\\ud800"]'),
        ((1, (2, {3})), "args[1][1]"),
    ],
    ids=["set", "object", "instance", "lambda", "tuple-key", "odd-key", "surrogate-key", "tuple"],
)
def test_paths_name_where_the_value_is(json_engine: str, value: object, path: str) -> None:
    with pytest.raises(CodecError) as info:
        encode(value, root="args")
    assert info.value.path == path
    # The host reads them back from the message a worker sends.
    assert _codec.error_details(f"echo: {info.value}")[0] == path


no_form = st.sampled_from(
    [{1}, frozenset({2}), datetime.date(2020, 1, 1), decimal.Decimal("1.5"), 1j, Thing()]
)
plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3),
    max_leaves=6,
)


@st.composite
def one_bad_value(draw: st.DrawFn) -> tuple[object, list[object], object]:
    """Plain data with one value that has no faithful form; its steps from the root."""
    bad = draw(no_form)
    value: object = bad
    steps: list[object] = []
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            items: list[object] = draw(st.lists(plain, max_size=3))
            index = draw(st.integers(0, len(items)))
            items.insert(index, value)
            value = items if draw(st.booleans()) else tuple(items)
            steps.insert(0, index)
        else:
            key = draw(keys | st.integers())
            mapping: dict[object, object] = draw(st.dictionaries(keys, plain, max_size=3))
            mapping.pop(key, None)
            mapping[key] = value
            value = mapping
            steps.insert(0, (key,))
    return value, steps, bad


@settings(max_examples=60 * THOROUGH, deadline=None)
@given(case=one_bad_value(), root=st.sampled_from(["args", "result"]))
def test_a_value_with_no_faithful_form_is_found_wherever_it_is(
    case: tuple[object, list[object], object], root: str
) -> None:
    value, steps, bad = case
    for name in AVAILABLE:
        with engine(name), pytest.raises(CodecError) as info:
            encode(value, root=root)
        expected = _codec._format_path(root, steps)
        assert info.value.path == expected
        assert info.value.type_name == _codec._type_name(bad)
        # What a worker sends back is only the message: the host finds both in it.
        assert _codec.error_details(f"tool: {info.value}") == (expected, info.value.type_name)


def test_everything_json_can_carry_still_travels(json_engine: str) -> None:
    value = {"b": b"x", "f": [math.nan, -math.inf], "t": (1,), "big": 2**70, "k": {1: 2}}
    expected = {"b": b"x", "f": [math.nan, -math.inf], "t": [1], "big": 2**70, "k": {"1": 2}}
    assert same(round_trip(value), expected)


# -- cycles and depth -------------------------------------------------------------------------


def _cycles() -> list[object]:
    looped_list: list[object] = [1]
    looped_list.append(looped_list)
    looped_dict: dict[str, object] = {}
    looped_dict["me"] = [looped_dict]
    inner: list[object] = []
    through_tuple = (inner,)
    inner.append(through_tuple)
    return [looped_list, looped_dict, through_tuple, {"deep": [{"x": looped_list}]}]


@pytest.mark.parametrize("placeholders", [False, True])
@pytest.mark.parametrize("value", _cycles(), ids=["list", "dict", "tuple", "nested"])
def test_cycles_raise_codec_error(json_engine: str, value: object, placeholders: bool) -> None:
    with pytest.raises(CodecError, match="cycle") as info:
        encode(value, placeholders=placeholders)
    assert info.value.path is not None
    assert info.value.path.startswith("result")


def test_shared_references_are_not_cycles(json_engine: str) -> None:
    shared = [1, math.nan]
    assert same(
        round_trip([shared, shared, {"a": shared}]), [[1, math.nan]] * 2 + [{"a": [1, math.nan]}]
    )


def test_too_deep_is_a_codec_error(json_engine: str) -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(CodecError, match="deep"):
        encode(deep)
    with pytest.raises(CodecError):
        decode(worker_pb2.Payload(codec=JSON, data=b"[" * 100_000 + b"]" * 100_000))


def _nested_tuple(depth: int) -> object:
    deep: object = ()
    for _ in range(depth):
        deep = (deep,)
    return deep


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_deeply_nested_tuples_raise(json_engine: str, depth: int) -> None:
    # orjson 3.13 does not count tuples against its recursion limit and crashes on these.
    with pytest.raises(CodecError, match="deep"):
        encode(_nested_tuple(depth))


def test_nested_tuples_round_trip_as_lists(json_engine: str) -> None:
    result = round_trip(_nested_tuple(300))
    for _ in range(300):
        (result,) = result
    assert result == []


def test_nesting_beyond_orjson_limits_round_trips(json_engine: str) -> None:
    deep: list[object] = [math.nan, b"x"]
    for _ in range(400):
        deep = [deep]
    result = round_trip(deep)
    for _ in range(400):
        (result,) = result
    assert same(result, [math.nan, b"x"])


# -- marker-key escaping ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"__snakepit__": "bytes", "index": 0},
        {"__snakepit__": "unserializable", "type": "x", "repr": "y"},
        {"__snakepit__": "ndarray", "dtype": "O", "shape": [], "index": 0},
        [{"__snakepit__": 1}, b"blob", {"k": {"__snakepit__": {"__snakepit__": "float"}}}],
        {"a": "__snakepit__", "__snakepit__": [math.nan]},
        {"v": '"__snakepit__"'},
    ],
    ids=repr,
)
def test_user_dicts_with_the_marker_key_round_trip(json_engine: str, value: object) -> None:
    payload = encode(value)
    strict_json(payload.data)
    assert same(decode(payload), value)


# -- encode_into ------------------------------------------------------------------------------


def test_encode_into_fills_a_submessage_in_place(json_engine: str) -> None:
    request = worker_pb2.ExecuteRequest(request_id=7, tool="t")
    encode_into(request.args, {"b": b"\x01"})
    assert request.args.has_markers
    assert list(request.args.blobs) == [b"\x01"]
    encode_into(request.args, {"x": 1})  # replaces everything, blobs included
    assert request.args == encode({"x": 1})
    wire = worker_pb2.ExecuteRequest.FromString(request.SerializeToString())
    assert decode(wire.args) == {"x": 1}


def test_encode_into_leaves_the_payload_alone_on_error(json_engine: str) -> None:
    payload = encode([b"keep"])
    before = payload.SerializeToString()
    with pytest.raises(CodecError):
        encode_into(payload, _cycles()[0])
    with pytest.raises(CodecError):
        encode_into(payload, 1, codec="yaml")
    assert payload.SerializeToString() == before


# -- pickle, codecs, malformed payloads -------------------------------------------------------


def test_pickle_is_opt_in() -> None:
    value = {"s": {1, 2}, "t": (1, 2), "thing": Record(3)}
    payload = encode(value, codec=PICKLE)
    assert payload.codec == PICKLE
    with pytest.raises(CodecError, match="allow_pickle"):
        decode(payload)
    assert decode(payload, allow_pickle=True) == value


def test_pickle_buffers_travel_out_of_band() -> None:
    payload = encode(pickle.PickleBuffer(bytearray(b"out of band")), codec=PICKLE)
    assert list(payload.blobs) == [b"out of band"]
    assert bytes(decode(payload, allow_pickle=True)) == b"out of band"


def test_pickle_errors_are_codec_errors() -> None:
    with pytest.raises(CodecError, match="function"):
        encode(lambda: 0, codec=PICKLE)
    with pytest.raises(CodecError, match="malformed pickle"):
        decode(worker_pb2.Payload(codec=PICKLE, data=b"not a pickle"), allow_pickle=True)


def test_unknown_codec() -> None:
    with pytest.raises(CodecError, match="unknown codec 'yaml'"):
        encode(1, codec="yaml")
    with pytest.raises(CodecError, match="unknown codec 'yaml'"):
        decode(worker_pb2.Payload(codec="yaml", data=b"1"))


def test_an_empty_codec_field_reads_as_json() -> None:
    assert decode(worker_pb2.Payload(data=b'{"a":[1]}')) == {"a": [1]}


def _marked(data: bytes, *blobs: bytes) -> worker_pb2.Payload:
    return worker_pb2.Payload(codec=JSON, data=data, blobs=blobs, has_markers=True)


@pytest.mark.parametrize(
    "payload",
    [
        worker_pb2.Payload(codec=JSON, data=b""),
        worker_pb2.Payload(codec=JSON, data=b"{"),
        worker_pb2.Payload(codec=JSON, data=b"[1,]"),
        worker_pb2.Payload(codec=JSON, data=b"NaN"),
        worker_pb2.Payload(codec=JSON, data=b"[-Infinity]"),
        worker_pb2.Payload(codec=JSON, data=b'"\xff"'),
        worker_pb2.Payload(codec=JSON, data=b"1 2"),
        _marked(b'{"__snakepit__":"bytes","index":0}'),
        _marked(b'{"__snakepit__":"bytes","index":"0"}', b"x"),
        _marked(b'{"__snakepit__":"bytes"}', b"x"),
        _marked(b'{"__snakepit__":"float","value":"zero"}'),
        _marked(b'{"__snakepit__":"float","value":[]}'),
        _marked(b'{"__snakepit__":"int","hex":12}'),
        _marked(b'{"__snakepit__":"int","hex":"0xZZ"}'),
        _marked(b'{"__snakepit__":"str","index":0}', b"\xff"),
        _marked(b'{"__snakepit__":"unserializable","type":1,"repr":"x"}'),
        _marked(b'{"__snakepit__":"dict","items":[[[1],2]]}'),
        _marked(b'{"__snakepit__":"dict","items":[[1,2,3]]}'),
        _marked(b'{"__snakepit__":"dict","items":[[{"__snakepit__":"nope"},1]]}'),
        _marked(b'[{"__snakepit__":"nope"}]'),
    ],
    ids=lambda p: f"{p.data!r}",
)
def test_malformed_payloads_raise_codec_error(
    json_engine: str, payload: worker_pb2.Payload
) -> None:
    with pytest.raises(CodecError) as info:
        decode(payload)
    assert isinstance(info.value, ValueError)


def test_a_typed_memoryview_is_refused_not_flattened() -> None:
    import array

    with pytest.raises(CodecError, match="flat bytes") as info:
        encode({"v": memoryview(array.array("i", [1, 2, 3]))}, root="args")
    assert info.value.path == 'args["v"]'
    plain = memoryview(b"abc")
    assert decode(encode({"v": plain}))["v"] == b"abc"  # single bytes still travel as bytes
