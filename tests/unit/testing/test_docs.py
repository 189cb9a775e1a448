"""docs/testing.md: every Python example compiles, and every public name is documented."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import snakepit.testing
import snakepit.testing.adapters

PAGE = Path(__file__).resolve().parents[3] / "docs" / "testing.md"
TEXT = PAGE.read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```python\n(.*?)^```", TEXT, re.S | re.M)
FIXTURES = ("otp_sandbox", "chaos_rng", "snakepit_pool", "pool_events")


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 20, f"found only {len(BLOCKS)} python blocks in {PAGE}"


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_every_python_block_compiles(block: str) -> None:
    compile(block, str(PAGE), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.parametrize(
    "name",
    [*snakepit.testing.__all__, *snakepit.testing.adapters.__all__, *FIXTURES],
)
def test_every_public_name_is_documented(name: str) -> None:
    assert re.search(rf"(?<![\w.]){re.escape(name)}\b", TEXT), f"{name} is not in {PAGE.name}"


def test_the_otp_marker_is_documented() -> None:
    assert "@pytest.mark.otp(strict_leaks=True" in TEXT
