"""Every exception snakepit raises, in one tree.

::

    SnakepitError
    ├── ConfigError (also ValueError)           bad input, caught where it is given
    │   ├── InvalidChildSpec                     a child spec field is wrong
    │   └── ArgumentTypeError (also TypeError)   an argument or option of the wrong type
    ├── OTPError                                 the supervision core (snakepit.otp)
    │   ├── CallTimeout (also TimeoutError)      no reply within the call's timeout
    │   ├── WaitTimeout (also TimeoutError)      a wait (rebound, stable, ready) ran out of time
    │   ├── ServerExited                         the server is dead or died during a call
    │   ├── NameTaken                            a registered name is already held
    │   ├── NameNotFound (also LookupError)      no live server holds that name
    │   ├── DuplicateChild                       a child id is already in a supervisor
    │   ├── ChildNotFound (also LookupError)     no such child id or ref in a supervisor
    │   ├── MaxChildrenReached                   a DynamicSupervisor is full
    │   ├── ChildStartError                      a child's ``init`` failed (cause chained)
    │   └── ReachedMaxRestartIntensity           too many restarts in the window
    ├── WorkerError                              a worker process, or a call to it, failed
    │   ├── WorkerStartError                     exited or timed out before its ready line
    │   ├── WorkerCrashed                        the process died with the call in flight
    │   ├── WorkerUnavailable                    the connection to the worker broke
    │   │   └── WorkerStopping                   it is stopping and refused the call unrun
    │   ├── ExecutionTimeout (also TimeoutError) the call's timeout passed
    │   ├── PayloadTooLarge                      over the size limit (connection unharmed)
    │   ├── PayloadError (also ValueError)       arguments or result cannot be (de)coded
    │   └── RemoteError                          the tool raised: type, message, traceback
    │       ├── ToolNotFound                     no tool of that name
    │       └── InvalidArguments                 the arguments do not fit the signature
    ├── PoolError                                the pool as a whole
    │   ├── PoolStartError                       a worker failed to start; nothing left running
    │   ├── PoolClosed                           the pool is not running (not entered, or left)
    │   ├── PoolDegraded                         workers kept crashing: the pool gave up
    │   ├── QueueFull                            max_queue calls are already waiting
    │   ├── QueueTimeout (also TimeoutError)     no worker came free in time; the tool did not run
    │   ├── WorkerBusy                           a strict_fail_fast session's worker is busy
    │   └── WrongEventLoop (also RuntimeError)   called from another event loop than its own
    └── SessionError                             a session (snakepit.session)
        ├── SessionNotFound (also LookupError)   no such session: never made, deleted or expired
        ├── SessionExists                        an explicit session id is already in use
        ├── SessionLimitReached                  max_sessions sessions exist already
        ├── SessionWorkerLost                    a strict session's worker died or was replaced
        ├── SessionBackendError                  the backend's storage failed (cause chained)
        └── VariableError                        a session variable (snakepit.session)
            ├── VariableNotFound (also LookupError)  the session has no variable of that name
            ├── VariableExists                   a variable of that name is registered already
            └── VariableValidationError (also ValueError)  a value breaks its type or a constraint
    └── BridgeError                              a tool's call to the host (ctx.call_host) failed
        ├── HostToolNotFound (also LookupError)  the host registered no tool of that name
        ├── HostToolFailed                       the host tool raised (its type and message)
        ├── BridgeUnavailable                    no bridge (a worker without one), or unreachable
        ├── BridgeSessionNotFound                (also SessionNotFound) ctx.session.variables:
        │                                        the session is gone, or not this worker's
        ├── BridgeVariableNotFound               (also VariableNotFound)
        ├── BridgeVariableExists                 (also VariableExists)
        └── BridgeValidationError                (also VariableValidationError)

Inside a tool, ``ctx.session.variables`` raises the ``Bridge*`` forms of the
session errors: ``except VariableNotFound`` catches it on either side, and
``except BridgeError`` everything a tool's call to its host can raise.

Closed versus broken, as trio separates them: using something you stopped
yourself, or giving bad input, is a :class:`ConfigError` or a
:class:`ServerExited` whose reason is ``"normal"``/``"shutdown"``; a peer that
died abnormally is a :class:`ServerExited` whose ``reason`` is the exception
that ended it (also chained as ``__cause__``).
"""

