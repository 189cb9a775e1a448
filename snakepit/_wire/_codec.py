"""The payload codec shared by the host and the worker: values to ``Payload`` messages and back.

This module runs on both sides of the wire, so it imports only the standard library, the
generated :mod:`snakepit._wire._proto`, and (optionally) ``orjson``; its :class:`CodecError` is
mapped to the public error tree by the host.

Wire format of the ``"json"`` codec (the default)
-------------------------------------------------
``Payload.data`` is one strict RFC 8259 JSON text in UTF-8: no ``NaN``/``Infinity`` literals,
no lone surrogates, integers only in ``[-2**63, 2**64)``, so any JSON parser reads it.

What round-trips, and how (nothing is changed silently; what has no faithful form raises):

- ``None``, ``bool``, ``int`` (any size), ``float`` (NaN, infinities and ``-0.0`` included),
  ``str`` (lone surrogates included), ``list``, ``dict``: unchanged.
- ``bytes``, ``bytearray``, ``memoryview``: as ``bytes``, out of band (not base64).
- numpy (when the value holds numpy values; numpy is never imported otherwise):
  ``ndarray`` of any dtype but object (and structured dtypes that do not survive as bytes),
  0-d and non-contiguous ones included, as an ``ndarray`` with the same dtype (byte order
  too) and shape, writable, C-contiguous; the receiving side needs numpy, else decoding
  raises. numpy scalars (``int64``, ``float32``, ``bool_``...) as the Python ``int``,
  ``float`` or ``bool`` of exactly the same value (``numpy.float64`` already is a float).
- JSON semantics, as :func:`json.dumps` has them: tuples (namedtuples too) arrive as lists,
  enum members as their value, UUIDs as their string, subclasses of str, int, float, list
  and dict as the base type. Dict keys are strings: ``int``/``float``/``bool``/``None`` keys
  (numpy integer and float keys too) are converted as :func:`json.dumps` converts them
  (``1 -> "1"``, ``True -> "true"``, ``None -> "null"``, ``nan -> "NaN"``), and when two keys
  convert to the same string the last one wins.

Everything else raises :class:`CodecError` naming the value's type and path
(``result["a"][3]``, ``args["x"]``): a set, a datetime, a ``Decimal``, a complex, a
dataclass or any other object, a dict key of another type (at the dict's path), an object
array, an ndarray subclass, a complex or datetime64 numpy scalar, a structure that contains
itself (at the place the cycle closes), one nested too deeply for the interpreter's stack.
Opting in to placeholders instead: an :class:`Unserializable` in the value
(``Unserializable.of(x)``) travels as itself, and ``placeholders=True`` replaces every value
with no faithful form by one.

What JSON cannot carry travels as a *marker*: a JSON object holding the key ``"__snakepit__"``,
whose value names the kind::

    {"__snakepit__": "bytes", "index": 0}       a bytes value: Payload.blobs[0], out of band
    {"__snakepit__": "float", "value": "nan"}   a non-finite float: "nan", "inf" or "-inf"
    {"__snakepit__": "int", "hex": "-0x1f..."}  an int outside [-2**63, 2**64)
    {"__snakepit__": "str", "index": 1}         a str with lone surrogates: Payload.blobs[1]
                                                is its UTF-8 encoding with "surrogatepass"
    {"__snakepit__": "ndarray", "index": 2,     a numpy array: Payload.blobs[2] holds its
     "dtype": ">i4", "shape": [3, 2]}           items in C order; dtype is numpy's dtype.str
    {"__snakepit__": "unserializable",          an Unserializable: a description sent on
     "type": "socket.socket", "repr": "..."}    purpose, never in place of a value silently
    {"__snakepit__": "dict", "items": [[k, v]]} a dict that needs escaping: one of its keys is
                                                "__snakepit__" itself or has lone surrogates

In an escaped dict, keys and values are encoded values themselves. ``has_markers`` is true
when ``data`` holds at least one marker; when it is false, :func:`decode` returns the parsed
JSON without walking it.

Encoding runs :mod:`json`'s C encoder with ``allow_nan=False`` and a ``default=`` hook that
writes the bytes, numpy and unserializable markers, and falls back to a Python walk of the
value only when that fails or cannot be trusted (a non-finite float, a key json cannot write,
a key named ``"__snakepit__"``, a possibly huge int, a cycle, a value with no JSON form, whose
path only the walk knows): plain data pays for one C-level encode and, unless
``has_markers``, one C-level parse. ``orjson``, when installed, parses payloads and writes the
walked (tuple-free, acyclic) tree, but never sees user values: orjson 3.13 does not count
nested tuples against its recursion limit and crashes the process on a deep or cyclic tuple,
where json raises. Either way the wire means the same, and a payload written with one engine
reads with the other.

The ``"pickle"`` codec
----------------------
``Payload.data`` is a pickle (protocol 5) and ``Payload.blobs`` its out-of-band buffers. It
carries any picklable object, and runs arbitrary code when loaded: :func:`decode` refuses it
unless ``allow_pickle=True``, for workers and hosts that trust each other. A pool opts in
with ``Pool(..., allow_pickle=True)``: its workers accept pickle and all its calls use it.
"""

