"""A worker's secret: how the host hands it over and how connections prove they have it.

Every worker a host starts gets a fresh random secret (:func:`new_secret`),
written as the first bytes of its stdin, a unix socket (not a pipe: a pipe
can be opened through ``/proc/<pid>/fd/0`` by any process of the same user
while the bytes wait there; a socket cannot). The worker reads them before
it imports its adapter, so nothing it starts can read them after.

A connection to its frames socket opens with :func:`frames_preface` (magic,
version, secret) and gets :data:`FRAMES_ACCEPTED` back; a wrong or missing
preface is closed without a word. Its gRPC calls carry :data:`METADATA_KEY`
with the secret in hex. Shared by the host and the worker (no host import).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Final

__all__ = (
    "FRAMES_ACCEPTED",
    "FRAMES_MAGIC",
    "METADATA_KEY",
    "PREFACE_SIZE",
    "SECRET_BYTES",
    "check_preface",
    "frames_preface",
    "metadata_has_token",
    "new_secret",
)

#: The length of a worker's secret.
SECRET_BYTES: Final = 32
#: What a frames connection starts with (then the secret); the last byte is the version.
FRAMES_MAGIC: Final = b"SNKPAUT\x01"
#: The size of a frames connection's preface.
PREFACE_SIZE: Final = len(FRAMES_MAGIC) + SECRET_BYTES
#: The worker's one-byte answer to a good preface (a bad one is closed unanswered).
FRAMES_ACCEPTED: Final = b"+"
#: The gRPC metadata key whose value is the secret in hex.
METADATA_KEY: Final = "snakepit-auth"


def new_secret() -> bytes:
    """A fresh random secret for one worker start."""
    return secrets.token_bytes(SECRET_BYTES)


def frames_preface(secret: bytes | None) -> bytes:
    """The preface a client sends first on a frames connection.

    Without a secret (a worker started by hand, without authentication) the
    secret's place is zeros: such a worker takes any preface.
    """
    return FRAMES_MAGIC + (secret if secret is not None else bytes(SECRET_BYTES))


def metadata_has_token(metadata: object, key: str, token: str) -> bool:
    """Whether gRPC call ``metadata`` carries ``token`` under ``key`` (constant-time compare).

    A value that is not an ASCII str (bytes, or anything else) is not ours:
    ``hmac.compare_digest`` takes ASCII str only.
    """
    for found, value in metadata or ():  # type: ignore[attr-defined]
        if found == key:
            return isinstance(value, str) and value.isascii() and hmac.compare_digest(value, token)
    return False


def check_preface(preface: bytes, secret: bytes) -> bool:
    """Whether ``preface`` is the right one for ``secret`` (compared in constant time)."""
    return hmac.compare_digest(preface, FRAMES_MAGIC + secret)
