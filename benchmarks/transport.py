"""Host-to-worker transport: snakepit gRPC (unary Execute, Channel) vs ProcessPoolExecutor vs anyio.

Usage::

    python benchmarks/transport.py [--quick] [--json PATH] [--reps N]

Every row calls a do-nothing function in another process from asyncio host code:

* snakepit unary ``Execute`` (``WorkerConnection.execute``), the ``Channel`` RPC
  (``Multiplexer.execute``) and the same Multiplexer on the worker's frames
  socket (length-prefixed frames, the pool's default transport), each with
  the ``noop`` tool (async, on the worker's event loop) and the ``noop_sync``
  tool (sync, in a worker thread), on workers of
  ``snakepit.testing.adapters:Echo`` listening on unix sockets in a private
  temporary directory (default ``--max-concurrency 1``: one call runs at a time,
  as in a one-process pool);
* ``loop.run_in_executor(ProcessPoolExecutor(max_workers=N), noop)`` (the
  baseline; ``spawn`` start method, as a host with grpc's threads running must
  not fork);
* ``anyio.to_process.run_sync(noop, limiter=CapacityLimiter(N))`` (anyio's
  default process pool, at most N processes busy).

Columns, measured in turns (every row once per repetition, the order rotated),
the median over the repetitions reported:

* noop latency p50 and p99: sequential calls from one caller, 1 worker;
* throughput: 64 long-lived caller tasks, each making sequential calls, for a
  fixed total; with 2 workers, snakepit callers round-robin over two workers,
  each with its own connection and Multiplexer;
* 1 MiB echo: sequential calls echoing a 1 MiB ``bytes`` (``aecho`` for the
  async rows, ``echo`` for the sync ones; a function returning its argument for
  the pools); one round trip (1 MiB out, 1 MiB back) counts as 1 MiB.

Targets (on the frames socket, the pool's hot path): Channel p50 (noop) <=
ProcessPoolExecutor's (stretch: <= anyio's), and Channel throughput with 64
in flight >= 2x ProcessPoolExecutor's with the same number of workers (1 vs 1,
2 vs 2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import anyio.to_process

from snakepit.pool._connection import open_frames_multiplexer
from snakepit.pool._launch._process import spawn_worker
from snakepit.pool._worker_connection import WorkerConnection

# The pools' children unpickle noop/echo by reference; they inherit this sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _transport_fns as fns
from _report import fmt, ratio

ADAPTER = "snakepit.testing.adapters:Echo"
INFLIGHT = 64
MIB = 1024 * 1024
PAYLOAD = b"\xa5" * MIB
TARGET_THROUGHPUT = 2.0

SNAKEPIT_EXECUTE = "snakepit Execute (unary)"
SNAKEPIT_CHANNEL = "snakepit Channel (mux)"
SNAKEPIT_FRAMES = "snakepit frames (mux)"
PPE = "run_in_executor(PPE)"
ANYIO = "anyio.to_process"

Call = Callable[[], Awaitable[Any]]
Echo = Callable[[bytes], Awaitable[Any]]
Opts = dict[str, Any]


@dataclass(eq=False)
class Subject:
    """One row: how to make one call (per worker), and how to echo, if this row does."""

    transport: str
    tool: str
    workers: int
    calls: list[Call]
    echo: Echo | None
    samples: dict[str, list[float]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.transport} {self.tool} {self.workers}w"

    def add(self, metric: str, value: float) -> None:
        self.samples.setdefault(metric, []).append(value)

    def median(self, metric: str) -> float | None:
        values = self.samples.get(metric)
        return statistics.median(values) if values else None


# --- measurements ------------------------------------------------------------------


async def measure_latency(call: Call, n: int) -> tuple[float, float]:
    """``n`` sequential calls; their p50 and p99 in µs."""
    clock = time.perf_counter_ns
    samples = [0] * n
    for i in range(n):
        t0 = clock()
        await call()
        samples[i] = clock() - t0
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49] / 1e3, cuts[98] / 1e3


async def measure_throughput(calls: list[Call], per_caller: int) -> float:
    """``INFLIGHT`` caller tasks (caller k on ``calls[k % len]``), ``per_caller`` calls each."""
    start = asyncio.Event()

    async def caller(call: Call) -> None:
        await start.wait()
        for _ in range(per_caller):
            await call()

    async with asyncio.TaskGroup() as tg:
        for k in range(INFLIGHT):
            tg.create_task(caller(calls[k % len(calls)]))
        await asyncio.sleep(0)  # every caller is now waiting on start
        t0 = time.perf_counter()
        start.set()
    return INFLIGHT * per_caller / (time.perf_counter() - t0)


async def measure_echo(echo: Echo, n: int) -> float:
    """``n`` sequential 1 MiB echoes; MiB/s (a round trip counts as 1 MiB)."""
    t0 = time.perf_counter()
    for _ in range(n):
        await echo(PAYLOAD)
    return n / (time.perf_counter() - t0)


async def warm_up(subject: Subject, opts: Opts) -> None:
    for _ in range(opts["warmup_calls"]):
        await subject.calls[0]()
    # Starts every pool process (PPE and anyio start them on demand).
    await measure_throughput(subject.calls, 4)
    if subject.echo is not None:
        got = await subject.echo(PAYLOAD)
        if got != PAYLOAD:
            raise RuntimeError(f"{subject.key}: the echo came back changed ({len(got)} bytes)")


async def run_rep(subject: Subject, opts: Opts) -> None:
    gc.collect()
    if subject.workers == 1:
        p50, p99 = await measure_latency(subject.calls[0], opts["latency_calls"])
        subject.add("p50_us", p50)
        subject.add("p99_us", p99)
    subject.add("calls_per_s", await measure_throughput(subject.calls, opts["per_caller"]))
    if subject.echo is not None:
        subject.add("mib_per_s", await measure_echo(subject.echo, opts["echo_calls"]))


# --- the rows ------------------------------------------------------------------------


def tool_echo(execute: Callable[..., Awaitable[Any]], tool: str) -> Echo:
    async def echo(data: bytes) -> Any:
        return await execute(tool, {"value": data})

    return echo


def private_dir(stack: contextlib.AsyncExitStack) -> str:
    """A short 0700 directory for the unix sockets, removed on the way out."""
    path = tempfile.mkdtemp(prefix="sp-")
    os.chmod(path, 0o700)
    stack.callback(shutil.rmtree, path, ignore_errors=True)
    return path


async def make_subjects(stack: contextlib.AsyncExitStack) -> list[Subject]:
    """Start 2 workers, 2 process pools and 2 limiters; every one is closed by ``stack``."""
    loop = asyncio.get_running_loop()
    sockets = private_dir(stack)
    clients: list[WorkerConnection] = []
    muxes = []
    frame_muxes = []
    for i in range(2):
        worker = await spawn_worker(ADAPTER, f"unix:{sockets}/w{i}.sock", worker_id=f"w{i}")
        stack.push_async_callback(worker.aclose)
        client = WorkerConnection(worker.address, secret=worker.secret)
        stack.push_async_callback(client.aclose)
        mux = client.multiplexer()
        stack.push_async_callback(mux.aclose)
        clients.append(client)
        muxes.append(mux)
        assert worker.frames_address is not None
        frames = await open_frames_multiplexer(worker.frames_address, secret=worker.secret)
        stack.push_async_callback(frames.aclose)
        frame_muxes.append(frames)

    spawn = multiprocessing.get_context("spawn")
    pools = {}
    limiters = {}
    for n in (1, 2):
        pools[n] = ProcessPoolExecutor(max_workers=n, mp_context=spawn)
        stack.callback(pools[n].shutdown, wait=True, cancel_futures=True)
        # anyio's process pool belongs to the event loop: anyio kills its
        # processes when asyncio.run() ends (checked by leftover_children()).
        limiters[n] = anyio.CapacityLimiter(n)

    subjects = []
    async_sync = (("noop", "aecho"), ("noop_sync", "echo"))
    for noop, echo in async_sync:
        client = clients[0]
        subjects.append(
            Subject(
                SNAKEPIT_EXECUTE,
                noop,
                1,
                [functools.partial(client.execute, noop)],
                tool_echo(client.execute, echo),
            )
        )
    for noop, echo in async_sync:
        subjects.append(
            Subject(
                SNAKEPIT_CHANNEL,
                noop,
                1,
                [functools.partial(muxes[0].execute, noop)],
                tool_echo(muxes[0].execute, echo),
            )
        )

    for noop, echo in async_sync:
        subjects.append(
            Subject(
                SNAKEPIT_FRAMES,
                noop,
                1,
                [functools.partial(frame_muxes[0].execute, noop)],
                tool_echo(frame_muxes[0].execute, echo),
            )
        )

    def ppe(n: int, with_echo: bool) -> Subject:
        pool = pools[n]

        async def echo(data: bytes) -> bytes:
            return await loop.run_in_executor(pool, fns.echo, data)

        return Subject(
            PPE,
            "noop",
            n,
            [functools.partial(loop.run_in_executor, pool, fns.noop)],
            echo if with_echo else None,
        )

    def to_process(n: int, with_echo: bool) -> Subject:
        run = functools.partial(anyio.to_process.run_sync, limiter=limiters[n])
        return Subject(
            ANYIO,
            "noop",
            n,
            [functools.partial(run, fns.noop)],
            functools.partial(run, fns.echo) if with_echo else None,
        )

    subjects += [ppe(1, True), to_process(1, True)]
    for transport, pair in ((SNAKEPIT_CHANNEL, muxes), (SNAKEPIT_FRAMES, frame_muxes)):
        for noop, _ in async_sync:
            subjects.append(
                Subject(
                    transport, noop, 2, [functools.partial(m.execute, noop) for m in pair], None
                )
            )
    subjects += [ppe(2, False), to_process(2, False)]
    return subjects


async def run(opts: Opts) -> list[Subject]:
    async with contextlib.AsyncExitStack() as stack:
        subjects = await make_subjects(stack)
        for subject in subjects:
            await warm_up(subject, opts)
        for rep in range(opts["reps"]):
            # Rotated, so no row is always measured right after the same one.
            shift = rep % len(subjects)
            for subject in subjects[shift:] + subjects[:shift]:
                await run_rep(subject, opts)
        return subjects


def leftover_children() -> list[str]:
    """Our child processes still alive (Linux), but the multiprocessing resource tracker.

    The tracker is not a worker: it exits when we do.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    me = str(os.getpid())
    left = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if stat.rpartition(")")[2].split()[1] == me and "resource_tracker" not in cmdline:
            left.append(f"{entry.name} {cmdline}")
    return left


