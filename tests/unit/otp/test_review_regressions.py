"""Edge cases found in review, kept as regression tests."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from snakepit.otp import (
    ChildSpec,
    ChildTerminated,
    GenServer,
    Supervisor,
    SupervisorEvent,
    SupervisorSpec,
    monitor,
)

pytestmark = pytest.mark.anyio


class Crashy(GenServer[Any, Any, tuple[str, anyio.Event, anyio.Event]]):
    """Crashes on any cast; ``c`` blocks in terminate until the gate opens."""

    async def handle_cast(self, message: Any, state: tuple[str, anyio.Event, anyio.Event]) -> Any:
        raise RuntimeError(f"{state[0]} crashed")

    async def terminate(self, reason: Any, state: tuple[str, anyio.Event, anyio.Event]) -> None:
        name, entered, gate = state
        if name == "c" and reason == "shutdown":
            entered.set()
            await gate.wait()


async def test_a_sibling_crashing_while_the_group_stops_is_reported() -> None:
    entered, gate = anyio.Event(), anyio.Event()
    spec = SupervisorSpec(
        [ChildSpec(n, Crashy, (n, entered, gate)) for n in "abc"], strategy="one_for_all"
    )
    async with Supervisor.running(spec) as sup:
        events = sup.subscribe()
        a, b = sup.child("a"), sup.child("b")
        assert a is not None
        assert b is not None
        b.cast("boom")  # one_for_all: the supervisor stops c first (reverse order)...
        with anyio.fail_after(5):
            await entered.wait()  # ...and c's terminate is running now
            async with monitor(a) as down:
                a.cast("boom")  # a crashes on its own meanwhile
                await down.down()
            gate.set()
            await sup.wait_stable()
        seen: list[SupervisorEvent] = []
        while True:
            try:
                seen.append(events.receive_nowait())
            except anyio.WouldBlock:
                break
        events.close()
        about_a = [e for e in seen if isinstance(e, ChildTerminated) and e.child_id == "a"]
        assert len(about_a) == 1
        assert isinstance(about_a[0].reason, RuntimeError)
