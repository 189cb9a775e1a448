"""The code that runs inside a worker subprocess: Adapter, @tool, Context.

Write an adapter::

    from snakepit.worker import Adapter, Context, tool

    class Greeter(Adapter):
        @tool
        def greet(self, name: str, ctx: Context) -> str:
            "Say hello."
            return f"hello {name} (request {ctx.request_id})"

and serve it with ``python -m snakepit.worker --adapter mymod:Greeter
--listen unix:/run/me/w.sock``: the worker binds, prints one JSON ready line
on stdout, and serves ``snakepit.v1.WorkerService`` plus ``grpc.health.v1``.
It exits on SIGTERM (after finishing calls in flight and ``teardown()``) and
when its stdin closes (its host is gone). This package imports nothing from
the host side of snakepit. :class:`AdapterServer` serves an adapter in the
current event loop (what the pool's in-process launcher uses). A tool that
means to send a description of a value JSON cannot carry, rather than fail
with ``PayloadError``, returns ``Unserializable.of(value)``. A tool calls a
function its pool registered (``pool.register_host_tool``) with
``ctx.call_host(name, args)``, through the worker's :class:`HostBridge`, and
reads, writes and watches its session's typed variables with
``ctx.session.variables`` (:class:`Variables`; :class:`Variable`,
:class:`VariableSpec`, :class:`VariableChange` and :class:`Tensor` are
re-exported here for tools).
"""

# First: grpc is imported with its logging quieted (before any module below imports it).
from snakepit._wire import _grpc_logging  # noqa: F401  # isort: skip
from snakepit._wire._codec import Unserializable as Unserializable
from snakepit._wire._variables import Tensor as Tensor
from snakepit._wire._variables import Variable as Variable
from snakepit._wire._variables import VariableChange as VariableChange
from snakepit._wire._variables import VariableSpec as VariableSpec

from ._adapter import Adapter as Adapter
from ._adapter import ToolInfo as ToolInfo
from ._adapter import ToolParam as ToolParam
from ._adapter import tool as tool
from ._adapter_server import AdapterServer as AdapterServer
from ._bridge_client import HostBridge as HostBridge
from ._context import Context as Context
from ._context import Session as Session
from ._main import main as main
from ._main import run as run
from ._service import PROTOCOL_VERSION as PROTOCOL_VERSION
from ._tool_variables import Variables as Variables

__all__ = (
    "PROTOCOL_VERSION",
    "Adapter",
    "AdapterServer",
    "Context",
    "HostBridge",
    "Session",
    "Tensor",
    "ToolInfo",
    "ToolParam",
    "Unserializable",
    "Variable",
    "VariableChange",
    "VariableSpec",
    "Variables",
    "main",
    "run",
    "tool",
)
