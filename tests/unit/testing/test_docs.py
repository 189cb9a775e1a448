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


def test_every_python_block_compiles() -> None:
    for i, block in enumerate(BLOCKS):
        try:
            compile(block, f"{PAGE} block {i}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        except SyntaxError as exc:
            pytest.fail(f"python block {i} of {PAGE.name} does not compile: {exc}")


def test_every_public_name_is_documented() -> None:
    names = [*snakepit.testing.__all__, *snakepit.testing.adapters.__all__, *FIXTURES]
    missing = [n for n in names if not re.search(rf"(?<![\w.]){re.escape(n)}\b", TEXT)]
    assert missing == [], f"not in {PAGE.name}: {missing}"


def test_the_otp_marker_is_documented() -> None:
    assert "@pytest.mark.otp(strict_leaks=True" in TEXT
