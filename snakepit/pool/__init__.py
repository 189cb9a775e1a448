"""The worker pool: supervised worker processes behind execute() and stream().

``snakepit.Pool`` is the entry point; this package also holds its parts for
those who extend or inspect a pool: the config, the Launcher seam (where
workers run: ``LocalLauncher``, or ``InProcessLauncher`` for tests), the
Worker server and the Scheduler.
"""

from ._config import PoolConfig as PoolConfig
from ._inprocess import InProcessLauncher as InProcessLauncher
from ._inprocess import InProcessWorker as InProcessWorker
from ._launcher import Launcher as Launcher
from ._launcher import LocalLauncher as LocalLauncher
from ._launcher import WorkerHandle as WorkerHandle
from ._pool import Pool as Pool
from ._pool import PoolStats as PoolStats
from ._pool import WorkerInfo as WorkerInfo
from ._scheduler import Scheduler as Scheduler
from ._worker import Worker as Worker
from ._worker import WorkerArgs as WorkerArgs

__all__ = (
    "InProcessLauncher",
    "InProcessWorker",
    "Launcher",
    "LocalLauncher",
    "Pool",
    "PoolConfig",
    "PoolStats",
    "Scheduler",
    "Worker",
    "WorkerArgs",
    "WorkerHandle",
    "WorkerInfo",
)
