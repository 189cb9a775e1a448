"""What a worker says of itself: its adapter and the specs of its tools (``describe()``)."""

from __future__ import annotations

from dataclasses import dataclass

from snakepit._wire._proto.snakepit.v1 import worker_pb2

__all__ = ("ParameterSpec", "ToolSpec", "WorkerDescription")


@dataclass(frozen=True, slots=True)
class ParameterSpec:
    """One parameter of a tool, from its signature and type hints."""

    #: The argument's name, as the caller passes it.
    name: str
    #: Its type hint as text (``"list[float]"``; empty if none).
    annotation: str
    #: True when it has no default.
    required: bool
    #: Its default as ``repr()`` text (empty if required).
    default: str


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool of a worker's adapter, as the worker describes it.

    The host-side view of a :class:`~snakepit.worker.ToolInfo`: what a caller
    needs to call the tool, without the worker's means of running it.
    """

    #: The name to call it by (``execute(name, ...)``).
    name: str
    #: Its docstring (empty if none).
    doc: str
    #: Its parameters, in signature order (``ctx`` left out).
    parameters: tuple[ParameterSpec, ...]
    #: True for a generator or async generator: call it with ``stream()``.
    streaming: bool
    #: Its return type hint as text (empty if none).
    returns: str


@dataclass(frozen=True, slots=True)
class WorkerDescription:
    """A worker's adapter, protocol version and tools, from ``describe()``."""

    #: ``package.module:Class`` of its adapter.
    adapter: str
    #: The version of the worker protocol it speaks.
    protocol_version: int
    #: Its id in its pool.
    worker_id: str
    #: Calls it runs at once.
    max_concurrency: int
    #: Its tools, in the order it lists them.
    tools: tuple[ToolSpec, ...]


def from_message(message: worker_pb2.DescribeResponse) -> WorkerDescription:
    """Read a worker's ``Describe`` reply (the generated message stays inside snakepit)."""
    return WorkerDescription(
        adapter=message.adapter,
        protocol_version=message.protocol_version,
        worker_id=message.worker_id,
        max_concurrency=message.max_concurrency,
        tools=tuple(
            ToolSpec(
                name=tool.name,
                doc=tool.doc,
                parameters=tuple(
                    ParameterSpec(p.name, p.annotation, p.required, p.default)
                    for p in tool.parameters
                ),
                streaming=tool.streaming,
                returns=tool.returns,
            )
            for tool in message.tools
        ),
    )
