"""The snakepit.testing package: lazy re-exports, the same names for type checkers, the plugin.

Its helpers live in small private modules; the package re-exports their
``__all__`` on first use (adapters import the package inside worker
processes, which must not import the host side), and type checkers see the
same names through explicit ``TYPE_CHECKING`` imports.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import snakepit.testing

pytest_plugins = ["pytester"]

INIT = Path(snakepit.testing.__file__)


def type_checking_imports() -> dict[str, str]:
    """Each name imported under ``if TYPE_CHECKING:`` in __init__.py, and its module."""
    found: dict[str, str] = {}
    for node in ast.parse(INIT.read_text()).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom), ast.unparse(stmt)
                for alias in stmt.names:
                    assert alias.asname == alias.name, f"{alias.name}: re-export it as itself"
                    found[alias.name] = str(stmt.module)
    return found


def test_type_checkers_see_exactly_the_lazy_names() -> None:
    lazy = {name: module for name, module in snakepit.testing._names().items()}
    assert type_checking_imports() == lazy


def test_every_name_resolves_to_its_modules_object() -> None:
    # Through the package's lazy lookup itself: a name it cached may be from
    # an earlier import of its module (pytester's in-process runs restore
    # sys.modules afterwards), which made this test fail after those in random order.
    for name, module in snakepit.testing._names().items():
        resolved = snakepit.testing.__getattr__(name)
        defining = sys.modules[f"snakepit.testing.{module}"]
        assert resolved is getattr(defining, name), name


def test_importing_the_package_imports_no_helper_module() -> None:
    code = (
        "import json, sys, snakepit.testing\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('snakepit.testing.'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []


def test_the_fixtures_are_listed_with_their_docstrings(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = pytester.runpytest("-p", "snakepit.testing", "--fixtures")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "otp_sandbox -- *_plugin.py:*",
            "    An isolated OTP sandbox: *",
            "chaos_rng -- *_plugin.py:*",
            "    A ``random.Random`` for chaos *",
            "pool_events -- *_plugin.py:*",
            "    Records pools' telemetry events: *",
            "snakepit_pool -- *_plugin.py:*",
            "    A factory of running pools *",
        ]
    )
