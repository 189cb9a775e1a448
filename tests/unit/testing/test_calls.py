"""monitor_call (testing/_calls.py): each call recorded with its outcome and duration."""

from __future__ import annotations

import anyio
import pytest
from trio.testing import MockClock

from snakepit.otp import CallTimeout, ServerExited
from snakepit.testing import monitor_call

from ._otp_servers import counter

pytestmark = pytest.mark.anyio


class TestMonitorCall:
    async def test_monitor_call_records_each_call(self, mock_clock: MockClock) -> None:
        async with counter(1) as ref:
            async with monitor_call(ref) as obs:
                assert await obs.call("get") == 1
                with pytest.raises(ServerExited):
                    await obs.call("explode")
                assert obs.in_flight == 0
            ok, crashed = obs.records
            assert (ok.request, ok.outcome, ok.reply, ok.error) == ("get", "ok", 1, None)
            assert (crashed.outcome, crashed.duration) == ("exited", 0)
            assert isinstance(crashed.error, ServerExited)
            with pytest.raises(
                AssertionError,
                match=r"every call to <Counter.*> to succeed; 1 of 2 did not: 'explode': exited",
            ):
                obs.assert_all_ok()
            with pytest.raises(anyio.ClosedResourceError):
                await obs.call("get")

    async def test_monitor_call_times_a_call_that_hangs(self, mock_clock: MockClock) -> None:
        async with counter() as ref, monitor_call(ref) as obs:
            await obs.call("ping")
            obs.assert_all_ok()
            with pytest.raises(CallTimeout):
                await obs.call("hang", timeout=2)
            record = obs.records[-1]
            assert (record.request, record.outcome, record.duration) == ("hang", "timeout", 2)
