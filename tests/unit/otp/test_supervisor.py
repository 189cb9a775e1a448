"""Supervisor: child specs, strategies, restart types and intensity, order, shutdown, API."""

from __future__ import annotations

import dataclasses
import gc
import math
import threading
import warnings
from collections.abc import Hashable, Iterator
from typing import Any

import anyio
import pytest
from trio.testing import MockClock

from snakepit.errors import ConfigError, InvalidChildSpec
from snakepit.otp import (
    ChildExited,
    ChildNotFound,
    ChildSpec,
    ChildStarted,
    ChildStartError,
    ChildTerminated,
    DuplicateChild,
    DynamicSupervisor,
    DynamicSupervisorSpec,
    GenServer,
    Registry,
    RestartIntensityReached,
    ServerExited,
    ServerRef,
    Strategy,
    Supervisor,
    SupervisorRef,
    SupervisorSpec,
    monitor,
)

from ._sup_helpers import (
    Boom,
    Journal,
    Opts,
    Subscriptions,
    Worker,
    cast_and_wait,
    child_ref,
    child_sup,
    drain,
    gave_up,
    intensity_error,
    kill_and_wait,
    refs,
    summary,
    task_count,
    thread_count,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def subscribe() -> Iterator[Subscriptions]:
    subscriptions = Subscriptions()
    yield subscriptions
    subscriptions.close()


def workers(*labels: str, journal: Journal | None = None, **kwargs: Any) -> list[ChildSpec]:
    return [ChildSpec(label, Worker, arg=Opts(label, journal), **kwargs) for label in labels]


# --- specs ---------------------------------------------------------------------------


class TestChildSpec:
    def test_worker_defaults(self) -> None:
        spec = ChildSpec("a", Worker)
        assert spec.id == "a"
        assert spec.start is Worker
        assert spec.arg is None
        assert spec.restart == "permanent"
        assert spec.type == "worker"
        assert spec.shutdown == 5.0
        assert spec.name is None

    @pytest.mark.parametrize("start", [Supervisor, DynamicSupervisor])
    def test_supervisor_type_is_inferred_with_infinite_shutdown(
        self, start: type[Supervisor]
    ) -> None:
        spec = ChildSpec("s", start)
        assert spec.type == "supervisor"
        assert spec.shutdown == "infinity"

    def test_explicit_type_sets_the_default_shutdown(self) -> None:
        assert ChildSpec("s", Worker, type="supervisor").shutdown == "infinity"
        assert ChildSpec("w", Supervisor, type="worker").shutdown == 5.0

    def test_a_factory_is_a_worker(self) -> None:
        spec = ChildSpec("f", lambda: Worker())
        assert spec.type == "worker"
        assert spec.shutdown == 5.0

    @pytest.mark.parametrize("restart", ["permanent", "transient", "temporary"])
    def test_restart_values(self, restart: Any) -> None:
        assert ChildSpec("a", Worker, restart=restart).restart == restart

    @pytest.mark.parametrize("shutdown", [0, 0.05, 2, 30.5, "brutal_kill", "infinity"])
    def test_shutdown_values(self, shutdown: Any) -> None:
        assert ChildSpec("a", Worker, shutdown=shutdown).shutdown == shutdown

    @pytest.mark.parametrize("child_id", ["a", 0, ("pool", 1), frozenset({1})])
    def test_any_hashable_id(self, child_id: Hashable) -> None:
        assert ChildSpec(child_id, Worker).id == child_id

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            pytest.param({"id": ["a"]}, "id", id="unhashable-id"),
            pytest.param({"id": {"a": 1}}, "id", id="dict-id"),
            pytest.param({"id": ""}, "id", id="empty-id"),
            pytest.param({"id": None}, "id", id="none-id"),
            pytest.param({"start": 42}, "start", id="int-start"),
            pytest.param({"start": "Worker"}, "start", id="str-start"),
            pytest.param({"restart": "sometimes"}, "restart", id="bad-restart"),
            pytest.param({"restart": None}, "restart", id="none-restart"),
            pytest.param({"shutdown": -1}, "shutdown", id="negative-shutdown"),
            pytest.param({"shutdown": "soon"}, "shutdown", id="str-shutdown"),
            pytest.param({"shutdown": True}, "shutdown", id="bool-shutdown"),
            pytest.param({"shutdown": math.nan}, "shutdown", id="nan-shutdown"),
            pytest.param({"shutdown": math.inf}, "shutdown", id="inf-shutdown"),
            pytest.param({"type": "manager"}, "type", id="bad-type"),
            pytest.param({"name": ""}, "name", id="empty-name"),
            pytest.param({"name": 7}, "name", id="int-name"),
        ],
    )
    def test_invalid_field_is_named(self, kwargs: dict[str, Any], field: str) -> None:
        args: dict[str, Any] = {"id": "a", "start": Worker, **kwargs}
        with pytest.raises(InvalidChildSpec) as info:
            ChildSpec(**args)
        assert info.value.field == field
        assert str(info.value).startswith(f"{field}: ")
        assert isinstance(info.value, ConfigError)
        assert isinstance(info.value, ValueError)

    def test_frozen(self) -> None:
        spec = ChildSpec("a", Worker)
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec.restart = "temporary"  # type: ignore[misc]


