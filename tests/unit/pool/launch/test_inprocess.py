"""Workers served in the host (pool/_launch/_inprocess.py): how their stops end."""

from __future__ import annotations

import logging
import signal

import anyio
import pytest

from snakepit.pool import InProcessLauncher, PoolConfig

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

ECHO = "snakepit.testing.adapters:Echo"


async def test_a_failed_kill_is_logged_once_and_aclose_after_it_does_not_raise_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    launcher = InProcessLauncher()
    handle = await launcher.start(PoolConfig(adapter=ECHO), "w0", "run")
    abort = handle._server.abort

    async def failing_abort() -> None:
        await abort()
        raise RuntimeError("abort failed")

    monkeypatch.setattr(handle._server, "abort", failing_abort)
    with caplog.at_level(logging.ERROR, logger="snakepit.pool"), anyio.fail_after(5):
        handle.kill()
        assert await handle.wait() == -signal.SIGKILL
        # Before: aclose re-raised the kill's failure (from a pool's release
        # ``finally``), though it was logged already.
        assert await handle.aclose() == -signal.SIGKILL
    failed = [r for r in caplog.records if r.getMessage().endswith(" failed")]
    assert len(failed) == 1
    assert failed[0].exc_info is not None
    assert str(failed[0].exc_info[1]) == "abort failed"
    await launcher.aclose()


async def test_a_failed_graceful_stop_is_raised_by_aclose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    launcher = InProcessLauncher()
    handle = await launcher.start(PoolConfig(adapter=ECHO), "w0", "run")
    stop = handle._server.stop

    async def failing_stop(grace: float) -> None:
        await stop(grace)
        raise RuntimeError("stop failed")

    monkeypatch.setattr(handle._server, "stop", failing_stop)
    with pytest.raises(RuntimeError, match=r"^stop failed$"), anyio.fail_after(5):
        await handle.aclose()
    assert handle.returncode == 0
    await launcher.aclose()
