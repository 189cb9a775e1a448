"""snakepit.Pool vs other process pools: latency, throughput, 1 MiB echo, CPU, cold start, crashes.

Usage::

    python benchmarks/pool_vs_peers.py [--quick] [--json PATH] [--reps N]

Every row is a pool of 2 worker processes called from asyncio host code:

* ``snakepit.Pool("snakepit.testing.adapters:Echo", size=2)``: ``pool.execute``
  of the ``noop`` tool (async, on the worker's event loop), ``aecho`` for the echo;
  and, for information only, the same with ``max_concurrency=8`` (8 calls at
  once on each worker, where the default 1 lets a pool of 2 have 2 in flight);
* ``loop.run_in_executor(ProcessPoolExecutor(2), noop)`` (the baseline);
* ``anyio.to_process.run_sync(noop, limiter=CapacityLimiter(2))``;
* ``multiprocessing.Pool(2).apply_async(noop)``, its callback resolving an
  asyncio future (``call_soon_threadsafe``);
* ``pebble.ProcessPool(2).schedule(noop)`` (``asyncio.wrap_future``) and
  ``loop.run_in_executor(loky.ProcessPoolExecutor(2), noop)``, each skipped
  when the package is not installed.

The stdlib pools and pebble use the ``spawn`` start method (a host with grpc's
threads running must not fork); anyio starts ``python -m anyio.to_process``;
loky its own fork+exec. ``noop`` and ``echo`` live in ``_transport_fns.py``.
Their children import this script as ``__mp_main__``: it imports only the
standard library at module level, so they do not pay for grpc.

Each repetition runs every row once, the order rotated, each in its own
``asyncio.run`` (so anyio's per-loop process pool is new as well) and with its
own pool: created, warmed up, measured, closed. The median over repetitions
is reported. Columns:

* noop p50 / p99: sequential calls from one caller;
* calls/s @64: 64 long-lived caller tasks, each making sequential calls;
* 1 MiB echo: sequential round trips of a 1 MiB ``bytes`` (1 MiB out and back
  counts as 1 MiB);
* CPU µs per call, sequential and @64: CPU time of the host process
  (``getrusage(RUSAGE_SELF)``, every thread) plus that of every live child
  process (``utime + stime`` from ``/proc/<pid>/stat``, which count every
  thread, in 1/CLK_TCK s ticks; resource trackers left out), over the latency
  and the throughput phase, divided by the calls. ``RUSAGE_CHILDREN`` is no
  use here: it counts only children already reaped;
* cold start: from creating the pool to the first successful call returning
  (the median over the repetitions and 3 more rounds that only start, call
  once and stop each pool).

References: a bare ``snakepit.pool._launch._process.spawn_worker`` of the Echo adapter, from
the spawn to its ready line (and two at once, for information).

snakepit only: a pool of ``snakepit.testing.adapters:Gated`` workers runs
``wait_gate`` on a FIFO (the host's non-blocking open for writing succeeds
exactly when the tool is running in the worker), ``pool.workers()`` names the
pid of the worker with the call in flight, and the host SIGKILLs it: the time
from the kill to the in-flight ``execute`` raising, and to the replacement
being ready (``wait_ready()`` returned and ``stats().restarts`` counted up).

Targets: snakepit p50 <= run_in_executor(PPE)'s (stretch: <= anyio's);
snakepit calls/s @64 >= multiprocessing.Pool's; snakepit cold start <= 1.2x a
bare worker's spawn-to-ready; the in-flight caller sees a kill -9 of its
worker within 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import functools
import gc
import importlib.util
import json
import logging
import multiprocessing
import os
import platform
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The pools' children unpickle noop/echo by reference; they inherit this sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _transport_fns as fns
from _report import fmt, ratio, verdict, versions

ADAPTER = "snakepit.testing.adapters:Echo"
GATED_ADAPTER = "snakepit.testing.adapters:Gated"
WORKERS = 2
INFLIGHT = 64
MIB = 1024 * 1024
PAYLOAD = b"\xa5" * MIB
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: max_concurrency of the extra snakepit row (for information, not a target).
MC_INFO = 8

TARGET_COLD_RATIO = 1.2
TARGET_CRASH_MS = 20.0

SNAKEPIT = "snakepit.Pool"
SNAKEPIT_MC = f"snakepit.Pool mc={MC_INFO}"
SNAKEPIT_SPAWN = "snakepit.Pool spawn"
PPE = "run_in_executor(PPE)"
ANYIO = "anyio.to_process"
MP_POOL = "multiprocessing.Pool"
PEBBLE = "pebble.ProcessPool"
LOKY = "loky (run_in_executor)"
BARE = "bare spawn_worker"
BARE_PAIR = "bare spawn_worker x2"

METRICS = ("p50_us", "p99_us", "calls_per_s", "mib_per_s", "cpu_seq_us", "cpu_64_us", "cold_s")

Call = Callable[[], Awaitable[Any]]
Echo = Callable[[bytes], Awaitable[Any]]
Opts = dict[str, Any]


@dataclass(frozen=True)
class Calls:
    """How to call one open pool: a noop, and a 1 MiB echo."""

    noop: Call
    echo: Echo


Opener = Callable[[], contextlib.AbstractAsyncContextManager[Calls]]


@dataclass(eq=False)
class Peer:
    """One row: a pool, and its samples of every metric."""

    name: str
    open: Opener
    package: str | None  # its distribution, for the version in the JSON
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, metric: str, value: float) -> None:
        self.samples.setdefault(metric, []).append(value)

    def median(self, metric: str) -> float | None:
        values = self.samples.get(metric)
        return statistics.median(values) if values else None


# --- the pools ------------------------------------------------------------------------
# Each opener imports its package inside: at module level it would be imported
# by every spawned child too. main() imports them all once before any timing.


def spawn_context() -> Any:
    return multiprocessing.get_context("spawn")


@contextlib.asynccontextmanager
async def open_snakepit(
    max_concurrency: int = 1, start_method: str = "forkserver"
) -> AsyncIterator[Calls]:
    from snakepit.pool import Pool

    async with Pool(
        ADAPTER, size=WORKERS, max_concurrency=max_concurrency, start_method=start_method
    ) as pool:

        async def echo(data: bytes) -> Any:
            return await pool.execute("aecho", {"value": data})

        yield Calls(functools.partial(pool.execute, "noop"), echo)


@contextlib.asynccontextmanager
async def open_ppe() -> AsyncIterator[Calls]:
    loop = asyncio.get_running_loop()
    pool = ProcessPoolExecutor(max_workers=WORKERS, mp_context=spawn_context())
    try:
        yield Calls(
            functools.partial(loop.run_in_executor, pool, fns.noop),
            functools.partial(loop.run_in_executor, pool, fns.echo),
        )
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.asynccontextmanager
async def open_anyio() -> AsyncIterator[Calls]:
    import anyio
    import anyio.to_process

    run = functools.partial(anyio.to_process.run_sync, limiter=anyio.CapacityLimiter(WORKERS))
    try:
        yield Calls(functools.partial(run, fns.noop), functools.partial(run, fns.echo))
    finally:
        # anyio's process pool belongs to the event loop, which kills its
        # processes as it closes without reaping them: subprocess's _cleanup()
        # may reap one later (asyncio then warns "Unknown child process pid").
        # Kill and reap them here (anyio has no public call for it).
        workers = anyio.to_process._process_pool_workers
        with contextlib.suppress(LookupError):
            for process in list(workers.get()):
                workers.get().discard(process)
                process.kill()
                await process.aclose()


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


@contextlib.asynccontextmanager
async def open_mp_pool() -> AsyncIterator[Calls]:
    loop = asyncio.get_running_loop()
    pool = spawn_context().Pool(WORKERS)

    def call(fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        future = loop.create_future()
        pool.apply_async(
            fn,
            args,
            callback=lambda value: loop.call_soon_threadsafe(_resolve, future, value),
            error_callback=lambda exc: loop.call_soon_threadsafe(_reject, future, exc),
        )
        return future

    try:
        yield Calls(functools.partial(call, fns.noop), functools.partial(call, fns.echo))
    finally:
        pool.terminate()
        pool.join()


@contextlib.asynccontextmanager
async def open_pebble() -> AsyncIterator[Calls]:
    import pebble

    pool = pebble.ProcessPool(max_workers=WORKERS, context=spawn_context())

    def call(fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        return asyncio.wrap_future(pool.schedule(fn, args=args))

    try:
        yield Calls(functools.partial(call, fns.noop), functools.partial(call, fns.echo))
    finally:
        pool.stop()
        pool.join()


@contextlib.asynccontextmanager
async def open_loky() -> AsyncIterator[Calls]:
    import loky

    loop = asyncio.get_running_loop()
    pool = loky.ProcessPoolExecutor(max_workers=WORKERS)
    try:
        yield Calls(
            functools.partial(loop.run_in_executor, pool, fns.noop),
            functools.partial(loop.run_in_executor, pool, fns.echo),
        )
    finally:
        pool.shutdown(wait=True)


def make_peers() -> tuple[list[Peer], list[str]]:
    """Every row whose package is installed; and the names of the rows skipped."""
    peers = [
        Peer(SNAKEPIT, open_snakepit, "snakepit"),
        Peer(SNAKEPIT_MC, functools.partial(open_snakepit, MC_INFO), "snakepit"),
        Peer(SNAKEPIT_SPAWN, functools.partial(open_snakepit, start_method="spawn"), "snakepit"),
        Peer(PPE, open_ppe, None),
        Peer(ANYIO, open_anyio, "anyio"),
        Peer(MP_POOL, open_mp_pool, None),
    ]
    skipped = []
    for name, opener, package in ((PEBBLE, open_pebble, "pebble"), (LOKY, open_loky, "loky")):
        if importlib.util.find_spec(package) is None:
            skipped.append(f"{name} ({package} is not installed)")
        else:
            peers.append(Peer(name, opener, package))
    return peers, skipped


def import_all(peers: list[Peer]) -> None:
    """Import every package now, so that no cold start pays for an import."""
    import anyio.to_process  # noqa: F401

    for package in ("pebble", "loky"):
        if any(p.package == package for p in peers):
            __import__(package)


# --- CPU time ---------------------------------------------------------------------------


def host_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (the 3rd field is [0])."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def child_cpu_s(pid: int) -> float:
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def children(*, live: bool = True) -> list[tuple[int, str]]:
    """Our descendant processes (Linux), but resource trackers; zombies only if ``live`` is False.

    Descendants, not only children: snakepit's workers are forked by its fork
    server, a child of ours. A multiprocessing (or loky) resource tracker is no
    worker: it idles, and exits when we do.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    every: dict[str, tuple[list[str], str]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if fields is not None:
            every[entry.name] = (fields, cmdline)
    ours = {str(os.getpid())}
    grew = True
    while grew:  # parents before children in no particular order: until nothing is added
        grew = False
        for pid, (fields, _) in every.items():
            if pid not in ours and fields[1] in ours:
                ours.add(pid)
                grew = True
    found = []
    for pid, (fields, cmdline) in every.items():
        if pid == str(os.getpid()) or pid not in ours or "resource_tracker" in cmdline:
            continue
        if live and fields[0] == "Z":
            continue
        found.append((int(pid), f"{fields[0]} {cmdline}"))
    return found


class CpuMeter:
    """CPU seconds of the host and of the child processes alive when it started."""

    def __init__(self) -> None:
        self.pids = [pid for pid, _ in children()]
        self.start = self.now()

    def now(self) -> float:
        return host_cpu_s() + sum(child_cpu_s(pid) for pid in self.pids)

    def per_call_us(self, calls: int) -> float:
        return (self.now() - self.start) / calls * 1e6


# --- measurements ---------------------------------------------------------------------------


async def measure_latency(call: Call, n: int) -> tuple[float, float, float]:
    """``n`` sequential calls; their p50 and p99 in µs, and CPU µs per call."""
    clock = time.perf_counter_ns
    samples = [0] * n
    cpu = CpuMeter()
    for i in range(n):
        t0 = clock()
        await call()
        samples[i] = clock() - t0
    cpu_us = cpu.per_call_us(n)
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49] / 1e3, cuts[98] / 1e3, cpu_us


