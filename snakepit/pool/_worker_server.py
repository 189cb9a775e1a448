"""WorkerServer: the host side of one worker process, as a supervised GenServer."""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from snakepit._wire._address import unix_path
from snakepit._wire._codec import JSON, PICKLE
from snakepit.errors import (
    ReachedMaxRestartIntensity,
    WorkerCrashed,
    WorkerError,
    WorkerStartError,
    signal_name,
)
from snakepit.otp import (
    Broadcast,
    DynamicSupervisor,
    ExitReason,
    GenServer,
    ServerRef,
    unwrapped_task_group,
)
from snakepit.pool._connection import Multiplexer, open_frames_multiplexer
from snakepit.pool._worker_connection import WorkerConnection

from ._config import PoolConfig
from ._events import (
    PoolEvent,
    WorkerExitCause,
    WorkerExited,
    WorkerReady,
    WorkerStartFailed,
    WorkerStarting,
)
from ._launch._base import Launcher, WorkerBridge, WorkerHandle

__all__ = ("WorkerArgs", "WorkerServer", "WorkerState", "WorkerSupervisor")

logger = logging.getLogger("snakepit.pool")

#: How long a failed call waits for the process's exit status, to report it.
CRASH_REPORT_WAIT = 2.0


@dataclass(frozen=True, slots=True)
class WorkerArgs:
    """What a :class:`WorkerServer` needs: the pool's config, launcher and callbacks."""

    config: PoolConfig
    launcher: Launcher
    worker_id: str
    run_id: str
    #: Called with the worker once its process is ready (it offers its slots).
    on_ready: Callable[[WorkerServer], None]
    #: Called with the worker and the error when its process failed to start.
    on_failed: Callable[[WorkerServer, BaseException], None]
    #: Where its telemetry goes (the pool's subscribers).
    events: Broadcast[PoolEvent]
    #: Called with the worker when it stops taking calls (see :attr:`WorkerServer.left_because`).
    on_leaving: Callable[[WorkerServer], None] | None = None
    #: The pool's bridge, as this worker reaches it (None: no bridge).
    bridge: WorkerBridge | None = None
    #: Called with the worker when its recycling starts (it is sent no call ahead from then on).
    on_recycling: Callable[[WorkerServer], None] | None = None


def _takes_bridge(launcher: Launcher) -> bool:
    """Whether ``launcher.start`` takes ``bridge=`` (or any keyword)."""
    if "start" in getattr(launcher, "__dict__", ()):  # set on the instance: its own
        return _signature_takes_bridge(launcher.start)
    return _class_takes_bridge(type(launcher))


@functools.lru_cache(maxsize=64)
def _class_takes_bridge(cls: type) -> bool:
    # Asked at every worker start: inspect.signature costs ~1 ms.
    return _signature_takes_bridge(getattr(cls, "start", None))


