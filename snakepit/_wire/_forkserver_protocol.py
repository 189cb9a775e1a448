"""What a host and its fork server say to each other, and how (both ends use this module).

The host (``snakepit.pool._launch._forkserver_client``) talks to the fork
server (``snakepit.worker._forkserver``) over a ``SOCK_SEQPACKET`` socket,
one JSON object per packet, file descriptors passed alongside (``SCM_RIGHTS``):

- host -> server: ``{"op": "spawn", "id": ID, "argv": [...], "cwd": ...}`` (and
  ``"env"`` if it is not the server's own) with three file descriptors (the
  worker's stdin, stdout, stderr) and optionally a fourth, where the worker
  reports ready (its number goes to the worker as ``--ready-fd``); with
  ``--auth-stdin`` in the argv, the stdin (a unix socket) holds the worker's
  secret, which only the worker reads (the server never does);
- server -> host: ``{"op": "ready", "pid": N}`` once, then for each spawn
  ``{"op": "spawned", "id": ID, "pid": N}`` with a pidfd of the worker, or
  ``{"op": "error", "id": ID, "message": ...}`` (``id``: the request's), and
  ``{"op": "exit", "pid": N, "code": C}`` when a worker exits (it reaps them;
  ``code`` as ``Popen.returncode``: negative for a signal; what was left of
  its process group is killed just before it is reaped).

The end of the stream (the peer closed its end, or the socket failed) means
the peer is gone. Runs in the fork server, which starts no thread and no
event loop: plain sockets, no asyncio.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import socket
from collections.abc import Iterable, Sequence
from typing import Any, Final

__all__ = (
    "EXIT",
    "FAILED",
    "MAX_REPLY",
    "MAX_REQUEST",
    "READY",
    "SEND_OVERHEAD",
    "SPAWN",
    "SPAWNED",
    "close_fds",
    "decode",
    "encode",
    "fit_send_buffer",
    "receive",
    "send",
)

#: The ops (the ``"op"`` of each message).
SPAWN: Final = "spawn"
READY: Final = "ready"
SPAWNED: Final = "spawned"
FAILED: Final = "error"
EXIT: Final = "exit"

#: The largest request (a spawn carries the worker's environment).
MAX_REQUEST: Final = 1 << 20
#: The largest message the server sends.
MAX_REPLY: Final = 1 << 16
#: What a socket's send buffer keeps for the kernel's own use (Linux: 32 bytes), with a margin.
SEND_OVERHEAD: Final = 64


def encode(message: dict[str, Any]) -> bytes:
    """One message's packet."""
    return json.dumps(message).encode()


def decode(data: bytes) -> dict[str, Any]:
    """The message in a packet.

    :raises ValueError: not a JSON object.
    """
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError(f"not a message: {data[:200]!r}")
    return message


def send(sock: socket.socket, data: bytes, fds: Sequence[int] = ()) -> None:
    """Send one packet with ``fds`` (the caller keeps and closes its own copies).

    :raises BlockingIOError: a non-blocking socket is full (nothing was sent).
    :raises OSError: the peer is gone.
    """
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def fit_send_buffer(sock: socket.socket, size: int = MAX_REQUEST) -> int:
    """Grow ``sock``'s send buffer to hold ``size`` bytes if allowed; return what it holds.

    A ``SOCK_SEQPACKET`` packet must fit whole in its sender's buffer (on
    Linux ~208 KiB by default, at most twice ``net.core.wmem_max``): a larger
    one fails with ``EMSGSIZE``. The result is never more than ``size``:
    what the peer reads at most (:data:`MAX_REQUEST`).
    """
    with contextlib.suppress(OSError):  # best effort: the kernel caps it silently
        if _send_buffer(sock) - SEND_OVERHEAD < size:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size + SEND_OVERHEAD)
    return max(0, min(size, _send_buffer(sock) - SEND_OVERHEAD))


def _send_buffer(sock: socket.socket) -> int:
    # As the kernel reports it: twice what was asked for (its bookkeeping), capped.
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)


def receive(sock: socket.socket, size: int, most_fds: int) -> tuple[bytes, list[int]] | None:
    """The next packet (up to ``size`` bytes) and the fds that came with it, or None if none waits.

    The fds are received close-on-exec (``socket.recv_fds`` of Python 3.11
    drops its ``flags``: they would be inheritable by whatever the process
    starts) and are the caller's to close. At the end of the stream, or if
    the socket failed, the packet is ``b""`` with no fds (any that came are
    closed here).
    """
    fds = array.array("i")
    try:
        data, ancdata, _flags, _addr = sock.recvmsg(
            size, socket.CMSG_LEN(most_fds * fds.itemsize), socket.MSG_CMSG_CLOEXEC
        )
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b"", []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        close_fds(fds)
        return b"", []
    return data, list(fds)


def close_fds(fds: Iterable[int]) -> None:
    """Close each of ``fds``, one that is closed already quietly."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
