"""The started page: which calls a worker began, readable by the host after the worker died.

When a worker dies with calls in flight, some of them had started (their tool
may have done part of its work) and some had not (sent, still in the socket
or in the worker's queue). Only the first kind is a crash the caller must
hear about; the second can run on another worker without any chance of
running twice. Asking the worker to report each start over the socket would
cost a frame and a wakeup of the host per call; the page costs a store.

The host makes a small file per frames connection (owner-only, beside the
worker's socket) and names it in the connection's first frame
(``ClientFrame.started_page``). The worker maps it, writes :data:`SIGNATURE`
at its head, and, as each call starts and before its tool runs, writes the
call's request id into slot ``id % SLOTS``, unless the slot holds a larger
id already. The mapping is shared, so what the worker wrote is in the file
even after a ``kill -9``; the host reads it only once the worker's process
has exited. A slot holds the largest id that started with its remainder
(request ids only grow on a connection): the call started if that is its
own id, and did not if it is a smaller one. A larger one (a call that ran
long while :data:`SLOTS` later ones were sent) leaves it unknown: the call
counts as started.

A page still unsigned says that the worker had not read the connection's
first frame, so none of the calls after it: none started. A worker that
cannot map the page says so before it reads anything else
(:data:`NO_PAGE_ID`: a reply to request 0, which no call has); the host then
calls :meth:`StartedPage.refuse`, and the page says nothing from then on:
every call of the connection counts as started (reported as a crash, never
run twice).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import tempfile
from typing import Final

from snakepit._wire._proto.snakepit.v1 import worker_pb2

logger = logging.getLogger("snakepit.worker")

__all__ = (
    "NO_PAGE_ID",
    "SIGNATURE",
    "SIZE",
    "SLOTS",
    "StartedPage",
    "attach_started_page",
    "no_page_notice",
)

#: Slots in a page (a power of two): far more than a worker's calls in flight.
SLOTS: Final = 4096
#: What the worker writes at the head of a page it mapped.
SIGNATURE: Final = b"SPSTART1"
_HEAD: Final = len(SIGNATURE)
#: A page's size in bytes: the signature, then one 8-byte slot per remainder.
SIZE: Final = _HEAD + 8 * SLOTS
_MASK: Final = SLOTS - 1
#: The request id of a worker's notice that it could not map the page (no call has it).
NO_PAGE_ID: Final = 0


class StartedPage:
    """One frames connection's page (see the module's docstring).

    The host makes it with :meth:`create` and reads it with :meth:`started`;
    the worker maps it with :meth:`attach` and writes it with :meth:`mark`.
    The host ends its mapping with :meth:`seal` once the worker's process
    has exited (what it says is kept: 32 KiB), or with :meth:`close` when no
    crash is left to judge; either also removes the file.
    """

    __slots__ = ("_map", "_refused", "_slots", "_snapshot", "path")

    def __init__(self, page: mmap.mmap, path: str) -> None:
        self._map: mmap.mmap | None = page
        self._slots: memoryview | None = memoryview(page)[_HEAD:].cast("Q")
        # After seal(): the page's slots as they were (all 0 when it was unsigned).
        self._snapshot: memoryview | None = None
        self._refused = False  # the worker said it could not map it
        #: Where the file is (removed by :meth:`remove`, :meth:`seal` and :meth:`close`).
        self.path = path

    @classmethod
    def create(cls, directory: str, prefix: str) -> StartedPage:
        """Make an empty page in ``directory`` (owner-only, a name of its own) and map it.

        :raises OSError: the file cannot be made there.
        """
        fd, path = tempfile.mkstemp(prefix=prefix, suffix=".started", dir=directory)
        try:
            os.ftruncate(fd, SIZE)
            page = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        return cls(page, path)

    @classmethod
    def attach(cls, path: str) -> StartedPage:
        """Map the page a host made at ``path``, and sign it (the worker's side).

        :raises OSError: there is none, or it is not a page (its size is wrong).
        """
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_size != SIZE:
                raise OSError(f"{path} is not a started page")
            page = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        page[:_HEAD] = SIGNATURE
        return cls(page, path)

    def mark(self, request_id: int) -> None:
        """Note that the call ``request_id`` starts now (before its tool runs).

        A no-op once the page is closed (a tool thread racing the connection's end).
        """
        slots = self._slots
        try:
            i = request_id & _MASK
            if slots[i] < request_id:  # type: ignore[index]
                slots[i] = request_id  # type: ignore[index]
        except (TypeError, ValueError):  # closed: None, or released under us
            pass

    def started(self, request_id: int) -> bool | None:
        """Whether the call ``request_id`` started; None when the page cannot say.

        It cannot once the worker said it could not map it (:meth:`refuse`),
        once it was closed (:meth:`close`), or when a later call with the
        same remainder started. Unsigned, it says False: the worker had not
        read the connection's first frame. Meaningful once the worker can
        start no more calls (its process exited), or for a call the worker
        has answered.
        """
        if self._refused:
            return None
        slots = self._slots if self._snapshot is None else self._snapshot
        if slots is None:
            return None
        if self._snapshot is None and not self._signed():
            return False
        marked = slots[request_id & _MASK]
        if marked > request_id:
            return None  # overwritten by a later call: it may have started
        return bool(marked == request_id)

    def refuse(self) -> None:
        """The worker said it could not map the page: it says nothing from now on."""
        self._refused = True

    def _signed(self) -> bool:
        return self._map is not None and self._map[:_HEAD] == SIGNATURE

    def remove(self) -> None:
        """Remove the file (the mapping stays readable); a no-op if it is gone."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def seal(self) -> None:
        """Keep what the page says now, unmap it, remove the file (once the worker exited).

        :meth:`started` answers from what was kept. Idempotent; a closed page stays closed.
        """
        if self._map is not None:
            self._snapshot = memoryview(bytes(self._map[_HEAD:])).cast("Q")
        self.close()

    def close(self) -> None:
        """Unmap the page and remove the file (a worker's close: the host keeps its mapping).

        Idempotent.

        :meth:`started` says None from then on, unless :meth:`seal` kept what it said.
        """
        self.remove()
        if self._slots is not None:
            self._slots.release()
            self._slots = None
        if self._map is not None:
            self._map.close()
            self._map = None


def attach_started_page(path: str) -> StartedPage | None:
    """The worker's side of :meth:`StartedPage.attach`; None (logged) where it cannot map it.

    Then the worker must send :func:`no_page_notice` before it reads another
    frame: the host counts every call of the connection as started when the
    worker dies (nothing runs twice, but a call that never started is
    reported as a crash). A page already removed (the host closed the
    connection at once) is no warning.
    """
    try:
        return StartedPage.attach(path)
    except FileNotFoundError:
        logger.debug("the host's started page %s is gone already", path)
    except OSError as exc:
        logger.warning("cannot map the host's started page %s: %s", path, exc)
    return None


def no_page_notice() -> worker_pb2.ServerFrame:
    """What a worker that could not map its started page sends first (see the module)."""
    frame = worker_pb2.ServerFrame()
    frame.responses.add(
        request_id=NO_PAGE_ID,
        error=worker_pb2.ErrorInfo(
            kind=worker_pb2.ErrorInfo.Kind.UNAVAILABLE, message="no started page"
        ),
    )
    return frame
