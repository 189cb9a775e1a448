"""Exit reasons, as OTP names them."""

from __future__ import annotations

from typing import Literal, TypeAlias

#: Why a server stopped: ``"normal"`` (it chose to), ``"shutdown"`` (its
#: supervisor or owner stopped it), ``"killed"`` (``kill()``, no ``terminate``)
#: or the exception that ended it.
ExitReason: TypeAlias = Literal["normal", "shutdown", "killed"] | BaseException


def is_abnormal(reason: ExitReason) -> bool:
    """Return True for the reasons a ``transient`` child is restarted after.

    ``"normal"`` and ``"shutdown"`` are normal exits; ``"killed"`` and every
    exception are abnormal (OTP's rule).
    """
    return reason != "normal" and reason != "shutdown"
