"""Shared fixtures.

Every ``@pytest.mark.anyio`` test runs on asyncio and on trio, except a test
that asks for ``mock_clock``: it runs on trio only, with a ``MockClock`` that
jumps ahead whenever every task is blocked, so timers and restart windows run
in virtual time. A module can narrow the backends with a module-level
``anyio_backends = ("asyncio",)`` (grpc.aio runs on asyncio only). A test that
parametrizes ``anyio_backend`` itself is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from trio.testing import MockClock

BACKENDS = ("asyncio", "trio")


def _parametrizes_backend(metafunc: pytest.Metafunc) -> bool:
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", "")
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        if "anyio_backend" in names:
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    fixtures = metafunc.fixturenames
    if "anyio_backend" not in fixtures or _parametrizes_backend(metafunc):
        return
    if "mock_clock" in fixtures:
        metafunc.parametrize("anyio_backend", ["trio-mockclock"], indirect=True)
    else:
        backends = getattr(metafunc.module, "anyio_backends", BACKENDS)
        metafunc.parametrize("anyio_backend", backends, indirect=True)


@pytest.fixture
def mock_clock() -> MockClock:
    """A trio MockClock with ``autojump_threshold=0``; the test runs on trio only."""
    return MockClock(autojump_threshold=0)


@pytest.fixture
def trio_mock_backend(mock_clock: MockClock) -> Any:
    """An ``anyio_backend`` value running trio on :func:`mock_clock`."""
    return ("trio", {"clock": mock_clock})


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """The backend of this test run (see the module docstring)."""
    param = getattr(request, "param", "asyncio")
    if param == "trio-mockclock":
        return request.getfixturevalue("trio_mock_backend")
    return param


def _child_pids() -> set[int]:
    """This process's child processes, running or unreaped (Linux).

    ``/proc/self/task/*/children`` lists them directly (a few small reads per
    test); where the kernel lacks it, every ``/proc/<pid>/stat`` is scanned.
    """
    tasks = list(Path("/proc/self/task").glob("*/children"))
    if tasks:
        pids: set[int] = set()
        for children in tasks:
            try:
                pids.update(int(pid) for pid in children.read_text().split())
            except OSError:
                continue  # that thread ended while we looked
        return pids
    me = os.getpid()
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == me:
                found.add(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue  # it exited while we looked
    return found


def _describe(pid: int) -> str:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except (OSError, IndexError):
        return "(exited)"
    return f"[{state}] {cmdline.decode(errors='replace')}"


@pytest.fixture(autouse=True)
def _no_process_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a child process behind, running or unreaped (Linux).

    Every process a test starts must be stopped and reaped by the end of the
    test: one that is not is found here, at its source, rather than as a
    ResourceWarning in whichever later test the garbage collector runs in.
    """
    before = _child_pids() if os.path.isdir("/proc/self") else None
    yield
    if before is None:
        return
    left = sorted(_child_pids() - before)
    if left:
        listing = "\n".join(f"  {pid}: {_describe(pid)}" for pid in left)
        pytest.fail(f"{request.node.nodeid} left child processes:\n{listing}", pytrace=False)
