"""Typed session variables: their specs, the checks of their values, and their stored form.

Pure: no I/O and no event loop. numpy is never imported here unless a
:class:`Tensor` is turned into an array (:meth:`Tensor.to_numpy`); numpy
values are recognised when numpy is already loaded (a value cannot be one
otherwise).

A :class:`VariableSpec` is a variable's name, its :data:`VariableType` and
the constraints of that type. :meth:`VariableSpec.validate` turns a value
into its canonical form (or raises
:class:`~snakepit.errors.VariableValidationError` naming the constraint
broken), :meth:`~VariableSpec.encode` that into a JSON-able value, and
:meth:`~VariableSpec.decode` back::

    integer    int (not bool; numpy integers too)      min, max (inclusive)
    float      float (ints and numpy numbers too)      min, max; finite only
    string     str (encodable as UTF-8)                max_length (characters), pattern
    boolean    bool (numpy.bool_ too)
    choice     str, one of choices                     choices (required)
    embedding  tuple[float, ...] (from a list, tuple   dimension (required); finite only
               or 1-d numpy array)
    tensor     Tensor (or a numpy array)               shape, dtype

A tensor is stored as ``{"dtype": "float32", "shape": [2, 3], "data": "<base64>"}``,
its data the items in C order, little-endian.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import math
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias, get_args

from snakepit.errors import ArgumentTypeError, ConfigError, VariableValidationError, is_int

__all__ = (
    "Tensor",
    "Variable",
    "VariableChange",
    "VariableSpec",
    "VariableType",
    "check_names",
)

#: The types a session variable can have.
VariableType: TypeAlias = Literal[
    "integer", "float", "string", "boolean", "choice", "embedding", "tensor"
]

VARIABLE_TYPES: Final[tuple[str, ...]] = get_args(VariableType)

#: The longest variable name, in characters.
MAX_NAME: Final = 256
#: The range of an integer variable and of numeric bounds (a signed 64-bit int's).
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**63 - 1

#: The tensor dtypes supported (numpy's names), and the bytes of one item of each.
TENSOR_DTYPES: Final[Mapping[str, int]] = {
    "bool": 1,
    "int8": 1,
    "int16": 2,
    "int32": 4,
    "int64": 8,
    "uint8": 1,
    "uint16": 2,
    "uint32": 4,
    "uint64": 8,
    "float16": 2,
    "float32": 4,
    "float64": 8,
}

# The constraints each type takes (besides description, which every type takes).
_CONSTRAINTS: Final[Mapping[str, frozenset[str]]] = {
    "integer": frozenset({"min", "max"}),
    "float": frozenset({"min", "max"}),
    "string": frozenset({"max_length", "pattern"}),
    "boolean": frozenset(),
    "choice": frozenset({"choices"}),
    "embedding": frozenset({"dimension"}),
    "tensor": frozenset({"shape", "dtype"}),
}
_REQUIRED: Final[Mapping[str, str]] = {"choice": "choices", "embedding": "dimension"}
_ALL_CONSTRAINTS: Final = frozenset(
    {"min", "max", "choices", "max_length", "pattern", "dimension", "shape", "dtype"}
)
_TENSOR_KEYS: Final = frozenset({"dtype", "shape", "data"})


def _numpy() -> Any:
    """The numpy module if it is loaded, else None (then no value is a numpy value)."""
    return sys.modules.get("numpy")


def _kind(value: object) -> str:
    """The type of ``value``, by name (safe on any object, unlike its repr)."""
    return type(value).__qualname__


def _show(value: object, limit: int = 60) -> str:
    """A short repr of ``value`` for a message; never raises."""
    if is_int(value) and value.bit_length() > 128:
        return f"an int of {value.bit_length()} bits"
    try:
        text = repr(value)
    except Exception:
        return f"a {_kind(value)}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _utf8(text: str) -> bool:
    """True if ``text`` encodes as UTF-8 (has no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_tensor_fields(dtype: object, shape: object, data: object) -> tuple[str, tuple[int, ...]]:
    """Check a tensor's parts; the dtype and the shape as a tuple.

    :raises ArgumentTypeError: a part of the wrong Python type.
    :raises ConfigError: an unsupported dtype, a negative dimension, or data
        whose length is not the shape's items times the dtype's itemsize.
    """
    if not isinstance(dtype, str):
        raise ArgumentTypeError("dtype", f"must be a str, got {_kind(dtype)}")
    itemsize = TENSOR_DTYPES.get(dtype)
    if itemsize is None:
        raise ConfigError("dtype", f"{_show(dtype)} is not one of {', '.join(TENSOR_DTYPES)}")
    dims = _check_shape("shape", shape)
    if not isinstance(data, bytes):
        raise ArgumentTypeError("data", f"must be bytes, got {_kind(data)}")
    expected = math.prod(dims) * itemsize
    if len(data) != expected:
        raise ConfigError(
            "data",
            f"holds {len(data)} bytes; shape {dims} of {dtype} needs {expected}",
        )
    return dtype, dims


def _check_shape(name: str, shape: object) -> tuple[int, ...]:
    """``shape`` (a list or tuple of ints >= 0) as a tuple; ArgumentTypeError/ConfigError."""
    if not isinstance(shape, list | tuple):
        raise ArgumentTypeError(name, f"must be a tuple of ints, got {_kind(shape)}")
    for dim in shape:
        if not is_int(dim):
            raise ArgumentTypeError(name, f"must be a tuple of ints, holds a {_kind(dim)}")
        if dim < 0:
            raise ConfigError(name, f"dimensions must be >= 0, got {_show(tuple(shape))}")
    return tuple(int(dim) for dim in shape)


@dataclass(frozen=True, slots=True, repr=False)
class Tensor:
    """A tensor value: a dtype, a shape and its items' raw bytes, in C order.

    ``dtype`` is numpy's name of it (``"float32"``, ``"int64"``, ``"uint8"``,
    ``"bool"``...). ``data`` holds the items in C order, little-endian, and its length is
    always ``prod(shape) * itemsize`` (checked when made: :class:`ConfigError`
    naming the field, or :class:`ArgumentTypeError` for a part of the wrong
    type; a ``bytearray`` or ``memoryview`` is copied into ``bytes``).
    Supported dtypes: ``bool``, ``int8``/``16``/``32``/``64``,
    ``uint8``/``16``/``32``/``64``, ``float16``/``32``/``64``. Two tensors
    are equal when their dtype, shape and bytes are.
    """

    dtype: str
    shape: tuple[int, ...]
    data: bytes

    def __post_init__(self) -> None:
        data: object = self.data
        if isinstance(data, bytearray | memoryview):
            data = bytes(data)
        _, shape = _check_tensor_fields(self.dtype, self.shape, data)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "data", data)

    def __repr__(self) -> str:
        return f"Tensor(dtype={self.dtype!r}, shape={self.shape!r}, <{len(self.data)} bytes>)"

    @property
    def itemsize(self) -> int:
        """The bytes of one item."""
        return TENSOR_DTYPES[self.dtype]

    def to_numpy(self) -> Any:
        """The tensor as a new, writable ``numpy.ndarray`` of its dtype and shape (native order).

        :raises ImportError: numpy is not installed.
        """
        try:
            np: Any = importlib.import_module("numpy")
        except ImportError as exc:
            raise ImportError(
                f"Tensor.to_numpy needs numpy, which is not installed "
                f"(pip install numpy); the tensor is {self!r}"
            ) from exc
        stored = np.dtype(self.dtype).newbyteorder("<")
        array = np.frombuffer(self.data, dtype=stored).reshape(self.shape)
        return array.astype(np.dtype(self.dtype), copy=True)

    @classmethod
    def from_numpy(cls, array: Any) -> Tensor:
        """A tensor of a ``numpy.ndarray``'s dtype, shape and items (copied).

        :raises ArgumentTypeError: ``array`` is not an ndarray.
        :raises ConfigError: its dtype is not supported (``field`` is ``"dtype"``).
        """
        np = _numpy()
        if np is None or not isinstance(array, np.ndarray):
            raise ArgumentTypeError("array", f"must be a numpy.ndarray, got {_kind(array)}")
        name = array.dtype.name
        if array.dtype.kind not in "biuf" or name not in TENSOR_DTYPES:
            raise ConfigError("dtype", f"{name} is not one of {', '.join(TENSOR_DTYPES)}")
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        return cls(name, tuple(int(dim) for dim in array.shape), little.tobytes(order="C"))


