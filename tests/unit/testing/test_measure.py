"""measure: wall time and allocations, and the assertions on them."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator

import anyio
import pytest

from snakepit.testing._measure import Measurement, measure

pytestmark = pytest.mark.anyio

KEPT: list[bytes] = []


@pytest.fixture(autouse=True)
def _old_objects_frozen() -> Iterator[None]:
    # measure() runs gc.collect() around its passes: in an xdist worker late in
    # the suite, the heap the earlier tests left makes each one take ~0.1 s.
    # What this test allocates is all measure() looks at: the rest can sit in
    # gc's permanent generation meanwhile.
    gc.freeze()
    yield
    gc.unfreeze()


async def test_measures_sync_and_async_calls() -> None:
    calls = 0

    def work() -> None:
        nonlocal calls
        calls += 1

    async def awork() -> None:
        await anyio.lowlevel.checkpoint()

    m = await measure(work, repeat=5, warmup=2)
    assert calls == 2 + 5 + 5  # warmup, timing pass, memory pass
    assert m.repeat == 5
    assert len(m.times) == 5
    assert 0 <= m.best <= m.mean
    assert m.total >= m.best
    m.assert_faster_than(10.0)
    (await measure(awork, repeat=3, memory=False)).assert_faster_than(10.0, statistic="mean")
    assert not tracemalloc.is_tracing()


async def test_allocations_are_measured_and_bounded() -> None:
    KEPT.clear()

    def keep() -> None:
        KEPT.append(bytes(100_000))

    m = await measure(keep, repeat=4, warmup=0)
    KEPT.clear()
    assert m.net_bytes >= 4 * 100_000
    assert m.peak_bytes >= m.net_bytes
    m.assert_peak_below(100 * 2**20)
    with pytest.raises(AssertionError, match=r"memory grew: \d+ bytes still held after 4 calls"):
        m.assert_net_below(1000)
    with pytest.raises(AssertionError, match="allocated too much: a peak of"):
        m.assert_peak_below(1000)


def test_slow_call_fails_with_the_times() -> None:
    m = Measurement(repeat=2, times=(0.2, 0.3), peak_bytes=0, net_bytes=0)
    with pytest.raises(AssertionError, match=r"too slow: best of 2 calls took 200\.000 ms"):
        m.assert_faster_than(0.1)
    with pytest.raises(ValueError, match="statistic"):
        m.assert_faster_than(1.0, statistic="median")


async def test_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="repeat"):
        await measure(lambda: None, repeat=0)
    with pytest.raises(ValueError, match="warmup"):
        await measure(lambda: None, warmup=-1)