from __future__ import annotations

import pickle
import signal
from typing import TYPE_CHECKING, Any, TypeGuard

from snakepit._wire._payload_fields import PayloadFields

if TYPE_CHECKING:
    from snakepit.otp._reasons import ExitReason

__all__ = (
    "ArgumentTypeError",
    "BridgeError",
    "BridgeSessionNotFound",
    "BridgeUnavailable",
    "BridgeValidationError",
    "BridgeVariableExists",
    "BridgeVariableNotFound",
    "CallTimeout",
    "ChildNotFound",
    "ChildStartError",
    "ConfigError",
    "DuplicateChild",
    "ExecutionTimeout",
    "HostToolFailed",
    "HostToolNotFound",
    "InvalidArguments",
    "InvalidChildSpec",
    "MaxChildrenReached",
    "NameNotFound",
    "NameTaken",
    "OTPError",
    "PayloadError",
    "PayloadTooLarge",
    "PoolClosed",
    "PoolDegraded",
    "PoolError",
    "PoolStartError",
    "QueueFull",
    "QueueTimeout",
    "ReachedMaxRestartIntensity",
    "RemoteError",
    "ServerExited",
    "SessionBackendError",
    "SessionError",
    "SessionExists",
    "SessionLimitReached",
    "SessionNotFound",
    "SessionWorkerLost",
    "SnakepitError",
    "ToolNotFound",
    "VariableError",
    "VariableExists",
    "VariableNotFound",
    "VariableValidationError",
    "WaitTimeout",
    "WorkerBusy",
    "WorkerCrashed",
    "WorkerError",
    "WorkerStartError",
    "WorkerStopping",
    "WorkerUnavailable",
    "WrongEventLoop",
)


class SnakepitError(Exception):
    """Base class of every error snakepit raises on purpose.

    Every one pickles with its fields, whatever its constructor takes (an
    error that crosses a process: multiprocessing, a pytest-xdist worker). A
    field that cannot cross a process (a server's ref: it lives in one event
    loop) arrives as its ``repr()``.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's own reduce calls the class with ``args`` (the message),
        # which a constructor with other parameters refuses or misreads.
        return (_rebuild, (type(self), self.args), _portable(self.__dict__))


class ConfigError(SnakepitError, ValueError):
    """An argument, option or spec is invalid; the message names the field.

    Raised where the mistake is made (a constructor, ``start``, ``call``),
    before anything is started.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        #: The name of the offending field or argument.
        self.field = field
        #: What is wrong with it.
        self.problem = problem


class InvalidChildSpec(ConfigError):
    """A :class:`~snakepit.otp.ChildSpec` field is invalid."""


class ArgumentTypeError(ConfigError, TypeError):
    """An argument or option has the wrong type (``timeout="5"``, ``tool=123``).

    A :class:`ConfigError` naming the argument in ``field``, and also a
    ``TypeError``, which is what Python raises for a wrong type: either
    ``except`` catches it.
    """


class OTPError(SnakepitError):
    """Base class of the errors of the supervision core (:mod:`snakepit.otp`)."""


class CallTimeout(OTPError, TimeoutError):
    """A ``call`` got no reply within its timeout.

    The request may still be handled later; its reply is then dropped and never
    reaches another call.

    ``server`` is the :class:`~snakepit.otp.ServerRef` called and ``timeout``
    the seconds the call waited (each None when not known).
    """

    def __init__(
        self, message: str, *, server: object = None, timeout: float | None = None
    ) -> None:
        super().__init__(message)
        #: The server that did not reply.
        self.server = server
        #: The call's timeout, in seconds.
        self.timeout = timeout


class WaitTimeout(OTPError, TimeoutError):
    """A wait for a state (a name re-registered, a supervisor stable, a pool ready) ran out of time.

    ``timeout`` is the seconds waited (None when not known).
    """

    def __init__(self, message: str, *, timeout: float | None = None) -> None:
        super().__init__(message)
        #: The wait's timeout, in seconds.
        self.timeout = timeout


