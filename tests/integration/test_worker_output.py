"""Output cannot break or wedge a worker; its exit is seen whatever holds its pipes.

A print at import or in ``setup()`` does not touch the ready report (a channel
of its own); stdout and stderr are drained in chunks, bounded (long lines cut,
``\\r`` redraws collapsed, a bounded tail) and forwarded to the host's
logging as ``snakepit.worker.<id>``. A worker's exit is seen from the process,
so a grandchild that inherited its pipes and outlives it cannot hide it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from snakepit import Pool
from snakepit.errors import RemoteError, WorkerCrashed
from snakepit.pool import StartMethod
from tests._procs import wait_exit

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

ROOT = str(Path(__file__).resolve().parents[2])
NOISY = "tests.integration._output_adapters:Noisy"
HOSTILE = "tests.integration._process_adapters:Hostile"
METHODS: list[StartMethod] = ["forkserver", "spawn"]


class Lines(logging.Handler):
    """Collects what the host's logging gets from the workers; waits for a line, by event."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._waiting: list[tuple[str, anyio.Event]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        message = record.getMessage()
        for text, event in self._waiting:
            if text in message:
                event.set()

    def messages(self, prefix: str = "") -> list[str]:
        return [r.getMessage() for r in self.records if r.getMessage().startswith(prefix)]

    async def wait_for(self, text: str, timeout: float = 10) -> logging.LogRecord:
        event = anyio.Event()
        self._waiting.append((text, event))
        try:
            if not any(text in r.getMessage() for r in self.records):
                with anyio.fail_after(timeout):
                    await event.wait()
        finally:
            self._waiting.remove((text, event))
        return next(r for r in self.records if text in r.getMessage())


@pytest.fixture
def lines() -> Iterator[Lines]:
    """The records of ``snakepit.worker.*`` loggers while the test runs."""
    handler = Lines()
    logger = logging.getLogger("snakepit.worker")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@pytest.mark.parametrize("start_method", METHODS)
async def test_prints_at_import_and_in_setup_do_not_break_the_start(
    start_method: StartMethod, lines: Lines
) -> None:
    async with Pool(NOISY, size=1, cwd=ROOT, start_method=start_method) as pool:
        assert await pool.execute("ping", timeout=10) == {"status": "pong"}
        banner = await lines.wait_for("NoisyLib 1.0 -- loaded")
        assert banner.name == "snakepit.worker.w0"
        await lines.wait_for("NoisyLib: using 1 thread")
        await lines.wait_for('{"event": "not-the-ready-line"}')
        await lines.wait_for("loading weights")


@pytest.mark.parametrize("start_method", METHODS)
async def test_no_line_length_or_volume_wedges_a_worker(
    start_method: StartMethod, lines: Lines
) -> None:
    mib = 1024 * 1024
    async with Pool(NOISY, size=1, cwd=ROOT, start_method=start_method) as pool:
        # One stderr line of 1 MiB, no newline (the host's readline died at 64 KiB).
        assert await pool.execute("write", {"size": mib, "pattern": "a"}, timeout=10) == mib
        assert await pool.execute("say", {"text": "", "stream": "stderr"}) == "said"
        # A tqdm-like bar: 400 KB of \r redraws on one line.
        assert await pool.execute("progress", {"steps": 2000, "width": 200}, timeout=10) == 2000
        assert await pool.execute("say", {"text": " done", "stream": "stderr"}) == "said"
        # Megabytes on stdout at once, and binary noise.
        await pool.execute("write", {"size": 4 * mib, "fd": 1, "newline": True}, timeout=10)
        await pool.execute("garbage", {"size": 50_000}, timeout=10)  # ~400 lines
        await pool.execute("say", {"text": "after the flood"}, timeout=10)
        await lines.wait_for("after the flood")
        # Long lines are cut, a redrawn line is logged as it was last drawn.
        long = [m for m in lines.messages() if m.startswith("aaaa")]
        assert long
        assert all(len(m) < 20_000 for m in long)
        assert any("cut" in m for m in long)
        bar = await lines.wait_for("1999/2000")
        assert "0/2000" not in bar.getMessage().split("1999/2000")[0]
        assert len(bar.getMessage()) < 20_000
        # A tool that closes fd 1 and prints anyway gets the error; the worker goes on.
        with pytest.raises(RemoteError, match="Bad file descriptor"):
            await pool.execute("close_stdout", timeout=10)
        assert await pool.execute("ping", timeout=10) == {"status": "pong"}
        # The stderr tail in an error stays bounded after all that.
        await pool.execute("write", {"size": 3 * mib, "pattern": "b"}, timeout=10)
        with pytest.raises(WorkerCrashed) as info:
            await pool.execute("exit", {"code": 3}, timeout=10)
        assert len(info.value.stderr_tail) < 64 * 1024
        assert await pool.execute("ping", timeout=10) == {"status": "pong"}  # its replacement


@pytest.mark.parametrize("start_method", METHODS)
async def test_a_dead_worker_whose_grandchild_holds_its_pipes_is_noticed(
    start_method: StartMethod, tmp_path: Path
) -> None:
    fifo = tmp_path / "hold"
    os.mkfifo(fifo)
    hold = os.open(fifo, os.O_RDWR)  # the grandchild (cat FIFO) runs while it is open
    orphans: list[int] = []
    try:
        with anyio.fail_after(20):
            async with Pool(HOSTILE, size=1, cwd=ROOT, start_method=start_method) as pool:
                (first,) = [w.pid for w in pool.workers()]
                orphans.append(await pool.execute("orphan_holding_pipes", {"fifo": str(fifo)}))
                with pytest.raises(WorkerCrashed):
                    await pool.execute("exit", {"code": 7}, timeout=10)
                assert await pool.execute("ping", timeout=10) == {"status": "pong"}
                assert [w.pid for w in pool.workers()] != [first]  # replaced
                if start_method == "forkserver":
                    # Re-parented to the fork server (a subreaper), which kills it.
                    await wait_exit(orphans[0], timeout=10)
    finally:
        os.close(hold)
    for pid in orphans:
        with anyio.fail_after(10):
            await wait_exit(pid)
