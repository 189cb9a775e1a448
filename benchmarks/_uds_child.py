"""The raw-UDS limit row's child process: echo length-prefixed messages on a unix socket.

``python _uds_child.py FD``: FD is its end of a ``socketpair(AF_UNIX,
SOCK_STREAM)``. A message is a 4-byte big-endian length and that many bytes;
the reply is the same message. A plain blocking loop, no asyncio, standard
library only: it reads what the socket has (many messages when the host sent
ahead), then sends every complete message back in one ``sendmsg`` of views
into its receive buffer (no copy of a payload). It exits on EOF.
"""

from __future__ import annotations

import socket
import struct
import sys

HEADER = struct.Struct("!I")
BUFFER = 4 * 1024 * 1024


def send_all(sock: socket.socket, views: list[memoryview]) -> None:
    """Send every view, resuming after a partial ``sendmsg``."""
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]


def serve(sock: socket.socket) -> None:
    """Echo every message until EOF."""
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    start = end = 0  # buf[start:end]: received, not answered yet
    while True:
        if end == len(buf):  # full: move the partial message to the front, or grow
            size = HEADER.unpack_from(buf, start)[0] if end - start >= 4 else 0
            if start == 0:
                view.release()
                buf.extend(bytes(max(len(buf), HEADER.size + size - len(buf))))
                view = memoryview(buf)
            else:
                buf[: end - start] = buf[start:end]
                start, end = 0, end - start
        received = sock.recv_into(view[end:])
        if not received:
            return
        end += received
        replies = []
        while end - start >= HEADER.size:
            size = HEADER.unpack_from(buf, start)[0]
            if end - start - HEADER.size < size:
                break
            replies.append(view[start : start + HEADER.size + size])
            start += HEADER.size + size
        if replies:
            send_all(sock, replies)
            del replies
        if start == end:
            start = end = 0


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    try:
        serve(sock)
    finally:
        sock.close()


if __name__ == "__main__":
    main()
