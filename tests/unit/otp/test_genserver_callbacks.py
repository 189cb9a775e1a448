"""GenServer's OTP callback semantics a port of Erlang code relies on (issue #11, defect 12).

The stop request is a message taken in mailbox order; deferred replies
(``NoReply`` + ``ReplyHandle``); ``Continue``/``handle_continue``; ``Ignore``
from ``init``. Exit reasons (``Shutdown`` with a detail) are in test_reasons.py.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from trio.testing import MockClock

from snakepit.errors import CallTimeout, ConfigError, ServerExited
from snakepit.otp import (
    ChildSpec,
    Continue,
    DynamicSupervisor,
    DynamicSupervisorSpec,
    GenServer,
    Ignore,
    NoReply,
    Registry,
    ReplyHandle,
    ServerRef,
    Supervisor,
    SupervisorSpec,
)

from ._sup_helpers import Boom, Journal, Opts, Worker, cast_and_wait

pytestmark = pytest.mark.anyio

Log = list[tuple[str, Any]]


class Logger(GenServer[Any, Any, Log]):
    """Logs what it handles into the list it gets; waits on an Event message first.

    A cast or call whose message is ``("continue", x)`` returns ``Continue(state, x)``;
    ``handle_continue`` logs ``x`` and, for ``("again", y)``, continues once more with ``y``.
    """

    async def init(self, arg: Log) -> Log:
        return arg

    async def handle_call(self, request: Any, state: Log) -> tuple[Any, Log | Continue[Log]]:
        if isinstance(request, anyio.Event):
            await request.wait()
        state.append(("call", request))
        if isinstance(request, tuple) and request[0] == "continue":
            return "replied", Continue(state, request[1])
        return request, state

    async def handle_cast(self, message: Any, state: Log) -> Log | Continue[Log]:
        if isinstance(message, anyio.Event):
            await message.wait()
            return state
        if message == "crash":
            raise Boom("cast crash")
        state.append(("cast", message))
        if isinstance(message, tuple) and message[0] == "continue":
            return Continue(state, message[1])
        return state

    async def handle_continue(self, arg: Any, state: Log) -> Log | Continue[Log]:
        if isinstance(arg, anyio.Event):
            state.append(("continue", "waiting"))
            await arg.wait()
            return state
        if arg == "crash":
            raise Boom("continue crash")
        state.append(("continue", arg))
        if isinstance(arg, tuple) and arg[0] == "again":
            return Continue(state, arg[1])
        return state

    async def terminate(self, reason: Any, state: Log) -> None:
        state.append(("terminate", reason))


def _exiting(ref: ServerRef[Any, Any]) -> bool:
    # Read through a function so mypy does not keep an earlier narrowing.
    return ref.exiting


async def _blocked(ref: ServerRef[Any, Any]) -> anyio.Event:
    """Make ``ref`` wait in a handler; set the returned event to let it go on."""
    gate = anyio.Event()
    ref.cast(gate)
    await anyio.wait_all_tasks_blocked()
    return gate


class TestStopOrder:
    async def test_a_cast_queued_before_stop_is_handled_one_after_is_not(self) -> None:
        log: Log = []
        async with anyio.create_task_group() as tg:
            ref = await Logger.start(tg, log)
            gate = await _blocked(ref)
            ref.cast("before")
            tg.start_soon(ref.stop, "shutdown")
            await anyio.wait_all_tasks_blocked()
            ref.cast("after")  # queued behind the stop request: never handled
            gate.set()
            assert await ref.wait() == "shutdown"
        assert log == [("cast", "before"), ("terminate", "shutdown")]

    async def test_a_call_queued_before_stop_is_answered_one_after_fails(self) -> None:
        log: Log = []
        outcomes: dict[str, Any] = {}

        async def caller(request: str) -> None:
            try:
                outcomes[request] = await ref.call(request, timeout=None)
            except ServerExited as exc:
                outcomes[request] = ("exited", exc.reason)

        async with anyio.create_task_group() as tg:
            ref = await Logger.start(tg, log)
            gate = await _blocked(ref)
            tg.start_soon(caller, "before")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(ref.stop, "shutdown")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(caller, "after")
            await anyio.wait_all_tasks_blocked()
            gate.set()
        assert outcomes == {"before": "before", "after": ("exited", "shutdown")}
        assert log == [("call", "before"), ("terminate", "shutdown")]

    async def test_a_requested_stop_makes_the_server_exiting_at_once(self) -> None:
        async with anyio.create_task_group() as tg:
            ref = await Logger.start(tg, [])
            gate = await _blocked(ref)
            assert not _exiting(ref)
            tg.start_soon(ref.stop)
            await anyio.wait_all_tasks_blocked()
            assert _exiting(ref)
            assert ref.alive
            gate.set()

    async def test_a_second_stop_waits_and_the_first_reason_wins(self) -> None:
        log: Log = []
        async with anyio.create_task_group() as tg:
            ref = await Logger.start(tg, log)
            gate = await _blocked(ref)
            tg.start_soon(ref.stop, "shutdown")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(ref.stop, "normal")
            await anyio.wait_all_tasks_blocked()
            gate.set()
        assert log == [("terminate", "shutdown")]

    async def test_stop_kills_the_server_when_the_queued_work_hangs(
        self, mock_clock: MockClock
    ) -> None:
        log: Log = []
        async with anyio.create_task_group() as tg:
            ref = await Logger.start(tg, log)
            gate = await _blocked(ref)
            ref.cast(anyio.Event())  # queued before the stop; never released

            async def late_call() -> None:
                with pytest.raises(ServerExited) as info:
                    await ref.call("queued", timeout=None)
                log.append(("caller", info.value.reason))

            tg.start_soon(late_call)
            await anyio.wait_all_tasks_blocked()
            gate.set()
            start = anyio.current_time()
            await ref.stop("shutdown", timeout=3.0)
            assert anyio.current_time() - start == pytest.approx(3.0)
        assert ref.exit_reason == "killed"
        assert log == [("caller", "killed")]  # killed: no terminate

    async def test_kill_stays_brutal(self) -> None:
        log: Log = []
        async with anyio.create_task_group() as tg:
            ref = await Logger.start(tg, log)
            gate = await _blocked(ref)
            ref.cast("queued")
            await ref.kill()
            gate.set()
        assert ref.exit_reason == "killed"
        assert log == []


class Deferring(GenServer[str, Any, list[ReplyHandle[Any]]]):
    """Defers "wait" calls, keeping the handles; answers them on a "release" cast."""

    async def init(self, arg: Any) -> list[ReplyHandle[Any]]:
        return []

    async def handle_call(
        self, request: str, state: list[ReplyHandle[Any]]
    ) -> tuple[Any, list[ReplyHandle[Any]]] | NoReply[list[ReplyHandle[Any]]]:
        if request == "wait":
            state.append(self.reply_handle())
            return NoReply(state)
        if request == "take_and_reply":
            state.append(self.reply_handle())
            return "direct", state  # the direct reply wins
        if request == "lose":
            return NoReply(state)  # no handle taken: only a timeout or an exit answers
        return request, state

    async def handle_cast(self, message: Any, state: list[ReplyHandle[Any]]) -> Any:
        if message == "crash":
            raise Boom("deferring crash")
        if message == "handle_outside_a_call":
            try:
                self.reply_handle()
            except ConfigError as exc:
                return [*state, exc.field]
        for handle in state:
            handle.reply(message)
        return []


class TestDeferredReply:
    async def test_a_deferred_call_is_answered_later_while_others_are_served(self) -> None:
        async with anyio.create_task_group() as tg:
            ref = await Deferring.start(tg)
            replies: list[Any] = []

            async def waiter() -> None:
                replies.append(await ref.call("wait", timeout=None))

            tg.start_soon(waiter)
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            assert await ref.call("ping") == "ping"  # the server is not blocked
            assert replies == []
            ref.cast("released")
            await ref.sync()
            await anyio.wait_all_tasks_blocked()
            assert replies == ["released", "released"]
            await ref.stop()

    async def test_a_reply_handle_works_from_another_task(self) -> None:
        async with anyio.create_task_group() as tg:
            ref = await Deferring.start(tg)
            replies: list[Any] = []

            async def waiter() -> None:
                replies.append(await ref.call("wait", timeout=None))

            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            [handle] = await ref.get_state()
            assert not handle.done
            handle.reply("from the test task")
            assert handle.done
            await anyio.wait_all_tasks_blocked()
            assert replies == ["from the test task"]
            handle.reply("twice")  # harmless
            assert await ref.call("next") == "next"
            await ref.stop()

    async def test_a_deferred_call_still_times_out_and_a_late_reply_is_dropped(
        self, mock_clock: MockClock
    ) -> None:
        async with anyio.create_task_group() as tg:
            ref = await Deferring.start(tg)
            with pytest.raises(CallTimeout):
                await ref.call("wait", timeout=2.0)
            [handle] = await ref.get_state()
            assert handle.done  # the caller gave up
            handle.reply("late")  # dropped: reaches no other call
            assert await ref.call("next") == "next"
            with pytest.raises(CallTimeout):
                await ref.call("lose", timeout=1.0)
            await ref.stop()

    async def test_a_cancelled_caller_makes_the_handle_harmless(self) -> None:
        async with anyio.create_task_group() as tg:
            ref = await Deferring.start(tg)
            with anyio.CancelScope() as scope:

                async def cancel_soon() -> None:
                    await anyio.wait_all_tasks_blocked()
                    scope.cancel()

                tg.start_soon(cancel_soon)
                await ref.call("wait", timeout=None)
            [handle] = await ref.get_state()
            assert handle.done
            handle.reply("nobody listens")
            assert await ref.call("next") == "next"
            await ref.stop()

    @pytest.mark.parametrize("how", ["crash", "stop", "kill"])
    async def test_the_caller_gets_server_exited_when_the_server_dies_first(self, how: str) -> None:
        async with anyio.create_task_group() as tg:
            ref = await Deferring.start(tg)
            reasons: list[Any] = []

            async def waiter(request: str) -> None:
                with pytest.raises(ServerExited) as info:
                    await ref.call(request, timeout=None)
                reasons.append(info.value.reason)

            tg.start_soon(waiter, "wait")
            tg.start_soon(waiter, "lose")
            await anyio.wait_all_tasks_blocked()
            [handle] = await ref.get_state()
            if how == "crash":
                ref.cast("crash")
            elif how == "stop":
                await ref.stop("shutdown")
            else:
                await ref.kill()
            await ref.wait()
            await anyio.wait_all_tasks_blocked()
            assert handle.done
            handle.reply("after the exit")  # harmless
        assert len(reasons) == 2
        assert reasons[0] is reasons[1] or reasons[0] == reasons[1]
        expected = {"stop": "shutdown", "kill": "killed"}.get(how)
        if expected is None:
            assert isinstance(reasons[0], Boom)
        else:
            assert reasons[0] == expected

    async def test_terminate_may_still_answer_deferred_callers(self) -> None:
        class Polite(Deferring):
            async def terminate(self, reason: Any, state: list[ReplyHandle[Any]]) -> None:
                for handle in state:
                    handle.reply(("bye", reason))

        async with anyio.create_task_group() as tg:
            ref = await Polite.start(tg)
            replies: list[Any] = []

            async def waiter() -> None:
                replies.append(await ref.call("wait", timeout=None))

            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            await ref.stop("shutdown")
        assert replies == [("bye", "shutdown")]

    async def test_a_direct_reply_wins_over_a_taken_handle(self) -> None:
        async with Deferring.running() as ref:
            assert await ref.call("take_and_reply") == "direct"
            [handle] = await ref.get_state()
            assert handle.done
            handle.reply("ignored")
            assert await ref.call("next") == "next"

    async def test_reply_handle_outside_handle_call_is_a_config_error(self) -> None:
        async with Deferring.running() as ref:
            ref.cast("handle_outside_a_call")
            assert await ref.get_state() == ["reply_handle"]
            with pytest.raises(ConfigError):
                ref.server.reply_handle()  # not in the server's task

    async def test_handles_never_used_do_not_pile_up(self, mock_clock: MockClock) -> None:
        async with Deferring.running() as ref:
            for _ in range(300):
                with pytest.raises(CallTimeout):
                    await ref.call("lose", timeout=1.0)
            deferred = ref._deferred
            assert deferred is not None
            assert len(deferred) < 130


class TestContinue:
    async def test_init_continue_runs_before_the_first_message(self) -> None:
        class Loader(Logger):
            async def init(self, arg: Log) -> Log | Continue[Log]:  # type: ignore[override]
                return Continue(arg, "load")

        log: Log = []
        async with Loader.running(log) as ref:
            ref.cast("first")
            await ref.sync()
        assert log[:2] == [("continue", "load"), ("cast", "first")]

    async def test_a_continue_runs_before_the_next_queued_message(self) -> None:
        log: Log = []
        async with Logger.running(log) as ref:
            gate = await _blocked(ref)
            ref.cast(("continue", ("again", "second")))
            ref.cast("next")
            gate.set()
            await ref.sync()
        assert log[:4] == [
            ("cast", ("continue", ("again", "second"))),
            ("continue", ("again", "second")),
            ("continue", "second"),
            ("cast", "next"),
        ]

    async def test_a_call_is_answered_before_its_continue_runs(self) -> None:
        log: Log = []
        release = anyio.Event()
        async with Logger.running(log) as ref:
            assert await ref.call(("continue", release)) == "replied"
            await anyio.wait_all_tasks_blocked()
            assert log[-1] == ("continue", "waiting")
            release.set()
            await ref.sync()

    async def test_a_continue_runs_before_a_queued_stop(self) -> None:
        log: Log = []
        async with anyio.create_task_group() as tg:
            ref = await Logger.start(tg, log)
            gate = await _blocked(ref)
            ref.cast(("continue", "then"))
            tg.start_soon(ref.stop, "shutdown")
            await anyio.wait_all_tasks_blocked()
            gate.set()
        assert log == [
            ("cast", ("continue", "then")),
            ("continue", "then"),
            ("terminate", "shutdown"),
        ]

    async def test_an_error_in_handle_continue_ends_the_server(self) -> None:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                ref = await Logger.start(tg, [])
                ref.cast(("continue", "crash"))
                reason = await ref.wait()
        assert isinstance(reason, Boom)

    async def test_a_continue_without_handle_continue_ends_the_server(self) -> None:
        class NoContinue(GenServer[Any, Any, None]):
            async def handle_cast(self, message: Any, state: None) -> Continue[None]:
                return Continue(state, message)

            def log_crash(self, reason: Any) -> None:
                pass

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                ref = await NoContinue.start(tg)
                ref.cast("x")
                assert isinstance(await ref.wait(), NotImplementedError)


class Ignoring(GenServer[Any, Any, None]):
    """``init`` returns Ignore for the generations in ``arg[0]`` (all if None); logs to arg[1]."""

    async def init(self, arg: tuple[set[int] | None, Journal]) -> Ignore | None:
        generations, journal = arg
        journal.entries.append(("init", "i", self.ref.generation))
        if generations is None or self.ref.generation in generations:
            return Ignore()
        return None

    async def handle_cast(self, message: Any, state: None) -> None:
        raise Boom("crash")

    async def terminate(self, reason: Any, state: None) -> None:
        raise AssertionError("an ignored server has no terminate")

    def log_crash(self, reason: Any) -> None:
        pass


class TestIgnore:
    async def test_start_returns_a_dead_ignored_ref(self) -> None:
        registry = Registry()
        seen: list[Any] = []
        async with anyio.create_task_group() as tg:
            ref = await Ignoring.start(tg, (None, Journal()), name="i", registry=registry)
            assert ref.ignored
            assert not ref.alive
            assert ref.exit_reason == "normal"
            assert await ref.wait() == "normal"
            ref.link(lambda dead, reason: seen.append(reason))
            assert registry.whereis("i") is None
            with pytest.raises(ServerExited):
                await ref.call("x")
        assert seen == ["normal"]
        assert not tg.cancel_scope.cancel_called

    async def test_a_supervisor_keeps_an_ignored_child_as_not_running(self) -> None:
        journal = Journal()
        spec = SupervisorSpec(
            [
                ChildSpec("i", Ignoring, arg=({0}, journal)),
                ChildSpec("w", Worker, arg=Opts("w")),
            ]
        )
        async with Supervisor.running(spec) as sup:
            await sup.wait_stable()
            assert [(c.id, c.alive, c.generation) for c in sup.which_children()] == [
                ("i", False, 0),
                ("w", True, 0),
            ]
            assert sup.count_children().active == 1
            restarted = await sup.restart_child("i")  # generation 1 starts
            assert restarted.alive
            assert sup.child("i") is restarted
            await sup.wait_stable()
        assert journal.of("init") == ["i", "i"]

    async def test_a_dynamic_supervisor_drops_a_child_whose_restart_ignores(self) -> None:
        # As on its first start: a DynamicSupervisor keeps no stopped child,
        # so the ignored one holds no max_children place.
        journal = Journal()
        spec = DynamicSupervisorSpec(max_children=1)
        async with DynamicSupervisor.running(spec) as sup:
            first = await sup.start_child(ChildSpec("i", Ignoring, arg=({1}, journal)))
            await cast_and_wait(first)
            await sup.wait_stable()
            assert sup.which_children() == []
            assert sup.count_children().specs == 0
            other = await sup.start_child(ChildSpec("w", Worker, arg=Opts("w")))
            assert other.alive
        assert journal.of("init") == ["i", "i"]

    async def test_a_restart_that_ignores_leaves_the_child_not_running(self) -> None:
        journal = Journal()
        spec = SupervisorSpec([ChildSpec("i", Ignoring, arg=({1}, journal))])
        async with Supervisor.running(spec) as sup:
            first = sup.child("i")
            assert first is not None
            await cast_and_wait(first)
            await sup.wait_stable()
            assert sup.alive
            assert sup.child("i") is None
            assert [c.id for c in sup.which_children()] == ["i"]
        assert journal.of("init") == ["i", "i"]  # no restart loop

    async def test_an_ignored_temporary_child_is_dropped(self) -> None:
        journal = Journal()
        spec = SupervisorSpec([ChildSpec("i", Ignoring, arg=(None, journal), restart="temporary")])
        async with Supervisor.running(spec) as sup:
            assert sup.which_children() == []
            ref = await sup.start_child(
                ChildSpec("j", Ignoring, arg=(None, journal), restart="temporary")
            )
            assert ref.ignored
            assert sup.which_children() == []

    async def test_a_dynamic_supervisor_does_not_keep_an_ignored_child(self) -> None:
        async with DynamicSupervisor.running() as sup:
            ref = await sup.start_child(ChildSpec("i", Ignoring, arg=(None, Journal())))
            assert ref.ignored
            assert not ref.alive
            assert sup.count_children().specs == 0
            await sup.wait_stable()
            assert sup.alive
