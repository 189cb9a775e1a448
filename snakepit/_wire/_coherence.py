"""The coherence page: how a worker knows, without asking, that its cached variable is current.

A file of :data:`SLOTS` little-endian 64-bit counters, shared by ``mmap``:
the host maps it read-write and bumps a counter after every write of a
session's variable (:meth:`CoherencePage.bump`: the slot of the
(session, name) pair and, when the whole session changes, the session's own
slot), before the write returns to whoever made it. A worker maps it
read-only. A cached read compares the two counters it noted *before* it
asked the host for the value with the counters now: equal, nothing was
written since the value was read, so it is current; different (a write, or
a hash collision), the worker asks again.

So a read inside a tool that starts after a host's ``set()`` returned never
sees the old value, and a read of an unchanged variable costs two memory
loads and no round trip. No acknowledgements, nothing to wait for: the
counter is bumped before the writer is answered. It needs the host and the
worker on one machine (the pool's run directory); a worker that cannot map
the page does not cache.

One writer (the host's event loop thread) and any number of readers; a
reader may see a counter mid-bump only as "changed" (a counter only grows).
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from collections.abc import Iterable
from typing import Final

__all__ = ("SLOTS", "CoherencePage", "page_path", "session_slot", "variable_slot")

#: Counters in a page (a power of two): collisions only cost a worker a round trip.
SLOTS: Final = 16384
_COUNTER: Final = struct.Struct("<Q")
_SIZE: Final = SLOTS * _COUNTER.size


def page_path(bridge_path: str) -> str:
    """Where the page of the bridge whose socket is at ``bridge_path`` is (beside it)."""
    return bridge_path + ".page"


def variable_slot(session_id: str, name: str) -> int:
    """The counter of the variable ``name`` of the session ``session_id``."""
    return zlib.crc32(f"{session_id}\0{name}".encode(errors="surrogatepass")) & (SLOTS - 1)


def session_slot(session_id: str) -> int:
    """The counter bumped when the session as a whole changes (it ended)."""
    return zlib.crc32(f"{session_id}\0".encode(errors="surrogatepass")) & (SLOTS - 1)


class CoherencePage:
    """A mapped page of counters (see the module's docstring)."""

    __slots__ = ("_map", "path", "writable")

    def __init__(self, page: mmap.mmap, path: str, writable: bool) -> None:
        self._map = page
        #: The file's path.
        self.path = path
        #: True for the host's (it bumps), False for a worker's (it reads).
        self.writable = writable

    @classmethod
    def create(cls, path: str) -> CoherencePage:
        """Make the page at ``path`` (owner-only; it must not exist) and map it read-write.

        :raises OSError: it exists, or cannot be made.
        """
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, _SIZE)
            page = mmap.mmap(fd, _SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        return cls(page, path, writable=True)

    @classmethod
    def open(cls, path: str) -> CoherencePage:
        """Map the page a host made at ``path``, read-only.

        :raises OSError: there is none, or it is not a page (its size is wrong).
        """
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_size != _SIZE:
                raise OSError(f"{path} is not a coherence page")
            page = mmap.mmap(fd, _SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)
        return cls(page, path, writable=False)

    def read(self, slot: int) -> int:
        """The counter ``slot`` now."""
        value: int = _COUNTER.unpack_from(self._map, slot * _COUNTER.size)[0]
        return value

    def bump(self, slot: int) -> None:
        """Add one to the counter ``slot`` (the host's, after a write)."""
        offset = slot * _COUNTER.size
        (value,) = _COUNTER.unpack_from(self._map, offset)
        _COUNTER.pack_into(self._map, offset, (value + 1) & 0xFFFF_FFFF_FFFF_FFFF)

    def variables_written(self, session_id: str, names: Iterable[str]) -> None:
        """Bump the counters of ``names`` of ``session_id``."""
        for name in names:
            self.bump(variable_slot(session_id, name))

    def session_changed(self, session_id: str) -> None:
        """Bump the session's own counter: every cached variable of it is stale."""
        self.bump(session_slot(session_id))

    def close(self) -> None:
        """Unmap it (the file stays: the host removes it with its run directory)."""
        self._map.close()