async def measure_throughput(call: Call, per_caller: int) -> tuple[float, float]:
    """``INFLIGHT`` caller tasks, ``per_caller`` sequential calls each: calls/s, CPU µs/call."""
    start = asyncio.Event()

    async def caller() -> None:
        await start.wait()
        for _ in range(per_caller):
            await call()

    async with asyncio.TaskGroup() as tg:
        for _ in range(INFLIGHT):
            tg.create_task(caller())
        await asyncio.sleep(0)  # every caller is now waiting on start
        cpu = CpuMeter()
        t0 = time.perf_counter()
        start.set()
    elapsed = time.perf_counter() - t0
    calls = INFLIGHT * per_caller
    return calls / elapsed, cpu.per_call_us(calls)


async def measure_echo(echo: Echo, n: int) -> float:
    """``n`` sequential 1 MiB echoes; MiB/s (a round trip counts as 1 MiB)."""
    t0 = time.perf_counter()
    for _ in range(n):
        await echo(PAYLOAD)
    return n / (time.perf_counter() - t0)


async def session(peer: Peer, opts: Opts, *, record: bool = True) -> None:
    """Open the pool, time its first call, warm it up, measure, close it."""
    gc.collect()
    t0 = time.perf_counter()
    async with peer.open() as calls:
        await calls.noop()
        cold = time.perf_counter() - t0
        for _ in range(opts["warmup_calls"]):
            await calls.noop()
        await measure_throughput(calls.noop, 4)  # starts every process of a lazy pool
        got = await calls.echo(PAYLOAD)
        if got != PAYLOAD:
            raise RuntimeError(f"{peer.name}: the echo came back changed ({len(got)} bytes)")
        if len(children()) < WORKERS:
            raise RuntimeError(f"{peer.name}: fewer than {WORKERS} worker processes are running")

        gc.collect()
        p50, p99, cpu_seq = await measure_latency(calls.noop, opts["latency_calls"])
        gc.collect()
        per_s, cpu_64 = await measure_throughput(calls.noop, opts["per_caller"])
        gc.collect()
        mib_per_s = await measure_echo(calls.echo, opts["echo_calls"])
    if record:
        for metric, value in zip(
            METRICS, (p50, p99, per_s, mib_per_s, cpu_seq, cpu_64, cold), strict=True
        ):
            peer.add(metric, value)


