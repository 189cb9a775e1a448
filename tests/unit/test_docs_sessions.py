"""docs/sessions.md's examples run as shown (each python block is a whole program)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "sessions.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
PROGRAMS = [b for b in BLOCKS if 'anyio.run(main, backend="asyncio")' in b]

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # pools: grpc.aio


def test_there_are_programs_to_run() -> None:
    assert len(PROGRAMS) >= 4


@pytest.mark.parametrize("program", PROGRAMS, ids=[f"program{i}" for i in range(len(PROGRAMS))])
async def test_each_program_runs(program: str) -> None:
    namespace: dict[str, Any] = {"__name__": "docs_sessions"}
    exec(program.replace('anyio.run(main, backend="asyncio")', ""), namespace)
    await namespace["main"]()


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_every_block_runs_its_definitions(block: str) -> None:
    if block in PROGRAMS:
        return  # run above
    namespace: dict[str, Any] = {"__name__": "docs_sessions"}
    exec(block, namespace)
    if "Notes" in namespace:
        notes = namespace["Notes"]()
        notes.setup()
        assert namespace["describe"](notes) == []
    elif "Scorer" in namespace:
        assert sorted(namespace["Scorer"].tools) == ["score", "score_sync"]
    else:
        assert sorted(namespace["Pricing"].tools) == ["quote", "quote_sync"]
