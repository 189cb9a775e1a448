"""Typed session variables: specs, the checks of values, and their stored form (pure, sync).

Each type accepts its good values (canonical forms checked) and refuses bad
ones with the constraint they break; every constraint is tried at its bounds;
numpy inputs become Python values or Tensors; bad specs raise ConfigError
naming the field. Hypothesis checks, per type, that decode(encode(v)) gives
back the canonical value, that junk only ever raises
VariableValidationError (from validate and from decode), and, per
constraint, that a value is accepted exactly when it holds (refused naming it).
"""

from __future__ import annotations

import json
import math
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepit._wire._variables import TENSOR_DTYPES
from snakepit.errors import ArgumentTypeError, ConfigError, VariableValidationError
from snakepit.session import Tensor, Variable, VariableChange, VariableSpec
from tests._budget import THOROUGH

INT = VariableSpec.make("n", "integer", min=-3, max=7)
FLOAT = VariableSpec.make("t", "float", min=0.0, max=2.0)
STRING = VariableSpec.make("s", "string", max_length=5, pattern=r"[a-z]*")
BOOLEAN = VariableSpec.make("b", "boolean")
CHOICE = VariableSpec.make("c", "choice", choices=["red", "green"])
EMBEDDING = VariableSpec.make("e", "embedding", dimension=3)
TENSOR = VariableSpec.make("x", "tensor", shape=[2, 3], dtype="float32")
ANY_TENSOR = VariableSpec.make("y", "tensor")


def refused(spec: VariableSpec, value: Any, constraint: str) -> VariableValidationError:
    with pytest.raises(
        VariableValidationError, match=f"variable '{spec.name}': {constraint}:"
    ) as e:
        spec.validate(value)
    assert e.value.variable == spec.name
    assert e.value.constraint == constraint
    return e.value


def round_trips(spec: VariableSpec, value: Any) -> Any:
    canonical = spec.validate(value)
    stored = spec.encode(value)
    assert json.loads(json.dumps(stored, allow_nan=False)) == stored
    back = spec.decode(json.loads(json.dumps(stored)))
    assert back == canonical
    assert type(back) is type(canonical)
    return canonical


# -- each type: good values and bad ones --------------------------------------------------


def test_integer() -> None:
    for value in (-3, 0, 7, True.__int__()):
        assert round_trips(INT, value) == value
    assert type(INT.validate(np.int64(5))) is int
    assert INT.validate(np.uint8(7)) == 7
    unbounded = VariableSpec.make("big", "integer")
    assert round_trips(unbounded, 2**63 - 1) == 2**63 - 1
    assert round_trips(unbounded, -(2**63)) == -(2**63)
    refused(unbounded, 2**63, "type")  # past a signed 64-bit int
    for bad in (True, False, 1.0, "1", None, np.float64(1.0), np.bool_(True), [1]):
        refused(INT, bad, "type")
    refused(INT, -4, "min")
    refused(INT, 8, "max")
    refused(INT, np.int64(8), "max")
    refused(INT, 10**5000, "type")  # a message that does not repr the int (4300 digits max)


def test_float() -> None:
    value: Any
    for value in (0.0, 2.0, 0.5, 1, -0.0):
        assert round_trips(FLOAT, value) == float(value)
    assert type(FLOAT.validate(1)) is float
    assert FLOAT.validate(np.float32(0.5)) == 0.5
    assert type(FLOAT.validate(np.float32(0.5))) is float
    assert type(FLOAT.validate(np.float64(0.5))) is float
    assert FLOAT.validate(np.int64(2)) == 2.0
    bad: Any
    for bad in (True, "1.0", None, 1j, [0.5], np.bool_(False)):
        refused(FLOAT, bad, "type")
    refused(FLOAT, -1e-300, "min")
    refused(FLOAT, math.nextafter(2.0, 3.0), "max")
    for bad in (math.nan, math.inf, -math.inf, np.float32("nan"), 10**400):
        refused(FLOAT, bad, "finite")


