"""snakepit.Pool vs other process pools: latency, throughput, 1 MiB echo, CPU, cold start, crashes.

Usage::

    python benchmarks/pool_vs_peers.py [--quick] [--json PATH] [--reps N]

Every row is a pool of 2 worker processes called from asyncio host code:

* ``snakepit.Pool("snakepit.testing.adapters:Echo", size=2)``, the headline
  row: the Pool's defaults (its worker loop "auto": uvloop when installed),
  ``pool.execute`` of the sync ``noop_sync`` tool (what issue #15's targets
  are about), the sync ``echo`` for the echo; the same with
  ``worker_loop="asyncio"``; the same with ``start_method="spawn"``; and, for
  information, the async ``noop`` / ``aecho`` tools (on the worker's event
  loop), with the default ``max_concurrency`` (1) and with 8;
* the raw-UDS limit: the host and 2 child processes exchanging
  length-prefixed messages over ``socketpair(AF_UNIX)`` (``_uds_child.py``: a
  blocking loop, no asyncio, that sends each message back); the noop is an
  empty message, the echo the 1 MiB payload. The host is asyncio (a
  ``BufferedProtocol`` per child, each call a future) as for every other row:
  the callers are asyncio tasks, so this is the floor for any pool called from
  asyncio on this machine (a plain thread in a blocking loop would be lower,
  but no asyncio caller can reach it). A call goes at once to the child with
  fewer calls outstanding, sent ahead of the replies (pipelined, as a pool
  that prefetches does); one caller is a plain ping-pong;
* ``loop.run_in_executor(ProcessPoolExecutor(2), noop)``;
* ``anyio.to_process.run_sync(noop, limiter=CapacityLimiter(2))``;
* ``multiprocessing.Pool(2).apply_async(noop, callback=..., error_callback=...)``,
  the callback resolving an asyncio future (``call_soon_threadsafe``);
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
* 1 MiB echo, MiB/s: sequential round trips of a 1 MiB ``bytes`` ("seq"), and
  8 caller tasks each making sequential round trips ("@8"); 1 MiB out and
  back counts as 1 MiB;
* CPU µs per call, host and workers, over the sequential latency phase and
  the @64 phase, divided by the calls: the host is ``getrusage(RUSAGE_SELF)``
  (user + system, every thread of this process); the workers are every live
  descendant process that was there when the phase started (workers, and
  snakepit's idle fork server), ``utime + stime`` from ``/proc/<pid>/stat``
  (every thread, in 1/CLK_TCK s ticks); resource trackers left out. The same
  method for every row. ``RUSAGE_CHILDREN`` is no use here: it counts only
  children already reaped;
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

Extra rows (``EXTRA_ROWS``): measurements of their own, each a function
returning an :class:`ExtraRow` (its cells and its targets), printed after the
table; the crash-under-load row of issue #15 goes there.

Targets (issue #15, from the ratios of this run; the headline row): p50 <=
1.0x anyio.to_process's (stretch 0.8x); calls/s @64 >= 1.5x
multiprocessing.Pool's (stretch 2x); 1 MiB echo @8 >= 1.0x
ProcessPoolExecutor's (stretch >= 0.7x the raw-UDS limit); CPU µs per call
@64, host + workers, <= pebble's. And: cold start <= 1.2x a bare worker's
spawn-to-ready; the in-flight caller sees a kill -9 of its worker within 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
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
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
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
#: Callers of the "echo @8" column.
ECHO_INFLIGHT = 8

TARGET_COLD_RATIO = 1.2
TARGET_CRASH_MS = 20.0
# Issue #15's targets: (target, stretch).
TARGET_P50_VS_ANYIO = (1.0, 0.8)  # at most
TARGET_CALLS_VS_MP = (1.5, 2.0)  # at least
TARGET_ECHO8_VS_PPE = 1.0  # at least
TARGET_ECHO8_VS_RAW = 0.7  # at least (the stretch)
TARGET_CPU_VS_PEBBLE = 1.0  # at most

SNAKEPIT = "snakepit.Pool"  # the headline: defaults, sync tools
SNAKEPIT_ASYNCIO = "snakepit loop=asyncio"
SNAKEPIT_SPAWN = "snakepit spawn"
SNAKEPIT_ASYNC = "snakepit async tools"
SNAKEPIT_MC = f"snakepit async mc={MC_INFO}"
RAW = "raw UDS (limit)"
PPE = "run_in_executor(PPE)"
ANYIO = "anyio.to_process"
MP_POOL = "multiprocessing.Pool"
PEBBLE = "pebble.ProcessPool"
LOKY = "loky (run_in_executor)"
BARE = "bare spawn_worker"
BARE_PAIR = "bare spawn_worker x2"

METRICS = (
    "p50_us",
    "p99_us",
    "calls_per_s",
    "mib_per_s",
    "mib8_per_s",
    "cpu_seq_host_us",
    "cpu_seq_workers_us",
    "cpu_64_host_us",
    "cpu_64_workers_us",
    "cold_s",
)

Call = Callable[[], Awaitable[Any]]
Echo = Callable[[bytes], Awaitable[Any]]
Opts = dict[str, Any]


@dataclass(frozen=True)
class Calls:
    """How to call one open pool: a noop, and a 1 MiB echo."""

    noop: Call
    echo: Echo


Opener = Callable[[], contextlib.AbstractAsyncContextManager[Calls]]


@dataclass(frozen=True)
class Target:
    """One target line: what is compared, the verdict, the numbers (for the JSON)."""

    name: str
    line: str
    met: bool
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExtraRow:
    """A row that measures something of its own (see ``EXTRA_ROWS``).

    ``cells``: what to print after its name, in order (name → value); the JSON
    has them as they are. ``targets``: its target lines, printed with the others.
    """

    name: str
    cells: dict[str, Any]
    targets: list[Target] = field(default_factory=list)


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
async def open_snakepit(*, sync: bool = True, **options: Any) -> AsyncIterator[Calls]:
    """A Pool of the Echo adapter: its defaults but ``options``; sync or async tools."""
    from snakepit.pool import Pool

    noop, echo_tool = ("noop_sync", "echo") if sync else ("noop", "aecho")
    async with Pool(ADAPTER, size=WORKERS, **options) as pool:

        async def echo(data: bytes) -> Any:
            return await pool.execute(echo_tool, {"value": data})

        yield Calls(functools.partial(pool.execute, noop), echo)


HEADER = struct.Struct("!I")
#: The raw row's receive buffer: replies smaller than this are read many at once.
RAW_BUFFER = 256 * 1024


class RawConnection(asyncio.BufferedProtocol):
    """The host's end of the raw row: length-prefixed messages, replies in order.

    Small replies are read many at a time into one buffer; a large one
    straight into a buffer of its size (one copy: the kernel's).
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.buf = bytearray(RAW_BUFFER)
        self.start = self.end = 0
        self.body: bytearray | None = None  # a large reply being received
        self.got = 0
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        for future in self.waiting:
            if not future.done():
                future.set_exception(ConnectionError("the raw child went away"))
        if not self.lost.done():
            self.lost.set_result(None)

    def call(self, payload: bytes) -> asyncio.Future[Any]:
        assert self.transport is not None
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        header = HEADER.pack(len(payload))
        if len(payload) < RAW_BUFFER:
            self.transport.write(header + payload)
        else:  # no copy of a large payload into a new bytes
            self.transport.write(header)
            self.transport.write(payload)
        return future

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.body is not None:
            return memoryview(self.body)[self.got :]
        if self.end == len(self.buf):  # only a partial header can be left over here
            left = self.buf[self.start : self.end]
            self.buf[: len(left)] = left
            self.start, self.end = 0, len(left)
        return memoryview(self.buf)[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        if self.body is not None:
            self.got += nbytes
            if self.got == len(self.body):
                body, self.body = self.body, None
                self.waiting.popleft().set_result(body)
            return
        self.end += nbytes
        buf = self.buf
        while self.end - self.start >= HEADER.size:
            size = HEADER.unpack_from(buf, self.start)[0]
            first = self.start + HEADER.size
            if self.end - first >= size:
                self.start = first + size
                self.waiting.popleft().set_result(bytes(buf[first : self.start]))
                continue
            if HEADER.size + size > len(buf):  # large: its own buffer, filled in place
                self.body = bytearray(size)
                self.got = self.end - first
                self.body[: self.got] = buf[first : self.end]
                self.start = self.end = 0
            break
        if self.start == self.end:
            self.start = self.end = 0
        elif self.end == len(buf) and self.body is None:
            left = buf[self.start : self.end]
            buf[: len(left)] = left
            self.start, self.end = 0, len(left)


UDS_CHILD = str(Path(__file__).resolve().parent / "_uds_child.py")


def start_raw_child(fd: int) -> subprocess.Popen[bytes]:
    """``_uds_child.py`` serving its end of a socketpair, ``fd``."""
    return subprocess.Popen([sys.executable, UDS_CHILD, str(fd)], pass_fds=[fd])


def reap_raw_child(child: subprocess.Popen[bytes]) -> None:
    """Wait for a raw child to exit (it does on EOF), or kill it."""
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


@contextlib.asynccontextmanager
async def open_raw() -> AsyncIterator[Calls]:
    """The raw-UDS limit: ``WORKERS`` children of ``_uds_child.py``, one socketpair each."""
    loop = asyncio.get_running_loop()
    children_: list[subprocess.Popen[bytes]] = []
    connections: list[RawConnection] = []
    try:
        for _ in range(WORKERS):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            with theirs:
                children_.append(start_raw_child(theirs.fileno()))
            _, protocol = await loop.create_unix_connection(RawConnection, sock=ours)
            connections.append(protocol)

        def call(payload: bytes) -> asyncio.Future[Any]:
            return min(connections, key=lambda c: len(c.waiting)).call(payload)

        yield Calls(functools.partial(call, b""), call)
    finally:
        for connection in connections:
            if connection.transport is not None:
                connection.transport.close()
            await connection.lost
        for child in children_:
            reap_raw_child(child)


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
        Peer(SNAKEPIT_ASYNCIO, functools.partial(open_snakepit, worker_loop="asyncio"), "snakepit"),
        Peer(SNAKEPIT_SPAWN, functools.partial(open_snakepit, start_method="spawn"), "snakepit"),
        Peer(SNAKEPIT_ASYNC, functools.partial(open_snakepit, sync=False), "snakepit"),
        Peer(
            SNAKEPIT_MC,
            functools.partial(open_snakepit, sync=False, max_concurrency=MC_INFO),
            "snakepit",
        ),
        Peer(RAW, open_raw, None),
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
    """CPU seconds of the host, and of the descendant processes alive when it started."""

    def __init__(self) -> None:
        self.pids = [pid for pid, _ in children()]
        self.start = self.now()

    def now(self) -> tuple[float, float]:
        return host_cpu_s(), sum(child_cpu_s(pid) for pid in self.pids)

    def per_call_us(self, calls: int) -> tuple[float, float]:
        """Host and workers: CPU µs per call since the start."""
        (host0, workers0), (host1, workers1) = self.start, self.now()
        return (host1 - host0) / calls * 1e6, (workers1 - workers0) / calls * 1e6


# --- measurements ---------------------------------------------------------------------------


async def measure_latency(call: Call, n: int) -> tuple[float, float, tuple[float, float]]:
    """``n`` sequential calls; their p50 and p99 in µs, and CPU µs per call (host, workers)."""
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


async def measure_throughput(call: Call, per_caller: int) -> tuple[float, tuple[float, float]]:
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


async def measure_echo_inflight(echo: Echo, per_caller: int) -> float:
    """``ECHO_INFLIGHT`` caller tasks, ``per_caller`` sequential 1 MiB echoes each; MiB/s."""
    start = asyncio.Event()

    async def caller() -> None:
        await start.wait()
        for _ in range(per_caller):
            await echo(PAYLOAD)

    async with asyncio.TaskGroup() as tg:
        for _ in range(ECHO_INFLIGHT):
            tg.create_task(caller())
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        start.set()
    return ECHO_INFLIGHT * per_caller / (time.perf_counter() - t0)


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
        gc.collect()
        mib8_per_s = await measure_echo_inflight(calls.echo, opts["echo8_per_caller"])
    values = (p50, p99, per_s, mib_per_s, mib8_per_s, *cpu_seq, *cpu_64, cold)
    if record:
        for metric, value in zip(METRICS, values, strict=True):
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


# --- extra rows ------------------------------------------------------------------------------
#
# EXTRA_ROWS: each entry is an async function taking the run's ``opts`` and
# returning an ExtraRow; run() calls each once, in its own asyncio.run, after
# the crash runs, and report() prints their cells after the table and their
# targets among the others (the JSON has them under "extra_rows").
#
# The crash-under-load row (issue #15): see crash_under_load.

ExtraRowFn = Callable[[Opts], Coroutine[Any, Any, ExtraRow]]

RECORDING_ADAPTER = "_crash_tools:Recording"


def read_runs(path: str) -> collections.Counter[int]:
    """How many times each call id is in the file ``record`` appends to."""
    return collections.Counter(int(line) for line in Path(path).read_bytes().split())


async def crash_under_load(opts: Opts) -> ExtraRow:
    """Kill -9 a busy worker again and again under 64 callers; count outcomes and double runs.

    Each call runs ``record`` (it appends its id to a file first, then spins);
    a worker is killed after every ``kill_every`` settled calls. Outcomes: the
    call returned; ``WorkerCrashed`` with its id in the file (it started: the
    rule); ``WorkerCrashed`` with its id absent; anything else. An id in the
    file twice is a call that ran twice (the rule: never). A worker runs one
    call at a time, so a kill may fail one started call at most: more crashes
    than kills would be calls reported crashed that had not started (the rule
    wants them run elsewhere). A crashed call absent from the file is the one
    whose kill came between its start and its tool's first line.
    """
    from snakepit.errors import WorkerCrashed
    from snakepit.pool import Pool

    total, kill_every = opts["crash_load_calls"], opts["crash_load_kill_every"]
    scratch = tempfile.mkdtemp(prefix="sp-crashload-")
    path = os.path.join(scratch, "ran")
    outcomes: dict[int, str] = {}
    kills = 0
    logging.getLogger("snakepit.pool").setLevel(logging.CRITICAL)
    try:
        async with Pool(
            RECORDING_ADAPTER, size=WORKERS, max_restarts=10_000, cwd=str(Path(__file__).parent)
        ) as pool:
            ids = iter(range(total))
            settled = asyncio.Event()

            async def caller() -> None:
                for call_id in ids:
                    try:
                        await pool.execute("record", {"path": path, "call_id": call_id})
                        outcomes[call_id] = "returned"
                    except WorkerCrashed:
                        outcomes[call_id] = "crashed"
                    except Exception as exc:
                        outcomes[call_id] = type(exc).__name__
                    settled.set()

            async def killer() -> None:
                nonlocal kills
                next_kill = kill_every
                while len(outcomes) < total:
                    await settled.wait()
                    settled.clear()
                    if len(outcomes) < next_kill:
                        continue
                    next_kill += kill_every
                    busy = [w.pid for w in pool.workers() if w.ready and w.in_flight and w.pid]
                    if busy:
                        os.kill(busy[kills % len(busy)], signal.SIGKILL)
                        kills += 1

            callers = [asyncio.create_task(caller()) for _ in range(INFLIGHT)]
            kill_task = asyncio.create_task(killer())
            await asyncio.gather(*callers)
            kill_task.cancel()
        runs = read_runs(path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    counts = collections.Counter(outcomes.values())
    started_crashed = sum(1 for i, o in outcomes.items() if o == "crashed" and runs[i])
    unstarted_crashed = counts["crashed"] - started_crashed
    twice = sum(1 for n in runs.values() if n > 1)
    returned_unrun = sum(1 for i, o in outcomes.items() if o == "returned" and not runs[i])
    other = total - counts["returned"] - counts["crashed"]
    cells = {
        "calls": total,
        "kills": kills,
        "returned": counts["returned"],
        "WorkerCrashed (started)": started_crashed,
        "WorkerCrashed (not in the file)": unstarted_crashed,
        "other errors": other,
        "ran twice": twice,
    }
    exact = twice == 0 and counts["crashed"] <= kills and other == 0 and returned_unrun == 0
    return ExtraRow(
        "crash under load (kill -9 of a busy worker, 64 callers, 2 workers)",
        cells,
        [
            Target(
                "crash_under_load_exact",
                "kill -9 under load: every started call -> WorkerCrashed, every not-started "
                f"call completed elsewhere, no call twice: {kills} kills, "
                f"{counts['crashed']} crashed (at most one per kill; {unstarted_crashed} of "
                f"them killed before the tool's first line), {other} other errors, "
                f"{twice} ran twice",
                exact,
                {**cells, "returned but never ran": returned_unrun},
            )
        ],
    )


EXTRA_ROWS: list[ExtraRowFn] = [crash_under_load]


# --- the run ------------------------------------------------------------------------------------


def run(
    peers: list[Peer], opts: Opts
) -> tuple[dict[str, list[float]], list[dict[str, Any]], list[ExtraRow]]:
    """Every row in turn, ``reps`` times, each in its own event loop; the crash runs; the extras.

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
    crashes = asyncio.run(crash_runs(opts))
    return refs, crashes, [asyncio.run(extra(opts)) for extra in EXTRA_ROWS]


# --- report --------------------------------------------------------------------------------------


CPU_METHOD = (
    "host: resource.getrusage(RUSAGE_SELF) utime+stime (every thread); workers: utime+stime "
    "from /proc/<pid>/stat of every live descendant process when the phase started "
    "(workers, snakepit's fork server) but resource trackers; per call"
)


def worker_loop_auto() -> str:
    """What a snakepit worker's loop "auto" is here (uvloop when importable)."""
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


def _cpu_total(row: dict[str, Any], phase: str) -> float | None:
    host, workers = row[f"cpu_{phase}_host_us"], row[f"cpu_{phase}_workers_us"]
    return None if host is None or workers is None else host + workers


def issue15_targets(by_row: dict[str, dict[str, Any]]) -> list[Target]:
    """Issue #15's targets, from the ratios of this run (the headline row against the others)."""
    sp = by_row[SNAKEPIT]
    targets = []

    def compare(
        name: str,
        what: str,
        mine: float | None,
        theirs: float | None,
        unit: str,
        bound: float,
        *,
        at_most: bool,
        spec: str = ",.0f",
    ) -> Target:
        if mine is None or not theirs:
            return Target(name, f"{what}: not measured (row missing)", False, {})
        r = mine / theirs
        met = r <= bound if at_most else r >= bound
        sign = "<=" if at_most else ">="
        line = f"{what} {sign} {bound:g}x: {mine:{spec}} vs {theirs:{spec}} {unit} = {r:.2f}x"
        return Target(name, line, met, {"snakepit": mine, "other": theirs, "ratio": r})

    anyio_p50 = by_row.get(ANYIO, {}).get("p50_us")
    for i, bound in enumerate(TARGET_P50_VS_ANYIO):
        targets.append(
            compare(
                f"p50_le_{bound:g}x_anyio" + ("_stretch" if i else ""),
                ("  stretch: " if i else "") + "p50 one caller vs anyio.to_process",
                sp["p50_us"],
                anyio_p50,
                "µs",
                bound,
                at_most=True,
            )
        )
    mp_calls = by_row.get(MP_POOL, {}).get("calls_per_s")
    for i, bound in enumerate(TARGET_CALLS_VS_MP):
        targets.append(
            compare(
                f"calls_ge_{bound:g}x_mp_pool" + ("_stretch" if i else ""),
                ("  stretch: " if i else "") + f"calls/s @{INFLIGHT} vs multiprocessing.Pool",
                sp["calls_per_s"],
                mp_calls,
                "/s",
                bound,
                at_most=False,
            )
        )
    targets.append(
        compare(
            f"echo8_ge_{TARGET_ECHO8_VS_PPE:g}x_ppe",
            f"1 MiB echo @{ECHO_INFLIGHT} vs run_in_executor(PPE)",
            sp["mib8_per_s"],
            by_row.get(PPE, {}).get("mib8_per_s"),
            "MiB/s",
            TARGET_ECHO8_VS_PPE,
            at_most=False,
        )
    )
    targets.append(
        compare(
            f"echo8_ge_{TARGET_ECHO8_VS_RAW:g}x_raw_stretch",
            f"  stretch: 1 MiB echo @{ECHO_INFLIGHT} vs the raw-UDS limit",
            sp["mib8_per_s"],
            by_row.get(RAW, {}).get("mib8_per_s"),
            "MiB/s",
            TARGET_ECHO8_VS_RAW,
            at_most=False,
        )
    )
    pebble_row = by_row.get(PEBBLE)
    targets.append(
        compare(
            "cpu_64_le_pebble",
            f"CPU µs/call @{INFLIGHT} (host + workers) vs pebble",
            _cpu_total(sp, "64"),
            None if pebble_row is None else _cpu_total(pebble_row, "64"),
            "µs",
            TARGET_CPU_VS_PEBBLE,
            at_most=True,
        )
    )
    return targets


def report(
    peers: list[Peer],
    skipped: list[str],
    refs: dict[str, list[float]],
    crashes: list[dict[str, Any]],
    extras: list[ExtraRow],
    opts: Opts,
) -> dict[str, Any]:
    by_name = {p.name: p for p in peers}
    rows = []
    for p in peers:
        row: dict[str, Any] = {"peer": p.name, **{m: p.median(m) for m in METRICS}}
        row["p50_vs_anyio"] = ratio(row["p50_us"], by_name[ANYIO].median("p50_us"))
        row["calls_vs_mp_pool"] = ratio(row["calls_per_s"], by_name[MP_POOL].median("calls_per_s"))
        row["p50_vs_ppe"] = ratio(row["p50_us"], by_name[PPE].median("p50_us"))
        row["calls_vs_ppe"] = ratio(row["calls_per_s"], by_name[PPE].median("calls_per_s"))
        row["samples"] = p.samples
        rows.append(row)
    by_row = {row["peer"]: row for row in rows}

    width = max(23, *(len(p.name) for p in peers))
    header = (
        f"{'pool (2 workers)':<{width}} │ {'p50 µs':>7} {'p99 µs':>7} {'xanyio':>6} │ "
        f"{'calls/s':>7} {'x mp':>5} │ {'1 MiB echo MiB/s':>11} │ "
        f"{'CPU µs/call host+workers':>24} │ {'cold s':>6}"
    )
    sub = (
        f"{'':<{width}} │ {'':>7} {'':>7} {'':>6} │ {'@64':>7} {'':>5} │ {'seq':>7} "
        f"{'@8':>8} │ {'seq':>11} {'@64':>12} │"
    )
    rule = "─" * len(header)
    print()
    print(
        f"Process pools of {WORKERS} workers, asyncio host (median of {opts['reps']} repetitions)"
    )
    print(
        f"  latency: {opts['latency_calls']} sequential noop calls, 1 caller │ throughput: "
        f"{INFLIGHT} callers x {opts['per_caller']} calls │ echo: {opts['echo_calls']} "
        f"sequential 1 MiB round trips, and {ECHO_INFLIGHT} callers x "
        f"{opts['echo8_per_caller']} │ cold: pool created → first call returned "
        f"({opts['reps'] + opts['cold_extra']} samples)"
    )
    print(rule)
    print(header)
    print(sub)
    print(rule)

    def cpu(row: dict[str, Any], phase: str) -> str:
        host, workers = row[f"cpu_{phase}_host_us"], row[f"cpu_{phase}_workers_us"]
        return f"{fmt(host, ',.0f', 5)}+{fmt(workers, ',.0f', 5)}"

    for row in rows:
        print(
            f"{row['peer']:<{width}} │ {fmt(row['p50_us'], ',.0f', 7)} "
            f"{fmt(row['p99_us'], ',.0f', 7)} {fmt(row['p50_vs_anyio'], '.2f', 6)} │ "
            f"{fmt(row['calls_per_s'], ',.0f', 7)} {fmt(row['calls_vs_mp_pool'], '.2f', 5)} │ "
            f"{fmt(row['mib_per_s'], ',.0f', 7)} {fmt(row['mib8_per_s'], ',.0f', 8)} │ "
            f"{cpu(row, 'seq'):>11} {cpu(row, '64'):>12} │ {fmt(row['cold_s'], '.3f', 6)}"
        )
    print(rule)
    bare = statistics.median(refs[BARE])
    pair = statistics.median(refs[BARE_PAIR])
    print(f"{BARE + ', spawn → ready line':<48} {bare:.3f} s (the cold-start reference)")
    print(f"{BARE_PAIR + ' at once, spawn → both ready':<48} {pair:.3f} s")
    print(
        "  xanyio: p50 / anyio.to_process's (lower is better); x mp: calls/s / "
        "multiprocessing.Pool's (apply_async + callback; higher is better)"
    )
    print(
        f"  {SNAKEPIT} (the headline): Pool defaults (worker loop auto = {worker_loop_auto()}), "
        "the sync noop_sync / echo tools"
    )
    print(
        f"  {SNAKEPIT_ASYNCIO}: worker_loop='asyncio'; {SNAKEPIT_SPAWN}: start_method='spawn'; "
        f"{SNAKEPIT_ASYNC}: the async noop / aecho; {SNAKEPIT_MC}: the same with "
        f"max_concurrency={MC_INFO} (for information)"
    )
    print(
        f"  {RAW}: the asyncio host and {WORKERS} blocking child loops echoing length-prefixed "
        "messages over socketpair(AF_UNIX), pipelined: the floor for an asyncio caller"
    )
    print("  the others: noop / echo in _transport_fns.py (spawn start method; loky: its own)")
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
    for extra in extras:
        print()
        print(f"{extra.name}: " + "; ".join(f"{k} {v}" for k, v in extra.cells.items()))

    cold = by_row[SNAKEPIT]["cold_s"] or 0.0
    crash = statistics.median(noticed)
    targets = issue15_targets(by_row)
    targets.append(
        Target(
            f"cold_le_{TARGET_COLD_RATIO:g}x_bare",
            f"cold start <= {TARGET_COLD_RATIO:g}x bare spawn-to-ready: {cold:.3f} s vs "
            f"{bare:.3f} s = {cold / bare:.2f}x ({cold / pair:.2f}x two bare at once)",
            cold <= TARGET_COLD_RATIO * bare,
            {"snakepit_s": cold, "bare_s": bare, "ratio": cold / bare},
        )
    )
    targets.append(
        Target(
            f"crash_noticed_le_{TARGET_CRASH_MS:g}ms",
            f"kill -9 → caller's error <= {TARGET_CRASH_MS:g} ms: {crash:.1f} ms (median; "
            f"max {max(noticed):.1f})",
            crash <= TARGET_CRASH_MS,
            {"median_ms": crash, "max_ms": max(noticed)},
        )
    )
    for extra in extras:
        targets.extend(extra.targets)
    print()
    print(f"targets ({SNAKEPIT}, the headline row)")
    for t in targets:
        print(f"  {t.line:<92} →  {verdict(t.met)}")
    return {
        "rows": rows,
        "reference": {
            "bare_spawn_s": bare,
            "bare_spawn_pair_s": pair,
            "samples": refs,
        },
        "crash": {"runs": crashes, "noticed_ms": crash, "replaced_ms": statistics.median(replaced)},
        "extra_rows": [
            {"name": e.name, "cells": e.cells, "targets": [t.name for t in e.targets]}
            for e in extras
        ],
        "targets": {t.name: {**t.data, "line": t.line, "met": t.met} for t in targets},
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
            "echo8_per_caller": 1,
            "warmup_calls": 20,
            "crash_reps": 2,
            "crash_load_calls": 2_000,
            "crash_load_kill_every": 200,
            "cold_extra": 0,
            "warm_pass": False,
        }
        if args.quick
        else {
            "reps": 3,
            "latency_calls": 1500,
            "per_caller": 40,
            "echo_calls": 16,
            "echo8_per_caller": 4,
            "warmup_calls": 200,
            "crash_reps": 5,
            "crash_load_calls": 20_000,
            "crash_load_kill_every": 500,
            "cold_extra": 3,
            "warm_pass": True,
        }
    )
    if args.reps is not None:
        opts["reps"] = args.reps

    t0 = time.perf_counter()
    load_before = os.getloadavg()
    peers, skipped = make_peers()
    refs, crashes, extras = run(peers, opts)
    summary = report(peers, skipped, refs, crashes, extras, opts)
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
            "versions": versions(
                "snakepit", "grpcio", "protobuf", "anyio", "pebble", "loky", "uvloop"
            ),
            "snakepit_worker_loop_auto": worker_loop_auto(),
            "quick": args.quick,
            "workers": WORKERS,
            "inflight": INFLIGHT,
            "payload_bytes": MIB,
            "cpu_method": CPU_METHOD,
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