async def cold_only(peer: Peer) -> None:
    """Open the pool, time its first call, close it (more cold-start samples, cheaply)."""
    gc.collect()
    t0 = time.perf_counter()
    async with peer.open() as calls:
        await calls.noop()
        peer.add("cold_s", time.perf_counter() - t0)


async def bare_spawn(count: int) -> float:
    """Seconds from spawning ``count`` bare workers at once to all of them being ready."""
    from snakepit.pool._launch._process import spawn_worker

    sockets = tempfile.mkdtemp(prefix="sp-")
    os.chmod(sockets, 0o700)
    try:
        t0 = time.perf_counter()
        workers = await asyncio.gather(
            *(
                spawn_worker(ADAPTER, f"unix:{sockets}/w{i}.sock", worker_id=f"w{i}")
                for i in range(count)
            )
        )
        took = time.perf_counter() - t0
        for worker in workers:
            await worker.aclose()
        return took
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


# --- a worker killed under an in-flight call (snakepit only) ----------------------------------


async def open_fifo_writer(path: str, timeout: float = 10.0) -> int:
    """Open the FIFO for writing once a reader has it open (the gated tool is running)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.001)


async def crash_runs(opts: Opts) -> list[dict[str, Any]]:
    """Kill -9 the worker of an in-flight call, ``crash_reps`` times, in one pool."""
    from snakepit.pool import Pool

    runs = []
    gates = tempfile.mkdtemp(prefix="sp-gate-")
    # "worker exited with -9; starting a replacement", once a run: expected here.
    logging.getLogger("snakepit.pool").setLevel(logging.ERROR)
    try:
        async with Pool(GATED_ADAPTER, size=WORKERS) as pool:
            for i in range(opts["crash_reps"]):
                gate = os.path.join(gates, f"gate{i}")
                os.mkfifo(gate)

                async def in_flight(path: str) -> tuple[float, str]:
                    try:
                        await pool.execute("wait_gate", {"path": path})
                    except Exception as exc:
                        return time.perf_counter(), type(exc).__name__
                    return time.perf_counter(), "returned"

                caller = asyncio.create_task(in_flight(gate))
                writer = await open_fifo_writer(gate)  # wait_gate is running now
                try:
                    busy = [w.pid for w in pool.workers() if w.ready and w.in_flight]
                    if len(busy) != 1 or busy[0] is None:
                        raise RuntimeError(f"expected one busy worker, got {pool.workers()}")
                    restarts = pool.stats().restarts
                    killed = time.perf_counter()
                    os.kill(busy[0], signal.SIGKILL)
                    noticed, error = await caller
                finally:
                    os.close(writer)
                early = False
                await pool.wait_ready(timeout=30.0)
                while pool.stats().restarts == restarts:  # wait_ready() returned too early
                    early = True
                    await asyncio.sleep(0.001)
                    await pool.wait_ready(timeout=30.0)
                ready = time.perf_counter()
                runs.append(
                    {
                        "error": error,
                        "noticed_ms": (noticed - killed) * 1e3,
                        "replaced_ms": (ready - killed) * 1e3,
                        "wait_ready_early": early,
                    }
                )
    finally:
        shutil.rmtree(gates, ignore_errors=True)
    return runs


# --- the run ------------------------------------------------------------------------------------


def run(peers: list[Peer], opts: Opts) -> tuple[dict[str, list[float]], list[dict[str, Any]]]:
    """Every row in turn, ``reps`` times, each in its own event loop; then the crash runs.

    ``cold_extra`` more rounds only open each pool, make one call and close it,
    and spawn the bare references: cold starts are few and noisy.
    """
    import_all(peers)
    refs: dict[str, list[float]] = {BARE: [], BARE_PAIR: []}
    if opts["warm_pass"]:
        # One short untimed session each first: the page cache, grpc's one-time setup.
        light = {**opts, "latency_calls": 100, "per_caller": 4, "echo_calls": 2}
        asyncio.run(bare_spawn(1))
        for peer in peers:
            asyncio.run(session(peer, light, record=False))

    items: list[Peer | str] = [*peers, BARE, BARE_PAIR]
    for rep in range(opts["reps"]):
        shift = rep % len(items)  # so no row always runs right after the same one
        for item in items[shift:] + items[:shift]:
            if isinstance(item, Peer):
                asyncio.run(session(item, opts))
            else:
                refs[item].append(asyncio.run(bare_spawn(1 if item == BARE else 2)))
    for rep in range(opts["cold_extra"]):
        shift = rep % len(items)
        for item in items[shift:] + items[:shift]:
            if isinstance(item, Peer):
                asyncio.run(cold_only(item))
            else:
                refs[item].append(asyncio.run(bare_spawn(1 if item == BARE else 2)))
    return refs, asyncio.run(crash_runs(opts))


# --- report --------------------------------------------------------------------------------------


def report(
    peers: list[Peer],
    skipped: list[str],
    refs: dict[str, list[float]],
    crashes: list[dict[str, Any]],
    opts: Opts,
) -> dict[str, Any]:
    by_name = {p.name: p for p in peers}
    base = by_name[PPE]
    rows = []
    for p in peers:
        row: dict[str, Any] = {"peer": p.name, **{m: p.median(m) for m in METRICS}}
        row["p50_vs_ppe"] = ratio(row["p50_us"], base.median("p50_us"))
        row["calls_vs_ppe"] = ratio(row["calls_per_s"], base.median("calls_per_s"))
        row["samples"] = p.samples
        rows.append(row)

    header = (
        f"{'pool (2 workers)':<23} │ {'p50 µs':>7} {'p99 µs':>7} {'xPPE':>5} │ "
        f"{'calls/s':>7} {'xPPE':>5} │ {'MiB/s':>5} │ {'CPU µs/call':>11} │ {'cold s':>6}"
    )
    sub = (
        f"{'':<23} │ {'':>7} {'':>7} {'':>5} │ {'@64':>7} {'':>5} │ {'':>5} │ "
        f"{'seq':>5} {'@64':>5} │"
    )
    rule = "─" * len(header)
    print()
    print(
        f"Process pools of {WORKERS} workers, asyncio host (median of {opts['reps']} repetitions)"
    )
    print(
        f"  latency: {opts['latency_calls']} sequential noop calls, 1 caller │ throughput: "
        f"{INFLIGHT} callers x {opts['per_caller']} calls │ echo: {opts['echo_calls']} "
        f"sequential 1 MiB round trips │ cold: pool created → first call returned "
        f"({opts['reps'] + opts['cold_extra']} samples)"
    )
    print(rule)
    print(header)
    print(sub)
    print(rule)
    for row in rows:
        mark = "*" if row["peer"] == PPE else " "
        print(
            f"{row['peer']:<23} │ {fmt(row['p50_us'], ',.0f', 7)} {fmt(row['p99_us'], ',.0f', 7)} "
            f"{fmt(row['p50_vs_ppe'], '.2f', 4)}{mark}│ {fmt(row['calls_per_s'], ',.0f', 7)} "
            f"{fmt(row['calls_vs_ppe'], '.2f', 4)}{mark}│ {fmt(row['mib_per_s'], ',.0f', 5)} │ "
            f"{fmt(row['cpu_seq_us'], ',.0f', 5)} {fmt(row['cpu_64_us'], ',.0f', 5)} │ "
            f"{fmt(row['cold_s'], '.3f', 6)}"
        )
    print(rule)
    bare = statistics.median(refs[BARE])
    pair = statistics.median(refs[BARE_PAIR])
    print(f"{BARE + ', spawn → ready line':<48} {bare:.3f} s (the cold-start reference)")
    print(f"{BARE_PAIR + ' at once, spawn → both ready':<48} {pair:.3f} s")
    print(
        "* baseline: loop.run_in_executor(ProcessPoolExecutor(2)); xPPE: latency ratio (lower "
        "is better), throughput ratio (higher is better)"
    )
    print(
        "  snakepit: the async noop / aecho tools; the others: noop / echo in _transport_fns.py "
        "(spawn start method; loky: its own)"
    )
    print(
        f"  {SNAKEPIT_MC}: max_concurrency={MC_INFO}, {MC_INFO} calls at once on each worker "
        "(for information: the target rows use the default, 1)"
    )
    print(
        "  CPU: host getrusage(RUSAGE_SELF) + workers' utime+stime from /proc/<pid>/stat "
        f"(1/{CLK_TCK} s ticks), per call"
    )
    for line in skipped:
        print(f"  skipped: {line}")

    noticed = [c["noticed_ms"] for c in crashes]
    replaced = [c["replaced_ms"] for c in crashes]
    errors = sorted({c["error"] for c in crashes})
    print()
    print(
        f"snakepit: kill -9 of the worker running an in-flight execute() ({len(crashes)} runs, "
        f"median [min..max])"
    )
    print(
        f"  the caller's error ({', '.join(errors)}): {statistics.median(noticed):7.1f} ms "
        f"[{min(noticed):.1f}..{max(noticed):.1f}] after the kill"
    )
    print(
        f"  the replacement ready (wait_ready):  {statistics.median(replaced):7.1f} ms "
        f"[{min(replaced):.1f}..{max(replaced):.1f}] after the kill"
    )
    if any(c["wait_ready_early"] for c in crashes):
        print("  note: wait_ready() returned before the replacement was ready at least once")

    sp = by_name[SNAKEPIT]
    p50 = sp.median("p50_us") or 0.0
    ppe_p50 = base.median("p50_us") or 0.0
    anyio_p50 = by_name[ANYIO].median("p50_us") or 0.0
    calls = sp.median("calls_per_s") or 0.0
    mp_calls = by_name[MP_POOL].median("calls_per_s") or 0.0
    cold = sp.median("cold_s") or 0.0
    crash = statistics.median(noticed)
    targets: dict[str, Any] = {
        "p50_le_ppe": {"snakepit_us": p50, "ppe_us": ppe_p50, "met": p50 <= ppe_p50},
        "p50_le_anyio_stretch": {
            "snakepit_us": p50,
            "anyio_us": anyio_p50,
            "met": p50 <= anyio_p50,
        },
        "throughput_ge_mp_pool": {
            "snakepit_per_s": calls,
            "mp_pool_per_s": mp_calls,
            "met": calls >= mp_calls,
        },
        f"cold_le_{TARGET_COLD_RATIO:g}x_bare": {
            "snakepit_s": cold,
            "bare_s": bare,
            "ratio": cold / bare,
            "met": cold <= TARGET_COLD_RATIO * bare,
        },
        f"crash_noticed_le_{TARGET_CRASH_MS:g}ms": {
            "median_ms": crash,
            "max_ms": max(noticed),
            "met": crash <= TARGET_CRASH_MS,
        },
    }
    print()
    print("targets")
    print(
        f"  p50 <= run_in_executor(PPE):      {p50:8,.0f} µs vs {ppe_p50:,.0f} µs "
        f"= {p50 / ppe_p50:.2f}x  →  {verdict(targets['p50_le_ppe']['met'])}"
    )
    print(
        f"    stretch: <= anyio.to_process:   {p50:8,.0f} µs vs {anyio_p50:,.0f} µs "
        f"= {p50 / anyio_p50:.2f}x  →  {verdict(targets['p50_le_anyio_stretch']['met'])}"
    )
    print(
        f"  calls/s @{INFLIGHT} >= multiprocessing.Pool: {calls:,.0f} vs {mp_calls:,.0f} "
        f"= {calls / mp_calls:.2f}x  →  {verdict(targets['throughput_ge_mp_pool']['met'])}"
    )
    t = targets[f"cold_le_{TARGET_COLD_RATIO:g}x_bare"]
    print(
        f"  cold start <= {TARGET_COLD_RATIO:g}x bare spawn-to-ready: {cold:.3f} s vs {bare:.3f} s "
        f"= {t['ratio']:.2f}x  →  {verdict(t['met'])}  ({cold / pair:.2f}x two bare at once)"
    )
    t = targets[f"crash_noticed_le_{TARGET_CRASH_MS:g}ms"]
    print(
        f"  kill -9 → caller's error <= {TARGET_CRASH_MS:g} ms:  {crash:.1f} ms (median; max "
        f"{max(noticed):.1f})  →  {verdict(t['met'])}"
    )
    return {
        "rows": rows,
        "reference": {
            "bare_spawn_s": bare,
            "bare_spawn_pair_s": pair,
            "samples": refs,
        },
        "crash": {"runs": crashes, "noticed_ms": crash, "replaced_ms": statistics.median(replaced)},
        "targets": targets,
        "skipped": skipped,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write results here")
    parser.add_argument("--reps", type=int, help="repetitions (default 3; 1 with --quick)")
    args = parser.parse_args()
    opts: Opts = (
        {
            "reps": 1,
            "latency_calls": 200,
            "per_caller": 4,
            "echo_calls": 4,
            "warmup_calls": 20,
            "crash_reps": 2,
            "cold_extra": 0,
            "warm_pass": False,
        }
        if args.quick
        else {
            "reps": 3,
            "latency_calls": 1500,
            "per_caller": 40,
            "echo_calls": 16,
            "warmup_calls": 200,
            "crash_reps": 5,
            "cold_extra": 3,
            "warm_pass": True,
        }
    )
    if args.reps is not None:
        opts["reps"] = args.reps

    t0 = time.perf_counter()
    load_before = os.getloadavg()
    peers, skipped = make_peers()
    refs, crashes = run(peers, opts)
    summary = report(peers, skipped, refs, crashes, opts)
    left = children(live=False)
    wall = time.perf_counter() - t0
    load = [round(x, 2) for x in (load_before[0], os.getloadavg()[0])]
    print(
        f"\nwall time {wall:.1f} s; child processes left: {len(left)}; "
        f"load average (1 min) {load[0]:.2f} before, {load[1]:.2f} after, on {os.cpu_count()} CPUs"
    )
    for pid, line in left:
        print(f"  left running: {pid} {line}", file=sys.stderr)

    if args.json is not None:
        meta = {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "versions": versions("snakepit", "grpcio", "protobuf", "anyio", "pebble", "loky"),
            "quick": args.quick,
            "workers": WORKERS,
            "inflight": INFLIGHT,
            "payload_bytes": MIB,
            "cpu_method": (
                "host: resource.getrusage(RUSAGE_SELF) utime+stime; workers: utime+stime "
                "from /proc/<pid>/stat of every live child but resource trackers"
            ),
            "wall_s": wall,
            "loadavg_1min_before_after": load,
            "children_left": [f"{pid} {line}" for pid, line in left],
            **opts,
        }
        result = {"meta": meta, **summary}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if left:
        sys.exit(1)


if __name__ == "__main__":
    main()
