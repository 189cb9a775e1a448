"""Supervisor start and stop: children start in order, stop in reverse, each within its shutdown."""

from __future__ import annotations

import dataclasses
from typing import Any

import anyio
import pytest

from snakepit.errors import ConfigError
from snakepit.otp import (
    ChildSpec,
    ChildStartError,
    DynamicSupervisorSpec,
    Supervisor,
    SupervisorRef,
    SupervisorSpec,
)

from ._sup_helpers import Boom, Journal, Opts, Worker, child_ref, refs, workers

pytestmark = pytest.mark.anyio


class TestStartAndStop:
    async def test_start_returns_once_every_child_is_running(self) -> None:
        journal = Journal()
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                sup = await Supervisor.start(tg, SupervisorSpec(workers("a", "b", journal=journal)))
                assert isinstance(sup, SupervisorRef)
                assert journal.of("init") == ["a", "b"]
                assert all(info.alive for info in sup.which_children())
                assert await child_ref(sup, "b").call("ping") == "pong"
                await sup.stop("shutdown")
            assert not sup.alive
            assert sup.exit_reason == "shutdown"

    async def test_children_start_in_order_and_stop_in_reverse(self) -> None:
        journal = Journal()
        with anyio.fail_after(5):
            async with Supervisor.running(
                SupervisorSpec(workers("a", "b", "c", journal=journal))
            ) as sup:
                assert journal.of("init") == ["a", "b", "c"]
                assert journal.of("terminate") == []
                started = refs(sup)
        assert journal.of("terminate") == ["c", "b", "a"]
        for ref in started.values():
            assert ref is not None
            assert ref.exit_reason == "shutdown"

    async def test_nested_tree_stops_in_reverse_depth_first(self) -> None:
        journal = Journal()
        inner = SupervisorSpec(workers("x", "y", journal=journal))
        spec = SupervisorSpec(
            [
                *workers("a", journal=journal),
                ChildSpec("inner", Supervisor, arg=inner),
                *workers("b", journal=journal),
            ]
        )
        with anyio.fail_after(5):
            async with Supervisor.running(spec):
                assert journal.of("init") == ["a", "x", "y", "b"]
        assert journal.of("terminate") == ["b", "y", "x", "a"]

    async def test_child_init_failure_stops_the_started_children(self) -> None:
        journal = Journal()
        spec = SupervisorSpec(
            [
                *workers("a", "b", journal=journal),
                ChildSpec("bad", Worker, arg=Opts("bad", journal, fail_init=frozenset({0}))),
                *workers("d", journal=journal),
            ]
        )
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                with pytest.raises(ChildStartError) as info:
                    await Supervisor.start(tg, spec)
                err = info.value
                # The caller's task group is not cancelled: it can start more work.
                ok = await Supervisor.start(tg, SupervisorSpec(workers("ok")))
                await ok.stop()
        assert err.child_id == "bad"
        assert isinstance(err.cause, Boom)
        assert err.__cause__ is err.cause
        assert journal.of("init") == ["a", "b", "bad"]
        assert journal.of("terminate") == ["b", "a"]

    async def test_start_raises_child_start_error_itself(self) -> None:
        spec = SupervisorSpec([ChildSpec("bad", Worker, arg=Opts(fail_init=frozenset({0})))])
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                with pytest.raises(ChildStartError) as info:
                    await Supervisor.start(tg, spec)
        assert info.value.child_id == "bad"

    async def test_a_non_spec_argument_is_a_config_error(self) -> None:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                with pytest.raises(ConfigError) as info:
                    await Supervisor.start(tg, DynamicSupervisorSpec())
        assert info.value.field == "arg"

    async def test_no_argument_means_no_children(self) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running() as sup:
                assert sup.which_children() == []
                assert sup.strategy == "one_for_one"


class TestShutdown:
    async def test_blocked_terminate_is_killed_after_its_shutdown(self) -> None:
        journal = Journal()
        slow = ChildSpec("slow", Worker, arg=Opts("slow", journal, block_terminate=True))
        spec = SupervisorSpec(
            [
                *workers("a", journal=journal),
                dataclasses.replace(slow, shutdown=0.05),
                *workers("c", journal=journal),
            ]
        )
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                started = refs(sup)
        # slow's terminate began, never finished, was killed; the reverse order went on.
        assert journal.of("terminate") == ["c", "slow", "a"]
        assert started["slow"] is not None
        assert started["slow"].exit_reason == "killed"
        assert started["a"] is not None
        assert started["a"].exit_reason == "shutdown"

    async def test_terminate_child_kills_a_blocked_terminate(self) -> None:
        journal = Journal()
        spec = SupervisorSpec(
            [
                ChildSpec(
                    "slow", Worker, arg=Opts("slow", journal, block_terminate=True), shutdown=0.05
                )
            ]
        )
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                ref = child_ref(sup, "slow")
                await sup.terminate_child("slow")
                assert ref.exit_reason == "killed"
                assert journal.of("terminate") == ["slow"]
                assert sup.child("slow") is None

    async def test_brutal_kill_skips_terminate(self) -> None:
        journal = Journal()
        spec = SupervisorSpec(
            workers("a", journal=journal)
            + workers("brutal", journal=journal, shutdown="brutal_kill")
            + workers("c", journal=journal)
        )
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                brutal = child_ref(sup, "brutal")
        assert journal.of("terminate") == ["c", "a"]
        assert brutal.exit_reason == "killed"

    async def test_brutal_kill_on_terminate_child(self) -> None:
        journal = Journal()
        spec = SupervisorSpec(workers("brutal", journal=journal, shutdown="brutal_kill"))
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                brutal = child_ref(sup, "brutal")
                await sup.terminate_child("brutal")
                assert brutal.exit_reason == "killed"
                assert journal.of("terminate") == []


class TestShutdownInVirtualTime:
    """Shutdown timeouts on trio's MockClock (instant, exact)."""

    @pytest.fixture
    def anyio_backend(self, trio_mock_backend: Any) -> Any:
        return trio_mock_backend

    async def test_shutdown_waits_exactly_its_timeout_then_kills(self) -> None:
        journal = Journal()
        spec = SupervisorSpec(
            [
                ChildSpec(
                    "slow", Worker, arg=Opts("slow", journal, block_terminate=True), shutdown=30
                ),
                *workers("quick", journal=journal, shutdown=30),
            ]
        )
        with anyio.fail_after(100):
            async with Supervisor.running(spec) as sup:
                slow = child_ref(sup, "slow")
                quick = child_ref(sup, "quick")
                start = anyio.current_time()
                await sup.terminate_child("quick")
                assert anyio.current_time() == start  # a prompt terminate is not waited for
                assert quick.exit_reason == "shutdown"
                await sup.terminate_child("slow")
                assert anyio.current_time() - start == pytest.approx(30)
                assert slow.exit_reason == "killed"
                assert journal.of("terminate") == ["quick", "slow"]
