"""A small supervision tree, narrated: a kill, a restart, restart intensity.

Run it with ``make demo`` (or ``python examples/supervision_demo.py [--backend trio]``).
Until the worker pool exists, this is snakepit's main job: it shows the OTP
core that every pool is built on.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import anyio

from snakepit.errors import ServerExited
from snakepit.otp import (
    ChildExited,
    ChildSpec,
    ChildStarted,
    ChildTerminated,
    GenServer,
    Registry,
    RestartIntensityReached,
    Supervisor,
    SupervisorEvent,
    SupervisorRef,
    SupervisorSpec,
    monitor,
)


class Counter(GenServer[str, int, int]):
    """Counts casts; ``call("get")`` replies with the count, ``call("crash")`` raises."""

    async def init(self, start: int) -> int:
        return start

    async def handle_call(self, request: str, state: int) -> tuple[int, int]:
        if request == "crash":
            raise RuntimeError("asked to crash")
        return state, state

    async def handle_cast(self, message: Any, state: int) -> int:
        return state + 1


def describe(event: SupervisorEvent) -> str:
    who = event.supervisor.name or "?"
    if isinstance(event, ChildStarted):
        verb = "restarted" if event.generation else "started"
        return f"[{who}] {event.child_id!r} {verb} as generation {event.generation}"
    if isinstance(event, ChildExited):
        then = "restarting it" if event.restarting else "not restarting it"
        return f"[{who}] {event.child_id!r} exited ({_reason(event.reason)}); {then}"
    if isinstance(event, ChildTerminated):
        return f"[{who}] stopped {event.child_id!r} ({_reason(event.reason)})"
    if isinstance(event, RestartIntensityReached):
        return (
            f"[{who}] more than {event.max_restarts} restarts in {event.max_seconds:g}s: giving up"
        )
    return f"[{who}] {event!r}"


def _reason(reason: object) -> str:
    return (
        f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
    )


def show_tree(sup: SupervisorRef, indent: str = "  ") -> None:
    for child in sup.which_children():
        state = "alive" if child.alive else "down"
        print(f"{indent}{child.id!r:<10} generation {child.generation}  {state}")
        if isinstance(child.ref, SupervisorRef):
            show_tree(child.ref, indent + "    ")


async def narrate(events: Any) -> None:
    async with events:
        async for event in events:
            print("   event:", describe(event))


async def main() -> None:
    registry = Registry()
    flaky = SupervisorSpec(
        [ChildSpec("flaky", Counter, 0, name="flaky")],
        strategy="one_for_one",
        max_restarts=2,
        max_seconds=5,
        registry=registry,
    )
    spec = SupervisorSpec(
        [
            ChildSpec("cache", Counter, 0, name="cache"),
            ChildSpec("jobs", Counter, 0, name="jobs"),
            ChildSpec("fragile", Supervisor, flaky, name="fragile"),
        ],
        strategy="rest_for_one",
        registry=registry,
    )
    print(
        "1. Start a tree: root (rest_for_one) -> cache, jobs, fragile (one_for_one, 2 restarts/5s)"
    )
    async with Supervisor.running(spec, name="root") as root, anyio.create_task_group() as tg:
        tg.start_soon(narrate, root.subscribe())
        show_tree(root)

        print("\n2. Talk to the children by name")
        registry.cast("cache", "hit")
        registry.cast("cache", "hit")
        print("   cache count:", await registry.call("cache", "get"))

        print(
            "\n3. Kill 'cache' (kill -9 style: no terminate); rest_for_one restarts it and 'jobs'"
        )
        old = registry.lookup("cache")
        async with monitor(old) as mon:
            await old.kill()
            print("   DOWN:", await mon.down())
        new = await registry.wait_rebound("cache", old)
        await root.wait_stable()
        print(f"   'cache' is now {new!r} (was generation {old.generation})")
        print("   its state starts afresh:", await new.call("get"))
        show_tree(root)

        print("\n4. Crash 'flaky' three times: its supervisor allows 2 restarts in 5 s")
        fragile = registry.lookup("fragile")
        assert isinstance(fragile, SupervisorRef)
        tg.start_soon(narrate, fragile.subscribe())
        for attempt in (1, 2, 3):
            ref = registry.lookup("flaky")
            try:
                await ref.call("crash")
            except ServerExited as exc:
                print(f"   crash {attempt}: the caller got ServerExited({_reason(exc.reason)})")
            await root.wait_stable()
        print("   'fragile' reached its restart intensity; root restarted it (rest_for_one):")
        show_tree(root)
        tg.cancel_scope.cancel()
    print("\n5. Leaving the block stopped every child in reverse order; nothing is left running.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    # Crash reports go to the log; keep the demo's own story readable.
    logging.basicConfig(level=logging.CRITICAL)
    anyio.run(main, backend=parser.parse_args().backend)