class TestSupervisorSpec:
    def test_otp_defaults(self) -> None:
        spec = SupervisorSpec()
        assert spec.children == ()
        assert spec.strategy == "one_for_one"
        assert spec.max_restarts == 3
        assert spec.max_seconds == 5.0
        assert spec.registry is None

    def test_children_become_a_tuple(self) -> None:
        children = workers("a", "b")
        assert SupervisorSpec(children=children).children == tuple(children)

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            pytest.param({"strategy": "one_for_rest"}, "strategy", id="bad-strategy"),
            pytest.param({"strategy": None}, "strategy", id="none-strategy"),
            pytest.param({"max_restarts": -1}, "max_restarts", id="negative-restarts"),
            pytest.param({"max_restarts": 1.5}, "max_restarts", id="float-restarts"),
            pytest.param({"max_restarts": True}, "max_restarts", id="bool-restarts"),
            pytest.param({"max_restarts": "3"}, "max_restarts", id="str-restarts"),
            pytest.param({"max_seconds": 0}, "max_seconds", id="zero-seconds"),
            pytest.param({"max_seconds": -5}, "max_seconds", id="negative-seconds"),
            pytest.param({"max_seconds": math.inf}, "max_seconds", id="inf-seconds"),
            pytest.param({"max_seconds": math.nan}, "max_seconds", id="nan-seconds"),
            pytest.param({"max_seconds": True}, "max_seconds", id="bool-seconds"),
            pytest.param({"max_seconds": "5"}, "max_seconds", id="str-seconds"),
            pytest.param({"children": ["a"]}, "children", id="not-a-childspec"),
        ],
    )
    def test_invalid_field_is_named(self, kwargs: dict[str, Any], field: str) -> None:
        with pytest.raises(ConfigError) as info:
            SupervisorSpec(**kwargs)
        assert info.value.field == field
        assert not isinstance(info.value, InvalidChildSpec)

    def test_zero_max_restarts_is_valid(self) -> None:
        assert SupervisorSpec(max_restarts=0).max_restarts == 0

    def test_duplicate_child_id(self) -> None:
        with pytest.raises(DuplicateChild) as info:
            SupervisorSpec(children=[*workers("a", "b"), ChildSpec("a", Worker)])
        assert info.value.child_id == "a"

    def test_name_without_registry(self) -> None:
        with pytest.raises(ConfigError) as info:
            SupervisorSpec(children=[ChildSpec("a", Worker, name="alpha")])
        assert info.value.field == "registry"

    def test_name_with_registry(self) -> None:
        spec = SupervisorSpec(children=[ChildSpec("a", Worker, name="alpha")], registry=Registry())
        assert spec.children[0].name == "alpha"


# --- starting and stopping -----------------------------------------------------------


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


# --- strategies and restart types ----------------------------------------------------