# --- report --------------------------------------------------------------------------------


def report(subjects: list[Subject], opts: Opts) -> dict[str, Any]:
    def find(transport: str, tool: str, workers: int) -> Subject:
        return next(
            s for s in subjects if (s.transport, s.tool, s.workers) == (transport, tool, workers)
        )

    base = {n: find(PPE, "noop", n) for n in (1, 2)}
    rows = []
    for s in subjects:
        row: dict[str, Any] = {
            "transport": s.transport,
            "tool": s.tool,
            "workers": s.workers,
            **{metric: s.median(metric) for metric in ("p50_us", "p99_us")},
            "calls_per_s": s.median("calls_per_s"),
            "mib_per_s": s.median("mib_per_s"),
            "samples": s.samples,
        }
        row["p50_vs_ppe"] = ratio(row["p50_us"], base[1].median("p50_us"))
        row["calls_vs_ppe"] = ratio(row["calls_per_s"], base[s.workers].median("calls_per_s"))
        row["mib_vs_ppe"] = ratio(row["mib_per_s"], base[1].median("mib_per_s"))
        rows.append(row)

    header = (
        f"{'transport':<24} {'tool':<9} {'wk':>2} │ {'p50 µs':>7} {'p99 µs':>7} {'xPPE':>6} │ "
        f"{'calls/s':>8} {'xPPE':>6} │ {'MiB/s':>6} {'xPPE':>6}"
    )
    rule = "─" * len(header)
    print()
    print(f"Host → worker process round trips, asyncio host (median of {opts['reps']} repetitions)")
    print(
        f"  latency: {opts['latency_calls']} sequential noop calls, 1 caller │ "
        f"throughput: {INFLIGHT} callers in flight x {opts['per_caller']} calls │ "
        f"echo: {opts['echo_calls']} sequential 1 MiB echoes, "
        f"1 MiB out + 1 MiB back counted as 1 MiB"
    )
    print(rule)
    print(header)
    print(rule)
    for row in rows:
        if row["workers"] == 2 and rows[rows.index(row) - 1]["workers"] == 1:
            print(rule)
        mark = "*" if row["transport"] == PPE else " "
        print(
            f"{row['transport']:<24} {row['tool']:<9} {row['workers']:>2} │ "
            f"{fmt(row['p50_us'], ',.0f', 7)} {fmt(row['p99_us'], ',.0f', 7)} "
            f"{fmt(row['p50_vs_ppe'], '.2f', 5)}{mark if row['p50_us'] else ' '}│ "
            f"{fmt(row['calls_per_s'], ',.0f', 8)} {fmt(row['calls_vs_ppe'], '.2f', 5)}{mark}│ "
            f"{fmt(row['mib_per_s'], ',.0f', 6)} {fmt(row['mib_vs_ppe'], '.2f', 5)}"
            f"{mark if row['mib_per_s'] else ''}"
        )
    print(rule)
    print(
        "* baseline: loop.run_in_executor(ProcessPoolExecutor) — 1 worker for latency and echo, "
        "the same number of workers for throughput"
    )
    print(
        "  xPPE: latency ratio (lower is better), throughput ratios (higher is better); "
        "snakepit echo rows: aecho (async) / echo (sync) tool"
    )
    print(
        "  2 workers: snakepit callers round-robin over 2 worker processes (a Multiplexer each); "
        "PPE max_workers=2; anyio CapacityLimiter(2)"
    )

    # The targets are the pool's hot path: the frames socket.
    chan = {(t, n): find(SNAKEPIT_FRAMES, t, n) for t in ("noop", "noop_sync") for n in (1, 2)}
    anyio_1 = find(ANYIO, "noop", 1)
    p50 = chan["noop", 1].median("p50_us") or 0.0
    ppe_p50 = base[1].median("p50_us") or 0.0
    anyio_p50 = anyio_1.median("p50_us") or 0.0
    targets: dict[str, Any] = {
        "channel_p50_le_ppe": {
            "channel_us": p50,
            "ppe_us": ppe_p50,
            "ratio": p50 / ppe_p50,
            "met": p50 <= ppe_p50,
        },
        "channel_p50_le_anyio_stretch": {
            "channel_us": p50,
            "anyio_us": anyio_p50,
            "ratio": p50 / anyio_p50,
            "met": p50 <= anyio_p50,
        },
    }

    def verdict(met: bool) -> str:
        return "met" if met else "NOT MET"

    print()
    print("targets")
    t = targets["channel_p50_le_ppe"]
    print(
        f"  Channel p50 (noop) <= run_in_executor(PPE) p50:  {p50:,.0f} µs vs {ppe_p50:,.0f} µs "
        f"= {t['ratio']:.2f}x  →  {verdict(t['met'])}"
    )
    t = targets["channel_p50_le_anyio_stretch"]
    print(
        f"    stretch: <= anyio.to_process p50:             {p50:,.0f} µs vs {anyio_p50:,.0f} µs "
        f"= {t['ratio']:.2f}x  →  {verdict(t['met'])}"
    )
    for n in (1, 2):
        ppe_calls = base[n].median("calls_per_s") or 0.0
        parts = []
        for tool in ("noop", "noop_sync"):
            calls = chan[tool, n].median("calls_per_s") or 0.0
            met = calls >= TARGET_THROUGHPUT * ppe_calls
            targets[f"channel_throughput_{tool}_{n}w_ge_{TARGET_THROUGHPUT:g}x_ppe"] = {
                "channel_per_s": calls,
                "ppe_per_s": ppe_calls,
                "ratio": calls / ppe_calls,
                "met": met,
            }
            parts.append(f"{tool} {calls / ppe_calls:.2f}x → {verdict(met)}")
        label = f"{n} worker{'s' if n > 1 else ''} vs {n}"
        print(
            f"  Channel calls/s @{INFLIGHT} >= {TARGET_THROUGHPUT:g}x PPE, {label}: "
            + ";  ".join(parts)
        )
    return {"rows": rows, "targets": targets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write results here")
    parser.add_argument("--reps", type=int, help="repetitions per measurement (default 3)")
    args = parser.parse_args()
    opts: Opts = (
        {"reps": 2, "latency_calls": 200, "per_caller": 4, "echo_calls": 4, "warmup_calls": 20}
        if args.quick
        else {
            "reps": 3,
            "latency_calls": 2000,
            "per_caller": 40,
            "echo_calls": 16,
            "warmup_calls": 200,
        }
    )
    if args.reps is not None:
        opts["reps"] = args.reps

    t0 = time.perf_counter()
    subjects = asyncio.run(run(opts))
    summary = report(subjects, opts)
    left = leftover_children()
    wall = time.perf_counter() - t0
    print(f"\nwall time {wall:.1f} s; child processes left: {len(left)}")
    for line in left:
        print(f"  left running: {line}", file=sys.stderr)

    if args.json is not None:
        meta = {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "grpcio": version("grpcio"),
            "anyio": version("anyio"),
            "snakepit": version("snakepit"),
            "quick": args.quick,
            "inflight": INFLIGHT,
            "payload_bytes": MIB,
            "wall_s": wall,
            "children_left": left,
            **opts,
        }
        result = {"meta": meta, **summary}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if left:
        sys.exit(1)


if __name__ == "__main__":
    main()
