"""PoolConfig: every option of a pool, checked at construction; PoolOptions: the same, typed."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, TypedDict

from snakepit.errors import ArgumentTypeError, ConfigError, check_int, is_number
from snakepit.session import SessionStoreConfig

__all__ = ("Codec", "PoolConfig", "PoolOptions", "StartMethod", "Transport", "WorkerLoop")

#: How calls travel to a worker (see :attr:`PoolConfig.transport`).
Transport: TypeAlias = Literal["frames", "grpc"]
#: How worker processes start (see :attr:`PoolConfig.start_method`).
StartMethod: TypeAlias = Literal["forkserver", "spawn"]
#: The event loop a worker process runs (see :attr:`PoolConfig.worker_loop`).
WorkerLoop: TypeAlias = Literal["auto", "asyncio", "uvloop"]
#: How arguments and results are encoded: JSON, or pickle for trusted workers
#: (see :attr:`PoolConfig.allow_pickle`).
Codec: TypeAlias = Literal["json", "pickle"]

#: Set to "1" in each worker unless configured, so that N workers running
#: BLAS/OpenMP code do not each start a thread per core.
THREAD_CAP_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


#: Restarts allowed per worker in ``max_seconds`` when ``max_restarts`` is None
#: (Erlang's default intensity for one child: 3 in 5 s).
RESTARTS_PER_WORKER = 3

#: ``PoolConfig.prefetch`` by default (measured, 64 callers on 2 workers of a sync
#: noop: calls/s x1.3 per doubling from 1 to 8, host CPU per call falling with it;
#: 4 keeps the wait behind a slow call short).
DEFAULT_PREFETCH = 4

#: ``max_message_mb`` must be under this: gRPC's limits are signed 32-bit byte counts.
MAX_MESSAGE_MB_LIMIT = 2048
#: The smallest message limit, in bytes (a frame's envelope takes 1 KiB).
MIN_MESSAGE_BYTES = 4096


def _positive(name: str, value: object, *, allow_none: bool = False) -> None:
    """Check a duration or a size: a finite number > 0 (counts: :func:`check_int`).

    :raises ArgumentTypeError: the wrong type (a bool is not a number here).
    :raises ConfigError: out of range (NaN and infinity included).
    """
    if value is None and allow_none:
        return
    either = " or None" if allow_none else ""
    if not is_number(value):
        raise ArgumentTypeError(name, f"must be a finite number > 0{either}, got {value!r}")
    if not 0 < value < math.inf:
        raise ConfigError(name, f"must be a finite number > 0{either}, got {value!r}")


def check_seconds(name: str, value: object) -> None:
    """Check a timeout argument: None, or a finite number of seconds > 0.

    :raises ArgumentTypeError: not a number (a str, a bool...).
    :raises ConfigError: zero, negative, NaN or infinite.
    """
    if value is not None:
        _positive(name, value)


def _optional_path(name: str, value: object, *, path: bool = True) -> str | None:
    """Check an optional path (or plain string) option; return it as a str."""
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike if path else str):
        kind = "a path" if path else "a string"
        raise ArgumentTypeError(name, f"must be {kind} or None, got {value!r}")
    text = os.fspath(value)
    if not isinstance(text, str) or not text:
        raise ConfigError(name, f"must be a non-empty path or None, got {value!r}")
    return text


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolConfig:
    """How a :class:`~snakepit.Pool` starts, runs and stops its workers.

    Every field is checked when the config is made; a bad one raises
    :class:`~snakepit.errors.ConfigError` naming it, before any process starts.
    """

    #: ``package.module:Class`` of the :class:`~snakepit.worker.Adapter`.
    adapter: str
    #: Worker processes.
    size: int = 4
    #: Calls one worker runs at once.
    max_concurrency: int = 1
    #: Calls sent ahead to each busy worker, beyond ``max_concurrency`` (pipelining),
    #: when no worker is free: each waits in its worker and starts as the previous
    #: call ends there, with no round trip to the host in between. Exactly once
    #: still: a call sent ahead whose worker dies before it started runs on another
    #: worker; one whose timeout passes before it started is a ``QueueTimeout`` (its
    #: worker is not at fault); cancelling one withdraws it, and so does the pool as
    #: it recycles, drains or stops its worker (it runs elsewhere, or raises
    #: ``PoolClosed`` as the pool stops). Streams and calls of a session are never
    #: sent ahead, nor any call of a pool with a ``queue_timeout`` (a wait it bounds
    #: in the host); ``max_queue`` counts the calls waiting in the host only.
    #: The cost: under full load a call may wait behind a slow one while another
    #: worker comes free. 0: none (for long calls of very uneven length).
    prefetch: int = DEFAULT_PREFETCH
    #: Calls that may wait for a free worker; one more raises ``QueueFull``.
    max_queue: int = 10_000
    #: Seconds a call may wait for a free worker (None: no limit) -> ``QueueTimeout``.
    queue_timeout: float | None = None
    #: Seconds a worker may take to report ready.
    startup_timeout: float = 30.0
    #: Seconds between SIGTERM and SIGKILL when a worker is stopped.
    shutdown_timeout: float = 5.0
    #: Worker restarts allowed in ``max_seconds`` before the pool gives up on
    #: them (it is then degraded until :meth:`Pool.restart`). Counted: a worker
    #: process that died, failed to start, or was killed after missing health
    #: checks. Not counted: the replacement of a worker killed because a call
    #: timed out (the pool's decision), recycling, scaling. None (the default):
    #: ``RESTARTS_PER_WORKER`` (3) per worker, ``3 * size``, following ``scale()``.
    max_restarts: int | None = None
    max_seconds: float = 5.0
    #: The Python that runs the workers (default: the host's).
    python: str | None = None
    #: Extra environment for the workers (added to the host's).
    env: Mapping[str, str] = field(default_factory=dict)
    #: The workers' working directory (default: the host's).
    cwd: str | None = None
    #: Set the BLAS/OpenMP thread variables to 1 unless ``env`` sets them.
    cap_threads: bool = True
    #: The gRPC message size limit, in MiB, both ways (under 2048: 2 GiB).
    max_message_mb: float = 64.0
    #: Seconds between health checks of each worker (None: no checks).
    health_interval: float | None = 5.0
    #: Seconds a health check may take.
    health_timeout: float = 2.0
    #: Seconds a cancelled call's tool may take to end in its worker. Cancelling a
    #: call (its task, a cancel scope, closing a stream early) cancels it in the
    #: worker at once, but a sync tool runs on until it returns (it can look at
    #: ``ctx.cancelled``): its slot stays taken until the worker reports that the
    #: call ended, so no other call lands on the busy worker. A worker whose
    #: cancelled call has not ended after ``cancel_grace`` is killed and replaced,
    #: as on a timeout (the pool's decision: it is not counted as a crash).
    cancel_grace: float = 5.0
    #: Missed health checks in a row that get a worker killed and replaced.
    max_missed_pings: int = 3
    #: Recycle a worker after this many calls (None: never). Exact, calls sent
    #: ahead included: the worker handed its last call takes no more, and its
    #: replacement starts at once (the pool has one worker less until it is ready);
    #: from 20 on, its replacement starts at nine tenths of them (it serves on meanwhile).
    max_requests_per_worker: int | None = None
    #: Recycle a worker once it has run this many seconds (None: never).
    worker_ttl: float | None = None
    #: Recycle a worker whose resident memory (RSS) passes this many MiB (None:
    #: never); looked at every ``health_interval`` (at most 5 s), not per call.
    max_worker_memory_mb: float | None = None
    #: How calls travel: "frames" (length-prefixed frames on a unix socket, the
    #: fast path) or "grpc" (the ``Channel`` RPC). Health, describe: gRPC always.
    transport: Transport = "frames"
    #: How worker processes start: "forkserver" (one process per pool imports the
    #: worker runtime once and forks each worker from it: a worker is ready in
    #: milliseconds; or one shared by the process's pools, see
    #: :class:`~snakepit.pool.SharedForkServers`) or "spawn" (a new interpreter per
    #: worker, ~150 ms of imports each). Either way a worker runs in its own
    #: process group with the same ``env`` and ``cwd``. Forked workers share what
    #: the fork server fixed when it started: hash seed, rlimits, umask; if the
    #: fork server dies, each of its workers is replaced (and counts as a restart).
    start_method: StartMethod = "forkserver"
    #: The base directory of the workers' sockets and pid files (default: one per
    #: user, ``$XDG_RUNTIME_DIR/snakepit`` or ``<tmp>/snakepit-<uid>``). A pool
    #: starting here kills the workers a dead earlier run left under it.
    run_dir: str | os.PathLike[str] | None = None
    #: Trust the workers with pickle: they start with ``--allow-pickle`` and every call
    #: sends its arguments and gets its result as pickle (protocol 5, buffers out of band),
    #: so any picklable value travels. Loading a pickle runs code: for trusted adapters
    #: only. False (the default): JSON, and a value with no faithful JSON form raises
    #: ``PayloadError`` naming its path and type.
    allow_pickle: bool = False
    #: The session store's options (its backend, ``max_sessions``, ``on_end``...);
    #: None: a :class:`~snakepit.session.MemoryBackend` of the pool's own, no limit.
    #: The store's ``on_end`` is called after the pool told the session's worker
    #: (``Adapter.on_session_end``). A backend passed here is the caller's to close.
    sessions: SessionStoreConfig | None = None
    #: The event loop of each worker process: "auto" (the default: uvloop when the
    #: workers' Python can import it, ``pip install snakepit[uvloop]``, else asyncio's),
    #: "asyncio" (always asyncio's own loop) or "uvloop" (required: a ConfigError
    #: here when the host's Python cannot import it, and a worker whose ``python``
    #: cannot fails to start). The host's loop is never changed: it is the caller's.
    #: An in-process worker (``InProcessLauncher``) runs on the host's loop whatever this says.
    worker_loop: WorkerLoop = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.adapter, str):
            raise ArgumentTypeError(
                "adapter", f"must be 'package.module:ClassName', got {self.adapter!r}"
            )
        module, sep, cls = self.adapter.partition(":")
        if not (sep and module and cls):
            raise ConfigError(
                "adapter", f"must be 'package.module:ClassName', got {self.adapter!r}"
            )
        for name in ("size", "max_concurrency", "max_queue"):
            check_int(name, getattr(self, name), 1)
        check_int("prefetch", self.prefetch, 0)
        check_int("max_restarts", self.max_restarts, 0, allow_none=True)
        for name in ("startup_timeout", "shutdown_timeout", "max_seconds", "max_message_mb"):
            _positive(name, getattr(self, name))
        if self.max_message_mb >= MAX_MESSAGE_MB_LIMIT:
            raise ConfigError(
                "max_message_mb",
                f"must be under {MAX_MESSAGE_MB_LIMIT} (gRPC's limit is 2 GiB), "
                f"got {self.max_message_mb!r}",
            )
        if self.max_message_bytes < MIN_MESSAGE_BYTES:
            raise ConfigError(
                "max_message_mb",
                f"must be at least {MIN_MESSAGE_BYTES / 2**20:g} ({MIN_MESSAGE_BYTES} bytes: "
                f"a call's envelope must fit), got {self.max_message_mb!r}",
            )
        _positive("queue_timeout", self.queue_timeout, allow_none=True)
        _positive("health_interval", self.health_interval, allow_none=True)
        _positive("health_timeout", self.health_timeout)
        _positive("cancel_grace", self.cancel_grace)
        check_int("max_missed_pings", self.max_missed_pings, 1)
        check_int("max_requests_per_worker", self.max_requests_per_worker, 1, allow_none=True)
        _positive("worker_ttl", self.worker_ttl, allow_none=True)
        _positive("max_worker_memory_mb", self.max_worker_memory_mb, allow_none=True)
        if not isinstance(self.env, Mapping):
            raise ArgumentTypeError("env", f"must be a mapping of str to str, got {self.env!r}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()):
            raise ArgumentTypeError("env", "keys and values must be strings")
        object.__setattr__(self, "env", dict(self.env))
        object.__setattr__(self, "python", _optional_path("python", self.python))
        object.__setattr__(self, "cwd", _optional_path("cwd", self.cwd))
        if not isinstance(self.cap_threads, bool):
            raise ArgumentTypeError("cap_threads", f"must be a bool, got {self.cap_threads!r}")
        if not isinstance(self.allow_pickle, bool):
            raise ArgumentTypeError("allow_pickle", f"must be a bool, got {self.allow_pickle!r}")
        for name in ("start_method", "transport", "worker_loop"):
            if not isinstance(getattr(self, name), str):
                raise ArgumentTypeError(name, f"must be a str, got {getattr(self, name)!r}")
        if self.start_method not in ("forkserver", "spawn"):
            raise ConfigError(
                "start_method", f"must be 'forkserver' or 'spawn', got {self.start_method!r}"
            )
        if self.transport not in ("frames", "grpc"):
            raise ConfigError("transport", f"must be 'frames' or 'grpc', got {self.transport!r}")
        if self.worker_loop not in ("auto", "asyncio", "uvloop"):
            raise ConfigError(
                "worker_loop", f"must be 'auto', 'asyncio' or 'uvloop', got {self.worker_loop!r}"
            )
        if (
            self.worker_loop == "uvloop"
            and self.python is None
            and importlib.util.find_spec("uvloop") is None
        ):
            raise ConfigError(
                "worker_loop",
                "'uvloop' needs the uvloop package (pip install 'snakepit[uvloop]'); "
                "'auto' uses it only when it is installed",
            )
        object.__setattr__(self, "run_dir", _optional_path("run_dir", self.run_dir))
        if self.sessions is not None and not isinstance(self.sessions, SessionStoreConfig):
            raise ArgumentTypeError(
                "sessions", f"must be a SessionStoreConfig or None, got {self.sessions!r}"
            )

    @classmethod
    def from_options(cls, adapter: str | None, options: Mapping[str, Any]) -> PoolConfig:
        """Build a config from keyword options, naming any unknown one.

        :raises ConfigError: an unknown option, or a bad value.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                unknown[0],
                f"unknown pool option (known: {', '.join(sorted(known - {'adapter'}))})",
            )
        if adapter is None and "adapter" not in options:
            raise ConfigError("adapter", "is required ('package.module:ClassName')")
        merged = dict(options)
        if adapter is not None:
            merged["adapter"] = adapter
        return cls(**merged)

    def worker_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The environment of a worker: ``base``, thread caps where unset, then ``env``."""
        env = dict(base)
        if self.cap_threads:
            for name in THREAD_CAP_VARIABLES:
                env.setdefault(name, "1")
        env.update(self.env)
        return env

    def restart_limit(self, size: int) -> int:
        """The restart intensity of ``size`` workers: ``max_restarts``, or 3 per worker."""
        if self.max_restarts is not None:
            return self.max_restarts
        return RESTARTS_PER_WORKER * size

    @property
    def max_message_bytes(self) -> int:
        """``max_message_mb`` in bytes."""
        return int(self.max_message_mb * 1024 * 1024)


class PoolOptions(TypedDict, total=False):
    """The keyword options of :class:`~snakepit.Pool`: :class:`PoolConfig`'s fields but ``adapter``.

    Typed for ``Pool(adapter, **options)``: a type checker completes the names
    and rejects a misspelt one (``max_concurency=2``) or a wrong value
    (``transport="tcp"``). Each is documented, and checked at run time, by the
    :class:`PoolConfig` field of the same name.
    """

    size: int
    max_concurrency: int
    prefetch: int
    max_queue: int
    queue_timeout: float | None
    startup_timeout: float
    shutdown_timeout: float
    max_restarts: int | None
    max_seconds: float
    python: str | os.PathLike[str] | None
    env: Mapping[str, str]
    cwd: str | os.PathLike[str] | None
    cap_threads: bool
    max_message_mb: float
    health_interval: float | None
    health_timeout: float
    cancel_grace: float
    max_missed_pings: int
    max_requests_per_worker: int | None
    worker_ttl: float | None
    max_worker_memory_mb: float | None
    transport: Transport
    start_method: StartMethod
    run_dir: str | os.PathLike[str] | None
    allow_pickle: bool
    sessions: SessionStoreConfig | None
    worker_loop: WorkerLoop
