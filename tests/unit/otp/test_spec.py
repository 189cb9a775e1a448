"""Child and supervisor specs (otp/_spec.py): frozen, validated, errors name the field."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable
from typing import Any

import pytest

from snakepit.errors import ConfigError, InvalidChildSpec
from snakepit.otp import (
    ChildSpec,
    DuplicateChild,
    DynamicSupervisor,
    DynamicSupervisorSpec,
    Registry,
    Supervisor,
    SupervisorSpec,
)

from ._sup_helpers import Worker, workers


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


class TestDynamicSupervisorSpec:
    def test_defaults(self) -> None:
        spec = DynamicSupervisorSpec()
        assert spec.max_children is None
        assert (spec.max_restarts, spec.max_seconds) == (3, 5.0)
        assert spec.registry is None

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            pytest.param({"max_children": -1}, "max_children", id="negative-children"),
            pytest.param({"max_children": True}, "max_children", id="bool-children"),
            pytest.param({"max_children": 1.5}, "max_children", id="float-children"),
            pytest.param({"max_restarts": -1}, "max_restarts", id="negative-restarts"),
            pytest.param({"max_restarts": False}, "max_restarts", id="bool-restarts"),
            pytest.param({"max_seconds": 0}, "max_seconds", id="zero-seconds"),
            pytest.param({"max_seconds": math.inf}, "max_seconds", id="inf-seconds"),
        ],
    )
    def test_invalid_field_is_named(self, kwargs: dict[str, Any], field: str) -> None:
        with pytest.raises(ConfigError) as info:
            DynamicSupervisorSpec(**kwargs)
        assert info.value.field == field

    def test_zero_max_children_is_valid(self) -> None:
        assert DynamicSupervisorSpec(max_children=0).max_children == 0
