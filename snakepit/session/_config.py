"""The SessionStore's options, and the checks of what a caller passes it."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias, get_args

from snakepit.errors import ArgumentTypeError, ConfigError, check_int, is_number

from ._backend import SessionBackend, SessionRecord
from ._memory import MemoryBackend

__all__ = ("DEFAULT_TTL", "Affinity", "EndReason", "OnEnd", "SessionStoreConfig")

#: Seconds of disuse after which a session expires, by default (one hour).
DEFAULT_TTL: Final = 3600.0

#: How a session's calls keep to its worker (see the pool).
Affinity: TypeAlias = Literal["hint", "strict_queue", "strict_fail_fast"]
#: Why a session ended: deleted by a caller, or expired (its TTL passed).
EndReason: TypeAlias = Literal["deleted", "expired"]
#: Called with a session's last record and why it ended; a plain function or a
#: coroutine function (what it returns is awaited when awaitable).
OnEnd: TypeAlias = Callable[[SessionRecord, EndReason], object]

AFFINITIES: Final[tuple[str, ...]] = get_args(Affinity)

#: The longest session id, in characters (every call of the session carries it).
MAX_SESSION_ID: Final = 256
#: The largest metadata, as compact JSON in bytes (every call of the session carries it).
MAX_METADATA_BYTES: Final = 64 * 1024

# The sweep's period when none is set: half the smallest TTL, within these bounds.
MIN_SWEEP: Final = 0.05
MAX_SWEEP: Final = 60.0


def derived_sweep_interval(ttl: float) -> float:
    """Half of ``ttl``, kept within [MIN_SWEEP, MAX_SWEEP] seconds."""
    return min(MAX_SWEEP, max(MIN_SWEEP, ttl / 2))


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStoreConfig:
    """The options of a :class:`~snakepit.session.SessionStore`, checked when made.

    Pass the same config to every start of the store (a ``ChildSpec``'s
    ``arg`` is): it holds the backend, so a restarted store finds the
    sessions of the one before.

    :param backend: where sessions are kept; a fresh :class:`MemoryBackend`
        by default. The store never closes it (it outlives the store's
        restarts): whoever made it calls ``aclose()`` when done.
    :param max_sessions: at most this many sessions at once (None: no limit);
        ``create`` beyond it raises :class:`~snakepit.errors.SessionLimitReached`.
    :param sweep_interval: seconds between two sweeps of expired sessions;
        None (default): half the smallest TTL the store has seen, within
        0.05..60 s. The sweep only decides how soon ``on_end`` runs and
        memory is freed: an expired session is never usable in between.
    :param on_end: ``on_end(record, why)``, sync or async, called once for
        each session that ends (``why`` is ``"deleted"`` or ``"expired"``),
        in a task of the store's own, so a slow callback delays no call of
        the store. Its exceptions are logged, never raised.
    :param clock: what the sessions' times are on (``created_at``,
        ``last_used``, expiry): ``time.time`` by default (seconds since the
        epoch: sessions a backend keeps across restarts and hosts expire at
        the same time for all); ``anyio.current_time`` in tests, to drive
        expiry with trio's ``MockClock``.
    :param in_use: ``in_use(session_id)``: True while a call of the session
        runs (a pool sets it): such a session does not expire, whatever its
        TTL (the pool touches it when a long call ends). None: any session
        expires when its TTL passes.
    :param on_variables_written: ``on_variables_written(session_id, names)``,
        called (sync) after each write of a session's variables through a
        :class:`~snakepit.session.SessionVariables` (register, set, update,
        delete) and before that write returns, and with ``names`` None when
        the session ended (deleted or expired: its variables went with it):
        a pool bumps its workers' read caches' counters here. Its exceptions
        propagate to the writer.
    :raises ArgumentTypeError: an option has the wrong type.
    :raises ConfigError: an option's value is out of range.
    """

    backend: SessionBackend = field(default_factory=MemoryBackend)
    max_sessions: int | None = None
    sweep_interval: float | None = None
    on_end: OnEnd | None = None
    in_use: Callable[[str], bool] | None = None
    on_variables_written: Callable[[str, Sequence[str] | None], None] | None = None
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if not isinstance(self.backend, SessionBackend):
            raise ArgumentTypeError(
                "backend", f"must implement SessionBackend, got {self.backend!r}"
            )
        check_int("max_sessions", self.max_sessions, 1, allow_none=True)
        check_seconds("sweep_interval", self.sweep_interval)
        if self.on_end is not None and not callable(self.on_end):
            raise ArgumentTypeError("on_end", f"must be callable or None, got {self.on_end!r}")
        if not callable(self.clock):
            raise ArgumentTypeError("clock", f"must be callable, got {self.clock!r}")
        if self.in_use is not None and not callable(self.in_use):
            raise ArgumentTypeError("in_use", f"must be callable or None, got {self.in_use!r}")
        written = self.on_variables_written
        if written is not None and not callable(written):
            raise ArgumentTypeError(
                "on_variables_written", f"must be callable or None, got {written!r}"
            )


def check_seconds(name: str, value: object) -> None:
    """Check a duration: None or a finite number > 0 (not a bool).

    :raises ArgumentTypeError: not a number.
    :raises ConfigError: not finite and > 0.
    """
    if value is None:
        return
    if not is_number(value):
        raise ArgumentTypeError(name, f"must be a number of seconds > 0 or None, got {value!r}")
    if not (value > 0 and math.isfinite(value)):  # also refuses NaN
        raise ConfigError(name, f"must be a finite number of seconds > 0 or None, got {value!r}")


def check_session_id(value: object, *, allow_none: bool = False) -> None:
    """Check a session id: a non-empty str of at most MAX_SESSION_ID characters (or None).

    None: the store is to choose one.

    :raises ArgumentTypeError: not a str.
    :raises ConfigError: empty, or too long.
    """
    if value is None and allow_none:
        return
    if not isinstance(value, str):
        either = " or None" if allow_none else ""
        raise ArgumentTypeError("session_id", f"must be a str{either}, got {value!r}")
    if not value:
        raise ConfigError("session_id", "must not be empty")
    if len(value) > MAX_SESSION_ID:
        raise ConfigError(
            "session_id", f"must be at most {MAX_SESSION_ID} characters, got {len(value)}"
        )
    _check_utf8("session_id", value)


def _check_utf8(field: str, value: str) -> None:
    """An id travels as UTF-8 (protobuf, Redis): a lone surrogate cannot.

    :raises ConfigError: ``value`` has no UTF-8 form.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(field, f"must be valid Unicode (no lone surrogates): {exc}") from None