def _signature_takes_bridge(start: object) -> bool:
    try:
        parameters = inspect.signature(start).parameters.values()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return any(p.name == "bridge" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


class _ProcessExited(Exception):
    """The worker's process exited on its own (the WorkerServer's exit reason)."""


class _Replaced(Exception):
    """The pool killed the worker's process by its own decision (a call timed out).

    The WorkerServer's exit reason: its supervisor restarts it without counting
    that restart towards the restart intensity (see :class:`WorkerSupervisor`).
    """


#: Where a :class:`WorkerServer` is in its life (see its table of transitions).
WorkerState: TypeAlias = Literal[
    "booting", "ready", "recycling", "draining", "retired", "exited", "failed", "stopping", "killed"
]

#: The legal transitions of a :class:`WorkerServer`: state -> the states it may go to.
TRANSITIONS: Final[Mapping[WorkerState, frozenset[WorkerState]]] = {
    "booting": frozenset({"ready", "failed", "stopping", "killed"}),
    "ready": frozenset({"recycling", "draining", "retired", "exited", "stopping", "killed"}),
    "recycling": frozenset({"draining", "retired", "exited", "stopping", "killed"}),
    "exited": frozenset({"draining", "retired", "stopping", "killed"}),
    "draining": frozenset({"stopping"}),
    "retired": frozenset({"stopping"}),
    "failed": frozenset({"stopping", "killed"}),
    "stopping": frozenset(),
    "killed": frozenset(),
}


class IllegalTransition(AssertionError):
    """A WorkerServer (or a Pool) was asked for a move its table of transitions does not allow.

    A bug in snakepit (an AssertionError), never a worker's failure.
    """


class WorkerServer(GenServer[Any, Any, None]):
    """Owns one worker process: starts it, watches it, stops and reaps it.

    ``init`` returns at once and the process boots in the background, so a
    pool's workers start in parallel. When the process exits on its own, the
    WorkerServer exits with that as its reason and its supervisor starts a
    replacement. Calls go straight to :attr:`mux` from the caller's task.

    Its :attr:`state` changes only through the methods named below, each of
    which checks the move against this table (``TRANSITIONS``; a move it does
    not list raises :class:`IllegalTransition`)::

        booting   -> ready | failed | stopping | killed
        ready     -> recycling | draining | retired | exited | stopping | killed
        recycling -> draining | retired | exited | stopping | killed
        exited    -> draining | retired | stopping | killed
        draining  -> stopping
        retired   -> stopping
        failed    -> stopping | killed
        stopping  -> (final)
        killed    -> (final)

    - ``booting``: its process starts (the first state); ``ready`` once it
      serves (``_boot``), ``failed`` if it could not start (``_boot``).
    - ``ready`` and ``recycling`` take calls (:attr:`usable`); ``recycling``:
      the pool starts its replacement (:meth:`start_recycling`).
    - ``exited``: its process exited on its own while it served.
    - ``draining``: takes no new calls, the ones in flight go on (:meth:`drain`).
    - ``retired``: out of service, its process killed (:meth:`retire`).
    - ``stopping``: ``terminate`` runs (the pool or the supervisor stops it).
      A retired worker whose retirement has a reason stays ``retired``: its
      exit is reported with that reason.
    - ``killed``: its server was killed (no ``terminate``).

    :meth:`drain` and :meth:`retire` do nothing in a state that already takes
    no calls (``draining``, ``retired``, ``stopping``, ``killed``); a process
    exit or a boot that ends after a stop leave ``stopping``/``killed`` as they
    are. The facts that are not states are plain fields set by the
    transitions: :attr:`retired_reason`, :attr:`returncode`.
    """

    args: WorkerArgs

    def __init__(self) -> None:
        self._state: WorkerState = "booting"
        self.handle: WorkerHandle | None = None
        self.client: WorkerConnection | None = None
        self.mux: Multiplexer | None = None
        self.process: WorkerHandle | None = None  # kept after release, for crash reports
        #: Why :meth:`retire` took it out of service (when it was told to report it).
        self.retired_reason: str | None = None
        #: Why it stopped taking calls (None while it takes them, or before it did).
        self.left_because: str | None = None
        #: Retired for a failure (counted), not by the pool's choice (see :meth:`retire`).
        self._failed = True
        #: Its process's exit status, once seen (then reported, once).
        self.returncode: int | None = None
        #: Calls running on it now, and calls it ran (kept by the pool).
        self.in_flight = 0
        self.requests = 0
        #: It was handed its ``max_requests_per_worker`` calls: it takes no more (see :attr:`full`).
        self._full = False
        #: ``anyio.current_time()`` when it became ready.
        self.ready_at: float | None = None
        self._booted = anyio.Event()  # set once the boot is over (ready, failed, or stopped)
        #: Set when in_flight drops to 0; made only while somebody waits for that
        #: (terminate): a call's end must not build an Event it does not need.
        self._idle: anyio.Event | None = None
        self._tg: TaskGroup | None = None

    @property
    def worker_id(self) -> str:
        """The id of this worker's slot (its restarts keep it; see ``ref.generation``)."""
        return self.args.worker_id

    @property
    def pin_id(self) -> str:
        """The id a session pinned to this process records: ``w3.1@<run id>``.

        Its slot (``w3``), its generation (``1``), and the pool's run.

        Unique per process across restarts (the generation) and pools (the run).
        """
        return f"{self.args.worker_id}.{self.ref.generation}@{self.args.run_id}"

    @property
    def state(self) -> WorkerState:
        """Where it is in its life (read-only: the transitions change it)."""
        return self._state

    @property
    def usable(self) -> bool:
        """True while it takes calls: ``ready`` or ``recycling``, and not :attr:`full`."""
        # (not through .state: read for every slot handed out)
        return self._state in _USABLE and not self._full

    @property
    def full(self) -> bool:
        """True once it was handed ``max_requests_per_worker`` calls: it takes no more.

        The calls it was handed run there (those sent ahead included), so it
        never runs more than that many; its recycling starts as the first
        of them ends. (The pool's scheduler counts them: :meth:`exhaust`.)
        """
        return self._full

    async def wait_booted(self) -> None:
        """Return once its boot is over: ready, failed, or cut short by a stop."""
        await self._booted.wait()

    # -- transitions ----------------------------------------------------------------------

    def _enter(self, new: WorkerState, why: str | None = None) -> None:
        old = self._state
        if new not in TRANSITIONS[old]:
            raise IllegalTransition(f"worker {self.worker_id!r}: {old} -> {new}")
        self._state = new
        if old in ("ready", "recycling") and new not in ("ready", "recycling"):
            self.left_because = why or _LEFT_BECAUSE[new]
            if self.args.on_leaving is not None:
                self.args.on_leaving(self)

    def _became_ready(self) -> None:
        """The boot succeeded: ``booting`` -> ``ready`` (a stop that came first stays)."""
        if self.state == "booting":
            self._enter("ready")

    def _boot_failed(self) -> None:
        """The boot failed: ``booting`` -> ``failed`` (a stop that came first stays)."""
        if self.state == "booting":
            self._enter("failed")

    def _process_exited(self, code: int) -> None:
        """Its process exited: report it (once); one that served is now ``exited``."""
        self._report_exit(code)
        if self.state in ("ready", "recycling"):
            how = f"killed by {signal_name(-code)}" if code < 0 else f"exited with code {code}"
            self._enter("exited", f"its process {how}")

    def _server_ended(self) -> None:
        """Its server ends: killed, unless ``terminate`` ran or it was already out of service."""
        if self.state in ("booting", "ready", "recycling", "exited", "failed"):
            self._enter("killed")

    # -- lifecycle ------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Own the task group of the boot and the health checks; release the process last."""
        async with AsyncExitStack() as stack:
            # Last, once the helpers have ended: a boot cut short by the stop
            # may have started its process after terminate() looked (it goes too).
            stack.push_async_callback(self._release_at_exit)
            self._tg = tg = await stack.enter_async_context(unwrapped_task_group())
            # First: the state, then the helpers (none may use a closed channel).
            stack.callback(tg.cancel_scope.cancel)
            stack.callback(self._server_ended)
            yield

    async def _release_at_exit(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._release(grace=0)
        self._booted.set()  # a boot cut short ended too: nobody waits for it for good

    async def init(self, arg: Any) -> None:
        """Remember the args and start booting the process in the background."""
        self.args = arg
        assert self._tg is not None
        self._tg.start_soon(self._boot)

    async def _boot(self) -> None:
        args = self.args
        events = args.events
        started = anyio.current_time()
        if events.active:
            events.publish(WorkerStarting(self.worker_id, self.ref.generation, started))
        try:
            if args.bridge is None or not _takes_bridge(args.launcher):
                # A launcher written before the bridge still works: its
                # workers' tools get BridgeUnavailable from ctx.call_host.
                handle = await args.launcher.start(args.config, args.worker_id, args.run_id)
            else:
                handle = await args.launcher.start(
                    args.config, args.worker_id, args.run_id, bridge=args.bridge
                )
            self.handle = self.process = handle
            await anyio.lowlevel.checkpoint_if_cancelled()  # stopped meanwhile: no connection
            codec = PICKLE if args.config.allow_pickle else JSON
            secret = self.handle.secret
            self.client = WorkerConnection(
                self.handle.address,
                max_message_bytes=args.config.max_message_bytes,
                codec=codec,
                secret=secret,
            )
            config = args.config
            frames = self.handle.frames_address
            if frames is not None and config.transport == "frames":
                # Connecting takes milliseconds: never cut in half by a stop (a
                # connection made but not kept would never be closed).
                with anyio.CancelScope(shield=True), anyio.fail_after(config.startup_timeout):
                    self.mux = await open_frames_multiplexer(
                        frames,
                        max_message_bytes=config.max_message_bytes,
                        codec=codec,
                        secret=secret,
                        timeout=config.startup_timeout,
                    )
                await anyio.lowlevel.checkpoint_if_cancelled()  # stopped meanwhile: not ready
            else:
                self.mux = self.client.multiplexer()
        except Exception as exc:
            if events.active:
                events.publish(
                    WorkerStartFailed(
                        self.worker_id, self.ref.generation, exc, anyio.current_time()
                    )
                )
            self._boot_failed()
            args.on_failed(self, exc)
            self._booted.set()
            self.ref.send(("failed", exc))
            return
        self._became_ready()
        self.ready_at = now = anyio.current_time()
        if events.active:
            events.publish(
                WorkerReady(
                    self.worker_id, self.handle.pid, self.ref.generation, now - started, now
                )
            )
        self._booted.set()
        args.on_ready(self)
        if args.config.health_interval is not None and self._tg is not None:
            self._tg.start_soon(self._check_health)
        code = await self.handle.wait()
        self._process_exited(code)
        self.ref.send(("exited", code))

    def _report_exit(self, code: int) -> None:
        # Once, from whichever saw the process go first: _boot or _release.
        if self.returncode is not None or self.process is None:
            return
        self.returncode = code
        events = self.args.events
        if not events.active:
            return
        cause: WorkerExitCause = "crash"
        if self.state == "stopping":
            reason, cause = "stopped by the pool", "stopped"
        elif self.state == "killed":
            reason = "its WorkerServer was killed"
        elif self.retired_reason is not None:
            reason = self.retired_reason
            cause = "unhealthy" if self._failed else "timeout"
        elif code < 0:
            reason = f"killed by {signal_name(-code)}"
        else:
            reason = f"exited with code {code}"
        events.publish(
            WorkerExited(
                self.worker_id,
                self.process.pid,
                self.ref.generation,
                code,
                cause in ("crash", "unhealthy"),
                reason,
                anyio.current_time(),
                cause,
            )
        )

    async def _check_health(self) -> None:
        # grpc.health.v1 on an interval; max_missed_pings misses in a row (a
        # SIGSTOPped process, a blocked event loop) get the worker replaced.
        config = self.args.config
        assert config.health_interval is not None
        missed = 0
        while self._state in _USABLE and self.client is not None:  # a full one too
            await anyio.sleep(config.health_interval)
            if not self._socket_exists():
                # Connections made already still work, but no new one can be
                # (a reconnect, a new client): the worker is as good as gone.
                status = "SOCKET REMOVED"
            else:
                try:
                    with anyio.fail_after(config.health_timeout):
                        status = await self.client.health(timeout=None)
                except (TimeoutError, WorkerError):
                    status = "UNREACHABLE"
            missed = 0 if status == "SERVING" else missed + 1
            if missed >= config.max_missed_pings:
                self.retire(f"missed {missed} health checks in a row ({status})")
                return

    def _socket_exists(self) -> bool:
        path = None if self.handle is None else unix_path(self.handle.address)
        return path is None or os.path.exists(path)

    async def handle_info(self, message: Any, state: None) -> None:
        """React to the process: it failed to start, or exited."""
        match message:
            case ("failed", exc):
                raise exc
            case ("exited", code):
                retired = self.state == "retired"
                if retired and not self._failed:
                    raise _Replaced(f"worker {self.worker_id!r} replaced: {self.retired_reason}")
                if retired and self.retired_reason is not None:
                    raise _ProcessExited(
                        f"worker {self.worker_id!r} retired: {self.retired_reason}"
                    )
                how = (
                    f"was killed by {signal_name(-code)}"
                    if isinstance(code, int) and code < 0
                    else f"exited with code {code}"
                )
                raise _ProcessExited(f"worker {self.worker_id!r} {how}")
        await super().handle_info(message, state)

    def log_crash(self, reason: ExitReason) -> None:
        """A process that exited is routine for a pool: one warning line, no traceback.

        Nothing more for a worker the pool killed itself (:meth:`retire` said why).
        """
        if isinstance(reason, _Replaced) or (
            isinstance(reason, _ProcessExited) and self.retired_reason is not None
        ):
            return
        if isinstance(reason, _ProcessExited | WorkerStartError):
            logger.warning("%s; starting a replacement", str(reason).splitlines()[0])
        else:
            super().log_crash(reason)

    async def terminate(self, reason: ExitReason, state: None) -> None:
        """Let calls in flight finish, then stop the process: SIGTERM, the timeout, SIGKILL.

        -> ``stopping`` (no new calls), but for a worker retired with a reason.
        """
        if self.state != "retired" or self.retired_reason is None:
            self._enter("stopping")
        self._withdraw_unstarted()  # they go elsewhere (or fail with PoolClosed): not wait here
        grace = self.args.config.shutdown_timeout
        with anyio.move_on_after(grace):
            while self.in_flight:
                if self._idle is None:
                    self._idle = anyio.Event()
                await self._idle.wait()
        if self._booted.is_set():
            await self._release(grace=grace)
        # else: still booting. The boot is cancelled next, and the process
        # released once it has stopped (lifespan): not under a connect.

    def drain(self, why: str = "the pool stopped it") -> None:
        """Take no new calls; the ones in flight go on (before a graceful stop).

        -> ``draining``; nothing if it takes no calls already. A worker still
        ``booting``, or ``failed``, has no calls to drain: asking raises
        :class:`IllegalTransition` (the pool never does).

        :param why: why it goes (:attr:`left_because`).
        """
        if self.state not in _OUT_OF_SERVICE:
            self._enter("draining", why)
            self._withdraw_unstarted()

    def start_recycling(self) -> None:
        """``ready`` -> ``recycling``: the pool starts its replacement; it serves until then.

        On free slots only: the calls it was sent ahead that have not
        started are withdrawn (they run elsewhere), and none is sent ahead
        to it from now on. (A :attr:`full` one takes no call at all and
        keeps those it was handed, its last: what has not started when it
        stops is withdrawn then.)
        """
        self._enter("recycling")
        if self.args.on_recycling is not None:
            self.args.on_recycling(self)
        if not self._full:
            self._withdraw_unstarted()

    def _withdraw_unstarted(self) -> None:
        # Its calls still waiting to start in the process (sent ahead) come
        # back (Withdrawn) and go to another worker: none waits behind a
        # running call of a worker that is going away.
        if self.mux is not None:
            self.mux.withdraw_unstarted()

    def call_started(self) -> None:
        """The pool sent it a call."""
        self.in_flight += 1
        self.requests += 1

    def exhaust(self) -> None:
        """It was handed its ``max_requests_per_worker``-th call: it takes no more (:attr:`full`).

        Its other slots are dropped and strict sessions pinned to it lose it
        (as when it leaves service); the calls it was handed run there.
        """
        if self._full:
            return
        self._full = True
        if self._state in _USABLE:
            limit = self.args.config.max_requests_per_worker
            self.left_because = f"it was handed its max_requests_per_worker={limit} calls"
            if self.args.on_leaving is not None:
                self.args.on_leaving(self)

    def call_ended(self) -> None:
        """A call it ran ended (with any outcome)."""
        self.in_flight -= 1
        if not self.in_flight and self._idle is not None:
            self._idle.set()
            self._idle = None

    def rss_mb(self) -> float | None:
        """Its process's resident memory in MiB (Linux), or None if unknown."""
        if self.process is None:
            return None
        try:
            with open(f"/proc/{self.process.pid}/statm") as statm:
                pages = int(statm.read().split()[1])
        except (OSError, IndexError, ValueError):
            return None
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)

    async def _release(self, grace: float) -> None:
        # Idempotent, and complete when repeated: a graceful release cut short by
        # a kill is finished by the shielded one in lifespan.
        try:
            if self.mux is not None:
                await self.mux.aclose()
            if self.client is not None:
                await self.client.aclose()
        except Exception:
            logger.exception("worker %r: closing its connection failed", self.worker_id)
        finally:
            try:
                if self.handle is not None:  # the process is stopped and reaped whatever happened
                    self._report_exit(await self.handle.aclose(grace=grace))
            finally:
                if self.mux is not None:
                    # Once the process exited, what its page says it started is final.
                    handle = self.handle
                    self.mux.seal_started_page(
                        exited=handle is None or handle.returncode is not None
                    )

    # -- used by the pool -------------------------------------------------------------------

    def retire(self, reason: str, *, report: bool = True, failed: bool = True) -> None:
        """Take it out of service and kill its process (a timeout: it may be stuck).

        The process exit ends this WorkerServer; its supervisor starts a replacement.
        Calls in flight on it fail with :class:`WorkerCrashed` naming ``reason``.

        -> ``retired``. Nothing if ``retired`` already. One that takes no
        calls already (``draining``, ``stopping``, ``killed``) stays in its
        state, but its process is killed all the same: a call on it broke or
        timed out, and a stuck tool must not hold up its stop. A worker still
        ``booting``, or ``failed``, is not in service yet: asking raises
        :class:`IllegalTransition` (the pool never does; stop it instead).

        :param report: log ``reason`` (one line) and report it as the cause.
        :param failed: False when killing it is the pool's decision, not the
            worker's failure (a call timed out): its replacement does not count
            towards the restart intensity.
        """
        if self.state in _OUT_OF_SERVICE:
            if self.state != "retired" and self.handle is not None:
                self.handle.kill()
            return
        self._enter("retired", reason)
        self._failed = failed
        if report:  # we kill it for this reason: that is the cause to report
            self.retired_reason = reason
            pid = self.handle.pid if self.handle is not None else None
            logger.warning("replacing worker %r (pid %s): %s", self.worker_id, pid, reason)
        if self.handle is not None:
            self.handle.kill()

    async def crash_error(self, error: WorkerError) -> WorkerError:
        """The error for a call that failed because the connection broke.

        Waits briefly for the process's exit status: if it died, a
        :class:`WorkerCrashed` with the exit code or signal and the stderr tail.
        """
        handle = self.process
        if handle is None:
            return error
        with anyio.move_on_after(CRASH_REPORT_WAIT):
            await handle.wait()
        if handle.returncode is None:
            return error
        crashed = WorkerCrashed(
            self.worker_id,
            pid=handle.pid,
            returncode=handle.returncode,
            stderr_tail=handle.stderr_tail(),
            reason=self.retired_reason,
        )
        crashed.__cause__ = error
        return crashed


#: Why a worker stopped taking calls, by the state it went to, when no more is known.
_LEFT_BECAUSE: Final[Mapping[WorkerState, str]] = {
    "draining": "the pool stopped it",
    "retired": "the pool replaced it",
    "exited": "its process exited",
    "stopping": "the pool stopped it",
    "killed": "its WorkerServer was killed",
}

#: States in which drain() and retire() do nothing: it takes no calls already.
_USABLE: Final[frozenset[WorkerState]] = frozenset({"ready", "recycling"})
_OUT_OF_SERVICE: Final[frozenset[WorkerState]] = frozenset(
    {"draining", "retired", "stopping", "killed"}
)


class WorkerSupervisor(DynamicSupervisor):
    """The pool's DynamicSupervisor of :class:`WorkerServer` servers.

    A DynamicSupervisor with three differences, all about what a restart
    costs a pool:

    - a WorkerServer whose process the pool killed by its own decision (a call
      timed out: :meth:`WorkerServer.retire` with ``failed=False``) is restarted
      like any other, but that restart does not count towards the restart
      intensity; if its replacement then fails to start, that counts;
    - its ``max_restarts`` follows the pool's size
      (:meth:`~snakepit.otp.SupervisorRef.set_max_restarts`);
    - reaching the intensity is logged once, by the pool, not as a traceback.
    """

    def restart_counts(self, ref: ServerRef[Any, Any], reason: ExitReason) -> bool:
        """A WorkerServer the pool replaced by its own decision restarts uncounted."""
        return not isinstance(reason, _Replaced)

    def log_gave_up(self, error: ReachedMaxRestartIntensity) -> None:
        """Say nothing: the pool logs its own line when its workers supervisor gives up."""

    def log_crash(self, reason: ExitReason) -> None:
        """Say nothing of reaching the restart intensity: the pool logs it in one line."""
        if not isinstance(reason, ReachedMaxRestartIntensity):
            super().log_crash(reason)
