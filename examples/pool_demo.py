"""snakepit's main job, narrated: a pool of worker processes, calls, a crash, a timeout.

Run it with ``make demo``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import snakepit  # noqa: E402
from snakepit.errors import ExecutionTimeout, WorkerCrashed  # noqa: E402
from snakepit.pool import RequestStopped, WorkerExited, WorkerReady  # noqa: E402


def show_workers(pool: snakepit.Pool) -> None:
    for w in pool.workers():
        state = "ready" if w.ready else "starting"
        print(f"     {w.worker_id}: pid {w.pid}, generation {w.generation}, {state}")


async def main() -> None:
    print("1. Start a pool of 2 workers: each is its own Python process, in its own")
    print("   process group, supervised (a crashed one is replaced).")
    pool = snakepit.Pool("examples.demo_adapter:TextTools", size=2, cwd=str(ROOT))
    events = pool.subscribe()  # its telemetry, from the start (read at the end)
    async with pool:
        show_workers(pool)

        print("\n2. A few calls. Two CPU-bound calls run at once, one in each process:")
        print("  ", await pool.execute("word_count", {"text": "the cat and the hat"}))
        both = await asyncio.gather(*(pool.execute("fib", {"n": 24}) for _ in range(2)))
        print("  ", both, "(two different pids: no GIL shared)")

        print("\n3. A streamed result, item by item:")
        print("   ", end="")
        async for word in pool.stream("words", {"text": "results arrive as they are made"}):
            print(word, end=" | ", flush=True)
        print()

        print("\n4. kill -9 a worker while a call runs on it:")
        call = asyncio.ensure_future(pool.execute("wait_forever"))
        await asyncio.sleep(0)  # one step: the call takes a free worker at once
        busy = next(w for w in pool.workers() if w.in_flight)
        print(f"   killing {busy.worker_id} (pid {busy.pid})")
        os.kill(busy.pid or 0, signal.SIGKILL)
        try:
            await call
        except WorkerCrashed as exc:
            print(f"   the caller got WorkerCrashed: {str(exc).splitlines()[0]}")
        await pool.wait_ready()
        print("   its supervisor started a replacement (a new pid, the next generation):")
        show_workers(pool)

        print("\n5. A call stuck in a worker thread, with timeout=1:")
        try:
            await pool.execute("stuck", timeout=1)
        except ExecutionTimeout as exc:
            print(f"   ExecutionTimeout: {exc}")
        await pool.wait_ready()
        print("   the stuck worker was killed and replaced; the pool is whole again:")
        show_workers(pool)
        print("  ", await pool.execute("word_count", {"text": "still serving"}))

        print("\n6. The pool's statistics:")
        stats = pool.stats()
        for field in ("size", "ready", "requests", "errors", "timeouts", "crashes", "restarts"):
            print(f"     {field:<9} {getattr(stats, field)}")
    print("\n7. Leaving the block stopped every worker (SIGTERM, then SIGKILL) and reaped it.")

    print("\n8. The pool's event stream (pool.subscribe()), what the steps above produced:")
    outcomes: Counter[str] = Counter()
    async with events:
        async for event in events:
            match event:
                case WorkerReady(worker_id=wid, pid=pid, generation=gen, startup=startup):
                    print(f"     {wid} ready: pid {pid}, generation {gen}, {startup * 1000:.0f} ms")
                case WorkerExited(worker_id=wid, cause=cause, reason=reason):
                    print(f"     {wid} exited ({cause}): {reason}")
                case RequestStopped(outcome=outcome):
                    outcomes[outcome] += 1
    print(f"     calls by outcome: {dict(outcomes)}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)  # the warnings the demo provokes are narrated
    asyncio.run(main())