from __future__ import annotations

import enum
import importlib
import json
import math
import pickle
import re
import sys
import uuid
from dataclasses import dataclass
from typing import Any, Final, Literal

from snakepit._wire._payload_fields import PayloadFields
from snakepit._wire._proto.snakepit.v1 import worker_pb2

#: The default codec: strict JSON, with markers for what JSON cannot carry.
JSON: Final[Literal["json"]] = "json"
#: The opt-in codec for trusted peers: any picklable value.
PICKLE: Final[Literal["pickle"]] = "pickle"

try:  # An optional extra (snakepit[orjson]); tests switch it off by setting this to None.
    _orjson: Any = importlib.import_module("orjson")
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

_KEY: Final = "__snakepit__"
_KEY_BYTES: Final = b'"__snakepit__"'
_MAX_REPR: Final = 200
_INT_MIN: Final = -(2**63)
_INT_END: Final = 2**64
# An int outside [-2**63, 2**64) has 20 digits, or 19 and a minus sign (orjson reads those as
# floats, so they travel as markers). A float or a string may match too: the walk decides.
_MAYBE_HUGE_INT: Final = re.compile(rb"[0-9]{20}|-[0-9]{19}")
# The same search on long texts: re tries every position (~20 ns a byte), translate and two
# substring searches run at ~1 ns a byte.
_DIGITS_ONLY: Final = bytes(48 if 48 <= b <= 57 else 45 if b == 45 else 32 for b in range(256))
_DIGITS_20: Final = b"0" * 20
_MINUS_DIGITS_19: Final = b"-" + b"0" * 19
_NON_FINITE: Final = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}
_BINARY: Final = (bytes, bytearray, memoryview)
_TYPED_VIEW: Final = (
    "a memoryview of typed or multi-dimensional items would arrive as flat bytes: "
    "send bytes(view), or the array itself"
)


def _typed_view(value: object) -> bool:
    """A memoryview whose items are not single bytes, or with more than one dimension."""
    return isinstance(value, memoryview) and (value.ndim > 1 or value.format not in ("B", "b", "c"))


class CodecError(PayloadFields, ValueError):
    """A value cannot be encoded, or a payload cannot be decoded; the message says why.

    Encoding raises it for a value with no faithful JSON form (a set, a datetime, an object
    ndarray...), a cycle or a structure nested too deeply, naming the value's type and its path
    (``result["a"][3]``, in ``path`` and ``type_name``); and for an unknown codec. Decoding
    raises it for malformed data, an unknown codec, a refused pickle payload, or an ndarray on
    a side without numpy.
    """


# "cannot encode TYPE at PATH: why": PATH is a root name and subscripts, str keys JSON-quoted.
_ERROR_PREFIX: Final = re.compile(
    r'cannot encode (?P<type>\S+) at (?P<path>\w+(?:\[(?:"(?:[^"\\]|\\.)*"|[^\]"]*)\])*): '
)


def error_details(message: str) -> tuple[str | None, str | None]:
    """The ``(path, type_name)`` an encoding :class:`CodecError`'s message names, else Nones.

    A worker sends back only the message of the error it met encoding a result; the host reads
    the path and type from it with this.
    """
    found = _ERROR_PREFIX.search(message)
    if found is None:
        return None, None
    return found["path"], found["type"]


