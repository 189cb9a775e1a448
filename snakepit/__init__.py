"""snakepit: supervised pools of Python worker processes, and the harness to test them.

The public API is re-exported here; the OTP core lives in :mod:`snakepit.otp`.

Importing it changes nothing outside it (no environment variable: grpc's
logging is quieted where grpc is imported, see ``snakepit._wire._grpc_logging``).
"""

from typing import TYPE_CHECKING, Any

from snakepit.errors import ArgumentTypeError as ArgumentTypeError
from snakepit.errors import BridgeError as BridgeError
from snakepit.errors import BridgeSessionNotFound as BridgeSessionNotFound
from snakepit.errors import BridgeUnavailable as BridgeUnavailable
from snakepit.errors import BridgeValidationError as BridgeValidationError
from snakepit.errors import BridgeVariableExists as BridgeVariableExists
from snakepit.errors import BridgeVariableNotFound as BridgeVariableNotFound
from snakepit.errors import CallTimeout as CallTimeout
from snakepit.errors import ChildNotFound as ChildNotFound
from snakepit.errors import ChildStartError as ChildStartError
from snakepit.errors import ConfigError as ConfigError
from snakepit.errors import DuplicateChild as DuplicateChild
from snakepit.errors import ExecutionTimeout as ExecutionTimeout
from snakepit.errors import HostToolFailed as HostToolFailed
from snakepit.errors import HostToolNotFound as HostToolNotFound
from snakepit.errors import InvalidArguments as InvalidArguments
from snakepit.errors import InvalidChildSpec as InvalidChildSpec
from snakepit.errors import MaxChildrenReached as MaxChildrenReached
from snakepit.errors import NameNotFound as NameNotFound
from snakepit.errors import NameTaken as NameTaken
from snakepit.errors import OTPError as OTPError
from snakepit.errors import PayloadError as PayloadError
from snakepit.errors import PayloadTooLarge as PayloadTooLarge
from snakepit.errors import PoolClosed as PoolClosed
from snakepit.errors import PoolDegraded as PoolDegraded
from snakepit.errors import PoolError as PoolError
from snakepit.errors import PoolStartError as PoolStartError
from snakepit.errors import QueueFull as QueueFull
from snakepit.errors import QueueTimeout as QueueTimeout
from snakepit.errors import ReachedMaxRestartIntensity as ReachedMaxRestartIntensity
from snakepit.errors import RemoteError as RemoteError
from snakepit.errors import ServerExited as ServerExited
from snakepit.errors import SessionBackendError as SessionBackendError
from snakepit.errors import SessionError as SessionError
from snakepit.errors import SessionExists as SessionExists
from snakepit.errors import SessionLimitReached as SessionLimitReached
from snakepit.errors import SessionNotFound as SessionNotFound
from snakepit.errors import SessionWorkerLost as SessionWorkerLost
from snakepit.errors import SnakepitError as SnakepitError
from snakepit.errors import ToolNotFound as ToolNotFound
from snakepit.errors import VariableError as VariableError
from snakepit.errors import VariableExists as VariableExists
from snakepit.errors import VariableNotFound as VariableNotFound
from snakepit.errors import VariableValidationError as VariableValidationError
from snakepit.errors import WaitTimeout as WaitTimeout
from snakepit.errors import WorkerBusy as WorkerBusy
from snakepit.errors import WorkerCrashed as WorkerCrashed
from snakepit.errors import WorkerError as WorkerError
from snakepit.errors import WorkerStartError as WorkerStartError
from snakepit.errors import WorkerStopping as WorkerStopping
from snakepit.errors import WorkerUnavailable as WorkerUnavailable
from snakepit.errors import WrongEventLoop as WrongEventLoop
from snakepit.errors import __all__ as _error_names

if TYPE_CHECKING:
    from snakepit._wire._codec import Unserializable as Unserializable
    from snakepit.pool import Pool as Pool
    from snakepit.pool import PoolConfig as PoolConfig
    from snakepit.pool import PoolStats as PoolStats

__version__ = "0.1.0.dev0"

# The pool is host-side (grpc client, processes): imported on first use, so
# that a worker process, which imports snakepit.worker, never loads it.
_LAZY = {"Pool", "PoolConfig", "PoolStats"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import snakepit.pool

        return getattr(snakepit.pool, name)
    if name == "Unserializable":  # the codec loads protobuf: on first use too
        from snakepit._wire._codec import Unserializable

        return Unserializable
    raise AttributeError(f"module 'snakepit' has no attribute {name!r}")


# The whole error tree (one list: snakepit.errors.__all__), then the pool.
__all__ = (
    *_error_names,
    "Pool",
    "PoolConfig",
    "PoolStats",
    "Unserializable",
    "__version__",
)