class ServerExited(OTPError):
    """The server is not alive: it was dead before the call, or died during it.

    ``reason`` is the exit reason: ``"normal"``, ``"shutdown"``, ``"killed"`` or
    the exception that ended the server (also set as ``__cause__``).
    """

    def __init__(self, server: object, reason: ExitReason) -> None:
        super().__init__(f"{server!r} exited: {_describe(reason)}")
        #: The :class:`~snakepit.otp.ServerRef` of the dead server.
        self.server = server
        #: Its exit reason.
        self.reason: ExitReason = reason


class NameTaken(OTPError):
    """A name given to ``start`` or ``Registry.register`` is held by a live server."""

    def __init__(self, name: str, holder: object) -> None:
        super().__init__(f"name {name!r} is already registered to {holder!r}")
        #: The name asked for.
        self.name = name
        #: The live server that holds it.
        self.holder = holder


class NameNotFound(OTPError, LookupError):
    """No live server is registered under the name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no live server is registered as {name!r}")
        #: The name looked up.
        self.name = name


class DuplicateChild(OTPError):
    """A supervisor already has a child with this id."""

    def __init__(self, child_id: Any) -> None:
        super().__init__(f"a child with id {child_id!r} already exists")
        #: The duplicated id.
        self.child_id = child_id


class ChildNotFound(OTPError, LookupError):
    """A supervisor has no child with this id (or this ref)."""

    def __init__(self, child: Any) -> None:
        super().__init__(f"no child {child!r} in this supervisor")
        #: The id or ref asked for.
        self.child = child


class MaxChildrenReached(OTPError):
    """A :class:`~snakepit.otp.DynamicSupervisor` already runs ``max_children``."""

    def __init__(self, max_children: int) -> None:
        super().__init__(f"max_children={max_children} reached")
        #: The configured limit.
        self.max_children = max_children


class ChildStartError(OTPError):
    """A child's ``init`` raised while a supervisor started it; the cause is chained."""

    def __init__(self, child_id: Any, cause: BaseException) -> None:
        super().__init__(f"child {child_id!r} failed to start: {_describe(cause)}")
        #: The id of the child that failed.
        self.child_id = child_id
        #: The exception ``init`` raised.
        self.cause = cause


class ReachedMaxRestartIntensity(OTPError):
    """A supervisor restarted more than ``max_restarts`` times in ``max_seconds``.

    It is the exit reason of that supervisor, which stops its children first;
    its own parent handles it like any other child exit.
    """

    def __init__(self, supervisor: object, max_restarts: int, max_seconds: float) -> None:
        super().__init__(
            f"{supervisor!r} reached max restart intensity "
            f"({max_restarts} restarts in {max_seconds:g}s)"
        )
        #: The supervisor that gave up.
        self.supervisor = supervisor
        #: Its ``max_restarts``.
        self.max_restarts = max_restarts
        #: Its ``max_seconds``.
        self.max_seconds = max_seconds


class WorkerError(SnakepitError):
    """A worker process, or a call to it, failed."""


class WorkerStartError(WorkerError):
    """A worker exited, or timed out, before it reported ready.

    The message names the worker and the cause; ``stderr_tail`` holds the
    last lines it wrote (an import error, ``setup()``'s traceback).
    """

    def __init__(
        self, worker_id: str, cause: str, *, returncode: int | None, stderr_tail: str
    ) -> None:
        tail = f"\n--- stderr (last lines) ---\n{stderr_tail}" if stderr_tail else ""
        super().__init__(f"worker {worker_id!r} failed to start: {cause}{tail}")
        #: The worker's id.
        self.worker_id = worker_id
        #: Its exit code (negative: killed by that signal), or None if still running.
        self.returncode = returncode
        #: The last lines of its stderr.
        self.stderr_tail = stderr_tail


class WorkerCrashed(WorkerError):
    """The worker process died while the call was in flight.

    Never retried silently: ``retries=`` is opt-in per call, for idempotent tools.
    """

    def __init__(
        self,
        worker_id: str,
        *,
        pid: int | None,
        returncode: int | None,
        stderr_tail: str,
        reason: str | None = None,
    ) -> None:
        if reason is not None:
            cause = reason
        elif returncode is None:
            cause = "its connection broke"
        else:
            cause = exit_status(returncode)
            if returncode == -signal.SIGKILL:
                cause += " (a possible out-of-memory kill)"
        tail = f"\n--- stderr (last lines) ---\n{stderr_tail}" if stderr_tail else ""
        super().__init__(f"worker {worker_id!r} (pid {pid}) crashed: {cause}{tail}")
        #: The worker's id.
        self.worker_id = worker_id
        #: Its process id.
        self.pid = pid
        #: Its exit code (negative: the signal that killed it), None if unknown.
        self.returncode = returncode
        #: The last lines of its stderr.
        self.stderr_tail = stderr_tail
        #: Why the pool killed it (e.g. missed health checks), if it did.
        self.reason = reason


