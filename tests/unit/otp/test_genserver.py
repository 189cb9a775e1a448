"""GenServer and ServerRef: start, call, cast, info, stop, kill, mailbox."""

from __future__ import annotations

import logging
import math
from typing import Any

import anyio
import pytest

from snakepit.errors import ArgumentTypeError, CallTimeout, ConfigError, ServerExited
from snakepit.otp import GenServer, MailboxStats, ServerRef, Stop, monitor

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


class Echo(GenServer[Any, Any, list[Any]]):
    """Replies to calls with the request; records casts and infos in its state."""

    async def init(self, arg: Any) -> list[Any]:
        return list(arg or [])

    async def handle_call(self, request: Any, state: list[Any]) -> tuple[Any, list[Any]]:
        if request == "crash":
            raise Boom("crash requested")
        if request == "stop":
            raise Stop("normal", reply="bye")
        if isinstance(request, anyio.Event):  # block until the test sets it
            await request.wait()
            return "released", state
        return request, state

    async def handle_cast(self, message: Any, state: list[Any]) -> list[Any]:
        if message == "crash":
            raise Boom("cast crash")
        if isinstance(message, anyio.Event):
            await message.wait()
            return state
        return [*state, message]

    async def handle_info(self, message: Any, state: list[Any]) -> list[Any]:
        return [*state, ("info", message)]


class Recorder(GenServer[Any, Any, None]):
    """Appends (event, detail) to the list given as ``arg``."""

    log: list[tuple[str, Any]]

    async def init(self, arg: Any) -> None:
        self.log = arg
        self.log.append(("init", None))

    async def handle_call(self, request: Any, state: None) -> tuple[Any, None]:
        if request == "crash":
            raise Boom("handler")
        return request, state

    async def terminate(self, reason: Any, state: None) -> None:
        self.log.append(("terminate", reason))


class StuckTerminate(GenServer[Any, Any, None]):
    """``terminate`` never returns."""

    async def terminate(self, reason: Any, state: None) -> None:
        await anyio.Event().wait()


def _reason(ref: ServerRef[Any, Any]) -> object:
    # Read through a function so mypy does not keep an earlier narrowing.
    return ref.exit_reason


class TestStart:
    async def test_init_finishes_before_start_returns(self) -> None:
        log: list[tuple[str, Any]] = []

        class SlowInit(Recorder):
            async def init(self, arg: Any) -> None:
                await anyio.lowlevel.checkpoint()
                await anyio.lowlevel.checkpoint()
                await super().init(arg)

        async with anyio.create_task_group() as tg:
            ref = await SlowInit.start(tg, log)
            assert log == [("init", None)]
            assert ref.alive
            await ref.stop()

    async def test_init_exception_is_raised_by_start(self) -> None:
        class FailingInit(GenServer[Any, Any, None]):
            async def init(self, arg: Any) -> None:
                raise Boom("no")

        async with anyio.create_task_group() as tg:
            with pytest.raises(Boom, match="no"):
                await FailingInit.start(tg)
        # the task group itself was not cancelled or failed

    async def test_ref_identity(self) -> None:
        async with anyio.create_task_group() as tg:
            a = await Echo.start(tg, name="a")
            b = await Echo.start(tg)
            assert a.id != b.id
            assert a.name == "a"
            assert b.name is None
            assert a.generation == 0
            assert a.alive
            assert a.exit_reason is None
            assert isinstance(a.server, Echo)
            assert a.server.ref is a
            assert "'a'" in repr(a)
            assert "alive" in repr(a)
            await a.stop()
            await b.stop()
            assert _reason(a) == "normal"
            assert "dead" in repr(a)

    async def test_running_context_manager_stops_the_server(self) -> None:
        log: list[tuple[str, Any]] = []
        async with Recorder.running(log) as ref:
            assert await ref.call(1) == 1
        assert not ref.alive
        assert ref.exit_reason == "shutdown"
        assert log == [("init", None), ("terminate", "shutdown")]