def test_string() -> None:
    for value in ("", "abcde", "xyz"):
        assert round_trips(STRING, value) == value
    assert type(STRING.validate(np.str_("ab"))) is str
    free = VariableSpec.make("free", "string")
    assert round_trips(free, "héllo \u2603 \U0001f600 \x00") == "héllo \u2603 \U0001f600 \x00"
    for bad in (b"abc", 1, None, ["a"]):
        refused(STRING, bad, "type")
    refused(free, "a\ud800b", "type")  # a lone surrogate
    refused(STRING, "abcdef", "max_length")
    refused(STRING, "ab1", "pattern")
    refused(STRING, "ABC", "pattern")


def test_max_length_counts_characters() -> None:
    spec = VariableSpec.make("s", "string", max_length=2)
    assert spec.validate("\U0001f600\u2603") == "\U0001f600\u2603"  # 2 characters, 7 bytes
    refused(spec, "\U0001f600\u2603a", "max_length")
    empty = VariableSpec.make("s", "string", max_length=0)
    assert empty.validate("") == ""
    refused(empty, "a", "max_length")


def test_pattern_matches_the_whole_string() -> None:
    spec = VariableSpec.make("s", "string", pattern=r"\d+")
    assert spec.validate("123") == "123"
    refused(spec, "123a", "pattern")
    refused(spec, "a123", "pattern")
    refused(spec, "", "pattern")


def test_boolean() -> None:
    assert round_trips(BOOLEAN, True) is True
    assert round_trips(BOOLEAN, False) is False
    assert BOOLEAN.validate(np.bool_(True)) is True
    for bad in (0, 1, "true", None, np.int64(1), 1.0):
        refused(BOOLEAN, bad, "type")


def test_choice() -> None:
    assert round_trips(CHOICE, "red") == "red"
    assert round_trips(CHOICE, "green") == "green"
    refused(CHOICE, "blue", "choices")
    refused(CHOICE, "Red", "choices")
    refused(CHOICE, "", "choices")
    for bad in (0, None, b"red", ["red"]):
        refused(CHOICE, bad, "type")


def test_embedding() -> None:
    assert round_trips(EMBEDDING, [1, 2.5, -3]) == (1.0, 2.5, -3.0)
    assert round_trips(EMBEDDING, (0.0, 0.0, 0.0)) == (0.0, 0.0, 0.0)
    assert EMBEDDING.validate([np.float32(0.5), np.int64(1), 2]) == (0.5, 1.0, 2.0)
    array = EMBEDDING.validate(np.array([0.25, 0.5, 1.0], dtype=np.float32))
    assert array == (0.25, 0.5, 1.0)
    assert all(type(item) is float for item in array)
    assert EMBEDDING.validate(np.arange(3)) == (0.0, 1.0, 2.0)
    for bad in ("abc", b"abc", {1, 2, 3}, None, 1.0, {0: 1.0, 1: 2.0, 2: 3.0}):
        refused(EMBEDDING, bad, "type")
    refused(EMBEDDING, np.zeros((1, 3)), "type")  # not 1-d
    refused(EMBEDDING, [1.0, True, 2.0], "type")
    refused(EMBEDDING, [1.0, "2", 3.0], "type")
    refused(EMBEDDING, np.array([True, False, True]), "type")
    refused(EMBEDDING, [1.0, 2.0], "dimension")
    refused(EMBEDDING, [1.0, 2.0, 3.0, 4.0], "dimension")
    refused(EMBEDDING, [], "dimension")
    refused(EMBEDDING, np.zeros(4), "dimension")
    refused(EMBEDDING, [1.0, math.nan, 2.0], "finite")
    refused(EMBEDDING, np.array([1.0, 2.0, np.inf]), "finite")
    refused(EMBEDDING, [1.0, 2.0, 10**400], "finite")


