"""Sessions: a store of sessions in the pool's supervision tree, and where they are kept.

Work in progress (issue #13): the backend protocol and its record are here;
the store, the backends and the pool's use of them are being built.

:class:`RedisBackend` needs the ``redis`` package (``pip install 'snakepit[redis]'``):
it is imported on first use, so snakepit works without it.
"""

from typing import TYPE_CHECKING, Any

from ._backend import SessionBackend as SessionBackend
from ._backend import SessionRecord as SessionRecord

if TYPE_CHECKING:
    from ._redis import RedisBackend as RedisBackend


def __getattr__(name: str) -> Any:
    if name == "RedisBackend":  # the redis package is an extra: loaded on first use
        from ._redis import RedisBackend

        return RedisBackend
    raise AttributeError(f"module 'snakepit.session' has no attribute {name!r}")


__all__ = ("RedisBackend", "SessionBackend", "SessionRecord")
