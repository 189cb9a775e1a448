"""Small GenServers and supervisors the OTP helpers' tests run on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

from snakepit.otp import (
    ChildSpec,
    GenServer,
    Restart,
    Stop,
    Strategy,
    Supervisor,
    SupervisorRef,
    SupervisorSpec,
)


class Boom(Exception):
    """A deliberate crash."""


class Counter(GenServer[str, Any, int]):
    """Counts casts of "incr"; crashes, stops or hangs on request."""

    async def init(self, arg: int | None) -> int:
        return 0 if arg is None else arg

    async def handle_call(self, request: str, state: int) -> tuple[Any, int]:
        if request == "get":
            return state, state
        if request == "ping":
            return "pong", state
        if request == "hang":
            await anyio.Event().wait()
        raise Boom(request)

    async def handle_cast(self, message: str, state: int) -> int:
        if message == "incr":
            return state + 1
        if message == "stop_normal":
            raise Stop("normal")
        if message == "hang":
            await anyio.Event().wait()
        raise Boom(message)

    async def handle_info(self, message: Any, state: int) -> int:
        return state


class Holder(GenServer[str, Any, Any]):
    """Holds any state: call "get" reads it, cast ``("set", value)`` replaces it."""

    async def handle_call(self, request: str, state: Any) -> tuple[Any, Any]:
        return state, state

    async def handle_cast(self, message: tuple[str, Any], state: Any) -> Any:
        return message[1]


class DeafAfterRestart(Counter):
    """A child whose every restart hangs in its first message: it never answers."""

    async def init(self, arg: int | None) -> int:
        if self.ref.generation > 0:
            self.ref.cast("hang")
        return 0


class Other(Counter):
    """A second server type, for assert_tree."""


def specs(
    *ids: str, restart: Restart = "permanent", cls: type[Counter] = Counter
) -> list[ChildSpec]:
    return [ChildSpec(i, cls, restart=restart) for i in ids]


@asynccontextmanager
async def supervisor(
    children: Sequence[ChildSpec],
    strategy: Strategy = "one_for_one",
    **kwargs: Any,
) -> AsyncIterator[SupervisorRef]:
    spec = SupervisorSpec(children=children, strategy=strategy, **kwargs)
    async with Supervisor.running(spec, name="pool") as sup:
        yield sup


@asynccontextmanager
async def counter(start: int = 0) -> AsyncIterator[Any]:
    async with Counter.running(start, name="counter") as ref:
        try:
            yield ref
        finally:
            await ref.kill()  # a hanging handler must not hold up the exit


def child(sup: SupervisorRef, child_id: str) -> Any:
    ref = sup.child(child_id)
    assert ref is not None
    return ref
