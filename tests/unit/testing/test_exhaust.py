"""exhaust (testing/_exhaust.py): fds, tasks and processes held for the block, freed after."""

from __future__ import annotations

import os

import anyio
import pytest

from snakepit.errors import ConfigError
from snakepit.testing import exhaust
from tests._procs import descendant_pids

pytestmark = pytest.mark.anyio


class TestExhaust:
    async def test_fds_are_held_then_closed(self) -> None:
        before = set(os.listdir("/proc/self/fd"))
        async with exhaust("fds", 50) as held:
            assert held.kind == "fds"
            assert held.count == 50
            assert len(set(held.fds)) == 50
            assert set(map(str, held.fds)) <= set(os.listdir("/proc/self/fd"))
        assert set(os.listdir("/proc/self/fd")) == before

    async def test_fds_are_closed_when_the_block_raises(self) -> None:
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(KeyError):
            async with exhaust("fds", 10):
                raise KeyError("body")
        assert set(os.listdir("/proc/self/fd")) == before

    async def test_tasks_are_waiting_inside_and_gone_after(self) -> None:
        before = len(anyio.get_running_tasks())
        async with exhaust("tasks", 200) as held:
            assert held.count == 200
            assert len(anyio.get_running_tasks()) == before + 200
        assert len(anyio.get_running_tasks()) == before

    async def test_tasks_end_when_the_block_raises(self) -> None:
        before = len(anyio.get_running_tasks())
        with pytest.raises(KeyError):  # as itself, not in an ExceptionGroup
            async with exhaust("tasks", 20):
                raise KeyError("body")
        assert len(anyio.get_running_tasks()) == before

    async def test_subprocesses_get_their_own_group_and_are_reaped(self) -> None:
        before = descendant_pids()
        async with exhaust("subprocesses", 3) as held:
            assert held.count == 3
            assert len(held.pids) == 3
            assert set(held.pids) <= descendant_pids() - before
            for pid in held.pids:
                assert os.getpgid(pid) == pid  # its own process group
        assert descendant_pids() - before == set()

    async def test_subprocesses_are_reaped_when_the_block_raises(self) -> None:
        before = descendant_pids()
        with pytest.raises(KeyError):
            async with exhaust("subprocesses", 2):
                raise KeyError("body")
        assert descendant_pids() - before == set()

    async def test_bad_arguments_are_refused(self) -> None:
        with pytest.raises(ConfigError, match="kind"):
            async with exhaust("sockets", 1):  # type: ignore[arg-type]
                pass
        with pytest.raises(ConfigError, match="n"):
            async with exhaust("fds", -1):
                pass