class TestCall:
    async def test_call_returns_the_reply(self) -> None:
        async with Echo.running() as ref:
            assert await ref.call({"x": 1}) == {"x": 1}
            assert await ref.call(None, timeout=None) is None

    async def test_concurrent_callers_each_get_their_own_reply(self) -> None:
        results: dict[int, Any] = {}
        async with Echo.running() as ref:

            async def caller(i: int) -> None:
                results[i] = await ref.call(i)

            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(caller, i)
        assert results == {i: i for i in range(50)}

    async def test_call_timeout(self) -> None:
        async with Echo.running() as ref:
            release = anyio.Event()
            with pytest.raises(CallTimeout):
                await ref.call(release, timeout=0)
            release.set()
            assert await ref.call("next") == "next"

    async def test_late_reply_is_dropped_not_delivered_to_a_later_call(self) -> None:
        async with Echo.running() as ref:
            release = anyio.Event()
            with pytest.raises(CallTimeout):
                await ref.call(release, timeout=0.01)
            # The first request is still being handled; its reply comes later.
            async with anyio.create_task_group() as tg:
                replies: list[Any] = []

                async def second() -> None:
                    replies.append(await ref.call("second"))

                tg.start_soon(second)
                await anyio.wait_all_tasks_blocked()
                release.set()
            assert replies == ["second"]

    async def test_negative_or_nan_timeout_is_a_config_error(self) -> None:
        async with Echo.running() as ref:
            for bad in (-1, -0.001, math.nan):
                with pytest.raises(ConfigError) as info:
                    await ref.call("x", timeout=bad)
                assert info.value.field == "timeout"
            with pytest.raises(ConfigError):
                await ref.sync(timeout=-1)
            with pytest.raises(ConfigError):
                await ref.stop(timeout=-1)
            assert await ref.call("still fine") == "still fine"

    async def test_call_to_dead_server_raises_server_exited(self) -> None:
        async with anyio.create_task_group() as tg:
            ref = await Echo.start(tg)
            await ref.stop()
        with pytest.raises(ServerExited) as info:
            await ref.call("x")
        assert info.value.reason == "normal"
        assert info.value.server is ref

    async def test_server_crash_during_call_wakes_caller_with_reason(self) -> None:
        async with anyio.create_task_group() as tg:
            ref = await Echo.start(tg)
            with pytest.raises(ServerExited) as info:
                await ref.call("crash")
            assert isinstance(info.value.reason, Boom)
            assert info.value.__cause__ is info.value.reason
            assert isinstance(ref.exit_reason, Boom)

    async def test_pending_calls_fail_when_the_server_is_killed(self) -> None:
        async with anyio.create_task_group() as tg:
            ref = await Echo.start(tg)
            errors: list[BaseException] = []

            async def caller(request: Any) -> None:
                try:
                    await ref.call(request, timeout=None)
                except ServerExited as exc:
                    errors.append(exc)

            tg.start_soon(caller, anyio.Event())  # handled, blocks forever
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(caller, "queued")  # waits in the mailbox
            await anyio.wait_all_tasks_blocked()
            assert ref.mailbox_stats().queued == 1
            await ref.kill()
            assert not ref.alive
            await anyio.wait_all_tasks_blocked()
        assert len(errors) == 2
        assert all(isinstance(e, ServerExited) and e.reason == "killed" for e in errors)

    async def test_cancelled_caller_leaves_the_server_usable(self) -> None:
        async with Echo.running() as ref:
            release = anyio.Event()
            with anyio.move_on_after(0.01):
                await ref.call(release, timeout=None)
            release.set()
            assert await ref.call("ok") == "ok"

    async def test_call_timeout_runs_on_the_loop_clock(self, mock_clock: Any) -> None:
        # Only meaningful on trio's MockClock: 30 virtual minutes pass at once.
        async with Echo.running() as ref:
            start = anyio.current_time()
            with pytest.raises(CallTimeout):
                await ref.call(anyio.Event(), timeout=1800)
            assert anyio.current_time() - start == pytest.approx(1800)
            await ref.kill()


