"""The worker pool: supervised worker processes behind execute() and stream().

``snakepit.Pool`` is the entry point; this package also holds its parts for
those who extend or inspect a pool: the config (``PoolConfig``, and
``PoolOptions`` typing ``Pool``'s keywords), the Launcher seam (where
workers run: ``LocalLauncher``, or ``InProcessLauncher`` for tests), the
WorkerServer, the Scheduler, the connection to one worker
(``WorkerConnection``, ``Multiplexer``), what a worker describes of itself
(``WorkerDescription``, ``ToolSpec``), and the events of :meth:`Pool.subscribe`.
"""

from ._bridge import Bridge as Bridge
from ._bridge import BridgeArgs as BridgeArgs
from ._bridge import BridgeServer as BridgeServer
from ._bridge import HostTools as HostTools
from ._config import Codec as Codec
from ._config import PoolConfig as PoolConfig
from ._config import PoolOptions as PoolOptions
from ._config import StartMethod as StartMethod
from ._config import Transport as Transport
from ._config import WorkerLoop as WorkerLoop
from ._connection import Multiplexer as Multiplexer
from ._description import ParameterSpec as ParameterSpec
from ._description import ToolSpec as ToolSpec
from ._description import WorkerDescription as WorkerDescription
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
from ._launch._base import Launcher as Launcher
from ._launch._base import WorkerBridge as WorkerBridge
from ._launch._base import WorkerHandle as WorkerHandle
from ._launch._inprocess import InProcessHandle as InProcessHandle
from ._launch._inprocess import InProcessLauncher as InProcessLauncher
from ._launch._local import LocalLauncher as LocalLauncher
from ._launch._process import WorkerProcess as WorkerProcess
from ._launch._rundir import RunDir as RunDir
from ._launch._rundir import default_run_base as default_run_base
from ._launch._shared import SharedForkServers as SharedForkServers
from ._launch._shared import default_fork_servers as default_fork_servers
from ._launch._shared import set_default_fork_servers as set_default_fork_servers
from ._pool import Pool as Pool
from ._scheduler import PinnedWorkerGone as PinnedWorkerGone
from ._scheduler import Schedulable as Schedulable
from ._scheduler import Scheduler as Scheduler
from ._session import PoolSession as PoolSession
from ._stats import PoolStats as PoolStats
from ._stats import WorkerInfo as WorkerInfo
from ._worker_connection import WorkerConnection as WorkerConnection
from ._worker_server import WorkerArgs as WorkerArgs
from ._worker_server import WorkerServer as WorkerServer
from ._worker_server import WorkerState as WorkerState
from ._worker_server import WorkerSupervisor as WorkerSupervisor

__all__ = (
    "Bridge",
    "BridgeArgs",
    "BridgeServer",
    "Codec",
    "HostTools",
    "InProcessHandle",
    "InProcessLauncher",
    "Launcher",
    "LocalLauncher",
    "Multiplexer",
    "ParameterSpec",
    "PinnedWorkerGone",
    "Pool",
    "PoolConfig",
    "PoolEvent",
    "PoolGaveUp",
    "PoolOptions",
    "PoolSession",
    "PoolStats",
    "RequestOutcome",
    "RequestQueued",
    "RequestStarted",
    "RequestStopped",
    "RunDir",
    "Schedulable",
    "Scheduler",
    "SharedForkServers",
    "StartMethod",
    "ToolSpec",
    "Transport",
    "WorkerArgs",
    "WorkerBridge",
    "WorkerConnection",
    "WorkerDescription",
    "WorkerExitCause",
    "WorkerExited",
    "WorkerHandle",
    "WorkerInfo",
    "WorkerLoop",
    "WorkerProcess",
    "WorkerReady",
    "WorkerRecycled",
    "WorkerServer",
    "WorkerStartFailed",
    "WorkerStarting",
    "WorkerState",
    "WorkerSupervisor",
    "default_fork_servers",
    "default_run_base",
    "set_default_fork_servers",
)
