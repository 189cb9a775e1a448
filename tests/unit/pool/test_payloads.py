"""Payloads through a real pool (in-process workers behind the real channels): issue 11, defect 8.

A value with no faithful form raises a typed ``PayloadError`` naming its path and type, on
either side, and the worker goes on serving; numpy arrays round-trip with dtype and shape;
``allow_pickle=True`` is a pool option that carries any picklable value.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

import snakepit
from snakepit import ConfigError, PayloadError
from snakepit.pool import Pool, PoolConfig
from snakepit.worker import Adapter, Unserializable, tool

anyio_backends = ("asyncio",)  # pools run on asyncio (grpc.aio)

MakePool = Callable[..., Awaitable[Pool]]
ADAPTER = f"{__name__}:Payloads"


class Payloads(Adapter):
    """Tools that return what JSON has no faithful form for, and numpy values."""

    @tool
    def echo(self, value: Any = None) -> Any:
        """Return ``value`` unchanged."""
        return value

    @tool
    def with_a_set(self) -> dict[str, Any]:
        """A result with a set inside."""
        return {"a": [1, 2, 3, {4}]}

    @tool
    async def with_a_datetime(self) -> list[Any]:
        """A result with a datetime inside (an async tool)."""
        return [datetime.datetime(2026, 1, 2)]

    @tool
    def stream_then_set(self) -> Any:
        """Yield 1, then a set."""
        yield 1
        yield {2}

    @tool
    def described_set(self) -> dict[str, Any]:
        """A set, described on purpose instead of sent."""
        return {"s": Unserializable.of({1})}

    @tool
    def describe(self, value: Any = None) -> dict[str, Any]:
        """Say what arrived: the type, and for arrays dtype and shape."""
        if isinstance(value, np.ndarray):
            return {"type": "ndarray", "dtype": value.dtype.str, "shape": list(value.shape)}
        return {"type": type(value).__qualname__}

    @tool
    def double(self, array: Any) -> Any:
        """Return ``array * 2`` (an ndarray back), and its sum as a numpy scalar."""
        return {"array": array * 2, "sum": array.sum()}


async def collect(pool: Pool, tool: str, into: list[Any]) -> list[Any]:
    async for item in pool.stream(tool):
        into.append(item)
    return into


@pytest.mark.anyio
async def test_a_result_with_no_faithful_form_raises_and_the_worker_serves_on(
    snakepit_pool: MakePool,
) -> None:
    pool = await snakepit_pool(ADAPTER, size=1)
    with pytest.raises(PayloadError) as info:
        await pool.execute("with_a_set")
    assert info.value.path == 'result["a"][3]'
    assert info.value.type_name == "set"
    assert 'set at result["a"][3]' in str(info.value)
    with pytest.raises(PayloadError) as info:
        await pool.execute("with_a_datetime")
    assert (info.value.path, info.value.type_name) == ("result[0]", "datetime.datetime")
    items: list[Any] = []
    with pytest.raises(PayloadError, match=r"set at result"):
        await collect(pool, "stream_then_set", items)
    assert items == [1]
    assert await pool.execute("echo", {"value": [1, "two"]}) == [1, "two"]
    assert pool.stats().ready == 1


@pytest.mark.anyio
async def test_a_description_is_sent_only_on_request(snakepit_pool: MakePool) -> None:
    pool = await snakepit_pool(ADAPTER, size=1)
    assert snakepit.Unserializable is Unserializable
    assert await pool.execute("described_set") == {"s": Unserializable("set", "{1}")}


@pytest.mark.anyio
async def test_arguments_with_no_faithful_form_raise_at_the_call(snakepit_pool: MakePool) -> None:
    pool = await snakepit_pool(ADAPTER, size=1)
    with pytest.raises(PayloadError) as info:
        await pool.execute("echo", {"value": {"when": datetime.date(2026, 1, 2)}})
    assert (info.value.path, info.value.type_name) == ('args["value"]["when"]', "datetime.date")
    with pytest.raises(PayloadError, match=r'ndarray at args\["value"\]: .*dtype object'):
        await pool.execute("echo", {"value": np.array([1, None], dtype=object)})
    assert await pool.execute("echo", {"value": 5}) == 5


@pytest.mark.anyio
async def test_numpy_arrays_round_trip_through_a_pool(snakepit_pool: MakePool) -> None:
    pool = await snakepit_pool(ADAPTER, size=1)
    array = np.arange(12, dtype=">i4").reshape(3, 4)[:, ::2]  # big-endian, not contiguous
    assert await pool.execute("describe", {"value": array}) == {
        "type": "ndarray",
        "dtype": ">i4",
        "shape": [3, 2],
    }
    back = await pool.execute("double", {"array": array})
    assert back["array"].dtype == (array * 2).dtype  # what the tool made: native order
    np.testing.assert_array_equal(back["array"], array * 2)
    assert back["sum"] == int(array.sum())
    assert type(back["sum"]) is int  # a numpy scalar arrives as the Python int of its value
    echoed = await pool.execute("echo", {"value": np.float32(0.1)})
    assert echoed == float(np.float32(0.1))


@pytest.mark.anyio
async def test_allow_pickle_is_a_pool_option(snakepit_pool: MakePool) -> None:
    pool = await snakepit_pool(ADAPTER, size=1, allow_pickle=True)
    value = {"s": {1, 2}, "t": (1, (2,)), "when": datetime.datetime(2026, 1, 2), 3: b"x"}
    assert await pool.execute("echo", {"value": value}) == value
    assert await pool.execute("with_a_set") == {"a": [1, 2, 3, {4}]}
    assert await collect(pool, "stream_then_set", []) == [1, {2}]
    with pytest.raises(PayloadError, match="cannot pickle"):
        await pool.execute("echo", {"value": lambda: 0})
    assert await pool.execute("echo", {"value": 1}) == 1


def test_allow_pickle_is_checked() -> None:
    with pytest.raises(ConfigError, match="allow_pickle"):
        PoolConfig(adapter=ADAPTER, allow_pickle="yes")  # type: ignore[arg-type]
    assert PoolConfig(adapter=ADAPTER).allow_pickle is False


@pytest.mark.anyio
async def test_allow_pickle_reaches_worker_processes(snakepit_pool: MakePool) -> None:
    # The local launcher passes --allow-pickle: without it, the worker refuses pickle.
    pool = await snakepit_pool(ADAPTER, size=1, launcher="local", allow_pickle=True)
    assert await pool.execute("echo", {"value": {1, 2}}) == {1, 2}
    assert await pool.execute("with_a_set") == {"a": [1, 2, 3, {4}]}
