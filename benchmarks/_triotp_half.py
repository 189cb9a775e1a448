"""The triotp half of ``benchmarks/otp_call.py``.

triotp 0.2.1 pins ``trio < 0.20``, so it can never share a venv with
snakepit. ``otp_call.py`` runs this file with the python of
``benchmarks/.venv-triotp`` (``python -I _triotp_half.py ...``); it prints one
JSON object on stdout.

The module also holds :func:`measure`, the timing loop both halves use, so
the two measure in exactly the same way. Nothing at import time needs more
than the standard library (``otp_call.py`` imports :func:`measure` from here).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
import types
from collections.abc import Awaitable, Callable
from typing import Any

#: A batch runs ``n`` operations and returns once all of them are done.
Batch = Callable[[int], Awaitable[None]]


async def measure(
    batch: Batch, *, reps: int, rep_seconds: float, warmup_seconds: float
) -> dict[str, Any]:
    """Warm up, size N so one batch takes ~``rep_seconds``, time ``reps`` batches.

    Returns the median, min and max seconds per operation and N.
    """
    # Warm-up: double n until the warm-up time is spent and a batch is long
    # enough to time; the last batch calibrates N.
    n = 64
    spent = 0.0
    while True:
        t0 = time.perf_counter()
        await batch(n)
        dt = time.perf_counter() - t0
        spent += dt
        if spent >= warmup_seconds and dt >= min(0.02, warmup_seconds / 2):
            break
        n *= 2
    per_op = dt / n
    n = max(200, min(2_000_000, int(rep_seconds / per_op)))
    samples = []
    for _ in range(reps):
        gc.collect()
        t0 = time.perf_counter()
        await batch(n)
        samples.append((time.perf_counter() - t0) / n)
    return {
        "n": n,
        "reps": reps,
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
    }


def _server_module() -> types.ModuleType:
    """A callback module for triotp's gen_server: echo calls, count casts."""
    from triotp import gen_server

    reply, no_reply, stop = gen_server.Reply, gen_server.NoReply(), gen_server.Stop()

    async def init(arg: int) -> int:
        return arg

    async def handle_call(request: int, caller: Any, state: int) -> tuple[Any, int]:
        return reply(payload=request), state + 1

    async def handle_cast(message: Any, state: int) -> tuple[Any, int]:
        if message == "stop":
            return stop, state
        return no_reply, state + 1

    module = types.ModuleType("triotp_bench_server")
    module.init = init  # type: ignore[attr-defined]
    module.handle_call = handle_call  # type: ignore[attr-defined]
    module.handle_cast = handle_cast  # type: ignore[attr-defined]
    return module


async def _bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    import trio
    import trio.testing
    from triotp import gen_server, mailbox

    # The minimal setup: all that triotp.node.run does before starting apps is
    # mailbox._init() (the mailbox and name registries live in context vars).
    # gen_server.start is the server loop itself and has no task_status: wait
    # until it is parked on its (now registered) mailbox before calling it.
    mailbox._init()
    module = _server_module()
    rows = []
    async with trio.open_nursery() as nursery:
        for timeout in (None, 5.0):  # None is triotp's default
            name = f"bench-{timeout}"
            nursery.start_soon(gen_server.start, module, 0, name)
            await trio.testing.wait_all_tasks_blocked()
            assert mailbox._resolve(name) is not None, "the gen_server did not start"

            async def calls(n: int, name: str = name, timeout: float | None = timeout) -> None:
                call = gen_server.call
                for i in range(n):
                    await call(name, i, timeout=timeout)

            async def casts(n: int, name: str = name, timeout: float | None = timeout) -> None:
                cast = gen_server.cast
                for i in range(n):
                    await cast(name, i)
                await gen_server.call(name, -1, timeout=timeout)

            opts = {
                "reps": args.reps,
                "rep_seconds": args.rep_seconds,
                "warmup_seconds": args.warmup_seconds,
            }
            rows.append(
                {
                    "timeout": timeout,
                    "call": await measure(calls, **opts),
                    "cast": await measure(casts, **opts),
                }
            )
            await gen_server.cast(name, "stop")
    return rows


def main() -> None:
    import trio
    import triotp

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rep-seconds", type=float, default=0.2)
    parser.add_argument("--warmup-seconds", type=float, default=0.1)
    args = parser.parse_args()
    rows = trio.run(_bench, args)
    try:
        from importlib.metadata import version

        triotp_version = version("triotp")
    except Exception:
        triotp_version = getattr(triotp, "__version__", "?")
    json.dump(
        {
            "python": platform.python_version(),
            "trio": trio.__version__,
            "triotp": triotp_version,
            "rows": rows,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