class TestStrategies:
    @pytest.mark.parametrize(
        ("strategy", "victim", "restarted"),
        [
            ("one_for_one", "b", {"b"}),
            ("one_for_one", "d", {"d"}),
            ("one_for_all", "b", {"a", "b", "c", "d"}),
            ("one_for_all", "d", {"a", "b", "c", "d"}),
            ("rest_for_one", "a", {"a", "b", "c", "d"}),
            ("rest_for_one", "b", {"b", "c", "d"}),
            ("rest_for_one", "d", {"d"}),
        ],
    )
    @pytest.mark.parametrize("how", ["kill", "crash"])
    async def test_exactly_the_right_children_are_replaced(
        self, strategy: Strategy, victim: str, restarted: set[str], how: str
    ) -> None:
        spec = SupervisorSpec(workers("a", "b", "c", "d"), strategy=strategy)
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                assert sup.strategy == strategy
                before = refs(sup)
                target = child_ref(sup, victim)
                if how == "kill":
                    assert await kill_and_wait(target) == "killed"
                else:
                    assert isinstance(await cast_and_wait(target, "crash"), Boom)
                await sup.wait_stable()
                after = refs(sup)
                assert list(after) == ["a", "b", "c", "d"]
                for child_id, old in before.items():
                    new = after[child_id]
                    assert old is not None
                    assert new is not None
                    assert new.alive
                    if child_id in restarted:
                        assert new is not old
                        assert new.generation == old.generation + 1
                        assert not old.alive
                    else:
                        assert new is old
                        assert new.generation == 0
                for info in sup.which_children():
                    assert info.generation == (1 if info.id in restarted else 0)

    async def test_one_for_all_stops_the_others_in_reverse_and_restarts_in_order(self) -> None:
        journal = Journal()
        spec = SupervisorSpec(workers("a", "b", "c", "d", journal=journal), strategy="one_for_all")
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                mark = len(journal.entries)
                await kill_and_wait(child_ref(sup, "b"))
                await sup.wait_stable()
                assert journal.entries[mark:] == [
                    ("terminate", "d", 0),
                    ("terminate", "c", 0),
                    ("terminate", "a", 0),
                    ("init", "a", 1),
                    ("init", "b", 1),
                    ("init", "c", 1),
                    ("init", "d", 1),
                ]

    async def test_rest_for_one_stops_the_later_ones_in_reverse(self) -> None:
        journal = Journal()
        spec = SupervisorSpec(workers("a", "b", "c", "d", journal=journal), strategy="rest_for_one")
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                mark = len(journal.entries)
                await cast_and_wait(child_ref(sup, "b"), "crash")
                await sup.wait_stable()
                assert journal.entries[mark:] == [
                    ("terminate", "b", 0),  # its own terminate, after the crash
                    ("terminate", "d", 0),
                    ("terminate", "c", 0),
                    ("init", "b", 1),
                    ("init", "c", 1),
                    ("init", "d", 1),
                ]

    async def test_one_for_all_drops_a_temporary_sibling(self) -> None:
        spec = SupervisorSpec(
            [ChildSpec("tmp", Worker, restart="temporary"), *workers("b", "c")],
            strategy="one_for_all",
        )
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                tmp = child_ref(sup, "tmp")
                await kill_and_wait(child_ref(sup, "b"))
                await sup.wait_stable()
                assert not tmp.alive
                assert [info.id for info in sup.which_children()] == ["b", "c"]
                assert child_ref(sup, "b").generation == 1
                assert child_ref(sup, "c").generation == 1

    async def test_replacement_keeps_its_registered_name(self) -> None:
        registry = Registry()
        spec = SupervisorSpec(
            [ChildSpec("a", Worker, name="alpha"), ChildSpec("b", Worker, name="beta")],
            registry=registry,
        )
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                old = registry.lookup("alpha")
                assert old is child_ref(sup, "a")
                await kill_and_wait(old)
                await sup.wait_stable()
                new = registry.lookup("alpha")
                assert new is child_ref(sup, "a")
                assert new.generation == 1
                assert await registry.call("alpha", "ping") == "pong"
            assert registry.names() == []


class TestRestartTypes:
    @pytest.mark.parametrize(
        ("restart", "how", "restarted"),
        [
            ("permanent", "kill", True),
            ("permanent", "crash", True),
            ("permanent", "stop_normal", True),
            ("permanent", "stop_shutdown", True),
            ("transient", "kill", True),
            ("transient", "crash", True),
            ("transient", "stop_normal", False),
            ("transient", "stop_shutdown", False),
            ("temporary", "kill", False),
            ("temporary", "crash", False),
            ("temporary", "stop_normal", False),
        ],
    )
    async def test_restart_type(
        self, subscribe: Subscriptions, restart: Any, how: str, restarted: bool
    ) -> None:
        spec = SupervisorSpec([*workers("a"), ChildSpec("x", Worker, restart=restart)])
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                events = subscribe(sup)
                a = child_ref(sup, "a")
                old = child_ref(sup, "x")
                if how == "kill":
                    reason = await kill_and_wait(old)
                else:
                    reason = await cast_and_wait(old, how)
                await sup.wait_stable()
                new = sup.child("x") if restart != "temporary" else None
                got, _ = drain(events)
                exited = [e for e in got if isinstance(e, ChildExited)]
                assert len(exited) == 1
                assert exited[0].child_id == "x"
                assert exited[0].ref is old
                assert exited[0].reason is reason or exited[0].reason == reason
                assert exited[0].restarting is restarted
                assert child_ref(sup, "a") is a
                ids = [info.id for info in sup.which_children()]
                if restarted:
                    assert new is not None
                    assert new is not old
                    assert new.generation == 1
                    assert await new.call("ping") == "pong"
                elif restart == "temporary":
                    assert ids == ["a"]
                    with pytest.raises(ChildNotFound):
                        sup.child("x")
                else:
                    assert new is None
                    assert ids == ["a", "x"]
                    assert sup.count_children().active == 1

    async def test_a_normally_exited_transient_child_can_be_restarted_by_hand(self) -> None:
        spec = SupervisorSpec([ChildSpec("x", Worker, restart="transient")])
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                assert await cast_and_wait(child_ref(sup, "x"), "stop_normal") == "normal"
                await sup.wait_stable()
                new = await sup.restart_child("x")
                assert new.generation == 1
                assert sup.child("x") is new


# --- restart intensity ---------------------------------------------------------------


