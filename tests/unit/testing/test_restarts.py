"""wait_for_restart, assert_process_restarted, check_crash_recovery (testing/_restarts.py)."""

from __future__ import annotations

from typing import Any

import pytest
from trio.testing import MockClock

from snakepit.otp import ChildSpec, Registry
from snakepit.testing import (
    Recovery,
    assert_process_restarted,
    check_crash_recovery,
    wait_for_restart,
    wait_stable,
)

from ._otp_servers import Boom, Counter, DeafAfterRestart, child, specs, supervisor

pytestmark = pytest.mark.anyio


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
