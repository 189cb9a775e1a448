"""Strategies and restart types: exactly the right children are restarted, in OTP's order."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from snakepit.otp import (
    ChildExited,
    ChildNotFound,
    ChildSpec,
    Registry,
    Strategy,
    Supervisor,
    SupervisorSpec,
)

from ._sup_helpers import (
    Boom,
    Journal,
    Subscriptions,
    Worker,
    cast_and_wait,
    child_ref,
    drain,
    kill_and_wait,
    refs,
    workers,
)

pytestmark = pytest.mark.anyio


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