class WorkerUnavailable(WorkerError):
    """The connection to the worker broke, or the worker is shutting down."""


class WorkerStopping(WorkerUnavailable):
    """The worker is shutting down and refused the call: the tool did not run.

    Safe to send elsewhere, which the pool does by itself.
    """


class ExecutionTimeout(WorkerError, TimeoutError):
    """A call's timeout passed before its result came back.

    ``tool`` is the tool called; ``timeout`` the seconds its run was given
    (from a pool: what was left of the call's ``timeout`` once it got a
    worker; for a stream: for each item); ``worker_id`` the worker it ran on,
    which the pool kills and replaces. Each is None where it is not known (a
    worker's own deadline reported back has no timeout; a bare connection
    knows no worker id).
    """

    def __init__(
        self,
        message: str,
        *,
        tool: str | None = None,
        timeout: float | None = None,
        worker_id: str | None = None,
    ) -> None:
        super().__init__(message)
        #: The tool whose call timed out.
        self.tool = tool
        #: The call's timeout, in seconds.
        self.timeout = timeout
        #: The worker it ran on (replaced by a pool if its tool did not end).
        self.worker_id = worker_id


class PayloadTooLarge(WorkerError):
    """A request or result is over the message size limit; the connection stays usable.

    ``size`` and ``limit`` are in bytes, when the side that refused it knows them
    (a request refused before it was sent: both; a refusal by the worker or by
    gRPC: None).
    """

    def __init__(self, message: str, *, size: int | None = None, limit: int | None = None) -> None:
        super().__init__(message)
        #: The size of the refused message, in bytes.
        self.size = size
        #: The message size limit, in bytes.
        self.limit = limit


class PayloadError(PayloadFields, WorkerError, ValueError):
    """Arguments or a result cannot be encoded or decoded.

    A value with no faithful form (a set, a datetime, an object array...) is never replaced
    silently: the error names where it is (``path``: ``args["x"]``, ``result["a"][3]``, None
    when unknown) and what it is (``type_name``: ``"set"``, ``"datetime.datetime"``, or None).
    """


class RemoteError(WorkerError):
    """The tool raised in the worker; the remote type, message and traceback are kept."""

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}" if type_name else message)
        #: The remote exception's type, qualified (``module.Name``) unless builtin.
        self.type_name = type_name
        #: Its message.
        self.message = message
        #: The remote traceback, formatted.
        self.traceback = traceback


class ToolNotFound(RemoteError):
    """The worker has no tool of that name."""


class InvalidArguments(RemoteError):
    """The arguments do not fit the tool's signature (checked before the call)."""


class PoolError(SnakepitError):
    """The pool as a whole failed or refused a call."""


class PoolStartError(PoolError):
    """A worker failed to start while the pool started; everything was stopped again.

    The message names the worker and carries its stderr tail (``__cause__`` is
    the :class:`WorkerStartError`). ``worker_id`` is the worker that failed
    (None when none did, but not all were ready in time).
    """

    def __init__(self, message: str, *, worker_id: str | None = None) -> None:
        super().__init__(message)
        #: The worker that failed to start.
        self.worker_id = worker_id


class PoolClosed(PoolError):
    """The pool is not running: not entered yet, or already left."""


class PoolDegraded(PoolError):
    """The workers kept crashing (restart intensity reached): the pool takes no calls.

    ``reason`` is the supervisor's exit reason; ``stats().degraded`` says it too.
    """

    def __init__(self, message: str, reason: object) -> None:
        super().__init__(message)
        #: Why the worker supervision gave up.
        self.reason = reason


class QueueFull(PoolError):
    """``max_queue`` calls are already waiting for a worker; the tool did not run."""

    def __init__(self, max_queue: int) -> None:
        super().__init__(f"{max_queue} calls are already waiting for a worker")
        #: The pool's ``max_queue``.
        self.max_queue = max_queue