class TestRestartIntensity:
    async def test_fourth_restart_in_the_window_ends_the_supervisor(self) -> None:
        journal = Journal()
        spec = SupervisorSpec(workers("a", "b", "c", journal=journal))
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                sup = await Supervisor.start(tg, spec)
                a, c = child_ref(sup, "a"), child_ref(sup, "c")
                for generation in (1, 2, 3):
                    await kill_and_wait(child_ref(sup, "b"))
                    await sup.wait_stable()
                    assert child_ref(sup, "b").generation == generation
                async with monitor(sup) as down:
                    await kill_and_wait(child_ref(sup, "b"))
                    reason = await down.down()
                # The caller's task group is untouched by the supervisor's exit.
                assert not tg.cancel_scope.cancel_called
        error = intensity_error(reason)
        assert sup.exit_reason is reason
        assert error.supervisor is sup
        assert (error.max_restarts, error.max_seconds) == (3, 5.0)
        assert not a.alive
        assert not c.alive
        assert a.exit_reason == c.exit_reason == "shutdown"
        assert journal.of("terminate")[-2:] == ["c", "a"]
        assert journal.of("init").count("b") == 4  # never a 5th start
        with pytest.raises(ServerExited):
            await sup.wait_stable()

    async def test_zero_max_restarts_gives_up_on_the_first_exit(self) -> None:
        spec = SupervisorSpec(workers("a", "b"), max_restarts=0)
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                b = child_ref(sup, "b")
                async with monitor(sup) as down:
                    await cast_and_wait(child_ref(sup, "a"), "crash")
                    assert gave_up(await down.down())
                assert not b.alive

    async def test_restarts_of_all_children_add_up(self) -> None:
        spec = SupervisorSpec(workers("a", "b", "c"))
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                for child_id in ("a", "b", "c"):
                    await kill_and_wait(child_ref(sup, child_id))
                    await sup.wait_stable()
                async with monitor(sup) as down:
                    await kill_and_wait(child_ref(sup, "a"))
                    assert gave_up(await down.down())

    async def test_one_group_restart_counts_once(self) -> None:
        spec = SupervisorSpec(workers("a", "b", "c", "d"), strategy="one_for_all", max_restarts=1)
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                await kill_and_wait(child_ref(sup, "a"))
                await sup.wait_stable()
                assert sup.alive
                assert {info.generation for info in sup.which_children()} == {1}

    async def test_a_failed_restart_counts_and_is_retried(self, subscribe: Subscriptions) -> None:
        opts = Opts("x", fail_init=frozenset({1}))
        spec = SupervisorSpec([ChildSpec("x", Worker, arg=opts)])
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                events = subscribe(sup)
                await kill_and_wait(child_ref(sup, "x"))
                await sup.wait_stable()
                assert child_ref(sup, "x").generation == 2
                got, _ = drain(events)
                assert summary(got) == [
                    ("exited", "x", True),
                    ("start_failed", "x", 1),
                    ("started", "x", 2),
                ]
                # Two restarts so far (the kill, the failed init): one more is allowed.
                await kill_and_wait(child_ref(sup, "x"))
                await sup.wait_stable()
                assert child_ref(sup, "x").generation == 3
                async with monitor(sup) as down:
                    await kill_and_wait(child_ref(sup, "x"))
                    assert gave_up(await down.down())

    async def test_restarts_that_keep_failing_end_the_supervisor(
        self, subscribe: Subscriptions
    ) -> None:
        opts = Opts("x", fail_init=frozenset({1, 2, 3, 4, 5}))
        spec = SupervisorSpec([*workers("a"), ChildSpec("x", Worker, arg=opts)])
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                events = subscribe(sup)
                a = child_ref(sup, "a")
                async with monitor(sup) as down:
                    await kill_and_wait(child_ref(sup, "x"))
                    assert gave_up(await down.down())
                assert not a.alive
                got, ended = drain(events)
                assert ended
                assert summary(got) == [
                    ("exited", "x", True),
                    ("start_failed", "x", 1),
                    ("start_failed", "x", 2),
                    ("start_failed", "x", 3),
                    ("intensity", 3, 5.0),
                    ("terminated", "a"),
                ]

    async def test_nested_supervisor_reaching_intensity_is_restarted_by_its_parent(
        self,
        subscribe: Subscriptions,
    ) -> None:
        journal = Journal()
        inner = SupervisorSpec(workers("x", "y", journal=journal))
        spec = SupervisorSpec(
            [*workers("a"), ChildSpec("inner", Supervisor, arg=inner), *workers("b")]
        )
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                events = subscribe(sup)
                a, b = child_ref(sup, "a"), child_ref(sup, "b")
                old_inner = child_sup(sup, "inner")
                y = child_ref(old_inner, "y")
                for _ in range(3):
                    await kill_and_wait(child_ref(old_inner, "x"))
                    await old_inner.wait_stable()
                async with monitor(old_inner) as inner_down:
                    await kill_and_wait(child_ref(old_inner, "x"))
                    reason = await inner_down.down()
                assert intensity_error(reason).supervisor is old_inner
                assert not y.alive
                await sup.wait_stable()
                new_inner = child_sup(sup, "inner")
                assert new_inner is not old_inner
                assert new_inner.generation == 1
                # A fresh supervisor: fresh children and a fresh restart count.
                assert [info.generation for info in new_inner.which_children()] == [0, 0]
                assert child_ref(sup, "a") is a
                assert child_ref(sup, "b") is b
                assert sup.alive
                got, _ = drain(events)
                assert summary(got) == [("exited", "inner", True), ("started", "inner", 1)]
                exited = got[0]
                assert isinstance(exited, ChildExited)
                assert exited.reason is reason

    async def test_wait_stable_covers_a_nested_supervisor_giving_up(self) -> None:
        inner = SupervisorSpec(workers("x", "y"), max_restarts=0)
        spec = SupervisorSpec([ChildSpec("inner", Supervisor, arg=inner)])
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                old_inner = child_sup(sup, "inner")
                await cast_and_wait(child_ref(old_inner, "x"), "crash")
                # The inner supervisor has been told of x's exit: it will give up, and
                # the parent restart it. wait_stable() covers all of that.
                await sup.wait_stable()
                assert not old_inner.alive
                new_inner = child_sup(sup, "inner")
                assert new_inner.generation == 1
                assert all(info.alive for info in new_inner.which_children())

    async def test_wait_stable_waits_for_a_nested_supervisor_still_stopping(self) -> None:
        gate = anyio.Event()
        inner = SupervisorSpec(
            [*workers("x"), ChildSpec("y", Worker, arg=Opts("y", terminate_gate=gate))],
            max_restarts=0,
        )
        spec = SupervisorSpec([ChildSpec("inner", Supervisor, arg=inner)])
        stable = anyio.Event()

        async def settle(sup: SupervisorRef) -> None:
            await sup.wait_stable()
            stable.set()

        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                old_inner = child_sup(sup, "inner")
                await cast_and_wait(child_ref(old_inner, "x"), "crash")
                async with anyio.create_task_group() as tg:
                    tg.start_soon(settle, sup)
                    # The inner supervisor is giving up, stuck in y's terminate; the
                    # waiter has reached it and must keep waiting.
                    await anyio.wait_all_tasks_blocked()
                    assert not stable.is_set()
                    assert old_inner.alive
                    gate.set()
                assert stable.is_set()
                assert gave_up(old_inner.exit_reason)
                assert child_sup(sup, "inner").generation == 1


