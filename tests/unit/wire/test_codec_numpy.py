"""numpy values in the JSON codec: arrays keep dtype and shape, scalars their exact value.

Issue 11, defect 8: ``numpy.int64`` and ``ndarray`` became ``Unserializable`` placeholders.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from snakepit._wire._codec import CodecError, Unserializable, decode, encode
from snakepit._wire._proto.snakepit.v1 import worker_pb2
from tests._budget import THOROUGH

from ._engines import AVAILABLE, engine, round_trip


def assert_same_array(got: Any, sent: Any) -> None:
    assert type(got) is np.ndarray
    assert got.dtype == sent.dtype
    assert got.dtype.str == sent.dtype.str  # the byte order too
    assert got.shape == sent.shape
    assert got.tobytes() == sent.tobytes()  # bit for bit: NaN payloads, -0.0, NaT
    assert got.flags.writeable
    assert got.flags.c_contiguous


def byte_orders(dtype: Any) -> Any:
    return st.sampled_from([dtype, dtype.newbyteorder()])


dtypes = (
    hnp.scalar_dtypes()
    | hnp.byte_string_dtypes()
    | hnp.unicode_string_dtypes()
    | hnp.datetime64_dtypes()
    | hnp.timedelta64_dtypes()
).flatmap(byte_orders)


@settings(max_examples=40 * THOROUGH, deadline=None)
@given(
    array=hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)),
    step=st.integers(1, 3),
)
def test_arrays_round_trip_with_dtype_and_shape(array: Any, step: int) -> None:
    if array.ndim:
        array = array[::step]  # a view: not contiguous when step > 1
    for encoder in AVAILABLE:
        with engine(encoder):
            payload = encode({"x": [array]})
        for decoder in AVAILABLE:
            with engine(decoder):
                got = decode(payload)["x"][0]
            assert_same_array(got, array)


@pytest.mark.parametrize(
    "array",
    [
        np.array(3.5),  # 0-d
        np.arange(24, dtype=">f8").reshape(2, 3, 4).transpose(2, 0, 1),  # big-endian, F-ish
        np.array([True, False]),
        np.array([1 + 2j, np.nan * 1j], dtype=np.complex64),
        np.array(["2026-01-02", "NaT"], dtype="datetime64[ns]"),
        np.zeros((0, 3), dtype=np.int16),
        np.array(["", "a"], dtype="U0")[:0],  # itemsize 0
        np.array([b"ab", b"c"]),
    ],
    ids=["0d", "big-endian", "bool", "complex", "datetime64", "empty", "itemsize-0", "bytes"],
)
def test_array_cases(json_engine: str, array: Any) -> None:
    payload = encode(array)
    assert payload.has_markers
    assert list(payload.blobs) == [array.tobytes()]  # out of band, not base64
    assert_same_array(decode(payload), array)


def test_a_decoded_array_is_a_copy_the_receiver_owns(json_engine: str) -> None:
    got = round_trip(np.arange(3))
    got[0] = 7
    assert got.tolist() == [7, 1, 2]


@pytest.mark.parametrize(
    ("scalar", "expected"),
    [
        (np.int64(-(2**63)), -(2**63)),
        (np.uint64(2**64 - 1), 2**64 - 1),
        (np.int8(-3), -3),
        (np.bool_(True), True),
        (np.float32(0.1), float(np.float32(0.1))),
        (np.float16(-0.0), -0.0),
        (np.float64(np.inf), float("inf")),
        (np.float32(np.nan), float("nan")),
    ],
    ids=repr,
)
def test_scalars_arrive_as_the_python_scalar_of_their_value(
    json_engine: str, scalar: Any, expected: Any
) -> None:
    got = round_trip({"v": [scalar]})["v"][0]
    assert type(got) is type(expected)
    assert repr(got) == repr(expected)  # NaN, -0.0 and every bit of the value


def test_numpy_keys_convert_as_their_python_value(json_engine: str) -> None:
    assert round_trip({np.int64(3): 1, np.float32(0.5): 2, np.bool_(False): 3}) == {
        "3": 1,
        "0.5": 2,
        "false": 3,
    }


class Sub(np.ndarray):
    pass


@pytest.mark.parametrize(
    ("value", "type_name", "why"),
    [
        (np.array([1, None], dtype=object), "numpy.ndarray", "dtype object"),
        (np.zeros(2, dtype="i4,f8"), "numpy.ndarray", "no faithful form as bytes"),
        (np.arange(3).view(Sub), f"{__name__}.Sub", "numpy.asarray"),
        (np.ma.masked_array([1, 2], mask=[False, True]), "numpy.ma.MaskedArray", "numpy.asarray"),
        (np.complex128(1j), "numpy.complex128", "no faithful form"),
        (np.datetime64("2026-01-02"), "numpy.datetime64", "no faithful form"),
    ],
    ids=["object", "structured", "subclass", "masked", "complex-scalar", "datetime64-scalar"],
)
def test_numpy_values_with_no_faithful_form_raise(
    json_engine: str, value: Any, type_name: str, why: str
) -> None:
    with pytest.raises(CodecError, match=why) as info:
        encode({"k": [0, value]}, root="args")
    assert (info.value.path, info.value.type_name) == ('args["k"][1]', type_name)
    stand_in = round_trip([value], placeholders=True)[0]
    assert isinstance(stand_in, Unserializable)
    assert stand_in.type_name == type_name


def test_longdouble_beyond_double_precision_raises(json_engine: str) -> None:
    exact = np.longdouble(0.5)
    assert round_trip(exact) == 0.5
    finer = np.longdouble(1) + np.finfo(np.longdouble).eps
    if float(finer) == finer:
        pytest.skip("longdouble is double here")
    with pytest.raises(CodecError, match=r"longdouble|float128"):
        encode(finer)


def _marker(dtype: Any, shape: Any, blob: bytes, index: Any = 0) -> worker_pb2.Payload:
    import json

    data = {"__snakepit__": "ndarray", "dtype": dtype, "shape": shape, "index": index}
    return worker_pb2.Payload(
        codec="json", data=json.dumps(data).encode(), blobs=[blob], has_markers=True
    )


@pytest.mark.parametrize(
    "payload",
    [
        _marker("<f8", [2], b"\x00" * 15),  # short
        _marker("<f8", [2], b"\x00" * 17),  # long
        _marker("|O", [1], b"\x00" * 8),  # object dtype: never sent, never loaded
        _marker("nonsense", [1], b"\x00"),
        _marker(8, [1], b"\x00" * 8),
        _marker("<f8", 1, b"\x00" * 8),
        _marker("<f8", [-1], b""),
        _marker("<f8", [True], b"\x00" * 8),
        _marker("<f8", [1] * 100, b"\x00" * 8),  # more dims than numpy takes
        _marker("<f8", [1], b"\x00" * 8, index=1),
    ],
    ids=str,
)
def test_malformed_array_markers_raise_codec_error(payload: worker_pb2.Payload) -> None:
    with pytest.raises(CodecError, match="malformed 'ndarray' marker"):
        decode(payload)


def test_an_array_where_numpy_is_missing_raises_naming_the_need(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payload = encode({"a": np.arange(3)})
    monkeypatch.setitem(sys.modules, "numpy", None)  # import numpy raises ImportError
    with pytest.raises(CodecError, match="numpy is not installed"):
        decode(payload)


def test_numpy_is_imported_only_for_numpy_payloads() -> None:
    # A fresh interpreter: importing snakepit and encoding plain and unsupported values leaves
    # numpy unimported; decoding an array imports it.
    code = textwrap.dedent(
        """
        import sys
        import snakepit, snakepit.worker
        from snakepit._wire._codec import CodecError, decode, encode
        from snakepit._wire._proto.snakepit.v1.worker_pb2 import Payload
        decode(encode({"a": [1, 2.5, b"x", None]}))
        try:
            encode({"s": {1}})
        except CodecError:
            pass
        assert "numpy" not in sys.modules, "imported numpy"
        data = b'{"__snakepit__":"ndarray","dtype":"<i2","shape":[1],"index":0}'
        array = decode(Payload(codec="json", data=data, blobs=[bytes([1, 0])], has_markers=True))
        print(type(array).__name__, array.tolist())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ndarray [1]"


