"""Exit reasons, as OTP names them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

__all__ = ("ExitReason", "Shutdown", "exit_detail", "is_abnormal")


@dataclass(frozen=True, slots=True)
class Shutdown:
    """A shutdown that carries a detail: OTP's ``{shutdown, Term}`` exit reason.

    A normal exit, like ``"shutdown"`` (:func:`is_abnormal` is False for it,
    so a ``transient`` parent does not restart the server), that still says
    why. A supervisor that reaches its restart intensity exits with
    ``Shutdown(ReachedMaxRestartIntensity(...))``. Raise ``Stop(Shutdown(x))``
    in a handler to exit this way. Compares by its detail.
    """

    #: Why: any value (the supervisor's is a ReachedMaxRestartIntensity).
    detail: object

    def __repr__(self) -> str:
        return f"Shutdown({self.detail!r})"

    def __str__(self) -> str:
        detail = self.detail
        if isinstance(detail, BaseException):
            text = f"{type(detail).__name__}: {detail}" if str(detail) else type(detail).__name__
        else:
            text = repr(detail)
        return f"shutdown ({text})"


#: Why a server stopped: ``"normal"`` (it chose to), ``"shutdown"`` (its
#: supervisor or owner stopped it), a :class:`Shutdown` (a shutdown with a
#: detail), ``"killed"`` (``kill()``, no ``terminate``) or the exception that
#: ended it.
ExitReason: TypeAlias = Literal["normal", "shutdown", "killed"] | Shutdown | BaseException


def is_abnormal(reason: ExitReason) -> bool:
    """Return True for the reasons a ``transient`` child is restarted after.

    ``"normal"``, ``"shutdown"`` and every :class:`Shutdown` are normal exits;
    ``"killed"`` and every exception are abnormal (OTP's rule).
    """
    return reason != "normal" and reason != "shutdown" and not isinstance(reason, Shutdown)


def exit_detail(reason: ExitReason) -> object:
    """Return the detail of a :class:`Shutdown` reason, else ``reason`` itself.

    For telling exits apart without caring how they were wrapped, e.g.
    ``isinstance(exit_detail(reason), ReachedMaxRestartIntensity)`` is True
    for a supervisor that gave up.
    """
    return reason.detail if isinstance(reason, Shutdown) else reason