def test_tensor() -> None:
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = round_trips(TENSOR, values)
    assert tensor == Tensor("float32", (2, 3), values.tobytes())
    assert round_trips(TENSOR, tensor) is not None
    back = TENSOR.decode(TENSOR.encode(values)).to_numpy()
    assert back.dtype == np.float32
    assert back.shape == (2, 3)
    np.testing.assert_array_equal(back, values)
    back[0, 0] = 9  # a new, writable array
    refused(TENSOR, np.zeros((3, 2), dtype=np.float32), "shape")
    refused(TENSOR, np.zeros(6, dtype=np.float32), "shape")
    refused(TENSOR, np.zeros((2, 3), dtype=np.float64), "dtype")
    refused(TENSOR, Tensor("int32", (2, 3), bytes(24)), "dtype")
    for bad in ([[0.0] * 3] * 2, None, b"x" * 24, "x", {"dtype": "float32"}):
        refused(TENSOR, bad, "type")
    refused(ANY_TENSOR, np.zeros(2, dtype=np.complex64), "dtype")
    refused(ANY_TENSOR, np.array(["a"]), "dtype")


def test_tensor_of_every_dtype_round_trips() -> None:
    rng = np.random.default_rng(7)
    for dtype in TENSOR_DTYPES:
        values = (rng.integers(0, 100, size=(2, 2)) % (2 if dtype == "bool" else 100)).astype(dtype)
        tensor = round_trips(ANY_TENSOR, values)
        assert tensor.dtype == dtype
        assert tensor.itemsize == values.itemsize
        back = tensor.to_numpy()
        assert back.dtype == values.dtype
        np.testing.assert_array_equal(back, values)


def test_tensor_shapes_and_byte_order() -> None:
    for shape in ((), (0,), (0, 3), (1, 1, 1), (5,)):
        values = np.ones(shape, dtype=np.int16)
        tensor = round_trips(ANY_TENSOR, values)
        assert tensor.shape == shape
        np.testing.assert_array_equal(tensor.to_numpy(), values)
    big_endian = np.arange(4, dtype=">i4")
    tensor = ANY_TENSOR.validate(big_endian)
    assert tensor == ANY_TENSOR.validate(np.arange(4, dtype="<i4"))
    assert tensor.data == bytes([0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0])
    strided = np.arange(12, dtype=np.uint8).reshape(3, 4).T  # Fortran order: copied to C order
    np.testing.assert_array_equal(ANY_TENSOR.validate(strided).to_numpy(), strided)
    nan = Tensor("float64", (1,), np.array([math.nan]).tobytes())
    assert round_trips(ANY_TENSOR, nan) == nan  # a tensor may hold any bytes


def test_tensor_is_checked_when_made() -> None:
    made = Tensor("uint8", [2], bytearray(b"ab"))  # type: ignore[arg-type]
    assert made == Tensor("uint8", (2,), b"ab")
    assert type(made.data) is bytes
    with pytest.raises(ConfigError, match="data: holds 3 bytes") as e:
        Tensor("int16", (2,), b"abc")
    assert e.value.field == "data"
    with pytest.raises(ConfigError, match="dtype: 'complex64' is not one of") as e:
        Tensor("complex64", (1,), bytes(8))
    assert e.value.field == "dtype"
    with pytest.raises(ConfigError, match="shape: dimensions must be >= 0") as e:
        Tensor("int8", (-1,), b"")
    assert e.value.field == "shape"
    with pytest.raises(ArgumentTypeError, match="data: must be bytes, got str"):
        Tensor("int8", (1,), "a")  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError, match="shape: must be a tuple of ints, holds a bool"):
        Tensor("int8", (True,), b"a")
    with pytest.raises(ArgumentTypeError, match=r"array: must be a numpy\.ndarray, got list"):
        Tensor.from_numpy([1, 2])
    with pytest.raises(ConfigError, match="dtype: object is not one of"):
        Tensor.from_numpy(np.array([None]))
    assert "1000000 bytes" in repr(Tensor("uint8", (1000000,), bytes(1000000)))


def test_to_numpy_without_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    tensor = Tensor("uint8", (1,), b"\x01")
    monkeypatch.setitem(sys.modules, "numpy", None)  # import numpy raises ImportError
    with pytest.raises(ImportError, match="needs numpy"):
        tensor.to_numpy()
    # Without numpy loaded, values are checked all the same.
    assert EMBEDDING.validate([1, 2, 3]) == (1.0, 2.0, 3.0)
    assert TENSOR.decode(TENSOR.encode(Tensor("float32", (2, 3), bytes(24)))).shape == (2, 3)
    refused(TENSOR, [1.0], "type")


