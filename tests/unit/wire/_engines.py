"""The codec's two JSON engines (json, orjson when installed), for tests to run on each."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from snakepit._wire import _codec
from snakepit._wire._codec import decode, encode

ORJSON = _codec._orjson  # the module when installed, else None
needs_orjson = pytest.mark.skipif(ORJSON is None, reason="orjson is not installed")
ENGINES = ["json", pytest.param("orjson", marks=needs_orjson)]
#: The engines of this install, for a test that loops over them itself.
AVAILABLE = ["json"] if ORJSON is None else ["json", "orjson"]


@contextmanager
def engine(name: str) -> Iterator[None]:
    """Run the block with the codec's module-level switch set to one JSON engine."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_codec, "_orjson", ORJSON if name == "orjson" else None)
        yield


def round_trip(value: object, **options: Any) -> Any:
    """``value`` encoded, then decoded."""
    return decode(encode(value, **options))
