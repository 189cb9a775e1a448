"""The OTP core: GenServer, Supervisor, DynamicSupervisor, Registry, monitors.

Built on anyio task groups; runs on asyncio and on trio. Knows nothing of
gRPC or pools. The vocabulary is Erlang/OTP's, and so are the semantics
(see each class); where Python differs, the docstrings say so.
"""

from snakepit.errors import (
    CallTimeout as CallTimeout,
)
from snakepit.errors import (
    ChildNotFound as ChildNotFound,
)
from snakepit.errors import (
    ChildStartError as ChildStartError,
)
from snakepit.errors import (
    DuplicateChild as DuplicateChild,
)
from snakepit.errors import (
    MaxChildrenReached as MaxChildrenReached,
)
from snakepit.errors import (
    NameNotFound as NameNotFound,
)
from snakepit.errors import (
    NameTaken as NameTaken,
)
from snakepit.errors import (
    OTPError as OTPError,
)
from snakepit.errors import (
    ReachedMaxRestartIntensity as ReachedMaxRestartIntensity,
)
from snakepit.errors import (
    ServerExited as ServerExited,
)
from snakepit.errors import (
    WaitTimeout as WaitTimeout,
)

from ._broadcast import Broadcast as Broadcast
from ._dynamic import DynamicSupervisor as DynamicSupervisor
from ._events import ChildExited as ChildExited
from ._events import ChildStarted as ChildStarted
from ._events import ChildStartFailed as ChildStartFailed
from ._events import ChildTerminated as ChildTerminated
from ._events import RestartIntensityReached as RestartIntensityReached
from ._events import SupervisorEvent as SupervisorEvent
from ._messages import Continue as Continue
from ._messages import Ignore as Ignore
from ._messages import MessageKind as MessageKind
from ._messages import MessageTracer as MessageTracer
from ._messages import NoReply as NoReply
from ._messages import ReplyHandle as ReplyHandle
from ._messages import Stop as Stop
from ._monitor import Monitor as Monitor
from ._monitor import monitor as monitor
from ._reasons import ExitReason as ExitReason
from ._reasons import Shutdown as Shutdown
from ._reasons import exit_detail as exit_detail
from ._reasons import is_abnormal as is_abnormal
from ._ref import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ._ref import MailboxStats as MailboxStats
from ._ref import ServerRef as ServerRef
from ._registry import Registry as Registry
from ._server import GenServer as GenServer
from ._spec import ChildShutdown as ChildShutdown
from ._spec import ChildSpec as ChildSpec
from ._spec import ChildType as ChildType
from ._spec import DynamicSupervisorSpec as DynamicSupervisorSpec
from ._spec import Restart as Restart
from ._spec import Strategy as Strategy
from ._spec import SupervisorSpec as SupervisorSpec
from ._supervisor import Supervisor as Supervisor
from ._supervisor_ref import ChildCounts as ChildCounts
from ._supervisor_ref import ChildInfo as ChildInfo
from ._supervisor_ref import SupervisorRef as SupervisorRef
from ._task_group import unwrapped_task_group as unwrapped_task_group

__all__ = (
    "DEFAULT_TIMEOUT",
    "Broadcast",
    "CallTimeout",
    "ChildCounts",
    "ChildExited",
    "ChildInfo",
    "ChildNotFound",
    "ChildShutdown",
    "ChildSpec",
    "ChildStartError",
    "ChildStartFailed",
    "ChildStarted",
    "ChildTerminated",
    "ChildType",
    "Continue",
    "DuplicateChild",
    "DynamicSupervisor",
    "DynamicSupervisorSpec",
    "ExitReason",
    "GenServer",
    "Ignore",
    "MailboxStats",
    "MaxChildrenReached",
    "MessageKind",
    "MessageTracer",
    "Monitor",
    "NameNotFound",
    "NameTaken",
    "NoReply",
    "OTPError",
    "ReachedMaxRestartIntensity",
    "Registry",
    "ReplyHandle",
    "Restart",
    "RestartIntensityReached",
    "ServerExited",
    "ServerRef",
    "Shutdown",
    "Stop",
    "Strategy",
    "Supervisor",
    "SupervisorEvent",
    "SupervisorRef",
    "SupervisorSpec",
    "WaitTimeout",
    "exit_detail",
    "is_abnormal",
    "monitor",
    "unwrapped_task_group",
)
