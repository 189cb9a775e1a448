"""snakepit.testing's OTP helpers: each passes on a sound system and fails clearly on a fault."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from trio.testing import MockClock

from snakepit.otp import (
    CallTimeout,
    ChildExited,
    ChildSpec,
    ChildStarted,
    GenServer,
    Registry,
    Restart,
    ServerExited,
    Stop,
    Strategy,
    Supervisor,
    SupervisorRef,
    SupervisorSpec,
)
from snakepit.testing import (
    Recovery,
    assert_alive,
    assert_all_children_alive,
    assert_child_count,
    assert_dead,
    assert_handles,
    assert_process_restarted,
    assert_responsive,
    assert_state,
    assert_strategy,
    assert_tree,
    cast_and_sync,
    check_crash_recovery,
    check_restart_strategy,
    concurrent_calls,
    get_state,
    monitor_call,
    stress,
    trace_messages,
    trace_supervision,
    wait_for_restart,
    wait_stable,
)

pytestmark = pytest.mark.anyio


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


# --- servers ----------------------------------------------------------------------------


class TestServerHelpers:
    async def test_cast_and_sync_then_get_state(self) -> None:
        async with counter() as ref:
            await cast_and_sync(ref, "incr")
            await cast_and_sync(ref, "incr")
            assert await get_state(ref) == 2

    async def test_cast_and_sync_raises_the_exit_a_cast_caused(self) -> None:
        async with counter() as ref:
            with pytest.raises(ServerExited, match="Boom"):
                await cast_and_sync(ref, "explode")

    async def test_alive_and_dead(self) -> None:
        async with counter() as ref:
            assert_alive(ref)
            with pytest.raises(
                AssertionError, match=r"expected <Counter.*> to have exited; it is alive"
            ):
                assert_dead(ref)
            await ref.kill()
            assert_dead(ref)
            with pytest.raises(AssertionError, match=r"to be alive; it exited \(killed\)"):
                assert_alive(ref)

    async def test_assert_state_by_value_and_predicate(self) -> None:
        def even(n: int) -> bool:
            return n % 2 == 0

        async with counter(4) as ref:
            assert await assert_state(ref, 4) == 4
            await assert_state(ref, even)
            ref.cast("incr")
            with pytest.raises(AssertionError, match=r"state of <Counter.*> to be 4, found 5"):
                await assert_state(ref, 4)
            with pytest.raises(AssertionError, match=r"to satisfy .*even, found 5"):
                await assert_state(ref, even)

    async def test_a_class_is_a_value_not_a_predicate(self) -> None:
        class Idle:
            """A state of a state-pattern server: the class itself."""

        class Box:
            pass

        async with Holder.running(Idle) as ref:
            assert await assert_state(ref, Idle) is Idle  # not called: Idle(state) would raise
            with pytest.raises(
                AssertionError, match=r"to be <class .*Box'>, found <class .*Idle'>"
            ):
                await assert_state(ref, Box)
            await assert_handles(ref, "get", Idle)
            box = Box()
            await cast_and_sync(ref, ("set", box))
            with pytest.raises(AssertionError) as info:
                await assert_state(ref, Box)
            assert "(an instance of Box: a class is compared with ==; to check the type, " in str(
                info.value
            )
            await assert_state(ref, lambda s: isinstance(s, Box))
            with pytest.raises(AssertionError, match=r"with <class .*Box'>, got <.*Box object"):
                await assert_handles(ref, "get", Box)

    async def test_assert_state_of_a_dead_server(self) -> None:
        async with counter() as ref:
            await ref.kill()
            with pytest.raises(AssertionError, match=r"answer get_state; it exited \(killed\)"):
                await assert_state(ref, 0)

    async def test_assert_responsive(self) -> None:
        async with counter() as ref:
            await assert_responsive(ref)
            ref.cast("explode")
            with pytest.raises(
                AssertionError, match=r"answer a sync; it exited \(Boom\('explode'\)\)"
            ):
                await assert_responsive(ref)

    async def test_a_server_that_never_answers_is_not_responsive(
        self, mock_clock: MockClock
    ) -> None:
        async with counter() as ref:
            ref.cast("hang")
            with pytest.raises(
                AssertionError, match=r"answer a sync within 1s; it did not \(1 messages queued\)"
            ):
                await assert_responsive(ref, timeout=1)

    async def test_assert_handles(self) -> None:
        async with counter(3) as ref:
            assert await assert_handles(ref, "ping", "pong") == "pong"
            await assert_handles(ref, "get", lambda n: n == 3)
            with pytest.raises(AssertionError, match=r"answer 'ping' with 'pang', got 'pong'"):
                await assert_handles(ref, "ping", "pang")
            with pytest.raises(AssertionError, match=r"answer call 'nope'; it exited \(Boom"):
                await assert_handles(ref, "nope", None)

    async def test_concurrent_calls(self) -> None:
        async with counter(7) as ref:
            replies = await concurrent_calls(ref, ["get", "ping"], 5)
            assert replies == [[7] * 5, ["pong"] * 5]
            assert ref.mailbox_stats().high_water >= 10  # they were all queued at once

    async def test_concurrent_calls_report_failures(self) -> None:
        async with counter() as ref:
            with pytest.raises(
                AssertionError, match=r"of 6 concurrent calls to .* failed: "
            ) as info:
                await concurrent_calls(ref, ["ping", "explode", "ping"], 2)
            assert isinstance(info.value.__cause__, ServerExited)

    async def test_stress_is_replayable(self) -> None:
        ops: list[Any] = [("cast", "incr"), ("call", "get"), ("send", "tick")]
        async with counter() as first, counter() as second:
            one = await stress(first, ops, 300, rng=random.Random(5))
            two = await stress(second, ops, 300, rng=random.Random(5))
            assert one.calls + one.casts + one.sends == 300
            assert (one.calls, one.casts, one.sends) == (two.calls, two.casts, two.sends)
            assert await get_state(first) == one.casts

    async def test_stress_finds_the_crash(self) -> None:
        ops: list[Any] = [("cast", "incr"), ("call", "get"), ("cast", "explode")]
        async with counter() as ref:
            with pytest.raises(AssertionError, match=r"it exited \(Boom\('explode'\)\)"):
                await stress(ref, ops, 50, rng=random.Random(1))


# --- restarts ---------------------------------------------------------------------------


class TestRestarts:
    async def test_wait_for_restart_returns_the_next_generation(self) -> None:
        async with supervisor(specs("a", "b")) as sup:
            old = child(sup, "b")
            await old.kill()
            new = await wait_for_restart(sup, "b", old)
            assert new is sup.child("b")
            assert (old.generation, new.generation) == (0, 1)
            # Once restarted, it is found at once.
            assert await wait_for_restart(sup, "b", old) is new

    async def test_a_temporary_child_fails_fast(self) -> None:
        async with supervisor(specs("a", "b", restart="temporary")) as sup:
            old = child(sup, "b")
            await old.kill()
            with pytest.raises(AssertionError, match=r"supervisor 'pool'.* 'b'.*temporary"):
                await wait_for_restart(sup, "b", old)

    async def test_a_transient_child_that_stopped_normally_is_not_awaited(self) -> None:
        async with supervisor(specs("a", restart="transient")) as sup:
            old = child(sup, "a")
            old.cast("stop_normal")
            with pytest.raises(
                AssertionError,
                match=r"it exited \(normal\) and is not restarted: its restart type is 'transient'",
            ):
                await wait_for_restart(sup, "a", old)

    async def test_restart_intensity_is_reported(self) -> None:
        async with supervisor(specs("a"), max_restarts=0) as sup:
            old = child(sup, "a")
            await old.kill()
            # Whether or not the supervisor has given up by now, the message says why.
            with pytest.raises(AssertionError, match=r"(?i)'a'; .*restart ?intensity"):
                await wait_for_restart(sup, "a", old)

    async def test_no_restart_within_the_timeout(self, mock_clock: MockClock) -> None:
        async with supervisor(specs("a")) as sup:
            alive = child(sup, "a")
            with pytest.raises(
                AssertionError,
                match=r"restart child 'a' \(a generation above 0\) within 2s; .* is alive; "
                r"running: 'a' \(gen 0\)",
            ):
                await assert_process_restarted(sup, "a", alive, timeout=2)

    async def test_the_timeout_names_the_childs_last_exit(self, mock_clock: MockClock) -> None:
        async with supervisor(specs("a")) as sup:
            await child(sup, "a").kill()
            await wait_stable(sup)
            current = child(sup, "a")  # gen 1, after gen 0 was killed
            with pytest.raises(
                AssertionError,
                match=r"within 2s; <Counter.* gen=1 alive> is alive, the child's last exit: "
                r"killed; running: 'a' \(gen 1; last exit: killed\)",
            ):
                await assert_process_restarted(sup, "a", current, timeout=2)

    async def test_by_registered_name(self) -> None:
        registry = Registry()
        children = [ChildSpec("a", Counter, name="db")]
        async with supervisor(children, registry=registry) as sup:
            old = registry.lookup("db")
            await old.kill()
            new = await assert_process_restarted(registry, "db", old)
            assert new is sup.child("a")
            assert new.generation == 1

    async def test_a_name_not_taken_again(self, mock_clock: MockClock) -> None:
        registry = Registry()
        children = [ChildSpec("a", Counter, name="db", restart="temporary")]
        async with supervisor(children, registry=registry):
            old = registry.lookup("db")
            await old.kill()
            with pytest.raises(
                AssertionError, match=r"name 'db' to be taken by a restart .* held by None"
            ):
                await wait_for_restart(registry, "db", old, timeout=1)

    @pytest.mark.parametrize("reason", ["killed", Boom("planted"), "normal"])
    async def test_crash_recovery(self, reason: Any) -> None:
        async with supervisor(specs("a", "b")) as sup:
            recovery = await check_crash_recovery(sup, "b", reason=reason)
            assert isinstance(recovery, Recovery)
            assert recovery.new is sup.child("b")
            assert (recovery.old_generation, recovery.new_generation) == (0, 1)
            assert recovery.reason is reason or recovery.reason == reason
            assert recovery.seconds >= 0

    async def test_crash_recovery_of_a_child_not_restarted(self) -> None:
        async with supervisor(specs("a", restart="transient")) as sup:
            with pytest.raises(AssertionError, match=r"restart type is 'transient'"):
                await check_crash_recovery(sup, "a", reason="normal")

    async def test_crash_recovery_of_a_replacement_that_never_answers(
        self, mock_clock: MockClock
    ) -> None:
        async with supervisor(specs("a", cls=DeafAfterRestart)) as sup:
            with pytest.raises(
                AssertionError,
                match=r"<DeafAfterRestart.* gen=1 alive> to answer a sync after its restart "
                r"within 1s",
            ):
                await check_crash_recovery(sup, "a", timeout=1)
            await child(sup, "a").kill()  # the hung one; its replacement hangs too, unasked

    async def test_crash_recovery_needs_a_running_child(self) -> None:
        async with supervisor(specs("a")) as sup:
            with pytest.raises(AssertionError, match=r"has no child 'zz'"):
                await check_crash_recovery(sup, "zz")


# --- supervisors ------------------------------------------------------------------------


class TestSupervisorHelpers:
    async def test_assert_strategy(self) -> None:
        async with supervisor(specs("a"), strategy="rest_for_one") as sup:
            assert_strategy(sup, "rest_for_one")
            with pytest.raises(
                AssertionError,
                match="expected supervisor 'pool' to use strategy 'one_for_all', "
                "found 'rest_for_one'",
            ):
                assert_strategy(sup, "one_for_all")

    async def test_counts_and_liveness_after_a_restart(self) -> None:
        async with supervisor(specs("a", "b", "c")) as sup:
            await child(sup, "b").kill()
            await wait_stable(sup)
            assert_child_count(sup, 3)
            assert_all_children_alive(sup)

    async def test_a_child_that_is_not_replaced(self) -> None:
        children = [*specs("a"), *specs("b", restart="transient"), *specs("c")]
        async with supervisor(children) as sup:
            child(sup, "b").cast("stop_normal")
            await wait_stable(sup)
            assert_child_count(sup, 2)
            expected = (
                r"running: 'a' \(gen 0\), 'c' \(gen 0\); "
                r"'b' is not running \(last gen 0, transient; it exited: normal\)"
            )
            with pytest.raises(
                AssertionError,
                match=rf"expected 3 running children of supervisor 'pool', found 2: {expected}",
            ):
                assert_child_count(sup, 3)
            with pytest.raises(
                AssertionError, match=rf"every child of supervisor 'pool' to be running; {expected}"
            ):
                assert_all_children_alive(sup)

    async def test_wait_stable_on_a_supervisor_that_gave_up(self) -> None:
        async with supervisor(specs("a"), max_restarts=0) as sup:
            await child(sup, "a").kill()
            with pytest.raises(
                AssertionError,
                match=r"to become stable; it exited \(Shutdown\(ReachedMaxRestartIntensity",
            ):
                await wait_stable(sup)
            with pytest.raises(AssertionError, match=r"found 0: the supervisor exited"):
                assert_child_count(sup, 1)

    @pytest.mark.parametrize(
        ("strategy", "restarted"),
        [
            ("one_for_one", ["b"]),
            ("one_for_all", ["a", "b", "c"]),
            ("rest_for_one", ["b", "c"]),
        ],
    )
    async def test_check_restart_strategy(self, strategy: Strategy, restarted: list[str]) -> None:
        async with supervisor(specs("a", "b", "c"), strategy=strategy) as sup:
            assert await check_restart_strategy(sup, kill=["b"]) == restarted
            assert_all_children_alive(sup)

    async def test_temporary_children_are_not_expected_back(self) -> None:
        children = [*specs("a"), *specs("b", "c", restart="temporary")]
        async with supervisor(children, strategy="one_for_all") as sup:
            assert await check_restart_strategy(sup, kill=["a"]) == ["a"]
            assert [info.id for info in sup.which_children()] == ["a"]

    async def test_the_wrong_strategy_is_caught(self) -> None:
        async with supervisor(specs("a", "b", "c"), strategy="one_for_one") as sup:
            with pytest.raises(
                AssertionError,
                match=r"expected killing \['b'\] under 'rest_for_one' to restart \['b', 'c'\] "
                r"of supervisor 'pool' \(its own strategy is 'one_for_one'\); it restarted "
                r"\['b'\] \(generations: 'a' 0 -> 0, 'b' 0 -> 1, 'c' 0 -> 0\)",
            ):
                await check_restart_strategy(sup, kill=["b"], strategy="rest_for_one")

    async def test_check_restart_strategy_needs_running_children(self) -> None:
        async with supervisor(specs("a", restart="transient")) as sup:
            child(sup, "a").cast("stop_normal")
            await wait_stable(sup)
            with pytest.raises(AssertionError, match=r"'a' of supervisor 'pool' to be running"):
                await check_restart_strategy(sup, kill=["a"])

    async def test_assert_tree(self) -> None:
        inner = SupervisorSpec(children=specs("x", "y"))
        children = [*specs("a"), ChildSpec("sub", Supervisor, arg=inner), *specs("c", cls=Other)]
        async with supervisor(children) as sup:
            assert_tree(sup, {"a": Counter, "sub": {"x": "worker", "y": Counter}, "c": Other})
            assert_tree(sup, {"a": "worker", "sub": "supervisor", "c": Counter})
            await child(child(sup, "sub"), "y").kill()
            await wait_stable(sup)
            assert_tree(sup, {"a": Counter, "sub": {"x": Counter, "y": Counter}, "c": Counter})

    async def test_assert_tree_lists_every_mismatch(self) -> None:
        inner = SupervisorSpec(children=specs("x", "y", restart="transient"))
        children = [*specs("a"), ChildSpec("sub", Supervisor, arg=inner), *specs("c")]
        async with supervisor(children) as sup:
            child(child(sup, "sub"), "y").cast("stop_normal")
            await wait_stable(sup)
            with pytest.raises(AssertionError) as info:
                assert_tree(
                    sup,
                    {"a": Other, "sub": {"x": "supervisor", "y": Counter}, "c": {"z": "worker"}},
                )
        assert str(info.value).splitlines() == [
            "the supervision tree does not match:",
            "  supervisor 'pool' > 'a': expected a Other, found a Counter",
            "  supervisor 'pool' > 'sub' > 'x': expected a supervisor, found a worker",
            "  supervisor 'pool' > 'sub' > 'y': not running "
            "(last gen 0, transient; it exited: normal)",
            "  supervisor 'pool' > 'c': expected a supervisor, found a Counter",
        ]

    async def test_assert_tree_checks_ids_and_order(self) -> None:
        async with supervisor(specs("a", "b")) as sup:
            with pytest.raises(
                AssertionError,
                match=r"supervisor 'pool': expected children \['b', 'a', 'c'\], found \['a', 'b'\]",
            ):
                assert_tree(sup, {"b": "worker", "a": "worker", "c": "worker"})


# --- tracing ----------------------------------------------------------------------------


class TestTraceMessages:
    async def test_calls_casts_and_infos_in_mailbox_order(self) -> None:
        async with counter() as ref:
            ref.cast("incr")  # before the block: not traced
            async with trace_messages(ref) as log:
                ref.cast("incr")
                assert log.summary() == [("cast", "incr")]  # as it is queued
                ref.send("tick")
                assert await ref.call("get") == 2
                await ref.sync()  # no callback's message: not traced
                await get_state(ref)
            ref.cast("incr")  # after the block: not traced
            assert log.summary() == [("cast", "incr"), ("info", "tick"), ("call", "get")]
            assert log.of("cast") == ["incr"]
            assert [m.kind for m in log.messages] == ["cast", "info", "call"]
            times = [m.at for m in log.messages]
            assert times == sorted(times)
            assert repr(log).endswith(": 3 messages>")

    async def test_wait_for_is_woken_by_each_message(self) -> None:
        async with counter() as ref, trace_messages(ref) as log:

            async def ticker() -> None:
                for n in range(3):
                    ref.send(("tick", n))
                    await anyio.lowlevel.checkpoint()

            async with anyio.create_task_group() as tg:
                tg.start_soon(ticker)
                third = await log.wait_for("info", lambda m: m[0] == "tick", count=3)
            assert third.message == ("tick", 2)
            assert (await log.wait_for(message=("tick", 0))).kind == "info"  # logged before

    async def test_wait_for_fails_when_the_server_exits(self) -> None:
        async with counter() as ref, trace_messages(ref) as log:
            ref.cast("explode")
            with pytest.raises(
                AssertionError,
                match=r"expected 1 call\(s\) to <Counter.*>; it exited \(Boom\('explode'\)\) "
                r"with 0; log: \[\('cast', 'explode'\)\]",
            ):
                await log.wait_for("call")

    async def test_wait_for_times_out_and_ends_with_the_block(self, mock_clock: MockClock) -> None:
        async with counter() as ref:
            async with trace_messages(ref) as log:
                ref.cast("incr")
                with pytest.raises(
                    AssertionError, match=r"expected 2 cast\(s\) matching 'incr' .* none within 3s"
                ):
                    await log.wait_for("cast", "incr", count=2, timeout=3)
            with pytest.raises(AssertionError, match=r"the trace ended with 1"):
                await log.wait_for("cast", "incr", count=2)

    async def test_a_supervisor_receives_its_childrens_exits_as_infos(self) -> None:
        async with supervisor(specs("a")) as sup, trace_messages(sup) as log:
            await child(sup, "a").kill()
            exit_ = await log.wait_for("info")
            await wait_stable(sup)
        assert type(exit_.message).__name__ == "_ChildExit"


class TestTracing:
    async def test_trace_supervision_logs_exits_and_restarts(self) -> None:
        async with supervisor(specs("a", "b", "c"), strategy="rest_for_one") as sup:
            async with trace_supervision(sup) as log:
                old = child(sup, "b")
                await old.kill()
                await log.wait_for(ChildStarted, "c")
            assert log.summary() == [
                ("exited", "b", "killed", True),
                ("terminated", "c", "shutdown"),
                ("started", "b", 1),
                ("started", "c", 1),
            ]
            assert [e.ref for e in log.exits("b")] == [old]
            assert [e.generation for e in log.restarts()] == [1, 1]
            assert log.restarts("a") == []
            assert [e.child_id for e in log.terminations()] == ["c"]
            assert log.start_failures() == []
            assert log.intensity_reached is None
            old.cast("incr")  # after the block: nothing more is logged
            assert len(log.events) == 4

    async def test_trace_supervision_counts_repeated_events(self) -> None:
        async with supervisor(specs("a")) as sup:
            async with trace_supervision(sup) as log:
                for count in (1, 2):
                    await child(sup, "a").kill()
                    await log.wait_for(ChildStarted, "a", count=count)
                second = await log.wait_for(ChildStarted, "a", count=2)
            assert second.generation == 2

    async def test_trace_supervision_sees_the_supervisor_give_up(self) -> None:
        async with supervisor(specs("a"), max_restarts=0) as sup:
            async with trace_supervision(sup) as log:
                await child(sup, "a").kill()
                with pytest.raises(
                    AssertionError,
                    match=r"expected 1 ChildStarted event\(s\) for 'a' from supervisor 'pool'; "
                    r"the log ended with 0; log: \[\('exited', 'a', 'killed', False\), "
                    r"\('intensity', 0, 5.0\)\]",
                ):
                    await log.wait_for(ChildStarted, "a")
            assert log.intensity_reached is not None

    async def test_trace_supervision_times_out(self, mock_clock: MockClock) -> None:
        async with supervisor(specs("a")) as sup, trace_supervision(sup) as log:
            with pytest.raises(
                AssertionError, match=r"ChildExited event\(s\) for any child .* none within 3s"
            ):
                await log.wait_for(ChildExited, timeout=3)

    async def test_monitor_call_records_each_call(self, mock_clock: MockClock) -> None:
        async with counter(1) as ref:
            async with monitor_call(ref) as obs:
                assert await obs.call("get") == 1
                with pytest.raises(ServerExited):
                    await obs.call("explode")
                assert obs.in_flight == 0
            ok, crashed = obs.records
            assert (ok.request, ok.outcome, ok.reply, ok.error) == ("get", "ok", 1, None)
            assert (crashed.outcome, crashed.duration) == ("exited", 0)
            assert isinstance(crashed.error, ServerExited)
            with pytest.raises(
                AssertionError,
                match=r"every call to <Counter.*> to succeed; 1 of 2 did not: 'explode': exited",
            ):
                obs.assert_all_ok()
            with pytest.raises(anyio.ClosedResourceError):
                await obs.call("get")

    async def test_monitor_call_times_a_call_that_hangs(self, mock_clock: MockClock) -> None:
        async with counter() as ref, monitor_call(ref) as obs:
            await obs.call("ping")
            obs.assert_all_ok()
            with pytest.raises(CallTimeout):
                await obs.call("hang", timeout=2)
            record = obs.records[-1]
            assert (record.request, record.outcome, record.duration) == ("hang", "timeout", 2)