class TestVirtualTime:
    """Restart windows and shutdown timeouts on trio's MockClock (instant, exact)."""

    @pytest.fixture
    def anyio_backend(self, trio_mock_backend: Any) -> Any:
        return trio_mock_backend

    async def _kill_and_settle(self, sup: SupervisorRef, child_id: str, times: int) -> None:
        for _ in range(times):
            with anyio.fail_after(5):
                await kill_and_wait(child_ref(sup, child_id))
                await sup.wait_stable()

    async def test_restarts_older_than_the_window_are_forgotten(
        self, mock_clock: MockClock
    ) -> None:
        spec = SupervisorSpec(workers("a", "b"), max_restarts=3, max_seconds=1800)
        with anyio.fail_after(4000):
            async with Supervisor.running(spec) as sup:
                a = child_ref(sup, "a")
                await self._kill_and_settle(sup, "b", 3)
                mock_clock.jump(1801)
                await self._kill_and_settle(sup, "b", 3)
                assert sup.alive
                assert child_ref(sup, "b").generation == 6
                assert child_ref(sup, "a") is a

    async def test_a_fourth_restart_inside_the_window_ends_the_supervisor(
        self, mock_clock: MockClock
    ) -> None:
        spec = SupervisorSpec(workers("a", "b"), max_restarts=3, max_seconds=1800)
        with anyio.fail_after(4000):
            async with Supervisor.running(spec) as sup:
                await self._kill_and_settle(sup, "b", 3)
                mock_clock.jump(1799)
                with anyio.fail_after(5):
                    async with monitor(sup) as down:
                        await kill_and_wait(child_ref(sup, "b"))
                        assert gave_up(await down.down())

    async def test_the_window_slides(self, mock_clock: MockClock) -> None:
        spec = SupervisorSpec(workers("b"), max_restarts=2, max_seconds=100)
        with anyio.fail_after(4000):
            async with Supervisor.running(spec) as sup:
                await self._kill_and_settle(sup, "b", 1)  # t=0
                mock_clock.jump(60)
                await self._kill_and_settle(sup, "b", 1)  # t=60
                mock_clock.jump(60)
                await self._kill_and_settle(sup, "b", 1)  # t=120: the t=0 one expired
                assert sup.alive
                mock_clock.jump(30)
                with anyio.fail_after(5):  # t=150: t=60, t=120, t=150 are 3 > 2
                    async with monitor(sup) as down:
                        await kill_and_wait(child_ref(sup, "b"))
                        assert gave_up(await down.down())

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


# --- the supervisor API --------------------------------------------------------------


