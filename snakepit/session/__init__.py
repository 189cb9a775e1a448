"""Sessions: a store of sessions in the pool's supervision tree, and where they are kept.

Work in progress (issue #13): the backend protocol and its record are here;
the store, the backends and the pool's use of them are being built.
"""

from ._backend import SessionBackend as SessionBackend
from ._backend import SessionRecord as SessionRecord

__all__ = ("SessionBackend", "SessionRecord")