@dataclass(frozen=True, slots=True)
class Unserializable:
    """A description of a value in place of the value: its type name and ``repr()``.

    Nothing is replaced by one silently: a value with no faithful form raises
    :class:`CodecError`. A sender that prefers a description opts in, either per value
    (``Unserializable.of(sock)``) or per encode (``placeholders=True``). It encodes as a marker
    that decodes to an equal :class:`Unserializable`, so a relayed one keeps its meaning.
    Instances are hashable (they may be dict keys).
    """

    #: The qualified name of the value's type: ``"set"``, ``"socket.socket"``, ``"mod.Thing"``.
    type_name: str
    #: ``repr()`` of the value, truncated to 200 characters.
    repr: str

    @classmethod
    def of(cls, value: object) -> Unserializable:
        """Describe ``value``: its qualified type name and its ``repr()`` (200 chars at most)."""
        if isinstance(value, Unserializable):
            return value
        return cls(_clean(_type_name(value)), _short_repr(value))


class _Fallback(Exception):
    """Raised by an encoder hook to abandon a fast path for the next, slower one."""


class _NoForm(Exception):
    """A value of a kind the encoder knows has no faithful form; the message says why."""


def _needs_hook(value: object) -> object:
    raise _Fallback


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


# json's C encoder, called directly: JSONEncoder.encode builds one per call through three
# Python-level methods (~1.5 us of a noop call's ~2 us encode). A fresh one per call all
# the same (its cycle markers are per encode), built with JSONEncoder's own arguments.
_C_ENCODER: Final[Any] = getattr(json.encoder, "c_make_encoder", None)
_C_STR: Final[Any] = json.encoder.encode_basestring


def _to_json(value: object, default: Any) -> str:
    """``value`` as compact strict JSON text (as ``json.dumps``), ``default`` its hook."""
    if _C_ENCODER is None:  # pragma: no cover - an interpreter without json's C speedups
        return json.JSONEncoder(
            ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=default
        ).encode(value)
    # (markers, default, encoder, indent, key_separator, item_separator, sort_keys,
    # skipkeys, allow_nan), as JSONEncoder.iterencode passes them.
    return "".join(_C_ENCODER({}, default, _C_STR, None, ":", ",", False, False, False)(value, 0))


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _type_name(value: object) -> str:
    cls = type(value)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _short_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not break the encode
        text = f"<{_type_name(value)} object; repr() raised {type(exc).__name__}>"
    if len(text) > _MAX_REPR:
        text = text[: _MAX_REPR - 3] + "..."
    return _clean(text)


def _clean(text: str) -> str:
    # Names and reprs go on the wire as they are: lone surrogates become escapes.
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode()


def _format_path(root: str, path: list[object]) -> str:
    parts = [root]
    for step in path:
        if isinstance(step, tuple):  # a dict key
            key = step[0]
            if isinstance(key, str):
                parts.append(f"[{json.dumps(str.__str__(key))}]")
            elif key is None or isinstance(key, bool | int | float):
                parts.append(f"[{_short_repr(key)}]")
            else:
                text = _short_repr(key).replace("]", ")").replace('"', "'")
                parts.append(f"[{text}]")
        else:
            parts.append(f"[{step}]")
    return "".join(parts)


_NO_FORM: Final = (
    "JSON has no faithful form for it (convert it first, e.g. a set to a list or a datetime to "
    "an ISO string; or use pickle with trusted workers: Pool(allow_pickle=True))"
)


def _numpy_scalar(np: Any, value: Any) -> object:
    # A numpy scalar as the Python scalar of exactly its value; None when there is none.
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        number = float(value)
        if number == value or number != number:  # exact (a longdouble may not be)
            return number
    return None