class TestIntrospection:
    async def test_which_children(self) -> None:
        spec = SupervisorSpec(
            [
                ChildSpec("a", Worker),
                ChildSpec("inner", Supervisor, arg=SupervisorSpec(workers("x"))),
                ChildSpec("t", Worker, restart="transient"),
            ]
        )
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                infos = sup.which_children()
                assert [(i.id, i.type, i.restart, i.generation) for i in infos] == [
                    ("a", "worker", "permanent", 0),
                    ("inner", "supervisor", "permanent", 0),
                    ("t", "worker", "transient", 0),
                ]
                assert all(i.alive for i in infos)
                assert isinstance(infos[1].ref, SupervisorRef)
                await kill_and_wait(child_ref(sup, "a"))
                await sup.wait_stable()
                await sup.terminate_child("t")
                infos = sup.which_children()
                assert [(i.id, i.generation, i.alive) for i in infos] == [
                    ("a", 1, True),
                    ("inner", 0, True),
                    ("t", 0, False),
                ]
                assert infos[2].ref is None

    async def test_which_children_has_each_childs_last_exit(self) -> None:
        spec = SupervisorSpec(
            [
                ChildSpec("a", Worker),
                ChildSpec("t", Worker, restart="transient"),
                ChildSpec("s", Worker),
            ]
        )
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                assert [i.last_exit for i in sup.which_children()] == [None, None, None]
                await kill_and_wait(child_ref(sup, "a"))
                await cast_and_wait(child_ref(sup, "t"), "stop_normal")
                await sup.wait_stable()
                await sup.terminate_child("s")
                a, t, s = sup.which_children()
                assert (a.alive, a.generation, a.last_exit) == (
                    True,
                    1,
                    "killed",
                )  # its predecessor's
                assert (t.alive, t.generation, t.last_exit) == (False, 0, "normal")
                assert (s.alive, s.last_exit) == (False, "shutdown")  # stopped by the supervisor
                await cast_and_wait(child_ref(sup, "a"), "crash")
                await sup.wait_stable()
                assert isinstance(sup.which_children()[0].last_exit, Boom)

    async def test_count_children(self) -> None:
        spec = SupervisorSpec(
            [
                ChildSpec("a", Worker),
                ChildSpec("inner", Supervisor, arg=SupervisorSpec(workers("x", "y"))),
                ChildSpec("dyn", DynamicSupervisor),
                ChildSpec("tmp", Worker, restart="temporary"),
            ]
        )
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                counts = sup.count_children()
                assert (counts.specs, counts.active, counts.supervisors, counts.workers) == (
                    4,
                    4,
                    2,
                    2,
                )
                await sup.terminate_child("a")
                await sup.terminate_child("tmp")  # temporary: removed
                counts = sup.count_children()
                assert (counts.specs, counts.active, counts.supervisors, counts.workers) == (
                    3,
                    2,
                    2,
                    1,
                )

    @pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one"])
    async def test_strategy(self, strategy: Strategy) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(strategy=strategy)) as sup:
                assert sup.strategy == strategy

    async def test_child(self) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("a"))) as sup:
                ref = sup.child("a")
                assert ref is not None
                assert ref.alive
                with pytest.raises(ChildNotFound) as info:
                    sup.child("nope")
                assert info.value.child == "nope"
                await sup.terminate_child("a")
                assert sup.child("a") is None


