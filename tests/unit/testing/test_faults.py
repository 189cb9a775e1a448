"""inject_random_failures (testing/_faults.py): seeded faults, retries, a success-rate bar."""

from __future__ import annotations

import random
from typing import Any

import pytest

from snakepit.errors import ConfigError
from snakepit.pool import InProcessLauncher
from snakepit.testing import FaultReport, inject_random_failures

from ._chaos_servers import DIRECTED, STOCK, asyncio_only, in_process_pool

pytestmark = pytest.mark.anyio


class TestInjectRandomFailures:
    @asyncio_only
    async def test_the_seeds_bar_at_half_faults_with_retries(
        self, launcher: InProcessLauncher
    ) -> None:
        async with in_process_pool(launcher, DIRECTED) as pool:
            report = await inject_random_failures(
                pool, rate=0.5, rng=random.Random(2024), calls=100, retries=2
            )
            report.assert_success_rate(0.75)
            assert report.calls == 100
            assert report.ok + report.failed == 100
            assert report.attempts - report.faults == report.ok
            again = await inject_random_failures(
                pool, rate=0.5, rng=random.Random(2024), calls=100, retries=2
            )
            assert again == report  # the caller's seed decides every fault

    @asyncio_only
    async def test_a_too_low_success_rate_fails_clearly(self, launcher: InProcessLauncher) -> None:
        async with in_process_pool(launcher, DIRECTED, size=1) as pool:
            report = await inject_random_failures(
                pool, rate=1.0, rng=random.Random(0), calls=10, retries=1
            )
        assert (report.ok, report.failed, report.attempts, report.faults) == (0, 10, 20, 20)
        with pytest.raises(AssertionError, match=r"only 0 of 10 calls \(0.0%\) succeeded"):
            report.assert_success_rate(0.75)

    @asyncio_only
    async def test_stock_fault_injecting_workers_decide_with_rate_none(
        self, launcher: InProcessLauncher, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("SNAKEPIT_FAULT_RATE", "0")  # read by setup(), here in-process
        async with in_process_pool(launcher, STOCK, size=1) as pool:
            report = await inject_random_failures(pool, rate=None, calls=20)
            assert report == FaultReport(20, 20, 0, 20, 0, None, 2)
            with pytest.raises(ConfigError, match="DirectedFaults"):
                await inject_random_failures(pool, rate=0.5, rng=random.Random(0), calls=4)

    @asyncio_only
    async def test_without_an_rng_a_seeded_default_draws_the_faults(
        self, launcher: InProcessLauncher
    ) -> None:
        async with in_process_pool(launcher, DIRECTED, size=1) as pool:
            report = await inject_random_failures(pool, calls=20, retries=0)
            assert report.seed == 0
            given = await inject_random_failures(pool, rng=random.Random(0), calls=20, retries=0)
            assert given.seed is None  # the caller's rng: its seed is the caller's to know
            assert (report.ok, report.faults) == (given.ok, given.faults)
            always = await inject_random_failures(pool, rate=1.0, calls=2, retries=0)
        with pytest.raises(AssertionError) as info:
            always.assert_success_rate(0.75)
        assert "faults drawn by the default rng, random.Random(0): pass rng= to vary them" in str(
            info.value
        )

    async def test_bad_options_are_refused(self) -> None:
        pool: Any = None  # refused before the pool is touched
        with pytest.raises(ConfigError, match="rng"):
            await inject_random_failures(pool, rate=None, rng=random.Random(0))
        with pytest.raises(ConfigError, match="rate"):
            await inject_random_failures(pool, rate=1.5, rng=random.Random(0))
        with pytest.raises(ConfigError, match="retries"):
            await inject_random_failures(pool, rng=random.Random(0), retries=-1)