class _Encoding:
    """The state of one encode: blobs gathered, markers emitted, and the walk's path."""

    __slots__ = ("blobs", "markers", "path", "placeholders", "root")

    def __init__(self, placeholders: bool, root: str) -> None:
        self.placeholders = placeholders
        self.root = root
        self.blobs: list[bytes] = []
        self.markers = 0
        self.path: list[object] = []

    def _blob(self, kind: str, data: bytes) -> dict[str, object]:
        self.blobs.append(data)
        self.markers += 1
        return {_KEY: kind, "index": len(self.blobs) - 1}

    def _unserializable(self, value: object) -> dict[str, object]:
        self.markers += 1
        stand_in = Unserializable.of(value)
        return {
            _KEY: "unserializable",
            "type": _clean(stand_in.type_name),
            "repr": _clean(stand_in.repr),
        }

    def _float(self, value: float) -> dict[str, object]:
        self.markers += 1
        return {_KEY: "float", "value": "nan" if value != value else repr(float(value))}

    def _array(self, np: Any, array: Any) -> dict[str, object] | None:
        # C order, the dtype's own byte order; None for a dtype that does not survive as bytes.
        dtype = array.dtype
        if type(array) is not np.ndarray or dtype.hasobject or np.dtype(dtype.str) != dtype:
            return None
        marker = self._blob("ndarray", array.tobytes())
        marker["dtype"] = dtype.str
        marker["shape"] = list(array.shape)
        return marker

    def _error(self, value: object, why: str, steps: list[object] | None = None) -> CodecError:
        type_name = _clean(_type_name(value))
        path = _format_path(self.root, self.path if steps is None else steps)
        return CodecError(
            f"cannot encode {type_name} at {path}: {why}", path=path, type_name=type_name
        )

    def _special(self, value: object) -> tuple[object, bool] | None:
        """What stands for a value JSON cannot write itself, or None for any other value.

        Returns the replacement and whether it is final (a marker, a str) or
        is itself to be encoded (an enum's value, a numpy scalar's Python one).

        :raises _NoForm: a value of a kind handled here with no faithful form (why).
        """
        if isinstance(value, _BINARY):
            if _typed_view(value):
                raise _NoForm(_TYPED_VIEW)
            return self._blob("bytes", bytes(value)), True
        if isinstance(value, uuid.UUID):
            return str(value), True
        if isinstance(value, enum.Enum):
            return value.value, False
        if isinstance(value, Unserializable):
            return self._unserializable(value), True
        np = sys.modules.get("numpy")
        if np is not None:
            if isinstance(value, np.ndarray):
                marker = self._array(np, value)
                if marker is not None:
                    return marker, True
                if type(value) is not np.ndarray:
                    raise _NoForm(
                        "an ndarray subclass would arrive as a plain ndarray: pass numpy.asarray(x)"
                    )
                raise _NoForm(f"an array of dtype {value.dtype} has no faithful form as bytes")
            if isinstance(value, np.generic):
                scalar = _numpy_scalar(np, value)
                if scalar is not None:
                    return scalar, False
        return None

    def hook(self, value: object) -> object:
        """``default=`` of the JSON encoders: what they cannot encode themselves."""
        try:
            found = self._special(value)
        except _NoForm:
            found = None
        if found is not None:
            return found[0]  # the encoder encodes a replacement that is not final
        if self.placeholders:
            return self._unserializable(value)
        raise _Fallback  # the walk names the path

    def walk(self, value: object, active: set[int]) -> object:
        """Return a JSON-ready copy of ``value``, with markers in place of what needs them."""
        # A subclass (IntEnum, StrEnum, numpy.float64...) becomes its plain type, as json writes it.
        if isinstance(value, str):
            text = str.__str__(value)
            if not text.isascii():
                try:
                    text.encode()
                except UnicodeEncodeError:
                    return self._blob("str", text.encode("utf-8", "surrogatepass"))
            return text
        if value is None or value is True or value is False:
            return value
        if isinstance(value, int):
            integer = int.__index__(value)
            if _INT_MIN <= integer < _INT_END:
                return integer
            self.markers += 1
            return {_KEY: "int", "hex": hex(integer)}
        if isinstance(value, float):
            number = float.__float__(value)
            return number if number - number == 0 else self._float(number)
        if isinstance(value, list | tuple | dict):
            if id(value) in active:
                raise self._error(value, "it contains itself (a cycle)")
            active.add(id(value))
            try:
                if isinstance(value, dict):
                    return self._walk_dict(value, active)
                out = []
                for index, item in enumerate(value):
                    self.path.append(index)
                    out.append(self.walk(item, active))
                    self.path.pop()
                return out
            finally:
                active.discard(id(value))
        try:
            found = self._special(value)
        except _NoForm as exc:
            if not self.placeholders:
                raise self._error(value, str(exc)) from None
            found = None
        if found is not None:
            replacement, final = found
            return replacement if final else self.walk(replacement, active)
        if self.placeholders:
            return self._unserializable(value)
        raise self._error(value, _NO_FORM)

    def _walk_dict(self, value: dict[Any, Any], active: set[int]) -> object:
        escape = False
        items: list[tuple[object, object]] = []
        for key, item in value.items():
            self.path.append((key,))
            new_key = self._key(key, active)
            if not isinstance(new_key, str) or new_key == _KEY:
                escape = True
            items.append((new_key, self.walk(item, active)))
            self.path.pop()
        if escape:
            self.markers += 1
            return {_KEY: "dict", "items": [list(pair) for pair in items]}
        return dict(items)

    def _key(self, key: object, active: set[int]) -> object:
        # As json.dumps converts keys; anything else goes in an escaped dict as a marker.
        if isinstance(key, str):
            return self.walk(key, active)  # a str, or a marker for lone surrogates
        if key is None or key is True or key is False:
            return json.dumps(key)
        if isinstance(key, int):
            try:
                return int.__repr__(key)
            except ValueError:  # more digits than int-to-str conversion allows
                pass
        elif isinstance(key, float):
            if key - key == 0:
                return float.__repr__(key)
            return "NaN" if key != key else ("Infinity" if key > 0 else "-Infinity")
        elif isinstance(key, uuid.UUID):
            return str(key)
        elif isinstance(key, enum.Enum):
            return self._key(key.value, active)
        elif isinstance(key, Unserializable):
            return self._unserializable(key)
        else:
            np = sys.modules.get("numpy")
            if np is not None and isinstance(key, np.generic):
                scalar = _numpy_scalar(np, key)
                if scalar is not None:
                    return self._key(scalar, active)
        if self.placeholders:
            return self._unserializable(key)
        # The path is the dict's: the key has none of its own.
        why = "a dict key must be a str, int, float, bool, None, UUID or Enum"
        raise self._error(key, why, self.path[:-1])


