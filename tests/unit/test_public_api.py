"""The public API is exported explicitly, documented, and the standing rules hold."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import snakepit

PUBLIC_PACKAGES = (
    "snakepit",
    "snakepit.otp",
    "snakepit.errors",
    "snakepit.worker",
    "snakepit.testing.adapters",
)
ROOT = Path(__file__).resolve().parents[2]


def _modules() -> list[ModuleType]:
    found = [snakepit]
    for info in pkgutil.walk_packages(snakepit.__path__, "snakepit."):
        if "._proto" not in info.name:
            found.append(importlib.import_module(info.name))
    return found


@pytest.mark.parametrize("name", PUBLIC_PACKAGES)
def test_all_names_exist_and_are_documented(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no module docstring"
    exported = module.__all__
    assert isinstance(exported, tuple), f"{name}.__all__ must be a tuple"
    assert len(set(exported)) == len(exported), f"{name}.__all__ has duplicates"
    undocumented = []
    for attr in exported:
        obj = getattr(module, attr)  # AttributeError names a missing export
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not inspect.getdoc(obj):
            undocumented.append(attr)
        if inspect.isclass(obj) and obj.__module__.startswith("snakepit"):
            for member, value in vars(obj).items():
                if member.startswith("_") or (
                    not callable(value)
                    and not isinstance(value, property | classmethod | staticmethod)
                ):
                    continue
                if not inspect.getdoc(getattr(obj, member)):
                    undocumented.append(f"{attr}.{member}")
    assert undocumented == [], f"undocumented public names in {name}: {undocumented}"


def test_public_classes_are_exported_from_their_package() -> None:
    # Every public name of a private module in a subpackage (snakepit/<pkg>/_x.py)
    # is re-exported by that package. Top-level snakepit/_x.py modules are internal.
    missing = []
    for module in _modules():
        parts = module.__name__.split(".")
        if len(parts) < 3 or not parts[-1].startswith("_"):
            continue
        package = importlib.import_module(module.__name__.rsplit(".", 1)[0])
        for attr in getattr(module, "__all__", ()):
            if attr not in getattr(package, "__all__", ()):
                missing.append(f"{module.__name__}.{attr}")
    assert missing == []


def test_every_error_is_a_snakepit_error() -> None:
    import snakepit.errors as errors

    for attr in errors.__all__:
        obj = getattr(errors, attr)
        assert issubclass(obj, snakepit.SnakepitError), attr
        assert attr in errors.__doc__, f"{attr} is missing from the tree drawn in the docstring"


def test_otp_core_knows_nothing_of_grpc_or_pools() -> None:
    forbidden = re.compile(r"^\s*(import|from)\s+(grpc|snakepit\.(pool|worker|bridge|_proto))")
    offenders = [
        f"{path.name}:{n}"
        for path in (ROOT / "snakepit" / "otp").glob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if forbidden.match(line)
    ]
    assert offenders == []


def test_no_sleep_for_synchronization_in_tests() -> None:
    pattern = re.compile(r"\b(time|anyio|asyncio|trio)\.sleep\(")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in (ROOT / "tests").rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_py_typed_marker_ships() -> None:
    assert (Path(snakepit.__file__).parent / "py.typed").exists()


def test_every_error_is_exported_from_the_package() -> None:
    import snakepit.errors

    missing = [name for name in snakepit.errors.__all__ if name not in snakepit.__all__]
    assert missing == [], f"errors not re-exported from snakepit: {missing}"