def test_a_tensor_changed_after_it_was_made_is_refused() -> None:
    tensor = Tensor("uint8", (2,), b"ab")
    object.__setattr__(tensor, "data", b"abc")
    refused(ANY_TENSOR, tensor, "type")


def test_decode_refuses_garbage() -> None:
    good = TENSOR.encode(np.zeros((2, 3), dtype=np.float32))
    bad: Any
    for bad in (
        None,
        [],
        "AAAA",
        {**good, "extra": 1},
        {**good, "data": "not base64!"},
        {**good, "data": "é"},
        {**good, "data": 5},
        {**good, "dtype": "float128"},
        {**good, "shape": "2x3"},
        {**good, "shape": [2, 2]},  # the data holds 6 floats
    ):
        with pytest.raises(VariableValidationError, match="variable 'x': type:"):
            TENSOR.decode(bad)
    with pytest.raises(VariableValidationError, match="variable 'x': shape:"):
        TENSOR.decode(ANY_TENSOR.encode(np.zeros((3, 2), dtype=np.float32)))
    with pytest.raises(VariableValidationError, match="variable 'e': type:"):
        EMBEDDING.decode("abc")
    with pytest.raises(VariableValidationError, match="variable 'e': type:"):
        EMBEDDING.decode(np.zeros(3))  # the stored form is a list
    with pytest.raises(VariableValidationError, match="variable 'n': type:"):
        INT.decode("1")
    with pytest.raises(VariableValidationError, match="variable 'n': max:"):
        INT.decode(100)


# -- specs ---------------------------------------------------------------------------


def test_spec_fields() -> None:
    assert CHOICE.choices == ("red", "green")
    assert TENSOR.shape == (2, 3)
    assert STRING.pattern == "[a-z]*"
    spec = VariableSpec.make("n", "integer", description="a count")
    assert spec.min is None
    assert spec.description == "a count"
    assert VariableSpec("n", "integer", min=0) == VariableSpec.make("n", "integer", min=0)
    assert hash(CHOICE) == hash(VariableSpec.make("c", "choice", choices=("red", "green")))
    assert VariableSpec.make("n" * 256, "boolean").name == "n" * 256
    assert VariableSpec.make("m", "float", min=1, max=1).validate(1) == 1.0


