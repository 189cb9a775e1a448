"""measure: wall time and allocations of a callable, for generous bounds in tests.

Real timings belong in ``benchmarks/``; a unit test can only afford bounds
wide enough to hold on a loaded CI machine (a factor of ten, not of 1.2).
"""

from __future__ import annotations

import gc
import inspect
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ("Measurement", "measure")


@dataclass(frozen=True, slots=True)
class Measurement:
    """What :func:`measure` found.

    ::

        m = await measure(lambda: pool.execute("ping"), repeat=20)
        m.assert_faster_than(0.5)  # seconds per call, the best of 20
        m.assert_net_below(64 * 1024)  # bytes kept after 20 calls
    """

    #: Calls made for the timing (and again for the allocations).
    repeat: int
    #: Wall time of each timed call, in seconds (``time.perf_counter``).
    times: tuple[float, ...]
    #: Largest traced memory above the starting point during the calls, in bytes.
    peak_bytes: int
    #: Traced memory still held after the calls (and a gc), in bytes; may be negative.
    net_bytes: int

    @property
    def best(self) -> float:
        """The fastest call, in seconds (the least disturbed by the machine's load)."""
        return min(self.times)

    @property
    def mean(self) -> float:
        """The mean call, in seconds."""
        return sum(self.times) / len(self.times)

    @property
    def total(self) -> float:
        """All timed calls together, in seconds."""
        return sum(self.times)

    def assert_faster_than(self, seconds: float, *, statistic: str = "best") -> None:
        """Raise AssertionError unless ``best`` (or ``mean``) is below ``seconds``.

        ::

            (await measure(work, repeat=5)).assert_faster_than(1.0)
        """
        if statistic not in ("best", "mean"):
            raise ValueError(f"statistic must be 'best' or 'mean', got {statistic!r}")
        value = self.best if statistic == "best" else self.mean
        if not value < seconds:
            raise AssertionError(
                f"too slow: {statistic} of {self.repeat} calls took {value * 1e3:.3f} ms, "
                f"the bound is {seconds * 1e3:.3f} ms (times: "
                + ", ".join(f"{t * 1e3:.3f}" for t in self.times[:10])
                + (" ..." if len(self.times) > 10 else "")
                + " ms)"
            )

    def assert_peak_below(self, nbytes: int) -> None:
        """Raise AssertionError unless the peak allocation stayed below ``nbytes``.

        ::

            (await measure(load, memory=True)).assert_peak_below(10 * 2**20)
        """
        if not self.peak_bytes < nbytes:
            raise AssertionError(
                f"allocated too much: a peak of {self.peak_bytes} bytes over {self.repeat} "
                f"calls, the bound is {nbytes} bytes"
            )

    def assert_net_below(self, nbytes: int) -> None:
        """Raise AssertionError unless the memory kept after the calls is below ``nbytes``.

        ::

            (await measure(cache.get, repeat=100)).assert_net_below(4096)
        """
        if not self.net_bytes < nbytes:
            raise AssertionError(
                f"memory grew: {self.net_bytes} bytes still held after {self.repeat} calls "
                f"(about {self.net_bytes // self.repeat} per call), the bound is {nbytes} bytes"
            )


async def _call(fn: Callable[[], object]) -> None:
    result = fn()
    if inspect.isawaitable(result):
        await result


async def measure(
    fn: Callable[[], object | Awaitable[object]],
    *,
    repeat: int = 1,
    warmup: int = 1,
    memory: bool = True,
) -> Measurement:
    """Call ``fn`` (sync or async, no arguments) and measure it.

    ::

        m = await measure(lambda: pool.execute("ping"), repeat=10)
        assert m.best < 0.5

    First ``warmup`` untimed calls (imports, caches, connections), then
    ``repeat`` calls timed one by one with ``time.perf_counter``, without
    tracing. With ``memory``, ``repeat`` more calls under ``tracemalloc``
    (started for them if it was not on): ``peak_bytes`` is the highest traced
    memory above the starting point, ``net_bytes`` what is still held after a
    ``gc.collect()``. Tracing slows calls down, which is why it is a separate
    pass. Use the numbers with generous bounds only.

    :raises ValueError: ``repeat`` < 1 or ``warmup`` < 0.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat!r}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup!r}")
    for _ in range(warmup):
        await _call(fn)
    times: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        await _call(fn)
        times.append(time.perf_counter() - start)
    peak = net = 0
    if memory:
        was_tracing = tracemalloc.is_tracing()
        if not was_tracing:
            tracemalloc.start()
        try:
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            for _ in range(repeat):
                await _call(fn)
            peak = tracemalloc.get_traced_memory()[1] - before
            gc.collect()
            net = tracemalloc.get_traced_memory()[0] - before
        finally:
            if not was_tracing:
                tracemalloc.stop()
    return Measurement(repeat, tuple(times), peak, net)