class QueueTimeout(PoolError, TimeoutError):
    """No worker became free in time (``queue_timeout``, or the call's own timeout).

    The tool did not run. ``timeout`` is the seconds the call could wait: its
    ``queue_timeout``, or what was left of its own timeout (None when not known).
    """

    def __init__(self, message: str, *, timeout: float | None = None) -> None:
        super().__init__(message)
        #: The seconds the call could wait for a worker.
        self.timeout = timeout


class WorkerBusy(PoolError):
    """A ``strict_fail_fast`` session's worker has no free slot; the tool did not run.

    Try again later, or use ``affinity="strict_queue"`` to wait for it.
    """

    def __init__(self, session_id: str, worker_id: str) -> None:
        super().__init__(
            f"session {session_id!r} is pinned to worker {worker_id!r}, which is busy "
            "(affinity 'strict_fail_fast': the call did not wait)"
        )
        #: The session of the call.
        self.session_id = session_id
        #: The worker it is pinned to.
        self.worker_id = worker_id


class WrongEventLoop(PoolError, RuntimeError):
    """The pool was used from an event loop (or thread) other than the one that entered it.

    A pool's connections and tasks belong to that loop: call it from there
    (from another thread: ``asyncio.run_coroutine_threadsafe(pool.execute(...), loop)``).
    """


# -- checks and descriptions shared by every layer ---------------------------------------
# They live here because snakepit.otp imports nothing but this module; not in __all__.


class SessionError(SnakepitError):
    """A session could not be used as asked (see :mod:`snakepit.session`)."""


class SessionNotFound(SessionError, LookupError):
    """No session has this id: it was never made, or it was deleted or expired.

    ``session_id`` is the id asked for.
    """

    def __init__(self, session_id: str, detail: str = "") -> None:
        super().__init__(f"no session {session_id!r}" + (f": {detail}" if detail else ""))
        #: The id that was asked for.
        self.session_id = session_id


class SessionExists(SessionError):
    """A session was created with an explicit id that another session has."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"a session {session_id!r} exists already")
        #: The id that is taken.
        self.session_id = session_id


class SessionLimitReached(SessionError):
    """``max_sessions`` sessions exist already: delete one, or let one expire."""

    def __init__(self, max_sessions: int) -> None:
        super().__init__(f"max_sessions={max_sessions} sessions exist already")
        #: The limit that was reached.
        self.max_sessions = max_sessions


class SessionWorkerLost(SessionError):
    """The worker a strict session is pinned to is gone; the tool did not run.

    Raised for a session whose affinity is ``"strict_queue"`` or
    ``"strict_fail_fast"`` when the worker it is pinned to crashed, was
    recycled, replaced or stopped (whatever per-session state that process
    held is gone with it), or is not one of this pool's workers. The session
    itself stays (delete it, or pin it again with ``pool.sessions.pin``);
    a ``"hint"`` session is pinned to another worker instead.
    """

    def __init__(self, session_id: str, worker_id: str, reason: str) -> None:
        super().__init__(
            f"session {session_id!r} is pinned to worker {worker_id!r}, which is gone: {reason}"
        )
        #: The session of the call.
        self.session_id = session_id
        #: The worker it was pinned to (``"w3.1"``: slot ``w3``, generation 1).
        self.worker_id = worker_id
        #: Why that worker went.
        self.reason = reason


class SessionBackendError(SessionError):
    """A session backend's storage failed: unreachable, or it answered with an error.

    Raised by a backend that keeps sessions outside the process (Redis) for a
    connection refused, lost or timed out, or a reply it cannot use. The
    exception that caused it is chained as ``__cause__``; whether the
    operation took effect is unknown when the connection broke mid-way.
    """

    def __init__(self, backend: str, detail: str) -> None:
        super().__init__(f"session backend {backend}: {detail}")
        #: Which backend failed, and where it keeps its data (``redis unix:///tmp/r.sock``).
        self.backend = backend
        #: What went wrong.
        self.detail = detail


class VariableError(SessionError):
    """A session variable could not be used as asked (see :mod:`snakepit.session`)."""


class VariableNotFound(VariableError, LookupError):
    """The session has no variable of this name (never registered, or deleted)."""

    def __init__(self, session_id: str, name: str) -> None:
        super().__init__(f"session {session_id!r} has no variable {name!r}")
        #: The session asked for.
        self.session_id = session_id
        #: The variable's name.
        self.name = name


class VariableExists(VariableError):
    """A variable was registered under a name the session already has."""

    def __init__(self, session_id: str, name: str) -> None:
        super().__init__(f"session {session_id!r} has a variable {name!r} already")
        #: The session.
        self.session_id = session_id
        #: The name that is taken.
        self.name = name


class VariableValidationError(VariableError, ValueError):
    """A value breaks its variable's type or one of its constraints; nothing was written.

    ``variable`` names the variable, ``constraint`` the rule broken (``"type"``,
    ``"min"``, ``"max"``, ``"choices"``, ``"max_length"``, ``"pattern"``,
    ``"dimension"``, ``"shape"``, ``"dtype"``, ``"finite"``).
    """

    def __init__(self, variable: str, constraint: str, problem: str) -> None:
        super().__init__(f"variable {variable!r}: {constraint}: {problem}")
        #: The variable's name.
        self.variable = variable
        #: The constraint broken.
        self.constraint = constraint
        #: What is wrong, in words.
        self.problem = problem


class BridgeError(SnakepitError):
    """A tool's call to its host through the bridge failed (raised inside the worker)."""