class TestChildManagement:
    async def test_terminate_child_by_id_or_ref_does_not_restart(
        self, subscribe: Subscriptions
    ) -> None:
        journal = Journal()
        spec = SupervisorSpec(workers("a", "b", "c", journal=journal))
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                events = subscribe(sup)
                a, b, c = (child_ref(sup, i) for i in "abc")
                await sup.terminate_child("a")
                await sup.terminate_child(b)
                await sup.wait_stable()
                assert a.exit_reason == b.exit_reason == "shutdown"
                assert refs(sup) == {"a": None, "b": None, "c": c}
                assert journal.of("terminate") == ["a", "b"]
                got, _ = drain(events)
                assert summary(got) == [("terminated", "a"), ("terminated", "b")]
                terminated = got[0]
                assert isinstance(terminated, ChildTerminated)
                assert terminated.ref is a
                assert terminated.reason == "shutdown"
                assert terminated.supervisor is sup
                # Terminating a stopped child again is a no-op.
                await sup.terminate_child("a")

    async def test_terminate_child_errors(self) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("a"))) as sup:
                with pytest.raises(ChildNotFound):
                    await sup.terminate_child("nope")
                async with Worker.running() as stranger:
                    with pytest.raises(ChildNotFound):
                        await sup.terminate_child(stranger)
                assert sup.alive

    async def test_terminate_child_removes_a_temporary_child(self) -> None:
        spec = SupervisorSpec([*workers("a"), ChildSpec("tmp", Worker, restart="temporary")])
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                await sup.terminate_child("tmp")
                assert [i.id for i in sup.which_children()] == ["a"]
                with pytest.raises(ChildNotFound):
                    await sup.restart_child("tmp")

    async def test_restart_child(self) -> None:
        journal = Journal()
        spec = SupervisorSpec(workers("a", "b", journal=journal))
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                old = child_ref(sup, "a")
                await sup.terminate_child("a")
                new = await sup.restart_child("a")
                assert new is not old
                assert new.generation == 1
                assert sup.child("a") is new
                assert [i.id for i in sup.which_children()] == ["a", "b"]  # keeps its place
                assert journal.entries[-1] == ("init", "a", 1)

    async def test_restart_child_errors(self) -> None:
        opts = Opts("x", fail_init=frozenset({1}))
        spec = SupervisorSpec([*workers("a"), ChildSpec("x", Worker, arg=opts)])
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                with pytest.raises(ConfigError) as info:
                    await sup.restart_child("a")
                assert info.value.field == "child_id"
                with pytest.raises(ChildNotFound):
                    await sup.restart_child("nope")
                await sup.terminate_child("x")
                with pytest.raises(ChildStartError) as failed:
                    await sup.restart_child("x")
                assert failed.value.child_id == "x"
                assert isinstance(failed.value.cause, Boom)
                assert sup.child("x") is None
                assert (await sup.restart_child("x")).generation == 2
                assert sup.alive

    async def test_delete_child(self) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("a", "b"))) as sup:
                with pytest.raises(ConfigError) as info:
                    await sup.delete_child("a")
                assert info.value.field == "child_id"
                with pytest.raises(ChildNotFound):
                    await sup.delete_child("nope")
                await sup.terminate_child("a")
                await sup.delete_child("a")
                assert [i.id for i in sup.which_children()] == ["b"]
                with pytest.raises(ChildNotFound):
                    await sup.restart_child("a")
                with pytest.raises(ChildNotFound):
                    sup.child("a")
                again = await sup.start_child(ChildSpec("a", Worker))
                assert again.generation == 0
                assert [i.id for i in sup.which_children()] == ["b", "a"]

    async def test_start_child(self, subscribe: Subscriptions) -> None:
        journal = Journal()
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("a", journal=journal))) as sup:
                events = subscribe(sup)
                ref = await sup.start_child(ChildSpec("b", Worker, arg=Opts("b", journal)))
                assert ref.alive
                assert ref.generation == 0
                assert sup.child("b") is ref
                assert [i.id for i in sup.which_children()] == ["a", "b"]
                got, _ = drain(events)
                assert summary(got) == [("started", "b", 0)]
                # A started child is supervised like the others.
                await kill_and_wait(ref)
                await sup.wait_stable()
                assert child_ref(sup, "b").generation == 1
            assert journal.of("terminate") == ["b", "a"]

    async def test_start_child_errors(self) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("a"))) as sup:
                with pytest.raises(DuplicateChild) as dup:
                    await sup.start_child(ChildSpec("a", Worker))
                assert dup.value.child_id == "a"
                bad = ChildSpec("bad", Worker, arg=Opts(fail_init=frozenset({0})))
                with pytest.raises(ChildStartError) as failed:
                    await sup.start_child(bad)
                assert failed.value.child_id == "bad"
                assert isinstance(failed.value.cause, Boom)
                with pytest.raises(ConfigError) as info:
                    await sup.start_child("not a spec")  # type: ignore[arg-type]
                assert info.value.field == "spec"
                with pytest.raises(ConfigError) as info:
                    await sup.start_child(ChildSpec("named", Worker, name="n"))
                assert info.value.field == "registry"
                assert [i.id for i in sup.which_children()] == ["a"]  # nothing was kept
                assert sup.alive
                assert sup.count_children().active == 1

    async def test_start_child_with_a_name(self) -> None:
        registry = Registry()
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(registry=registry)) as sup:
                ref = await sup.start_child(ChildSpec("a", Worker, name="alpha"))
                assert registry.whereis("alpha") is ref
                await kill_and_wait(ref)
                new = await registry.wait_rebound("alpha", ref)
                await sup.wait_stable()
                assert new is child_ref(sup, "a")


# --- wait_stable and events ----------------------------------------------------------


class TestWaitStable:
    async def test_covers_nested_supervisors(self) -> None:
        deepest = SupervisorSpec(workers("x", "y"), strategy="one_for_all")
        middle = SupervisorSpec([ChildSpec("deepest", Supervisor, arg=deepest)])
        spec = SupervisorSpec([*workers("a"), ChildSpec("middle", Supervisor, arg=middle)])
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                bottom = child_sup(child_sup(sup, "middle"), "deepest")
                await kill_and_wait(child_ref(bottom, "x"))
                await sup.wait_stable()
                # Both restarts (x, and y by one_for_all) are done, two levels down.
                assert [i.generation for i in bottom.which_children()] == [1, 1]
                assert all(i.alive for i in bottom.which_children())

    async def test_returns_at_once_when_idle(self) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("a"))) as sup:
                await sup.wait_stable()
                await sup.wait_stable(timeout=None)

    async def test_errors(self) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("a"))) as sup:
                with pytest.raises(ConfigError):
                    await sup.wait_stable(timeout=-1)
            with pytest.raises(ServerExited) as info:
                await sup.wait_stable()
            assert info.value.reason == "shutdown"


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


