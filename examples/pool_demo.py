"""snakepit's main job, narrated: a pool of worker processes, calls, a crash, a timeout, sessions.

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
from snakepit.errors import (  # noqa: E402
    ExecutionTimeout,
    SessionWorkerLost,
    VariableValidationError,
    WorkerCrashed,
)
from snakepit.pool import RequestStopped, WorkerExited, WorkerReady  # noqa: E402


def show_workers(pool: snakepit.Pool) -> None:
    for w in pool.workers():
        state = "ready" if w.ready else "starting"
        print(f"     {w.worker_id}: pid {w.pid}, generation {w.generation}, {state}")


def worker_of(pool: snakepit.Pool, pin: str | None) -> snakepit.pool.WorkerInfo:
    """The worker a session is pinned to (its record's ``worker_id`` is the worker's pin_id)."""
    return next(w for w in pool.workers() if w.pin_id == pin)


async def kill_and_wait(pool: snakepit.Pool, worker: snakepit.pool.WorkerInfo) -> None:
    """SIGKILL ``worker``'s process; return once its replacement is ready."""
    with pool.subscribe() as watch:
        os.kill(worker.pid or 0, signal.SIGKILL)
        async with asyncio.timeout(30):
            async for event in watch:
                if isinstance(event, WorkerReady) and event.worker_id == worker.worker_id:
                    break
    await pool.wait_ready()


async def sessions_part(pool: snakepit.Pool) -> None:
    async with pool.session(metadata={"user": "ada"}) as s:
        info = await s.execute("session_info")
        print(f"   pool.session(metadata=...) -> session {s.session_id[:8]}..., affinity 'hint'")
        print(f"   (the default); its tools see ctx.session.metadata = {info['metadata']}")
        first = await s.execute("remember", {"value": "draft 1"})
        second = await s.execute("remember", {"value": "draft 2"})
        pids = f"pid {first['pid']}, remember 'draft 2' -> pid {second['pid']}"
        print(f"   remember 'draft 1' -> {pids}:")
        print(f"   one process, which keeps the session's notes: {second['notes']}")
        pinned = worker_of(pool, (await s.info()).worker_id)
        name = f"{pinned.worker_id} (pid {pinned.pid})"
        print(f"   kill -9 that worker, {name}; wait for its replacement")
        await kill_and_wait(pool, pinned)
        after = await s.execute("recall")
        now = worker_of(pool, (await s.info()).worker_id)
        moved = f"re-pinned the session to {now.worker_id}"
        print(f"   recall -> pid {after['pid']}, notes {after['notes']}: 'hint' {moved};")
        print("   the notes were kept in the killed process, and went with it.")

    async with pool.session(affinity="strict_queue") as strict:
        await strict.execute("remember", {"value": "x"})
        pinned = worker_of(pool, (await strict.info()).worker_id)
        name = f"{pinned.worker_id} (pid {pinned.pid})"
        print(f"   a 'strict_queue' session, pinned to {name}; kill -9 it:")
        await kill_and_wait(pool, pinned)
        try:
            await strict.execute("recall")
        except SessionWorkerLost as exc:
            print(f"   its next call raises SessionWorkerLost: {exc}")
        else:
            print("   unexpected: its next call ran (no SessionWorkerLost)")
    left = pool.stats().sessions
    print(f"   the blocks deleted both sessions on exit (sessions left: {left}); a live pinned")
    print("   worker runs the adapter's on_session_end, which frees what it kept.")


async def variables_part(pool: snakepit.Pool) -> None:
    audited: list[str] = []

    def audit(score: float, label: str, session_id: str) -> str:
        """A host function the tools call (``ctx.call_host("audit", ...)``)."""
        audited.append(f"{score}:{label}")
        return f"audit #{len(audited)} of session {session_id[:8]}..."

    pool.register_host_tool(audit)
    async with pool.session() as s:
        await s.variables.register("threshold", "float", 0.5, min=0.0, max=1.0)
        await s.variables.register("hits", "integer", 0, min=0)
        print("   the host registers 'threshold' (float 0..1) = 0.5 and 'hits' (integer) = 0,")
        print("   and watches both; the tool 'classify' reads them from its worker:")
        async with s.variables.watch(["threshold", "hits"]) as changes:
            for score in (0.7, 0.6):
                r = await s.execute("classify", {"score": score})
                seen = f"threshold {r['threshold']}, hits {r['hits']}"
                print(f"     classify({score}) -> {r['label']} ({seen}); the host: {r['note']!r}")
            await s.variables.set("threshold", 0.8)
            r = await s.execute("classify", {"score": 0.7})
            print("   the host sets threshold = 0.8; the worker's cached 0.5 is never read again:")
            print(f"     classify(0.7) -> {r['label']} (threshold {r['threshold']})")
            try:
                await s.variables.set("threshold", 1.5)
            except VariableValidationError as exc:
                print(f"   set('threshold', 1.5) -> VariableValidationError: {exc}")
            print("   what the host's watch saw (name: old -> new, version, who):")
            for _ in range(3):
                c = await anext(changes)
                print(f"     {c.name}: {c.old} -> {c.new}, v{c.version}, by {c.source}")
    print(f"   the host's audit function ran {len(audited)} times: {audited}")


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
        running = asyncio.Event()
        pool.register_host_tool(running.set, name="running")  # the tool says it runs
        call = asyncio.ensure_future(pool.execute("wait_forever"))
        await running.wait()
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

        print("\n6. Sessions: a session's calls go to the worker it is pinned to.")
        await sessions_part(pool)

        print("\n7. Session variables: typed, versioned, watched; tools read and change them.")
        await variables_part(pool)

        print("\n8. The pool's statistics:")
        stats = pool.stats()
        fields = ("size", "ready", "requests", "errors", "timeouts", "crashes", "restarts")
        for field in fields:
            print(f"     {field:<9} {getattr(stats, field)}")
    print("\n9. Leaving the block stopped every worker (SIGTERM, then SIGKILL) and reaped it.")

    print("\n10. The pool's event stream (pool.subscribe()), what the steps above produced:")
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