@pytest.mark.parametrize(
    ("name", "kind", "constraints", "field", "message"),
    [
        ("", "integer", {}, "name", "must not be empty"),
        ("n" * 257, "integer", {}, "name", "257 characters, more than 256"),
        ("a\udc00", "integer", {}, "name", "UTF-8"),
        ("n", "int", {}, "type", "'int' is not one of integer, float"),
        ("n", "integer", {"bogus": 1}, "bogus", "is not a constraint"),
        ("n", "integer", {"choices": ["a"]}, "choices", "does not apply to type 'integer'"),
        ("n", "string", {"min": 0}, "min", "does not apply to type 'string'"),
        ("n", "float", {"max_length": 3}, "max_length", "does not apply"),
        ("n", "boolean", {"pattern": "x"}, "pattern", "does not apply"),
        ("n", "tensor", {"dimension": 3}, "dimension", "does not apply"),
        ("n", "embedding", {"shape": [3]}, "shape", "does not apply"),
        ("n", "choice", {"choices": ["a"], "dtype": "int8"}, "dtype", "does not apply"),
        ("n", "integer", {"min": 2, "max": 1}, "min", "2 is greater than max 1"),
        ("n", "float", {"min": math.nan}, "min", "must be finite"),
        ("n", "float", {"max": math.inf}, "max", "must be finite"),
        ("n", "choice", {}, "choices", "is required for type 'choice'"),
        ("n", "choice", {"choices": []}, "choices", "must not be empty"),
        ("n", "choice", {"choices": ["a", "b", "a"]}, "choices", "must be distinct"),
        ("n", "choice", {"choices": ["\ud800"]}, "choices", "UTF-8"),
        ("n", "string", {"max_length": -1}, "max_length", "must be >= 0"),
        ("n", "string", {"pattern": "(unclosed"}, "pattern", "not a valid regular expression"),
        ("n", "embedding", {}, "dimension", "is required for type 'embedding'"),
        ("n", "embedding", {"dimension": 0}, "dimension", "must be >= 1"),
        ("n", "tensor", {"shape": [2, -1]}, "shape", "dimensions must be >= 0"),
        ("n", "tensor", {"dtype": "float128"}, "dtype", "'float128' is not one of"),
        ("n", "tensor", {"dtype": "complex64"}, "dtype", "is not one of"),
    ],
)
def test_bad_spec(
    name: str, kind: str, constraints: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: .*{message}") as e:
        VariableSpec.make(name, kind, **constraints)
    assert e.value.field == field
    assert not isinstance(e.value, ArgumentTypeError)


@pytest.mark.parametrize(
    ("name", "kind", "constraints", "field"),
    [
        (1, "integer", {}, "name"),
        (None, "integer", {}, "name"),
        ("n", 3, {}, "type"),
        ("n", "integer", {"min": "0"}, "min"),
        ("n", "integer", {"max": True}, "max"),
        ("n", "choice", {"choices": "ab"}, "choices"),
        ("n", "choice", {"choices": ["a", 1]}, "choices"),
        ("n", "string", {"max_length": 2.0}, "max_length"),
        ("n", "string", {"pattern": b"x"}, "pattern"),
        ("n", "embedding", {"dimension": "3"}, "dimension"),
        ("n", "tensor", {"shape": 3}, "shape"),
        ("n", "tensor", {"shape": [2.0]}, "shape"),
        ("n", "tensor", {"dtype": np.float32}, "dtype"),
        ("n", "boolean", {"description": None}, "description"),
    ],
)
def test_spec_argument_of_the_wrong_type(
    name: Any, kind: Any, constraints: dict[str, Any], field: str
) -> None:
    with pytest.raises(ArgumentTypeError, match=f"^{field}: must be") as e:
        VariableSpec.make(name, kind, **constraints)
    assert e.value.field == field


def test_a_spec_built_directly_is_checked() -> None:
    with pytest.raises(ConfigError, match="dimension: is required"):
        VariableSpec("e", "embedding")
    with pytest.raises(ConfigError, match="type: 'nope' is not one of"):
        VariableSpec("e", "nope")  # type: ignore[arg-type]


SPECS = (
    INT,
    FLOAT,
    STRING,
    BOOLEAN,
    CHOICE,
    EMBEDDING,
    TENSOR,
    ANY_TENSOR,
    VariableSpec.make("d", "float", min=-1, description="with a description"),
)


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.type)
def test_spec_json_round_trip(spec: VariableSpec) -> None:
    data = spec.to_json()
    assert json.loads(json.dumps(data)) == data
    assert VariableSpec.from_json(json.loads(json.dumps(data))) == spec
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_to_json_holds_only_the_fields_set() -> None:
    assert BOOLEAN.to_json() == {"name": "b", "type": "boolean"}
    assert TENSOR.to_json() == {"name": "x", "type": "tensor", "shape": [2, 3], "dtype": "float32"}
    assert STRING.to_json() == {
        "name": "s",
        "type": "string",
        "max_length": 5,
        "pattern": "[a-z]*",
    }


def test_from_json_refuses_a_bad_dict() -> None:
    with pytest.raises(ArgumentTypeError, match="spec: must be a dict, got list"):
        VariableSpec.from_json([("name", "n")])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="name: is missing"):
        VariableSpec.from_json({"type": "integer"})
    with pytest.raises(ConfigError, match="type: is missing"):
        VariableSpec.from_json({"name": "n"})
    with pytest.raises(ConfigError, match="_regex: is not a constraint"):
        VariableSpec.from_json({"name": "n", "type": "string", "_regex": "x"})
    with pytest.raises(ConfigError, match="min: does not apply"):
        VariableSpec.from_json({"name": "n", "type": "boolean", "min": 1})
    with pytest.raises(ArgumentTypeError, match="spec: keys must be str"):
        VariableSpec.from_json({"name": "n", "type": "boolean", 1: 2})  # type: ignore[dict-item]