class HostToolNotFound(BridgeError, LookupError):
    """The host registered no tool of this name (``pool.register_host_tool``)."""


class HostToolFailed(BridgeError):
    """The host tool raised; ``error_type`` is its exception's type name."""

    def __init__(self, message: str, error_type: str = "") -> None:
        super().__init__(message)
        #: The type name of what the host tool raised.
        self.error_type = error_type


class BridgeUnavailable(BridgeError):
    """The worker has no bridge (started without one), or cannot reach it (the host is gone)."""


class BridgeSessionNotFound(BridgeError, SessionNotFound):
    """``ctx.session.variables``: the session is gone, or this worker does not serve it."""


class BridgeVariableNotFound(BridgeError, VariableNotFound):
    """``ctx.session.variables``: the session has no variable of this name."""


class BridgeVariableExists(BridgeError, VariableExists):
    """``ctx.session.variables.register``: the session has a variable of this name."""


class BridgeValidationError(BridgeError, VariableValidationError):
    """``ctx.session.variables``: a value breaks its variable's spec; nothing was written."""


def is_int(value: object) -> TypeGuard[int]:
    """True for an int that is not a bool (``True`` is an int to Python, never a count here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """True for an int or a float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_int(field: str, value: object, minimum: int, *, allow_none: bool = False) -> None:
    """Check a count: an int (not a bool) >= ``minimum``, or None if ``allow_none``.

    The message is ``must be an int >= MINIMUM[ or None], got VALUE``.

    :raises ArgumentTypeError: not an int (a bool, a float, a str...).
    :raises ConfigError: under ``minimum``.
    """
    if value is None and allow_none:
        return
    if is_int(value) and value >= minimum:
        return
    error = ConfigError if is_int(value) else ArgumentTypeError
    either = " or None" if allow_none else ""
    raise error(field, f"must be an int >= {minimum}{either}, got {value!r}")


def signal_name(signum: int) -> str:
    """The name of signal ``signum`` (``"SIGKILL"``); ``"signal N"`` if Python has none for it."""
    try:
        return signal.Signals(signum).name
    except ValueError:  # a real-time signal (SIGRTMIN+n) has no member
        return f"signal {signum}"


def exit_status(returncode: int) -> str:
    """How a process ended, from its return code: ``"killed by SIGTERM"`` or ``"exit code 3"``."""
    if returncode < 0:
        return f"killed by {signal_name(-returncode)}"
    return f"exit code {returncode}"


def _portable(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields``, each one that does not pickle replaced by its ``repr()``."""
    portable = {}
    for name, value in fields.items():
        try:
            pickle.dumps(value)
        except Exception:
            value = repr(value)
        portable[name] = value
    return portable


def _rebuild(cls: type[SnakepitError], args: tuple[Any, ...]) -> SnakepitError:
    """An error of class ``cls`` with ``args``, its constructor not called (see __reduce__)."""
    error = cls.__new__(cls)
    error.args = args  # set here: OSError's __new__ (TimeoutError) leaves them to __init__
    return error


def _describe(reason: object) -> str:
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
    return str(reason)
