"""The adapter of ``sessions.py``: HostCaller, plus a tool writing a variable through the bridge.

``bridge_set`` sends one ``SetVariablesRequest`` for its call's session
through the worker's bridge client (the framed lane): what a tool's variable
write costs, until ``ctx.session.variables`` wraps it.
"""

from __future__ import annotations

import json
from typing import Any

from snakepit._wire._proto.snakepit.v1 import bridge_pb2
from snakepit.testing.adapters import HostCaller
from snakepit.worker import Context, tool


class BridgeCaller(HostCaller):
    """HostCaller (``noop``, ``call_host``...), plus ``bridge_set``."""

    @tool
    async def bridge_set(self, ctx: Context, name: str, value: Any) -> int:
        """Set the variable ``name`` of the call's session to ``value``; its new version."""
        request = bridge_pb2.SetVariablesRequest(
            session_id=ctx.session_id,
            values=[bridge_pb2.BridgeVariable(name=name, value_json=json.dumps(value))],
        )
        reply = await ctx._bridge.set_variables(request)
        if reply.HasField("failure"):
            raise RuntimeError(reply.failure.message)
        return int(reply.variables[0].version)