def test_variable_and_change() -> None:
    variable = Variable(INT, 3, 1)
    assert variable.name == "n"
    assert variable.version == 1
    change = VariableChange("n", None, 3, 1, "host")
    assert (change.old, change.new, change.source) == (None, 3, "host")


def test_the_module_does_not_import_numpy() -> None:
    import snakepit._wire._variables as module

    source = Path(module.__file__).read_text()
    assert "import numpy" not in source
    assert 'import_module("numpy")' in source  # only in Tensor.to_numpy


# -- properties ---------------------------------------------------------------------------

FINITE = st.floats(allow_nan=False, allow_infinity=False)

#: For each spec, values it accepts.
VALID: dict[str, tuple[VariableSpec, st.SearchStrategy[Any]]] = {
    "integer": (
        VariableSpec.make("n", "integer"),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
    ),
    "integer-bounded": (INT, st.integers(-3, 7)),
    "float": (VariableSpec.make("f", "float"), FINITE | st.integers(-(2**60), 2**60)),
    "float-bounded": (FLOAT, st.floats(0, 2)),
    "string": (VariableSpec.make("s", "string"), st.text()),
    "string-constrained": (STRING, st.from_regex(r"[a-z]{0,5}", fullmatch=True)),
    "boolean": (BOOLEAN, st.booleans()),
    "choice": (CHOICE, st.sampled_from(["red", "green"])),
    "embedding": (
        EMBEDDING,
        st.lists(FINITE | st.integers(-(2**53), 2**53), min_size=3, max_size=3)
        | st.tuples(FINITE, FINITE, FINITE),
    ),
    "tensor": (
        ANY_TENSOR,
        st.sampled_from(sorted(TENSOR_DTYPES)).flatmap(
            lambda dtype: st.lists(st.integers(0, 3), max_size=3).flatmap(
                lambda shape: st.binary(
                    min_size=math.prod(shape) * TENSOR_DTYPES[dtype],
                    max_size=math.prod(shape) * TENSOR_DTYPES[dtype],
                ).map(lambda data: Tensor(dtype, tuple(shape), data))
            )
        ),
    ),
}

JUNK: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.binary()
    | st.complex_numbers(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner, inner)
        | st.dictionaries(st.text(max_size=5) | st.sampled_from(["dtype", "shape", "data"]), inner)
    ),
    max_leaves=8,
)

ALL_SPECS = [spec for spec, _ in VALID.values()] + [TENSOR]


@pytest.mark.parametrize("kind", VALID)
@settings(max_examples=25 * THOROUGH, deadline=None)
@given(data=st.data())
def test_decode_encode_is_identity_on_valid_values(kind: str, data: st.DataObject) -> None:
    spec, values = VALID[kind]
    value = data.draw(values)
    canonical = spec.validate(value)
    assert spec.validate(canonical) == canonical
    stored = json.loads(json.dumps(spec.encode(value), allow_nan=False))
    assert spec.decode(stored) == canonical


CONSTRAINTS = frozenset(
    {"type", "min", "max", "choices", "max_length", "pattern", "dimension", "shape", "dtype"}
    | {"finite"}
)


@settings(max_examples=30 * THOROUGH, deadline=None)
@given(value=JUNK)
def test_junk_raises_only_validation_errors(value: Any) -> None:
    for spec in ALL_SPECS:
        for check in (spec.validate, spec.decode):
            error: VariableValidationError | None = None
            try:
                check(value)
            except VariableValidationError as exc:
                error = exc
            if error is not None:
                assert error.variable == spec.name
                assert error.constraint in CONSTRAINTS


class TestReviewFindings:
    """Each found by a review; each failed before its fix."""

    def test_integers_and_bounds_stay_within_int64(self) -> None:
        spec = VariableSpec.make("n", "integer")
        assert spec.validate(2**63 - 1) == 2**63 - 1
        with pytest.raises(VariableValidationError, match="64-bit"):
            spec.validate(10**5000)  # its JSON form would not even be written
        with pytest.raises(ConfigError, match="min"):
            VariableSpec.make("n", "integer", min=-(10**5000))

    def test_name_and_type_are_not_constraints(self) -> None:
        with pytest.raises(ConfigError, match="name"):
            VariableSpec.make("x", "integer", name="y")
        with pytest.raises(ConfigError, match="type"):
            VariableSpec.make("x", "integer", type="float")