def check_worker_id(value: object) -> None:
    """Check a worker id to pin to: a non-empty str, or None to unpin.

    :raises ArgumentTypeError: not a str.
    :raises ConfigError: empty.
    """
    if value is None:
        return
    if not isinstance(value, str):
        raise ArgumentTypeError("worker_id", f"must be a str or None, got {value!r}")
    if not value:
        raise ConfigError("worker_id", "must not be empty")
    _check_utf8("worker_id", value)


def check_affinity(value: object) -> None:
    """Check an affinity mode.

    :raises ArgumentTypeError: not a str.
    :raises ConfigError: not one of :data:`AFFINITIES`.
    """
    if not isinstance(value, str):
        raise ArgumentTypeError("affinity", f"must be one of {AFFINITIES}, got {value!r}")
    if value not in AFFINITIES:
        raise ConfigError("affinity", f"must be one of {AFFINITIES}, got {value!r}")


def checked_metadata(value: object) -> dict[str, Any]:
    """Return a private copy of ``metadata`` after checking it is a JSON-able dict.

    It must be a mapping with str keys that JSON carries unchanged (no NaN or
    infinity, no tuple, no non-str key at any depth), so that every backend
    gives back what was stored, and at most :data:`MAX_METADATA_BYTES` as JSON.
    The copy is made through JSON: nothing the caller keeps shares it.

    :raises ArgumentTypeError: not a mapping, a key that is not a str, or a
        value JSON has no form for (an object, bytes...).
    :raises ConfigError: a value JSON would change (a tuple, NaN, a nested
        non-str key) or cannot carry (a cycle, nesting too deep); too large.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ArgumentTypeError("metadata", f"must be a dict or None, got {value!r}")
    for key in value:
        if not isinstance(key, str):
            raise ArgumentTypeError("metadata", f"keys must be str, got {key!r}")
    try:
        # ensure_ascii off: the text is what the wire carries (UTF-8), and a
        # lone surrogate, which UTF-8 cannot carry, is found below.
        text = json.dumps(dict(value), allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except TypeError as exc:
        raise ArgumentTypeError("metadata", f"must be JSON-able: {exc}") from None
    except ValueError as exc:  # NaN or infinity, a cycle
        raise ConfigError("metadata", f"must be JSON-able: {exc}") from None
    except RecursionError:
        raise ConfigError("metadata", "is nested too deeply for JSON") from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ConfigError("metadata", "must be valid Unicode (no lone surrogates)") from None
    if size > MAX_METADATA_BYTES:
        raise ConfigError(
            "metadata",
            f"must be at most {MAX_METADATA_BYTES} bytes as JSON (it travels with every "
            f"call of the session), got {size}",
        )
    copy: dict[str, Any] = json.loads(text)
    if copy != value:
        raise ConfigError(
            "metadata",
            "must come back unchanged from JSON (no tuples, no non-str keys in nested dicts)",
        )
    return copy
