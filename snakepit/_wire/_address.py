"""Worker addresses: ``unix:PATH`` or ``tcp:HOST:PORT``, read in one place by both sides.

A worker listens where ``--listen`` says and reports the address it bound
(tcp port 0 becomes the port it got); on a unix socket it also serves the
channel's length-prefixed frames on a socket next to it (:meth:`Address.frames`).
The host dials what the report names, after checking it is the address it
chose (:func:`snakepit.pool._launch._process.spawn_worker`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

__all__ = ("Address", "AddressError", "frames_path", "grpc_target", "unix_path")

UNIX: Final = "unix:"
TCP: Final = "tcp:"
#: What the frames socket's path adds to the path of the gRPC socket it goes with.
FRAMES_SUFFIX: Final = ".frames"
#: The highest tcp port.
MAX_PORT: Final = 65535
_PORT_DIGITS: Final = frozenset("0123456789")


class AddressError(ValueError):
    """An address that is neither ``unix:PATH`` nor ``tcp:HOST:PORT``; ``str()`` says which form."""


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed address: a unix socket's absolute path, or a tcp host and port."""

    #: ``"unix"`` or ``"tcp"``.
    kind: Literal["unix", "tcp"]
    #: The socket's absolute path (unix), else "".
    path: str = ""
    #: The host as written (tcp; an IPv6 one keeps its brackets), else "".
    host: str = ""
    #: The port (tcp; 0: any free one), else 0.
    port: int = 0

    @classmethod
    def unix(cls, path: str | os.PathLike[str]) -> Address:
        """The address of the unix socket at ``path`` (relative: under the current directory)."""
        return cls("unix", path=str(Path.cwd() / path))

    @classmethod
    def parse(cls, text: str, *, cwd: str | os.PathLike[str] | None = None) -> Address:
        """Read ``unix:PATH`` or ``tcp:HOST:PORT``.

        A relative PATH is under ``cwd`` (default: the current directory).

        :raises AddressError: any other form, a unix address without a path,
            or a tcp address without a host or a port (ASCII digits, at most
            65535; port 0 is allowed).
        """
        if text.startswith(UNIX):
            if text == UNIX:
                raise AddressError("expected unix:PATH (the path is empty)")
            path = Path(text[len(UNIX) :])
            if not path.is_absolute():
                path = Path(cwd if cwd is not None else os.getcwd()) / path
            return cls("unix", path=str(path))
        if text.startswith(TCP):
            host, sep, port = text[len(TCP) :].rpartition(":")
            if not sep or not host or not _is_port(port):
                raise AddressError("expected tcp:HOST:PORT (port 0 allowed)")
            return cls("tcp", host=host, port=int(port))
        raise AddressError("expected unix:PATH or tcp:HOST:PORT")

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"{UNIX}{self.path}"
        return f"{TCP}{self.host}:{self.port}"

    @property
    def target(self) -> str:
        """What gRPC dials or binds: ``unix:PATH``, or ``HOST:PORT``."""
        return str(self) if self.kind == "unix" else f"{self.host}:{self.port}"

    @property
    def frames(self) -> Address | None:
        """Where a worker serving here serves its frames (a unix socket next to it); None on tcp."""
        return Address("unix", path=frames_path(self.path)) if self.kind == "unix" else None


def _is_port(text: str) -> bool:
    # ASCII digits only: str.isdigit() also takes "²" and "٣", which int()
    # refuses or reads; at most 5 of them, so int() never meets its limit.
    return 0 < len(text) <= 5 and _PORT_DIGITS.issuperset(text) and int(text) <= MAX_PORT


def frames_path(socket_path: str | os.PathLike[str]) -> str:
    """The path of the frames socket that goes with a worker's gRPC socket at ``socket_path``."""
    return os.fspath(socket_path) + FRAMES_SUFFIX


def grpc_target(address: str) -> str:
    """What gRPC dials for ``address``: ``HOST:PORT`` for ``tcp:``, anything else as it is.

    Lenient (no :class:`AddressError`): an address that is not one fails
    when gRPC dials it, as a connection that cannot be made.
    """
    return address[len(TCP) :] if address.startswith(TCP) else address


def unix_path(address: str) -> str | None:
    """The socket path of a ``unix:PATH`` address, as written; None for any other."""
    return address[len(UNIX) :] if address.startswith(UNIX) else None