# -- one property per constraint: accepted exactly when it holds; refused naming it --------


def _verdict(spec: VariableSpec, value: Any) -> str | None:
    """None if ``spec`` accepts ``value``, else the constraint it names."""
    try:
        spec.validate(value)
    except VariableValidationError as exc:
        named = (exc.variable, exc.constraint)
    else:
        return None
    assert named[0] == spec.name
    return named[1]


@settings(max_examples=20 * THOROUGH, deadline=None)
@given(
    low=st.integers(-100, 100),
    span=st.integers(0, 50),
    value=st.integers(-200, 200),
)
def test_integer_min_max(low: int, span: int, value: int) -> None:
    spec = VariableSpec.make("n", "integer", min=low, max=low + span)
    expected = "min" if value < low else "max" if value > low + span else None
    assert _verdict(spec, value) == expected


@settings(max_examples=20 * THOROUGH, deadline=None)
@given(
    low=st.floats(-1e6, 1e6),
    span=st.floats(0, 1e6),
    value=st.floats(allow_nan=True, allow_infinity=True),
)
def test_float_min_max_and_finite(low: float, span: float, value: float) -> None:
    high = low + span
    spec = VariableSpec.make("t", "float", min=low, max=high)
    if not math.isfinite(value):
        expected: str | None = "finite"
    else:
        expected = "min" if value < low else "max" if value > high else None
    assert _verdict(spec, value) == expected


@settings(max_examples=20 * THOROUGH, deadline=None)
@given(limit=st.integers(0, 8), value=st.text(max_size=12))
def test_string_max_length(limit: int, value: str) -> None:
    spec = VariableSpec.make("s", "string", max_length=limit)
    assert _verdict(spec, value) == (None if len(value) <= limit else "max_length")


@settings(max_examples=20 * THOROUGH, deadline=None)
@given(value=st.text(alphabet="ab1-", max_size=6))
def test_string_pattern_matches_the_whole_string(value: str) -> None:
    spec = VariableSpec.make("s", "string", pattern=r"[ab]+")
    whole = bool(value) and set(value) <= {"a", "b"}
    assert _verdict(spec, value) == (None if whole else "pattern")


@settings(max_examples=20 * THOROUGH, deadline=None)
@given(
    choices=st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=4, unique=True),
    value=st.text(max_size=3),
)
def test_choice_choices(choices: list[str], value: str) -> None:
    spec = VariableSpec.make("c", "choice", choices=choices)
    assert _verdict(spec, value) == (None if value in choices else "choices")


@settings(max_examples=20 * THOROUGH, deadline=None)
@given(dimension=st.integers(1, 4), value=st.lists(st.floats(-10, 10), max_size=6))
def test_embedding_dimension(dimension: int, value: list[float]) -> None:
    spec = VariableSpec.make("e", "embedding", dimension=dimension)
    assert _verdict(spec, value) == (None if len(value) == dimension else "dimension")


@settings(max_examples=20 * THOROUGH, deadline=None)
@given(
    shape=st.lists(st.integers(0, 3), max_size=3),
    actual=st.lists(st.integers(0, 3), max_size=3),
    dtype=st.sampled_from(["float32", "int64", "uint8"]),
    actual_dtype=st.sampled_from(["float32", "int64", "uint8"]),
)
def test_tensor_shape_and_dtype(
    shape: list[int], actual: list[int], dtype: str, actual_dtype: str
) -> None:
    spec = VariableSpec.make("x", "tensor", shape=shape, dtype=dtype)
    value = np.zeros(actual, dtype=actual_dtype)
    if actual_dtype != dtype:
        assert _verdict(spec, value) == "dtype"
    else:
        assert _verdict(spec, value) == (None if actual == shape else "shape")
