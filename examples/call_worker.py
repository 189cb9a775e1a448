"""Call a running worker by its address: ``python examples/call_worker.py unix:/tmp/x/w.sock``.

Start one first, e.g.::

    python -m snakepit.worker --adapter snakepit.testing.adapters:Echo --listen unix:/tmp/x/w.sock

This uses the connection to one worker that the pool is built on
(``snakepit.pool.WorkerConnection``); applications use ``snakepit.Pool``.
"""

from __future__ import annotations

import asyncio
import sys

from snakepit.pool import WorkerConnection


async def main(address: str) -> None:
    async with WorkerConnection(address) as client:
        print("health:", await client.health())
        described = await client.describe()
        print("adapter:", described.adapter, "tools:", [t.name for t in described.tools])
        print("ping ->", await client.execute("ping"))
        print("add(2, 3.5) ->", await client.execute("add", {"a": 2, "b": 3.5}))
        print("count(4) ->", [x async for x in client.stream("count", {"n": 4})])
        mux = client.multiplexer()
        results = await asyncio.gather(*(mux.execute("echo", {"value": i}) for i in range(8)))
        print("8 calls over one Channel ->", results)
        await mux.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