class TestCastAndInfo:
    async def test_cast_returns_without_waiting_for_the_handler(self) -> None:
        async with Echo.running() as ref:
            blocker = anyio.Event()
            ref.cast(blocker)  # the handler will block on it
            ref.cast("a")
            ref.cast("b")  # returns at once: cast is not even async
            assert ref.mailbox_stats().queued >= 2
            blocker.set()
            await ref.sync()
            assert await ref.get_state() == ["a", "b"]

    async def test_send_goes_to_handle_info(self) -> None:
        async with Echo.running() as ref:
            ref.send("ping")
            assert await ref.get_state() == [("info", "ping")]

    async def test_default_handle_info_logs_and_continues(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        async with Recorder.running([]) as ref:
            with caplog.at_level(logging.WARNING, logger="snakepit.otp"):
                ref.send("unexpected")
                await ref.sync()
            assert "unexpected" in caplog.text
            assert ref.alive

    async def test_cast_and_send_to_a_dead_server_are_dropped(self) -> None:
        async with anyio.create_task_group() as tg:
            ref = await Echo.start(tg)
            await ref.stop()
        ref.cast("x")
        ref.send("y")
        assert ref.mailbox_stats().queued == 0

    async def test_sync_orders_after_earlier_casts(self) -> None:
        async with Echo.running() as ref:
            for i in range(100):
                ref.cast(i)
            await ref.sync()
            assert ref.mailbox_stats().queued == 0
            assert await ref.get_state() == list(range(100))

    async def test_cast_crash_ends_server_with_that_exception(self) -> None:
        async with anyio.create_task_group() as tg:
            ref = await Echo.start(tg)
            async with monitor(ref) as mon:
                ref.cast("crash")
                reason = await mon.down()
            assert isinstance(reason, Boom)


class TestMailboxStats:
    async def test_high_water_mark_is_exact(self) -> None:
        async with Echo.running() as ref:
            blocker = anyio.Event()
            ref.cast(blocker)
            await anyio.wait_all_tasks_blocked()  # the server is now blocked in the handler
            for i in range(7):
                ref.cast(i)
            assert ref.mailbox_stats() == MailboxStats(queued=7, high_water=7, received=8)
            blocker.set()
            await ref.sync()  # queued behind the 7 casts: the mark becomes 8
            assert ref.mailbox_stats() == MailboxStats(queued=0, high_water=8, received=9)


class TestTracers:
    async def test_calls_casts_and_infos_are_traced_in_mailbox_order(self) -> None:
        seen: list[tuple[str, Any]] = []

        def tracer(kind: str, message: Any) -> None:
            seen.append((kind, message))

        async with Echo.running() as ref:
            ref.add_tracer(tracer)
            ref.cast("a")
            assert seen == [("cast", "a")]  # traced as it is queued, before it is handled
            ref.send("b")
            assert await ref.call("c") == "c"
            await ref.sync()  # neither is a message for a callback: not traced
            await ref.get_state()
            ref.remove_tracer(tracer)
            ref.cast("untraced")
            ref.remove_tracer(tracer)  # not there any more: nothing happens
            assert await ref.get_state() == ["a", ("info", "b"), "untraced"]
        assert seen == [("cast", "a"), ("info", "b"), ("call", "c")]
        ref.cast("to a dead server")  # dropped, so not traced
        assert len(seen) == 3

    async def test_a_tracer_that_raises_is_logged_and_the_message_still_goes(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        seen: list[Any] = []

        def broken(kind: str, message: Any) -> None:
            raise Boom("tracer")

        async with Echo.running() as ref:
            ref.add_tracer(broken)
            ref.add_tracer(lambda kind, message: seen.append(message))
            ref.cast("x")
            assert await ref.get_state() == ["x"]
        assert seen == ["x"]
        assert "a message tracer raised" in caplog.text


class TestLifecycle:
    async def test_terminate_gets_the_stop_reason(self) -> None:
        log: list[tuple[str, Any]] = []
        async with anyio.create_task_group() as tg:
            ref = await Recorder.start(tg, log)
            await ref.stop("normal")
        assert log == [("init", None), ("terminate", "normal")]
        assert ref.exit_reason == "normal"

    async def test_terminate_gets_the_crash_exception(self) -> None:
        log: list[tuple[str, Any]] = []
        async with anyio.create_task_group() as tg:
            ref = await Recorder.start(tg, log)
            with pytest.raises(ServerExited):
                await ref.call("crash")
        assert log[-1][0] == "terminate"
        assert isinstance(log[-1][1], Boom)

    async def test_kill_skips_terminate_and_is_visible_on_return(self) -> None:
        log: list[tuple[str, Any]] = []
        async with anyio.create_task_group() as tg:
            ref = await Recorder.start(tg, log)
            mon = monitor(ref)
            await ref.kill()
            assert not ref.alive
            assert ref.exit_reason == "killed"
            assert mon.reason == "killed"
            await ref.kill()  # idempotent
        assert log == [("init", None)]

    async def test_stop_from_a_handler(self) -> None:
        async with anyio.create_task_group() as tg:
            ref = await Echo.start(tg)
            assert await ref.call("stop") == "bye"
            assert await ref.wait() == "normal"
            assert not ref.alive

    async def test_stop_of_a_dead_server_does_nothing(self) -> None:
        async with anyio.create_task_group() as tg:
            ref = await Echo.start(tg)
            await ref.stop()
            await ref.stop()
        assert ref.exit_reason == "normal"

    async def test_stop_answers_calls_queued_before_it(self) -> None:
        # OTP order: the stop request is a message; a call queued before it is
        # answered (it used to get ServerExited), then the server stops.
        async with anyio.create_task_group() as tg:
            ref = await Echo.start(tg)
            blocker = anyio.Event()
            ref.cast(blocker)
            await anyio.wait_all_tasks_blocked()
            replies: list[Any] = []

            async def caller() -> None:
                replies.append(await ref.call("queued", timeout=None))

            tg.start_soon(caller)
            await anyio.wait_all_tasks_blocked()

            async def release_later() -> None:
                await anyio.wait_all_tasks_blocked()
                blocker.set()

            tg.start_soon(release_later)
            await ref.stop("shutdown")
        assert replies == ["queued"]
        assert ref.exit_reason == "shutdown"

    async def test_stop_kills_a_server_whose_terminate_hangs(self) -> None:
        async with anyio.create_task_group() as tg:
            ref = await StuckTerminate.start(tg)
            await ref.stop(timeout=0.01)
        assert ref.exit_reason == "killed"

    async def test_stop_from_inside_the_server_is_a_config_error(self) -> None:
        class SelfStopper(GenServer[Any, Any, None]):
            async def handle_call(self, request: Any, state: None) -> tuple[Any, None]:
                try:
                    await self.ref.stop()
                except ConfigError as exc:
                    return exc.field, state
                return "no error", state

        async with SelfStopper.running() as ref:
            assert await ref.call("x") == "stop"

    async def test_kill_from_inside_the_server(self) -> None:
        class SelfKiller(GenServer[Any, Any, None]):
            async def handle_cast(self, message: Any, state: None) -> None:
                await self.ref.kill()
                await anyio.lowlevel.checkpoint()  # the kill lands here

        async with anyio.create_task_group() as tg:
            ref = await SelfKiller.start(tg)
            async with monitor(ref) as mon:
                ref.cast("die")
                assert await mon.down() == "killed"

    async def test_handler_crash_does_not_cancel_the_owner_task_group(self) -> None:
        sibling_done = anyio.Event()
        release = anyio.Event()

        async def sibling() -> None:
            await release.wait()
            sibling_done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(sibling)
            ref = await Echo.start(tg)
            with pytest.raises(ServerExited):
                await ref.call("crash")
            release.set()
        assert sibling_done.is_set()

    async def test_external_cancellation_is_a_shutdown_with_terminate(self) -> None:
        log: list[tuple[str, Any]] = []
        refs: list[ServerRef[Any, Any]] = []
        async with anyio.create_task_group() as tg:
            refs.append(await Recorder.start(tg, log))
            tg.cancel_scope.cancel()
        assert refs[0].exit_reason == "shutdown"
        assert log == [("init", None), ("terminate", "shutdown")]

    async def test_wait_returns_the_exit_reason(self) -> None:
        async with anyio.create_task_group() as tg:
            ref = await Echo.start(tg)
            tg.start_soon(ref.stop, "shutdown")
            assert await ref.wait() == "shutdown"


class BlockedInit(GenServer[Any, Any, None]):
    async def init(self, arg: Any) -> None:
        await anyio.Event().wait()


class TestRunningStartAndSelfCallEdges:
    async def test_running_raises_the_body_exception_plain(self) -> None:
        async def body() -> None:
            async with Echo.running() as ref:
                assert await ref.call("x") == "x"
                raise KeyError("from the body")

        with pytest.raises(KeyError, match="from the body"):
            await body()

    async def test_running_raises_the_init_exception_plain(self) -> None:
        class BadInit(GenServer[Any, Any, None]):
            async def init(self, arg: Any) -> None:
                raise RuntimeError("init failed")

        with pytest.raises(RuntimeError, match="init failed"):
            async with BadInit.running():
                pass

    async def test_a_call_to_itself_fails_at_once(self) -> None:
        class Selfish(GenServer[str, Any, None]):
            async def handle_call(self, request: str, state: None) -> tuple[Any, None]:
                if request == "outer":
                    try:
                        await self.ref.call("inner", timeout=None)
                    except ConfigError as exc:
                        return exc.field, state
                return "inner", state

        async with Selfish.running() as ref:
            with anyio.fail_after(5):
                assert await ref.call("outer") == "server"

    async def test_killed_during_init_start_raises_server_exited(self) -> None:
        from snakepit.otp import Registry

        registry = Registry()
        async with anyio.create_task_group() as tg:

            async def killer() -> None:
                await anyio.wait_all_tasks_blocked()  # init is blocked
                await registry.lookup("slow").kill()

            tg.start_soon(killer)
            with pytest.raises(ServerExited) as info:
                await BlockedInit.start(tg, name="slow", registry=registry)
            assert info.value.reason == "killed"
        assert registry.whereis("slow") is None


@pytest.mark.parametrize("made_by_snakepit", ["ServerRef", "SupervisorRef", "ReplyHandle"])
def test_refs_and_reply_handles_have_no_public_constructor(made_by_snakepit: str) -> None:
    # They come from start() and reply_handle(); their constructors take the
    # loop's low-level parts, which are not API.
    import snakepit.otp

    cls = getattr(snakepit.otp, made_by_snakepit)
    with pytest.raises(TypeError, match=f"snakepit.otp.{made_by_snakepit} is made by snakepit"):
        cls(object(), object())


@pytest.mark.parametrize("timeout", [True, "5", [1]])
async def test_a_call_timeout_must_be_a_number(timeout: Any) -> None:
    # A bool passed as a number, a str raised a bare TypeError (found by review).
    async with anyio.create_task_group() as tg:
        ref = await Echo.start(tg)
        with pytest.raises(ArgumentTypeError, match="timeout: must be None or a number"):
            await ref.call("x", timeout=timeout)
        await ref.stop()
