"""trace_messages, trace_supervision (testing/_tracing.py): what a server or a tree went through."""

from __future__ import annotations

import anyio
import pytest
from trio.testing import MockClock

from snakepit.otp import ChildExited, ChildStarted
from snakepit.testing import get_state, trace_messages, trace_supervision, wait_stable

from ._otp_servers import child, counter, specs, supervisor

pytestmark = pytest.mark.anyio


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


class TestTraceSupervision:
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
