"""GenServer call round trip and cast throughput: snakepit vs anyio streams vs triotp.

Usage::

    python benchmarks/otp_call.py [--quick] [--json PATH] [--reps N]

Rows (each measured as: warm-up, then ``reps`` batches of N operations, the
median reported; N is sized so a batch takes ~0.2 s):

* snakepit ``GenServer`` on anyio's asyncio and trio backends, with the
  default ``call`` timeout (5.0 s) and with ``timeout=None``;
* a bare anyio request/reply: a server task reading ``(request, reply_stream)``
  from a ``create_memory_object_stream`` mailbox, one one-shot reply stream per
  call (``fail_after`` for the 5.0 s timeout);
* triotp 0.2.1's ``gen_server`` (its default is ``timeout=None``).

A call is ``await call(i)``; cast throughput is N casts followed by one
``sync()`` (a call for the others), so every cast has been handled.

triotp pins ``trio < 0.20``, so it runs in its own venv,
``benchmarks/.venv-triotp``, created on first use, as a subprocess
(``_triotp_half.py``) that prints its results as JSON.

The target: snakepit's call throughput >= 2x triotp's default call, on each
backend (both snakepit rows of a backend must meet it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from snakepit.otp import DEFAULT_TIMEOUT, GenServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _triotp_half import measure

HERE = Path(__file__).resolve().parent
TRIOTP_VENV = HERE / ".venv-triotp"
TRIOTP_REQUIREMENT = "triotp==0.2.1"
TRIOTP_HALF = HERE / "_triotp_half.py"
TARGET_RATIO = 2.0

Row = dict[str, Any]
Opts = dict[str, Any]


# --- snakepit ---------------------------------------------------------------


class Echo(GenServer[int, int, int]):
    """Replies with the request; counts calls and casts in its state."""

    async def handle_call(self, request: int, state: int) -> tuple[int, int]:
        return request, state + 1

    async def handle_cast(self, message: int, state: int) -> int:
        return state + 1


async def bench_snakepit(timeout: float | None, opts: Opts) -> Row:
    async with Echo.running(0) as ref:

        async def calls(n: int) -> None:
            call = ref.call
            for i in range(n):
                await call(i, timeout=timeout)

        async def casts(n: int) -> None:
            cast = ref.cast
            for i in range(n):
                cast(i)
            await ref.sync(timeout=timeout)

        return {"call": await measure(calls, **opts), "cast": await measure(casts, **opts)}


# --- bare anyio memory object streams -----------------------------------------

# A mailbox message: (request, where to send the reply, or None for a cast).
Message = tuple[int, MemoryObjectSendStream[int] | None]


async def stream_server(mailbox: MemoryObjectReceiveStream[Message]) -> None:
    state = 0
    async with mailbox:
        async for request, reply_to in mailbox:
            state += 1
            if reply_to is not None:
                with reply_to:
                    reply_to.send_nowait(request)


async def stream_call(
    mailbox: MemoryObjectSendStream[Message], request: int, timeout: float | None
) -> int:
    reply_send, reply_receive = anyio.create_memory_object_stream[int](1)
    with reply_receive:
        mailbox.send_nowait((request, reply_send))
        if timeout is None:
            return await reply_receive.receive()
        with anyio.fail_after(timeout):
            return await reply_receive.receive()


async def bench_streams(timeout: float | None, opts: Opts) -> Row:
    # Unbounded, like a GenServer mailbox: a cast never blocks the sender.
    send, receive = anyio.create_memory_object_stream[Message](math.inf)
    async with anyio.create_task_group() as tg, send:
        tg.start_soon(stream_server, receive)

        async def calls(n: int) -> None:
            for i in range(n):
                await stream_call(send, i, timeout)

        async def casts(n: int) -> None:
            send_nowait = send.send_nowait
            for i in range(n):
                send_nowait((i, None))
            await stream_call(send, -1, timeout)  # the sync

        row = {"call": await measure(calls, **opts), "cast": await measure(casts, **opts)}
    return row


# --- the anyio half: both rows on one backend ------------------------------------

Bench = Callable[[float | None, Opts], Coroutine[Any, Any, Row]]
BENCHES: list[tuple[str, Bench]] = [
    ("snakepit GenServer", bench_snakepit),
    ("anyio memory streams", bench_streams),
]


async def run_backend(backend: str, opts: Opts) -> list[Row]:
    rows = []
    for impl, bench in BENCHES:
        for timeout in (DEFAULT_TIMEOUT, None):
            row = await bench(timeout, opts)
            rows.append({"impl": impl, "backend": backend, "timeout": timeout, **row})
    return rows


# --- the triotp half ---------------------------------------------------------------


def triotp_python() -> tuple[Path, float | None]:
    """Return the triotp venv's python, creating the venv if needed (and how long it took)."""
    python = TRIOTP_VENV / "bin" / "python"
    marker = TRIOTP_VENV / f".installed-{TRIOTP_REQUIREMENT}"
    if python.exists() and marker.exists():
        return python, None
    if TRIOTP_VENV.exists():  # a half-made venv from an interrupted run
        shutil.rmtree(TRIOTP_VENV)
    print(f"creating {TRIOTP_VENV} with {TRIOTP_REQUIREMENT} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    for cmd in (
        [sys.executable, "-m", "venv", str(TRIOTP_VENV)],
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            TRIOTP_REQUIREMENT,
        ],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")
    marker.touch()
    took = time.perf_counter() - t0
    print(f"created {TRIOTP_VENV.name} in {took:.1f} s", file=sys.stderr, flush=True)
    return python, took