# --- isolation and cleanup -----------------------------------------------------------


class _Canary:
    def __init__(self) -> None:
        self.release = anyio.Event()
        self.cancelled = False

    async def run(self) -> None:
        try:
            await self.release.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise


class TestIsolation:
    async def test_a_child_crash_cancels_neither_siblings_nor_the_caller(self) -> None:
        opts = Opts("b", fail_init=frozenset({2}))  # its second restart fails once
        spec = SupervisorSpec([*workers("a"), ChildSpec("b", Worker, arg=opts), *workers("c")])
        canary = _Canary()
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(canary.run)
                sup = await Supervisor.start(tg, spec)
                a, c = child_ref(sup, "a"), child_ref(sup, "c")
                await cast_and_wait(child_ref(sup, "b"), "crash")  # a handler raises
                await sup.wait_stable()
                await cast_and_wait(child_ref(sup, "b"), "crash")  # then init raises
                await sup.wait_stable()
                assert child_ref(sup, "b").generation == 3
                assert child_ref(sup, "a") is a
                assert child_ref(sup, "c") is c
                assert await a.call("ping") == "pong"
                assert not canary.cancelled
                assert not tg.cancel_scope.cancel_called
                # Even the supervisor giving up stays inside it.
                async with monitor(sup) as down:
                    await cast_and_wait(child_ref(sup, "b"), "crash")
                    assert gave_up(await down.down())
                assert not canary.cancelled
                canary.release.set()
        assert not canary.cancelled

    async def test_a_failed_call_does_not_hurt_the_caller(self) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("a"))) as sup:
                old = child_ref(sup, "a")
                with pytest.raises(ServerExited) as info:
                    await old.call("explode")
                assert isinstance(info.value.reason, Boom)
                await sup.wait_stable()
                assert child_ref(sup, "a").generation == 1


class TestNoLeaks:
    async def test_a_stopped_tree_leaves_no_task_thread_or_mailbox(
        self, subscribe: Subscriptions
    ) -> None:
        dyn_children = [ChildSpec(f"d{i}", Worker) for i in range(2)]
        inner = SupervisorSpec(workers("x", "y"), strategy="rest_for_one")
        spec = SupervisorSpec(
            [
                *workers("a"),
                ChildSpec("inner", Supervisor, arg=inner),
                ChildSpec("dyn", DynamicSupervisor, arg=DynamicSupervisorSpec()),
                *workers("b"),
            ]
        )
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("warm-up"))):
                pass  # the backend's one-off helpers (trio's timer task) exist from here
            tasks, threads = task_count(), thread_count()
            all_threads = threading.active_count()
            every: list[ServerRef[Any, Any]] = []
            async with Supervisor.running(spec) as sup:
                events = subscribe(sup)
                every.append(sup)
                dyn = child_sup(sup, "dyn")
                for child in dyn_children:
                    await dyn.start_child(child)
                await kill_and_wait(child_ref(child_sup(sup, "inner"), "x"))
                await cast_and_wait(child_ref(dyn, "d0"), "crash")
                await sup.wait_stable()
                assert task_count() > tasks
                stack: list[SupervisorRef] = [sup]
                while stack:
                    for info in stack.pop().which_children():
                        assert info.ref is not None
                        every.append(info.ref)
                        if isinstance(info.ref, SupervisorRef):
                            stack.append(info.ref)
                for ref in every:
                    ref.send("noise")  # messages left queued must not survive either
            assert len(every) == 9
            assert task_count() == tasks
            assert thread_count() == threads
            assert threading.active_count() == all_threads
            for ref in every:
                assert not ref.alive
                assert ref.mailbox_stats().queued == 0
            assert drain(events)[1]

    async def test_a_supervisor_that_gave_up_leaves_no_task(self) -> None:
        with anyio.fail_after(5):
            async with Supervisor.running(SupervisorSpec(workers("warm-up"))):
                pass
            tasks = task_count()
            async with anyio.create_task_group() as tg:
                sup = await Supervisor.start(tg, SupervisorSpec(workers("a", "b"), max_restarts=0))
                a = child_ref(sup, "a")
                async with monitor(sup) as down:
                    await kill_and_wait(child_ref(sup, "b"))
                    await down.down()
                assert not a.alive
            assert task_count() == tasks


class _Plain(GenServer[Any, Any, Any]):
    """A GenServer with no callbacks of its own: a supervisor runs it as-is."""


async def test_any_genserver_can_be_a_child() -> None:
    with anyio.fail_after(5):
        async with Supervisor.running(SupervisorSpec([ChildSpec("p", _Plain, arg=7)])) as sup:
            assert await child_ref(sup, "p").get_state() == 7