@dataclass(frozen=True, slots=True)
class VariableSpec:
    """A session variable's name, type and constraints; make one with :meth:`make`.

    Each constraint applies to some types only (see :mod:`snakepit.session`);
    those not set are None. A spec is checked when made, also when built
    directly (``VariableSpec("n", "integer", min=0)``).

    :param name: the variable's name: a non-empty str of at most 256 characters.
    :param type: one of :data:`VariableType`.
    :param min: integer, float: the smallest value allowed (inclusive).
    :param max: integer, float: the largest value allowed (inclusive).
    :param choices: choice (required): the allowed strings, distinct, at least one.
    :param max_length: string: the most characters allowed.
    :param pattern: string: a regular expression the whole value must match
        (``re.fullmatch``).
    :param dimension: embedding (required): the number of floats, >= 1.
    :param shape: tensor: the exact shape (each dimension >= 0); None: any.
    :param dtype: tensor: the dtype; None: any supported one (see :class:`Tensor`).
    :param description: free text, for people.
    """

    name: str
    type: VariableType
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    max_length: int | None = None
    pattern: str | None = None
    dimension: int | None = None
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    description: str = ""
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        kind: object = self.type
        if not isinstance(kind, str):
            raise ArgumentTypeError("type", f"must be a str, got {_kind(kind)}")
        if kind not in VARIABLE_TYPES:
            raise ConfigError("type", f"{_show(kind)} is not one of {', '.join(VARIABLE_TYPES)}")
        description: object = self.description
        if not isinstance(description, str):
            raise ArgumentTypeError("description", f"must be a str, got {_kind(description)}")
        allowed = _CONSTRAINTS[kind]
        for constraint in sorted(_ALL_CONSTRAINTS - allowed):
            if getattr(self, constraint) is not None:
                raise ConfigError(constraint, f"does not apply to type {kind!r}")
        required = _REQUIRED.get(kind)
        if required is not None and getattr(self, required) is None:
            raise ConfigError(required, f"is required for type {kind!r}")
        for bound in ("min", "max"):
            value = getattr(self, bound)
            if value is None:
                continue
            if not _is_real(value):
                raise ArgumentTypeError(bound, f"must be an int or a float, got {_kind(value)}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(bound, f"must be finite, got {value!r}")
            if isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
                raise ConfigError(bound, "must be within a signed 64-bit int's range")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ConfigError("min", f"{self.min!r} is greater than max {self.max!r}")
        if self.choices is not None:
            object.__setattr__(self, "choices", _check_choices(self.choices))
        if self.max_length is not None:
            _check_count("max_length", self.max_length, 0)
        if self.pattern is not None:
            if not isinstance(self.pattern, str):
                raise ArgumentTypeError("pattern", f"must be a str, got {_kind(self.pattern)}")
            try:
                regex = re.compile(self.pattern)
            except re.error as exc:
                raise ConfigError("pattern", f"not a valid regular expression: {exc}") from None
            object.__setattr__(self, "_regex", regex)
        if self.dimension is not None:
            _check_count("dimension", self.dimension, 1)
        if self.shape is not None:
            object.__setattr__(self, "shape", _check_shape("shape", self.shape))
        if self.dtype is not None:
            if not isinstance(self.dtype, str):
                raise ArgumentTypeError("dtype", f"must be a str, got {_kind(self.dtype)}")
            if self.dtype not in TENSOR_DTYPES:
                raise ConfigError(
                    "dtype", f"{_show(self.dtype)} is not one of {', '.join(TENSOR_DTYPES)}"
                )

    @classmethod
    def make(cls, name: str, type: str, /, **constraints: Any) -> VariableSpec:
        """A checked spec: ``VariableSpec.make("temperature", "float", min=0, max=2)``.

        ``choices`` and ``shape`` may be lists (kept as tuples).

        :raises ConfigError: naming the bad field: an unknown type or
            constraint, a constraint that does not apply to the type, a
            missing required one, ``min > max``, non-finite bounds, empty or
            repeated choices, a bad regex, ``dimension < 1``, ``max_length <
            0``, a negative dimension of ``shape``, an unsupported dtype, a
            name empty or over 256 characters.
        :raises ArgumentTypeError: an argument of the wrong Python type.
        """
        for key in constraints:
            if key in ("name", "type"):
                raise ConfigError(key, "is given once, as make()'s own argument")
            if key not in _ALL_CONSTRAINTS and key != "description":
                raise ConfigError(key, "is not a constraint of a variable")
        return cls(name, type, **constraints)  # type: ignore[arg-type]

    def validate(self, value: Any) -> Any:
        """The canonical value of ``value`` for this variable (see :mod:`snakepit.session`).

        :raises VariableValidationError: ``value`` breaks the type or a
            constraint; its ``constraint`` is one of ``"type"``, ``"min"``,
            ``"max"``, ``"choices"``, ``"max_length"``, ``"pattern"``,
            ``"dimension"``, ``"shape"``, ``"dtype"``, ``"finite"``.
        """
        kind = self.type
        if kind == "integer":
            return self._bounded(self._integer(value))
        if kind == "float":
            return self._bounded(self._float(value, "a float"))
        if kind == "string":
            return self._string(value)
        if kind == "boolean":
            return self._boolean(value)
        if kind == "choice":
            return self._choice(value)
        if kind == "embedding":
            return self._embedding(value)
        return self._tensor(value)

    def encode(self, value: Any) -> Any:
        """``value``, validated, as a JSON-able value for storage.

        A tensor becomes ``{"dtype": ..., "shape": [...], "data": "<base64>"}``,
        an embedding a list of floats; other values are already JSON-able.

        :raises VariableValidationError: as :meth:`validate`.
        """
        canonical = self.validate(value)
        if self.type == "embedding":
            return list(canonical)
        if self.type == "tensor":
            return {
                "dtype": canonical.dtype,
                "shape": list(canonical.shape),
                "data": base64.b64encode(canonical.data).decode("ascii"),
            }
        return canonical

    def decode(self, data: Any) -> Any:
        """The value :meth:`encode` made ``data`` from (a Tensor; a tuple for an embedding).

        The result is checked as :meth:`validate` checks a value.

        :raises VariableValidationError: ``data`` is not what :meth:`encode`
            makes (constraint ``"type"``), or its value breaks a constraint.
        """
        if self.type == "tensor":
            return self.validate(self._tensor_of(data))
        if self.type == "embedding" and not isinstance(data, list | tuple):
            raise self._error("type", f"must be a list of floats, got {_kind(data)}")
        return self.validate(data)

    def to_json(self) -> dict[str, Any]:
        """The spec as a JSON-able dict: its name, type and the fields that are set."""
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        for key in ("min", "max", "max_length", "pattern", "dimension", "dtype"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.shape is not None:
            out["shape"] = list(self.shape)
        if self.description:
            out["description"] = self.description
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VariableSpec:
        """The spec :meth:`to_json` made ``data`` from.

        :raises ConfigError: ``data`` is not such a dict (an
            :class:`ArgumentTypeError` for a value of the wrong type).
        """
        if not isinstance(data, Mapping):
            raise ArgumentTypeError("spec", f"must be a dict, got {_kind(data)}")
        fields = dict(data)
        for key in ("name", "type"):
            if key not in fields:
                raise ConfigError(key, "is missing from the spec")
        name = fields.pop("name")
        kind = fields.pop("type")
        for key in fields:
            if not isinstance(key, str):
                raise ArgumentTypeError("spec", f"keys must be str, got a {_kind(key)}")
        return cls.make(name, kind, **fields)

    # -- the checks of a value, by type ---------------------------------------------

    def _error(self, constraint: str, problem: str) -> VariableValidationError:
        return VariableValidationError(self.name, constraint, problem)

    def _integer(self, value: object) -> int:
        number: int | None = None
        if is_int(value):
            number = int(value)
        else:
            np = _numpy()
            if np is not None and isinstance(value, np.integer):
                number = int(value)
        if number is None:
            raise self._error("type", f"must be an int, got {_kind(value)}")
        if not INT_MIN <= number <= INT_MAX:  # what every language and store can keep
            raise self._error("type", "must be within a signed 64-bit int's range")
        return number

    def _float(self, value: object, what: str) -> float:
        np = _numpy()
        if _is_real(value) or (np is not None and isinstance(value, np.integer | np.floating)):
            try:
                number = float(value)  # type: ignore[arg-type]
            except OverflowError:
                raise self._error("finite", f"{_show(value)} is too large for a float") from None
            if not math.isfinite(number):
                raise self._error("finite", f"must be finite, got {number!r}")
            return number
        raise self._error("type", f"must be {what}, got {_kind(value)}")

    def _bounded(self, number: float) -> Any:
        if self.min is not None and number < self.min:
            raise self._error("min", f"{_show(number)} is less than {self.min!r}")
        if self.max is not None and number > self.max:
            raise self._error("max", f"{_show(number)} is greater than {self.max!r}")
        return number

    def _text(self, value: object, what: str) -> str:
        if not isinstance(value, str):
            raise self._error("type", f"must be {what}, got {_kind(value)}")
        if not _utf8(value):
            raise self._error("type", "must be encodable as UTF-8 (it holds a lone surrogate)")
        return value if type(value) is str else str.__str__(value)

    def _string(self, value: object) -> str:
        text = self._text(value, "a str")
        if self.max_length is not None and len(text) > self.max_length:
            raise self._error("max_length", f"{len(text)} characters, more than {self.max_length}")
        if self._regex is not None and self._regex.fullmatch(text) is None:
            raise self._error("pattern", f"{_show(text)} does not match {self.pattern!r}")
        return text

    def _boolean(self, value: object) -> bool:
        if isinstance(value, bool):
            return value
        np = _numpy()
        if np is not None and isinstance(value, np.bool_):
            return bool(value)
        raise self._error("type", f"must be a bool, got {_kind(value)}")

    def _choice(self, value: object) -> str:
        text = self._text(value, "a str")
        assert self.choices is not None
        if text not in self.choices:
            raise self._error("choices", f"{_show(text)} is not one of {list(self.choices)!r}")
        return text

    def _embedding(self, value: object) -> tuple[float, ...]:
        items: list[Any] | tuple[Any, ...]
        if isinstance(value, list | tuple):
            items = value
        else:
            np = _numpy()
            if np is None or not isinstance(value, np.ndarray):
                raise self._error(
                    "type", f"must be a list, tuple or 1-d array of floats, got {_kind(value)}"
                )
            if value.ndim != 1:
                raise self._error("type", f"must be a 1-d array, got shape {value.shape}")
            items = value.tolist()
        if len(items) != self.dimension:
            raise self._error("dimension", f"{len(items)} floats, not {self.dimension}")
        return tuple(self._float(item, "a list of floats") for item in items)

    def _tensor(self, value: object) -> Tensor:
        if not isinstance(value, Tensor):
            np = _numpy()
            if np is None or not isinstance(value, np.ndarray):
                raise self._error("type", f"must be a Tensor or a numpy array, got {_kind(value)}")
            try:
                value = Tensor.from_numpy(value)
            except ConfigError as exc:
                raise self._error("dtype", exc.problem) from None
        try:  # again: a Tensor is checked when made, unless its fields were changed since
            _check_tensor_fields(value.dtype, value.shape, value.data)
        except ConfigError as exc:
            raise self._error("dtype" if exc.field == "dtype" else "type", str(exc)) from None
        if self.dtype is not None and value.dtype != self.dtype:
            raise self._error("dtype", f"must be {self.dtype}, got {value.dtype}")
        if self.shape is not None and value.shape != self.shape:
            raise self._error("shape", f"must be {self.shape}, got {value.shape}")
        return value

    def _tensor_of(self, data: object) -> Tensor:
        if not isinstance(data, Mapping) or set(data) != _TENSOR_KEYS:
            raise self._error("type", "must be a dict of a tensor's dtype, shape and data")
        shape, text = data["shape"], data["data"]
        if not isinstance(text, str):
            raise self._error("type", f"a tensor's data must be a base64 str, got {_kind(text)}")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise self._error("type", "a tensor's data is not valid base64") from None
        try:
            return Tensor(data["dtype"], shape, raw)
        except ConfigError as exc:
            raise self._error("type", f"not a tensor: {exc}") from None


@dataclass(frozen=True, slots=True)
class Variable:
    """One variable as read: its spec, value (decoded), version (int >= 1, +1 per write)."""

    spec: VariableSpec
    value: Any
    version: int

    @property
    def name(self) -> str:
        """The variable's name (its spec's)."""
        return self.spec.name


@dataclass(frozen=True, slots=True)
class VariableChange:
    """A change seen by a watch.

    ``old`` is None when the variable was registered, ``new`` None when it
    was deleted; ``version`` is the variable's version after the change;
    ``source`` says who made it: ``"host"``, a worker's id, or
    ``"expired"``/``"deleted"``.
    """

    name: str
    old: Any
    new: Any
    version: int
    source: str


def _is_real(value: object) -> bool:
    """An int or a float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_name(name: object) -> None:
    if not isinstance(name, str):
        raise ArgumentTypeError("name", f"must be a str, got {_kind(name)}")
    if not name:
        raise ConfigError("name", "must not be empty")
    if len(name) > MAX_NAME:
        raise ConfigError("name", f"{len(name)} characters, more than {MAX_NAME}")
    if not _utf8(name):
        raise ConfigError("name", "must be encodable as UTF-8 (it holds a lone surrogate)")


def _check_count(field_name: str, value: object, minimum: int) -> None:
    if not is_int(value):
        raise ArgumentTypeError(field_name, f"must be an int, got {_kind(value)}")
    if value < minimum:
        raise ConfigError(field_name, f"must be >= {minimum}, got {value}")


def _check_choices(choices: object) -> tuple[str, ...]:
    if not isinstance(choices, list | tuple):
        raise ArgumentTypeError("choices", f"must be a tuple of str, got {_kind(choices)}")
    for choice in choices:
        if not isinstance(choice, str):
            raise ArgumentTypeError("choices", f"must be a tuple of str, holds a {_kind(choice)}")
        if not _utf8(choice):
            raise ConfigError("choices", "must be encodable as UTF-8 (one holds a lone surrogate)")
    if not choices:
        raise ConfigError("choices", "must not be empty")
    if len(set(choices)) != len(choices):
        raise ConfigError("choices", f"must be distinct, got {_show(tuple(choices))}")
    return tuple(str.__str__(choice) for choice in choices)


def check_names(names: Iterable[str]) -> list[str]:
    """``names`` as a list of variable names (the host's and the tools' check alike).

    :raises ArgumentTypeError: a str (not an iterable of names), not an
        iterable, or a name that is not a str.
    """
    if isinstance(names, str):
        raise ArgumentTypeError("names", f"must be an iterable of names, not a str: {names!r}")
    try:
        found = list(names)
    except TypeError:
        raise ArgumentTypeError("names", f"must be an iterable of names, got {names!r}") from None
    for name in found:
        if not isinstance(name, str):
            raise ArgumentTypeError("names", f"a variable's name is a str, got {name!r}")
    return found
