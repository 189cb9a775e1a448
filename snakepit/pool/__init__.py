"""The worker pool: supervised worker processes behind execute() and stream().

``snakepit.Pool`` is the entry point; this package also holds its parts for
those who extend or inspect a pool: the config, the Launcher seam (where
workers run: ``LocalLauncher``, or ``InProcessLauncher`` for tests), the
Worker server, the Scheduler, and the events of :meth:`Pool.subscribe`.
"""

from ._config import PoolConfig as PoolConfig
from ._events import PoolEvent as PoolEvent
from ._events import PoolGaveUp as PoolGaveUp
from ._events import RequestOutcome as RequestOutcome
from ._events import RequestQueued as RequestQueued
from ._events import RequestStarted as RequestStarted
from ._events import RequestStopped as RequestStopped
from ._events import WorkerExitCause as WorkerExitCause
from ._events import WorkerExited as WorkerExited
from ._events import WorkerReady as WorkerReady
from ._events import WorkerRecycled as WorkerRecycled
from ._events import WorkerStartFailed as WorkerStartFailed
from ._events import WorkerStarting as WorkerStarting
from ._inprocess import InProcessLauncher as InProcessLauncher
from ._inprocess import InProcessWorker as InProcessWorker
from ._launcher import Launcher as Launcher
from ._launcher import LocalLauncher as LocalLauncher
from ._launcher import WorkerHandle as WorkerHandle
from ._pool import Pool as Pool
from ._pool import PoolStats as PoolStats
from ._pool import WorkerInfo as WorkerInfo
from ._rundir import RunDir as RunDir
from ._rundir import default_run_base as default_run_base
from ._scheduler import Scheduler as Scheduler
from ._worker import Worker as Worker
from ._worker import WorkerArgs as WorkerArgs
from ._worker import WorkerSupervisor as WorkerSupervisor

__all__ = (
    "InProcessLauncher",
    "InProcessWorker",
    "Launcher",
    "LocalLauncher",
    "Pool",
    "PoolConfig",
    "PoolEvent",
    "PoolGaveUp",
    "PoolStats",
    "RequestOutcome",
    "RequestQueued",
    "RequestStarted",
    "RequestStopped",
    "RunDir",
    "Scheduler",
    "Worker",
    "WorkerArgs",
    "WorkerExitCause",
    "WorkerExited",
    "WorkerHandle",
    "WorkerInfo",
    "WorkerReady",
    "WorkerRecycled",
    "WorkerStartFailed",
    "WorkerStarting",
    "WorkerSupervisor",
    "default_run_base",
)
