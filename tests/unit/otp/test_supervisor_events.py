"""SupervisorRef.subscribe(): the events of starts, exits, restarts and stops, in order."""

from __future__ import annotations

import gc
import warnings
from typing import Any

import anyio
import pytest

from snakepit.otp import (
    ChildExited,
    ChildSpec,
    ChildStarted,
    ChildTerminated,
    GenServer,
    RestartIntensityReached,
    Supervisor,
    SupervisorSpec,
    monitor,
)

from ._sup_helpers import (
    Boom,
    Subscriptions,
    cast_and_wait,
    child_ref,
    drain,
    kill_and_wait,
    summary,
    workers,
)

pytestmark = pytest.mark.anyio


class TestEvents:
    async def test_a_restart_publishes_exited_then_started(self, subscribe: Subscriptions) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("a", "b"))) as sup:
                events = subscribe(sup)
                old = child_ref(sup, "b")
                await kill_and_wait(old)
                await sup.wait_stable()
                new = child_ref(sup, "b")
                got, ended = drain(events)
                assert not ended
                assert summary(got) == [("exited", "b", True), ("started", "b", 1)]
                exited, started = got
                assert isinstance(exited, ChildExited)
                assert (exited.supervisor, exited.ref, exited.reason) == (sup, old, "killed")
                assert isinstance(started, ChildStarted)
                assert (started.supervisor, started.ref, started.generation) == (sup, new, 1)
                assert exited.at <= started.at

    async def test_a_crash_carries_its_exception(self, subscribe: Subscriptions) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("a"))) as sup:
                events = subscribe(sup)
                reason = await cast_and_wait(child_ref(sup, "a"), "crash")
                await sup.wait_stable()
                got, _ = drain(events)
                exited = got[0]
                assert isinstance(exited, ChildExited)
                assert isinstance(exited.reason, Boom)
                assert exited.reason is reason

    async def test_one_for_all_sequence(self, subscribe: Subscriptions) -> None:
        spec = SupervisorSpec(workers("a", "b", "c"), strategy="one_for_all")
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                events = subscribe(sup)
                await kill_and_wait(child_ref(sup, "b"))
                await sup.wait_stable()
                got, _ = drain(events)
                assert summary(got) == [
                    ("exited", "b", True),
                    ("terminated", "c"),
                    ("terminated", "a"),
                    ("started", "a", 1),
                    ("started", "b", 1),
                    ("started", "c", 1),
                ]

    async def test_intensity_sequence_and_end_of_stream(self, subscribe: Subscriptions) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("a", "b", "c"))) as sup:
                events = subscribe(sup)
                for _ in range(3):
                    await kill_and_wait(child_ref(sup, "b"))
                    await sup.wait_stable()
                async with monitor(sup) as down:
                    await kill_and_wait(child_ref(sup, "b"))
                    await down.down()
                got = [event async for event in events]  # ends: the supervisor exited
                assert summary(got) == [
                    *[("exited", "b", True), ("started", "b", 1)],
                    *[("exited", "b", True), ("started", "b", 2)],
                    *[("exited", "b", True), ("started", "b", 3)],
                    ("exited", "b", False),  # not restarted: the intensity is exceeded
                    ("intensity", 3, 5.0),
                    ("terminated", "c"),
                    ("terminated", "a"),
                ]
                intensity = got[-3]
                assert isinstance(intensity, RestartIntensityReached)
                assert intensity.supervisor is sup

    async def test_shutdown_sequence_and_end_of_stream(self, subscribe: Subscriptions) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("a", "b", "c"))) as sup:
                events = subscribe(sup)
            got = [event async for event in events]
        assert summary(got) == [("terminated", "c"), ("terminated", "b"), ("terminated", "a")]
        assert all(isinstance(e, ChildTerminated) and e.reason == "shutdown" for e in got)

    async def test_subscribers_are_independent_and_late_ones_see_only_later_events(
        self, subscribe: Subscriptions
    ) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("a"))) as sup:
                first = subscribe(sup)
                await kill_and_wait(child_ref(sup, "a"))
                await sup.wait_stable()
                second = subscribe(sup)
                await kill_and_wait(child_ref(sup, "a"))
                await sup.wait_stable()
                got, _ = drain(second)
                assert summary(got) == [("exited", "a", True), ("started", "a", 2)]
                got, _ = drain(first)
                assert [e[2] for e in summary(got) if e[0] == "started"] == [1, 2]
        for stream in (first, second):  # both saw the shutdown, then the end
            got, ended = drain(stream)
            assert summary(got) == [("terminated", "a")]
            assert ended

    async def test_a_subscriber_may_leave_early(self) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with anyio.fail_after(5):
                async with Supervisor.running(SupervisorSpec(workers("a"))) as sup:
                    with sup.subscribe() as early, sup.subscribe() as stays:
                        early.close()  # the reader goes away; the supervisor carries on
                        await kill_and_wait(child_ref(sup, "a"))
                        await sup.wait_stable()
                        got, _ = drain(stays)
                        assert summary(got) == [("exited", "a", True), ("started", "a", 1)]
            gc.collect()
        unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert unclosed == []

    async def test_subscribing_to_a_dead_supervisor_ends_at_once(
        self, subscribe: Subscriptions
    ) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running() as sup:
                pass
            events = subscribe(sup)
            assert drain(events) == ([], True)


class Crashy(GenServer[Any, Any, tuple[str, anyio.Event, anyio.Event]]):
    """Crashes on any cast; ``c`` blocks in terminate until the gate opens."""

    async def handle_cast(self, message: Any, state: tuple[str, anyio.Event, anyio.Event]) -> Any:
        raise RuntimeError(f"{state[0]} crashed")

    async def terminate(self, reason: Any, state: tuple[str, anyio.Event, anyio.Event]) -> None:
        name, entered, gate = state
        if name == "c" and reason == "shutdown":
            entered.set()
            await gate.wait()


async def test_a_sibling_crashing_while_the_group_stops_is_reported(
    subscribe: Subscriptions,
) -> None:
    entered, gate = anyio.Event(), anyio.Event()
    spec = SupervisorSpec(
        [ChildSpec(n, Crashy, (n, entered, gate)) for n in "abc"], strategy="one_for_all"
    )
    async with Supervisor.running(spec) as sup:
        events = subscribe(sup)
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
        seen, _ = drain(events)
        about_a = [e for e in seen if isinstance(e, ChildTerminated) and e.child_id == "a"]
        assert len(about_a) == 1
        assert isinstance(about_a[0].reason, RuntimeError)
