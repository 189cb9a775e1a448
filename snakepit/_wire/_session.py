"""A session's metadata on the wire: compact JSON, written by the host, read by the worker.

``ExecuteRequest.session_metadata`` carries it: the UTF-8 text of a JSON
object, or nothing at all (no session, or a session without metadata) so
that a call outside a session pays nothing for it. The host encodes a
session's metadata once (:func:`encode_metadata`); the worker decodes it
only when a tool first reads ``ctx.session.metadata`` (:func:`decode_metadata`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NoReturn

__all__ = ("MetadataError", "decode_metadata", "encode_metadata")


class MetadataError(ValueError):
    """Session metadata JSON cannot carry, or bytes that do not hold a JSON object.

    The message names the field (``session_metadata``); the worker refuses a
    call whose metadata does not decode with an INVALID_ARGUMENTS error.
    """


def encode_metadata(metadata: Mapping[str, Any] | None) -> bytes:
    """The wire form of a session's metadata: compact JSON, b"" when empty or None.

    The store has checked the metadata already (str keys, values JSON carries
    unchanged); this only writes it.

    :raises MetadataError: a value JSON has no form for (an object, NaN...).
    """
    if not metadata:
        return b""
    try:
        text = json.dumps(
            metadata if isinstance(metadata, dict) else dict(metadata),
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
        return text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeError is a ValueError
        raise MetadataError(f"session_metadata: not JSON-able: {exc}") from None


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def decode_metadata(data: bytes) -> dict[str, Any]:
    """A session's metadata from its wire form: a new dict each time ({} for b"").

    :raises MetadataError: ``data`` is not the UTF-8 JSON text of an object
        (only a broken or hostile client sends that).
    """
    if not data:
        return {}
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise MetadataError(f"session_metadata: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MetadataError(f"session_metadata: must be a JSON object, got {type(value).__name__}")
    return value