def run_triotp(opts: Opts) -> tuple[list[Row], dict[str, Any]]:
    python, venv_seconds = triotp_python()
    cmd = [
        str(python),
        "-I",  # isolated: neither this venv's paths nor PYTHON* variables leak in
        str(TRIOTP_HALF),
        "--reps",
        str(opts["reps"]),
        "--rep-seconds",
        str(opts["rep_seconds"]),
        "--warmup-seconds",
        str(opts["warmup_seconds"]),
    ]
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    if proc.returncode != 0:
        sys.exit(f"the triotp half failed ({proc.returncode}):\n{proc.stderr}")
    result = json.loads(proc.stdout)
    backend = f"trio {result['trio']}"
    rows = [
        {"impl": f"triotp {result['triotp']}", "backend": backend, **row} for row in result["rows"]
    ]
    meta = {"triotp": result["triotp"], "triotp_trio": result["trio"]}
    meta["triotp_venv_created_s"] = venv_seconds
    return rows, meta


# --- report ---------------------------------------------------------------------------


def per_s(stats: dict[str, Any]) -> float:
    return 1.0 / float(stats["median_s"])


def fmt_timeout(timeout: float | None) -> str:
    return str(timeout)


def report(rows: list[Row], opts: Opts) -> dict[str, Any]:
    base = next(r for r in rows if r["impl"].startswith("triotp") and r["timeout"] is None)
    base_call, base_cast = per_s(base["call"]), per_s(base["cast"])
    for row in rows:
        row["call_per_s"] = per_s(row["call"])
        row["cast_per_s"] = per_s(row["cast"])
        row["call_vs_triotp"] = row["call_per_s"] / base_call
        row["cast_vs_triotp"] = row["cast_per_s"] / base_cast

    header = (
        f"{'implementation':<21} {'backend':<11} {'timeout':>7} │ {'call µs':>8} "
        f"{'calls/s':>9} {'xtriotp':>8} │ {'casts/s':>10} {'xtriotp':>8}"
    )
    rule = "─" * len(header)
    print()
    print(
        f"GenServer call round trip and cast throughput "
        f"(median of {opts['reps']} batches of N, N sized for ~{opts['rep_seconds']:g} s a batch)"
    )
    print(rule)
    print(header)
    print(rule)
    for row in rows:
        mark = "*" if row is base else " "
        print(
            f"{row['impl']:<21} {row['backend']:<11} {fmt_timeout(row['timeout']):>7} │ "
            f"{row['call']['median_s'] * 1e6:>8.2f} {row['call_per_s']:>9,.0f} "
            f"{row['call_vs_triotp']:>7.2f}{mark}│ "
            f"{row['cast_per_s']:>10,.0f} {row['cast_vs_triotp']:>7.2f}{mark}"
        )
    print(rule)
    print(
        f"* baseline: {base['impl']} call with its default timeout=None "
        f"({base_call:,.0f} calls/s, {base_cast:,.0f} casts/s)"
    )
    print(
        "  cast = N casts + one sync()/call; anyio streams: unbounded mailbox, "
        "one-shot reply stream per call"
    )
    print()
    print(f"target: snakepit call throughput >= {TARGET_RATIO:g}x triotp's, on each backend")
    verdicts = {}
    for backend in ("asyncio", "trio"):
        mine = [r for r in rows if r["impl"].startswith("snakepit") and r["backend"] == backend]
        worst = min(r["call_vs_triotp"] for r in mine)
        met = worst >= TARGET_RATIO
        verdicts[backend] = {"worst_ratio": worst, "met": met}
        detail = ", ".join(
            f"{r['call_vs_triotp']:.2f}x (timeout={fmt_timeout(r['timeout'])})" for r in mine
        )
        print(f"  {backend:<8} {detail}  →  {'met' if met else 'NOT MET'}")
    return {"baseline": {"call_per_s": base_call, "cast_per_s": base_cast}, "target": verdicts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write results here")
    parser.add_argument("--reps", type=int, help="timed batches per measurement (default 5)")
    args = parser.parse_args()
    opts: Opts = (
        {"reps": 3, "rep_seconds": 0.02, "warmup_seconds": 0.02}
        if args.quick
        else {"reps": 5, "rep_seconds": 0.2, "warmup_seconds": 0.1}
    )
    if args.reps is not None:
        opts["reps"] = args.reps

    t0 = time.perf_counter()
    triotp_rows, meta = run_triotp(opts)
    rows = []
    for backend in ("asyncio", "trio"):
        rows += anyio.run(run_backend, backend, opts, backend=backend)
    rows += triotp_rows
    summary = report(rows, opts)
    wall = time.perf_counter() - t0
    print(f"\nwall time {wall:.1f} s", end="")
    if meta["triotp_venv_created_s"] is not None:
        print(f" (of which {meta['triotp_venv_created_s']:.1f} s creating the triotp venv)", end="")
    print()

    if args.json is not None:
        meta.update(
            python=platform.python_version(),
            platform=platform.platform(),
            anyio=version("anyio"),
            trio=version("trio"),
            snakepit=version("snakepit"),
            quick=args.quick,
            wall_s=wall,
            **opts,
        )
        result = {"meta": meta, "rows": rows, **summary}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
