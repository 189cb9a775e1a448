"""The supervisor helpers (testing/_supervision.py): strategy, counts, trees, wait_stable."""

from __future__ import annotations

import pytest

from snakepit.otp import ChildSpec, Strategy, Supervisor, SupervisorSpec
from snakepit.testing import (
    assert_all_children_alive,
    assert_child_count,
    assert_strategy,
    assert_tree,
    check_restart_strategy,
    wait_stable,
)

from ._otp_servers import Counter, Other, child, specs, supervisor

pytestmark = pytest.mark.anyio


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
