"""Big payloads through a Pool: whole at the message limit, a typed error one byte over it.

Big frames are received straight into a buffer of their size and written
unjoined to their header (``snakepit._wire._frames``); the limits stay where
they were: the largest arguments ``max_message_bytes`` allows go through and
come back (on the worker's fast lane, with the lane off, and with in-process
workers), one byte more is ``PayloadTooLarge`` naming the size and the limit,
and the worker serves on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from snakepit._wire._proto.snakepit.v1 import worker_pb2
from snakepit.errors import PayloadTooLarge
from snakepit.pool import InProcessLauncher, Pool
from snakepit.pool._requests import fill_request
from snakepit.worker._lane import LANE_ENV

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # grpc.aio

ADAPTER = "snakepit.testing.adapters:Echo"
ROOT = str(Path(__file__).resolve().parents[2])
DEADLINE = 30.0
MIB = 1024 * 1024
LIMIT = 2 * MIB


def fits(size: int) -> bool:
    """Whether an echo of ``size`` bytes is within the limit (as the pool checks it)."""
    try:
        fill_request(
            worker_pb2.ExecuteRequest(),
            1,
            "echo",
            {"value": b"x" * size},
            None,
            "",
            b"",
            LIMIT,
            "json",
        )
    except PayloadTooLarge:
        return False
    return True


def largest_that_fits() -> int:
    low, high = 0, LIMIT  # fits(low), not fits(high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


@pytest.mark.parametrize(
    "options",
    [
        {"env": {LANE_ENV: "1"}},
        {"env": {LANE_ENV: "0"}},
        {"launcher": "in-process"},
    ],
    ids=["lane", "loop", "in-process"],
)
async def test_the_largest_arguments_echo_whole_and_one_byte_more_is_refused(
    options: dict[str, Any],
) -> None:
    if options.get("launcher") == "in-process":
        options = {"launcher": InProcessLauncher()}
    size = largest_that_fits()
    assert size > LIMIT - 64 * 1024
    async with Pool(ADAPTER, size=1, cwd=ROOT, max_message_mb=LIMIT / MIB, **options) as pool:
        with anyio.fail_after(DEADLINE):
            data = bytes(range(256)) * (size // 256) + b"e" * (size % 256)
            assert await pool.execute("echo", {"value": data}) == data
            # (one byte less: its name is one byte longer)
            assert await pool.execute("aecho", {"value": data[1:]}) == data[1:]
            with pytest.raises(PayloadTooLarge, match="over the") as caught:
                await pool.execute("echo", {"value": data + b"!"})
            assert caught.value.limit == LIMIT
            assert caught.value.size is not None
            assert caught.value.size > LIMIT - 1024
            assert await pool.execute("echo", {"value": data[:MIB]}) == data[:MIB]
        assert pool.stats().crashes == 0