def _dumps_tree(tree: object) -> bytes:
    # The tree holds only what JSON carries (str keys, finite floats, no tuples, no cycles), so
    # orjson is safe here, and its only failure is depth (more than 254 levels): json takes over.
    orjson = _orjson
    if orjson is not None:
        try:
            data: bytes = orjson.dumps(tree)
        except TypeError:
            pass
        else:
            return data
    return json.dumps(tree, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _maybe_huge_int(data: bytes) -> bool:
    if len(data) < 512:
        return _MAYBE_HUGE_INT.search(data) is not None
    digits = data.translate(_DIGITS_ONLY)
    return _DIGITS_20 in digits or _MINUS_DIGITS_19 in digits


def _encode_json(value: object, placeholders: bool, root: str) -> tuple[bytes, list[bytes], bool]:
    if type(value) is bytes:
        return b'{"__snakepit__":"bytes","index":0}', [value], True
    # The payloads of a call with no arguments and of a tool that returns None.
    if type(value) is dict and not value:
        return b"{}", [], False
    if value is None:
        return b"null", [], False
    encoding = None
    try:
        try:
            text = _to_json(value, _needs_hook)
        except _Fallback:  # bytes, numpy or a value with no JSON form: again, with the hook
            encoding = _Encoding(placeholders, root)
            text = _to_json(value, encoding.hook)
        data = text.encode()
    except Exception:  # NaN, a cycle, surrogates, a key json refuses, no JSON form: walk it
        pass
    else:
        # A user's "__snakepit__" key or a huge int needs the walk too.
        if encoding is None:
            if _KEY_BYTES not in data and not _maybe_huge_int(data):
                return data, [], False
        elif data.count(_KEY_BYTES) == encoding.markers and not _maybe_huge_int(data):
            return data, encoding.blobs, encoding.markers > 0
    encoding = _Encoding(placeholders, root)
    try:
        tree = encoding.walk(value, set())
        return _dumps_tree(tree), encoding.blobs, encoding.markers > 0
    except CodecError:
        raise
    except RecursionError as exc:
        type_name = _clean(_type_name(value))
        raise CodecError(
            f"cannot encode {type_name} at {root}: nested too deeply",
            path=root,
            type_name=type_name,
        ) from exc
    except Exception as exc:  # a container whose own code raised while it was read
        type_name = _clean(_type_name(value))
        path = _format_path(root, encoding.path)
        raise CodecError(
            f"cannot encode {type_name} at {path}: reading it raised {exc!r}",
            path=path,
            type_name=type_name,
        ) from exc


def encode_into(
    payload: worker_pb2.Payload,
    value: object,
    *,
    codec: str = JSON,
    placeholders: bool = False,
    root: str = "result",
) -> None:
    """Encode ``value`` into ``payload``, an existing (sub)message, replacing its fields.

    Filling a field of the request or response in place spares a ``CopyFrom``. On error,
    ``payload`` is left unchanged.

    :param payload: the message to fill (its codec, data, blobs and has_markers are replaced).
    :param value: the value to encode.
    :param codec: :data:`JSON` (the default) or :data:`PICKLE`.
    :param placeholders: with JSON, write an :class:`Unserializable` marker for a value with no
        faithful form instead of raising (an explicit opt-in: the receiver gets a description,
        not the value).
    :param root: the name error paths start with: ``"args"``, ``"result"`` (the default).
    :raises CodecError: unknown codec; a cycle or too deep a structure; a value with no
        faithful JSON form (the error's ``path`` and ``type_name`` name it); with pickle, a
        value that cannot be pickled.
    """
    if codec == JSON:
        data, blobs, has_markers = _encode_json(value, placeholders, root)
    elif codec == PICKLE:
        buffers: list[pickle.PickleBuffer] = []
        try:
            data = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
            blobs = [buffer.raw().tobytes() for buffer in buffers]
        except Exception as exc:
            type_name = _clean(_type_name(value))
            raise CodecError(
                f"cannot pickle {type_name} at {root}: {exc!r}", type_name=type_name
            ) from exc
        has_markers = False
    else:
        raise CodecError(f"unknown codec {codec!r} (expected {JSON!r} or {PICKLE!r})")
    payload.codec = codec
    payload.data = data
    if payload.blobs:
        del payload.blobs[:]
    if blobs:
        payload.blobs.extend(blobs)
    payload.has_markers = has_markers


def encode(
    value: object, *, codec: str = JSON, placeholders: bool = False, root: str = "result"
) -> worker_pb2.Payload:
    """Encode ``value`` as a new ``Payload``; see :func:`encode_into`, which this wraps.

    :raises CodecError: as :func:`encode_into` does.
    """
    payload = worker_pb2.Payload()
    encode_into(payload, value, codec=codec, placeholders=placeholders, root=root)
    return payload


def loads_json(data: bytes) -> Any:
    """The value of JSON ``data`` that holds no markers (``Payload.has_markers`` False).

    What :func:`decode` does for such a JSON payload, without the payload:
    for a reader that checked ``codec`` and ``has_markers`` itself.

    :raises CodecError: malformed data.
    """
    return _loads(data)


def _loads(data: bytes) -> Any:
    orjson = _orjson
    if orjson is not None:
        try:
            return orjson.loads(data)
        except ValueError:  # json reads a few things orjson refuses (deep nesting): ask it
            pass
    try:
        return _DECODER.decode(data.decode())
    except (ValueError, RecursionError) as exc:
        raise CodecError(f"malformed JSON payload: {exc}") from exc


def _restore(node: Any, blobs: _Blobs) -> Any:
    # Walks dicts and lists only: scalars are left where they are.
    if type(node) is dict:
        if _KEY in node:
            return _from_marker(node, blobs)
        for key, item in node.items():
            if type(item) is dict or type(item) is list:
                node[key] = _restore(item, blobs)
    elif type(node) is list:
        for index, item in enumerate(node):
            if type(item) is dict or type(item) is list:
                node[index] = _restore(item, blobs)
    return node


def _from_marker(marker: dict[str, Any], blobs: _Blobs) -> Any:
    kind = marker[_KEY]
    try:
        if kind == "bytes":
            return bytes(blobs.take(marker))
        if kind == "float":
            return _NON_FINITE[marker["value"]]
        if kind == "int":
            digits = marker["hex"]
            if not isinstance(digits, str):
                raise TypeError("hex is not a string")
            return int(digits, 16)
        if kind == "str":
            return bytes(blobs.take(marker)).decode("utf-8", "surrogatepass")
        if kind == "unserializable":
            type_name, text = marker["type"], marker["repr"]
            if not isinstance(type_name, str) or not isinstance(text, str):
                raise TypeError("type and repr must be strings")
            return Unserializable(type_name, text)
        if kind == "dict":
            return {_restore(key, blobs): _restore(item, blobs) for key, item in marker["items"]}
        if kind == "ndarray":
            return _array_from(marker, blobs)
    except CodecError:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise CodecError(f"malformed {kind!r} marker in payload: {exc!r}") from exc
    except MemoryError as exc:
        raise CodecError(
            f"a {kind!r} marker in payload asks for more memory than there is"
        ) from exc
    raise CodecError(f"unknown marker kind {kind!r} in payload")


def _array_from(marker: dict[str, Any], blobs: _Blobs) -> Any:
    blob = blobs.take(marker)
    dtype, shape = marker["dtype"], marker["shape"]
    if not isinstance(dtype, str):
        raise TypeError("dtype is not a string")
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        raise TypeError("shape is not a list of sizes")
    try:
        np: Any = importlib.import_module("numpy")
    except ImportError:
        raise CodecError(
            f"cannot decode an ndarray (dtype {dtype}, shape {shape}): numpy is not installed "
            "on this side; install it, or send lists"
        ) from None
    kind = np.dtype(dtype)
    if kind.hasobject:
        raise ValueError("an object dtype is never sent")
    if kind.itemsize == 0 and kind.kind != "V":  # numpy would make it 1 (U0 -> U1)
        raise ValueError(f"dtype {dtype!r} has no size")
    count = math.prod(shape)
    if len(blob) != count * kind.itemsize:
        raise ValueError(f"{len(blob)} bytes for {count} items of {kind.itemsize}")
    if kind.itemsize == 0:
        return np.zeros(shape, kind)
    # A copy: the array owns writable memory, as the sender's did.
    return np.frombuffer(blob, kind, count).reshape(shape).copy()


class _Blobs:
    """A payload's blobs, each handed out once.

    A marker naming a blob used already is malformed: our encoder never writes
    one, and a hostile one could make 1 MiB on the wire into gigabytes of copies.
    """

    __slots__ = ("_blobs", "_used")

    def __init__(self, blobs: Any) -> None:
        self._blobs = blobs
        self._used: set[int] = set()

    def take(self, marker: dict[str, Any]) -> Any:
        index = marker["index"]
        if type(index) is not int or not 0 <= index < len(self._blobs):
            raise IndexError(f"no blob {index!r} (the payload has {len(self._blobs)})")
        if index in self._used:
            raise ValueError(f"blob {index} is named twice")
        self._used.add(index)
        return self._blobs[index]


def decode(payload: worker_pb2.Payload, *, allow_pickle: bool = False) -> Any:
    """Decode a ``Payload`` made by :func:`encode` back into a value.

    JSON payloads decode with JSON semantics (see the module docstring): markers become
    ``bytes``, non-finite floats, big ints, numpy arrays (numpy is imported then, and
    required) and :class:`Unserializable` descriptions again.
    An empty ``codec`` field is read as JSON.

    :param payload: the message to decode.
    :param allow_pickle: accept the pickle codec; only for a trusted peer, as loading a pickle
        can run any code.
    :raises CodecError: malformed data; an unknown codec; a pickle payload without
        ``allow_pickle``; an ndarray where numpy is not installed.
    """
    codec = payload.codec
    if codec == JSON or not codec:
        value = _loads(payload.data)
        if payload.has_markers:
            try:
                value = _restore(value, _Blobs(payload.blobs))
            except RecursionError as exc:
                raise CodecError("malformed JSON payload: nested too deeply") from exc
        return value
    if codec == PICKLE:
        if not allow_pickle:
            raise CodecError(
                "refusing to decode a pickle payload: loading a pickle can run any code; "
                "allow it only between trusted peers: Pool(..., allow_pickle=True)"
            )
        try:
            return pickle.loads(payload.data, buffers=list(payload.blobs))
        except Exception as exc:
            raise CodecError(f"malformed pickle payload: {exc!r}") from exc
    raise CodecError(f"unknown codec {codec!r} (expected {JSON!r} or {PICKLE!r})")
