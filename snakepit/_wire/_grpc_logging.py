"""Import grpc with its C core's logging at ERROR, without touching ``os.environ``.

grpc logs at INFO to stderr by default (e.g. "Got goaway" whenever a worker
stops while a host is connected): routine for a pool, noise to its users.
The C core reads ``GRPC_VERBOSITY`` once, when grpc is imported, and offers
no other switch (grpcio exposes no call to set it, nor the C symbol). So the
first module of snakepit that needs grpc imports this one first (the
generated ``_proto`` package does too): it sets ``GRPC_VERBOSITY=ERROR`` in
the C environment (``os.putenv``, which the C core's ``getenv`` reads) for
the length of grpc's import only, and unsets it again. ``os.environ``, the
mapping Python code (another thread, too) reads, is never written. A value
the user set is left alone; so is a grpc imported before (then its logging
is what it is). A process that another thread starts during that import
(``env`` not given: it inherits the C environment) gets the variable too.
``import snakepit`` itself loads no grpc and changes no environment variable;
worker processes get ``GRPC_VERBOSITY`` in the environment their launcher
gives them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Final

__all__ = ("QUIET", "VARIABLE", "import_grpc_quietly", "quiet_environment")

#: The environment variable grpc's C core reads at import, and the level snakepit wants.
VARIABLE: Final = "GRPC_VERBOSITY"
QUIET: Final = "ERROR"


def import_grpc_quietly() -> None:
    """Import grpc at ``GRPC_VERBOSITY=ERROR`` unless the user set it; ``os.environ`` untouched."""
    if "grpc" in sys.modules or VARIABLE in os.environ:
        import grpc

        return
    # os.environ set in os.putenv's place would be seen, for the length of the
    # import, by every thread that reads it (and copies it into a child's env).
    os.putenv(VARIABLE, QUIET)
    try:
        import grpc  # noqa: F401
    finally:
        os.unsetenv(VARIABLE)


def quiet_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default: this process's) with ``GRPC_VERBOSITY=ERROR`` unless it has one.

    What a worker process is started with: its grpc logs errors only.
    """
    quiet = dict(os.environ if env is None else env)
    quiet.setdefault(VARIABLE, QUIET)
    return quiet


import_grpc_quietly()