def _forged(markers: list[dict[str, Any]], blobs: list[bytes]) -> worker_pb2.Payload:
    import json

    data = json.dumps({"x": markers}).encode()
    return worker_pb2.Payload(codec="json", data=data, blobs=blobs, has_markers=True)


@pytest.mark.parametrize(
    "marker",
    [
        {"__snakepit__": "ndarray", "index": 0, "dtype": "|u1", "shape": [4]},
        {"__snakepit__": "bytes", "index": 0},
        {"__snakepit__": "str", "index": 0},
    ],
)
def test_a_blob_named_twice_is_refused(marker: dict[str, Any]) -> None:
    # Our encoder gives each blob one marker; a hostile payload naming one
    # blob a thousand times would turn 1 MiB on the wire into 1 GiB of copies.
    with pytest.raises(CodecError, match="named twice"):
        decode(_forged([marker] * 1000, [b"abcd"]))
    assert decode(_forged([marker], [b"abcd"]))["x"][0] is not None  # once is fine


@pytest.mark.parametrize("dtype", ["U0", "S0", "S", "U"])
def test_a_sizeless_dtype_cannot_ask_for_memory(dtype: str) -> None:
    # numpy turns U0 into U1: a 90-byte payload would allocate gigabytes.
    marker = {"__snakepit__": "ndarray", "index": 0, "dtype": dtype, "shape": [20000, 20000]}
    with pytest.raises(CodecError, match="has no size"):
        decode(_forged([marker], [b""]))


def test_a_zero_size_void_array_still_round_trips() -> None:
    array = np.zeros((3, 2), "V0")
    back = decode(encode(array))
    assert back.dtype == array.dtype
    assert back.shape == array.shape
