"""Sessions: a pinned call vs an unpinned one, and session create+delete, on memory and Redis.

Usage::

    python benchmarks/sessions.py [--quick] [--json PATH] [--reps N] [--profile]

A pool of 2 worker processes (``snakepit.testing.adapters:Echo``), asyncio
host, calling the async ``noop`` tool, for each session backend: the memory
backend (the default), and Redis (a ``redis-server`` started for the run on a
unix socket in a temp dir, by the tests' helper ``tests/_redis.py``; skipped,
with the reason printed, when ``redis-server`` or the ``redis`` package is
missing). Columns:

* p50 µs: sequential calls from one caller. unpinned: ``pool.execute("noop")``;
  pinned: ``pool.execute("noop", session_id=...)`` of one session with
  ``hint`` affinity (every call touches the session in the store, then takes
  its worker's slot). The two are measured in the same pool, in alternating
  blocks of calls, so that drift (the machine's load) hits both alike;
* calls/s @64: 64 caller tasks making sequential calls. pinned: 64 sessions
  (``hint``), one per caller; with 2 workers a session's own worker is often
  busy, so many of these calls take another worker and re-pin the session;
* create+delete/s: ``async with pool.session(): pass`` in a loop (a create and
  a delete in the store, the delete's ``on_session_end`` sent to no worker).

A second table: a session's variables from the host (``s.variables``): p50 of
sequential ``get`` and ``set`` of an integer variable, and ``update`` (a
compare-and-set, retried when another write came first) per second with 64
tasks incrementing that one variable at once. From inside a tool through the
bridge: the third table. A third table: p50 of a call whose tool calls a
host tool (``ctx.call_host`` of a host function that returns at once, through
the pool's bridge: its framed lane), a sync one (the host runs it in a thread)
and an async one, and of a call whose tool sets a variable of its session
through the bridge (``bridge_set``: one ``SetVariablesRequest``, until
``ctx.session.variables`` wraps it); next to the p50 of a plain call (pinned
to the same session for the set), measured in alternating blocks: what the
bridge's round trip adds.

Each repetition runs every backend in its own ``asyncio.run`` with a pool of
its own (created, warmed up, measured, closed); the median over repetitions
is reported, and the ratio pinned / unpinned of those medians (p50: lower is
better; calls/s: higher is better).

Target: on the memory backend a pinned call costs <= 1.1x an unpinned one
(p50). ``--profile`` also times ``SessionStoreRef.touch``,
``SessionRouter.take_slot`` and ``SessionStoreRef.pin`` (the steps a pinned
call adds; a ``hint`` call that takes another worker re-pins) in a pool of
each backend: sequential pinned calls, then @64 with 64 ``hint`` sessions and
with 64 ``strict_queue`` ones (which never re-pin), and prints how many
times each ran and its mean and p50 wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _report import fmt, ratio, verdict, versions

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
# Echo, plus tools that call the host (benchmarks/_bridge_tools.py: the pool's cwd is here).
ADAPTER = "_bridge_tools:BridgeCaller"
WORKERS = 2
INFLIGHT = 64
#: Calls per block of the alternating latency measurement.
BLOCK = 100

TARGET_PINNED_RATIO = 1.1

MEMORY = "memory"
REDIS = "redis"

METRICS = (
    "unpinned_p50_us",
    "pinned_p50_us",
    "unpinned_calls_per_s",
    "pinned_calls_per_s",
    "create_delete_per_s",
    "var_get_p50_us",
    "var_set_p50_us",
    "var_update64_per_s",
    "call_host_p50_us",
    "call_host_async_p50_us",
    "plain_p50_us",
    "bridge_set_p50_us",
    "pinned_plain_p50_us",
    "tool_cached_read_us",
    "tool_cached_read_async_us",
    "tool_cold_read_us",
    "tool_set_us",
)

#: A cached read of a variable inside a tool costs at most this (µs).
TARGET_CACHED_READ_US = 5.0
#: A variable set inside a tool costs at most this many pool execute round trips.
TARGET_SET_RATIO = 2.0

Opts = dict[str, Any]
Call = Callable[[], Awaitable[Any]]


@dataclass
class Row:
    """One backend: its samples of every metric, one per repetition."""

    backend: str
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, metric: str, value: float) -> None:
        self.samples.setdefault(metric, []).append(value)

    def median(self, metric: str) -> float | None:
        values = self.samples.get(metric)
        return statistics.median(values) if values else None


# --- the backends ---------------------------------------------------------------------------


def redis_missing() -> str | None:
    """Why Redis cannot be benchmarked here, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (`make test` installs Debian's package)"
    try:
        import redis.asyncio  # noqa: F401
    except ImportError:
        return "the redis package is missing: pip install 'snakepit[redis]'"
    return None


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server for the run (the tests' helper); its ``unix://`` URL."""
    sys.path.insert(0, str(ROOT))
    from tests._redis import redis_server as start

    with start() as server:
        yield server.url


@contextlib.asynccontextmanager
async def session_backend(backend: str, redis_url: str | None) -> AsyncIterator[Any]:
    """A fresh backend of that kind (Redis: its own namespace, its keys deleted after)."""
    from snakepit.session import MemoryBackend

    if backend == MEMORY:
        yield MemoryBackend()
        return
    import uuid

    import redis.asyncio

    from snakepit.session import RedisBackend

    assert redis_url is not None
    store = RedisBackend(redis_url, namespace=f"bench-{uuid.uuid4().hex}")
    try:
        yield store
    finally:
        await store.aclose()
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await client.delete(*store.keys)
        finally:
            await client.aclose()


@contextlib.asynccontextmanager
async def open_pool(backend: str, redis_url: str | None) -> AsyncIterator[Any]:
    from snakepit.pool import Pool
    from snakepit.session import SessionStoreConfig

    async with (
        session_backend(backend, redis_url) as store,
        Pool(
            ADAPTER,
            size=WORKERS,
            sessions=SessionStoreConfig(backend=store),
            cwd=BENCHMARKS,
        ) as pool,
    ):
        yield pool


# --- measurements ---------------------------------------------------------------------------


async def measure_latency_pair(unpinned: Call, pinned: Call, n: int) -> tuple[float, float]:
    """``n`` sequential calls of each, in alternating blocks of BLOCK; the p50 of each in µs."""
    clock = time.perf_counter_ns
    samples: dict[bool, list[int]] = {False: [], True: []}
    block = 0
    while len(samples[True]) < n:
        for is_pinned in (False, True) if block % 2 == 0 else (True, False):
            call = pinned if is_pinned else unpinned
            out = samples[is_pinned]
            for _ in range(min(BLOCK, n - len(out))):
                t0 = clock()
                await call()
                out.append(clock() - t0)
        block += 1
    return statistics.median(samples[False]) / 1e3, statistics.median(samples[True]) / 1e3


async def measure_throughput(calls: Sequence[Call], per_caller: int) -> float:
    """One caller task per entry of ``calls``, ``per_caller`` sequential calls each: calls/s."""
    start = asyncio.Event()

    async def caller(call: Call) -> None:
        await start.wait()
        for _ in range(per_caller):
            await call()

    async with asyncio.TaskGroup() as tg:
        for call in calls:
            tg.create_task(caller(call))
        await asyncio.sleep(0)  # every caller is now waiting on start
        t0 = time.perf_counter()
        start.set()
    return len(calls) * per_caller / (time.perf_counter() - t0)


async def measure_create_delete(pool: Any, n: int) -> float:
    """``n`` sequential ``async with pool.session(): pass``: sessions per second."""
    t0 = time.perf_counter()
    for _ in range(n):
        async with pool.session():
            pass
    return n / (time.perf_counter() - t0)


async def measure_variables(pool: Any, opts: Opts) -> tuple[float | None, ...]:
    """p50 µs of a variable's get and set from the host, and updates/s @64 on one variable.

    None each where the backend keeps no variables.
    """
    from snakepit.session import VariableBackend

    if not isinstance(pool.sessions._store_config().backend, VariableBackend):
        return None, None, None
    clock = time.perf_counter_ns
    n = opts["latency_calls"]
    async with pool.session() as s:
        v = s.variables
        await v.register("counter", "integer", 0)
        gets: list[int] = []
        sets: list[int] = []
        for i in range(n):
            t0 = clock()
            await v.get("counter")
            t1 = clock()
            await v.set("counter", i)
            sets.append(clock() - t1)
            gets.append(t1 - t0)
        await v.set("counter", 0)
        per_caller = max(1, opts["per_caller"] // 2)
        bump = functools.partial(v.update, "counter", lambda x: x + 1)
        per_s = await measure_throughput([bump] * INFLIGHT, per_caller)
        if await v.get("counter") != INFLIGHT * per_caller:  # no lost update
            raise RuntimeError("update lost an increment")
    return statistics.median(gets) / 1e3, statistics.median(sets) / 1e3, per_s


async def measure_alternating(calls: Sequence[Call], n: int) -> list[float]:
    """``n`` sequential calls of each, in blocks of BLOCK taking turns; the p50 of each in µs."""
    clock = time.perf_counter_ns
    samples: list[list[int]] = [[] for _ in calls]
    block = 0
    while len(samples[-1]) < n:
        order = range(len(calls)) if block % 2 == 0 else reversed(range(len(calls)))
        for i in order:
            call, out = calls[i], samples[i]
            for _ in range(min(BLOCK, n - len(out))):
                t0 = clock()
                await call()
                out.append(clock() - t0)
        block += 1
    return [statistics.median(s) / 1e3 for s in samples]


async def measure_call_host(pool: Any, opts: Opts) -> tuple[float | None, ...]:
    """p50 µs of a call whose async tool calls a host tool that returns at once (a sync
    one, an async one), of a plain call, of a call whose tool sets a variable through
    the bridge and of a plain call pinned to that variable's session."""
    if "ping" not in pool._host_tools.names():

        async def aping() -> None:
            return None

        pool.register_host_tool(lambda: None, name="ping")
        pool.register_host_tool(aping)
    n = opts["latency_calls"]
    plain = functools.partial(pool.execute, "noop")
    sync = functools.partial(pool.execute, "call_host", {"name": "ping"})
    async_ = functools.partial(pool.execute, "call_host", {"name": "aping"})
    for call in (plain, sync, async_):
        for _ in range(opts["warmup_calls"]):
            await call()
    with_host, with_async, plain_p50 = await measure_alternating([sync, async_, plain], n)
    from snakepit.session import VariableBackend

    if not isinstance(pool.sessions._store_config().backend, VariableBackend):
        return with_host, with_async, plain_p50, None, None
    async with pool.session(affinity="hint") as s:
        await s.variables.register("x", "integer", 0)
        bridge_set = functools.partial(s.execute, "bridge_set", {"name": "x", "value": 1})
        pinned = functools.partial(s.execute, "noop")
        for call in (bridge_set, pinned):
            for _ in range(opts["warmup_calls"]):
                await call()
        set_p50, pinned_p50 = await measure_alternating([bridge_set, pinned], n)
    return with_host, with_async, plain_p50, set_p50, pinned_p50


async def measure_tool_variables(pool: Any, opts: Opts) -> tuple[float, ...]:
    """µs per operation timed inside a tool (the median of 3 loops each): a cached read
    from a sync and from an async tool, a read with the cache emptied (a round trip),
    and a set."""
    n_cached = 20 * opts["latency_calls"]
    n_trips = opts["latency_calls"]
    async with pool.session(affinity="hint") as s:
        await s.variables.register("y", "integer", 0)
        found = []
        for tool, n in (
            ("time_reads", n_cached),
            ("time_reads_async", n_cached),
            ("time_cold_reads", n_trips),
            ("time_sets", n_trips),
        ):
            await s.execute(tool, {"name": "y", "n": 10})  # warm
            found.append(
                statistics.median([await s.execute(tool, {"name": "y", "n": n}) for _ in range(3)])
            )
    return tuple(found)


async def run_backend(row: Row, opts: Opts, redis_url: str | None, *, record: bool = True) -> None:
    """Open a pool on the row's backend, warm it up, measure every metric, close it."""
    async with open_pool(row.backend, redis_url) as pool:
        unpinned = functools.partial(pool.execute, "noop")
        async with contextlib.AsyncExitStack() as stack:
            one = await stack.enter_async_context(pool.session(affinity="hint"))
            pinned = functools.partial(pool.execute, "noop", session_id=one.session_id)
            many = [
                await stack.enter_async_context(pool.session(affinity="hint"))
                for _ in range(INFLIGHT)
            ]
            pinned_calls: list[Call] = [
                functools.partial(pool.execute, "noop", session_id=s.session_id) for s in many
            ]
            for _ in range(opts["warmup_calls"]):
                await unpinned()
                await pinned()
            await measure_throughput([unpinned] * INFLIGHT, 2)
            await measure_throughput(pinned_calls, 2)
            await measure_create_delete(pool, opts["warmup_calls"] // 4)

            gc.collect()
            p50_unpinned, p50_pinned = await measure_latency_pair(
                unpinned, pinned, opts["latency_calls"]
            )
            # Alternating order over repetitions, as for the latency blocks.
            gc.collect()
            unpinned_calls: list[Call] = [unpinned] * INFLIGHT
            pinned_first = len(row.samples.get("pinned_calls_per_s", [])) % 2 == 1
            per_s: dict[bool, float] = {}
            for is_pinned in (True, False) if pinned_first else (False, True):
                per_s[is_pinned] = await measure_throughput(
                    pinned_calls if is_pinned else unpinned_calls, opts["per_caller"]
                )
                gc.collect()
            per_s_unpinned, per_s_pinned = per_s[False], per_s[True]
        gc.collect()
        sessions_per_s = await measure_create_delete(pool, opts["create_delete"])
        gc.collect()
        var_get, var_set, var_update = await measure_variables(pool, opts)
        gc.collect()
        bridge = await measure_call_host(pool, opts)
        gc.collect()
        in_tool = await measure_tool_variables(pool, opts)
        if pool.stats().sessions != 0:
            raise RuntimeError(f"{row.backend}: {pool.stats().sessions} sessions left")
    if record:
        values = (
            p50_unpinned,
            p50_pinned,
            per_s_unpinned,
            per_s_pinned,
            sessions_per_s,
            var_get,
            var_set,
            var_update,
            *bridge,
            *in_tool,
        )
        for metric, value in zip(METRICS, values, strict=True):
            if value is not None:
                row.add(metric, value)


# --- profile: the two steps a pinned call adds ------------------------------------------------


@contextlib.contextmanager
def timed(owner: type, name: str, spent: dict[str, list[int]]) -> Iterator[None]:
    """Wrap the coroutine method ``owner.name`` to add each call's wall ns to ``spent[name]``."""
    original = getattr(owner, name)

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter_ns()
        try:
            return await original(*args, **kwargs)
        finally:
            spent.setdefault(name, []).append(time.perf_counter_ns() - t0)

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def summarize(spent: dict[str, list[int]], prefix: str) -> dict[str, float]:
    """Per timed method: calls, mean and p50 wall µs (keys ``{prefix}{name}_n|_mean|_p50``)."""
    result: dict[str, float] = {}
    for name, values in spent.items():
        result[f"{prefix}{name}_n"] = len(values)
        result[f"{prefix}{name}_mean"] = statistics.mean(values) / 1e3
        result[f"{prefix}{name}_p50"] = statistics.median(values) / 1e3
    return result


async def profile_backend(backend: str, redis_url: str | None, opts: Opts) -> dict[str, float]:
    """Time touch, take_slot and pin: sequential pinned calls, then @64 hint and strict_queue.

    Returns each timed method's count, mean and p50 (µs), per phase (``seq_``,
    ``hint64_``, ``strict64_``), the sequential p50s and the @64 calls/s (timers on).
    """
    from snakepit.pool._sessions import SessionRouter
    from snakepit.session import SessionStoreRef

    def timers(spent: dict[str, list[int]]) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(timed(SessionStoreRef, "touch", spent))
        stack.enter_context(timed(SessionStoreRef, "pin", spent))
        stack.enter_context(timed(SessionRouter, "take_slot", spent))
        return stack

    result: dict[str, float] = {}
    async with open_pool(backend, redis_url) as pool, contextlib.AsyncExitStack() as sessions:
        one = await sessions.enter_async_context(pool.session(affinity="hint"))
        unpinned = functools.partial(pool.execute, "noop")
        pinned = functools.partial(pool.execute, "noop", session_id=one.session_id)
        for _ in range(opts["warmup_calls"]):
            await pinned()
        spent: dict[str, list[int]] = {}
        with timers(spent):
            p50_unpinned, p50_pinned = await measure_latency_pair(
                unpinned, pinned, opts["latency_calls"]
            )
        result |= summarize(spent, "seq_")
        result |= {"seq_unpinned_p50": p50_unpinned, "seq_pinned_p50": p50_pinned}
        for affinity in ("hint", "strict_queue"):
            many = [
                await sessions.enter_async_context(pool.session(affinity=affinity))
                for _ in range(INFLIGHT)
            ]
            calls: list[Call] = [
                functools.partial(pool.execute, "noop", session_id=s.session_id) for s in many
            ]
            await measure_throughput(calls, 2)  # pins them
            prefix = "hint64_" if affinity == "hint" else "strict64_"
            spent = {}
            with timers(spent):
                result[prefix + "calls_per_s"] = await measure_throughput(calls, opts["per_caller"])
            result |= summarize(spent, prefix)
        result["unpinned64_calls_per_s"] = await measure_throughput(
            [unpinned] * INFLIGHT, opts["per_caller"]
        )
    return result


# --- the run ------------------------------------------------------------------------------------


def run(rows: list[Row], opts: Opts, redis_url: str | None) -> None:
    """Every backend in turn, ``reps`` times (the order rotated), each in its own event loop."""
    if opts["warm_pass"]:
        light = {**opts, "latency_calls": 200, "per_caller": 4, "create_delete": 50}
        for row in rows:
            asyncio.run(run_backend(row, light, redis_url, record=False))
    for rep in range(opts["reps"]):
        shift = rep % len(rows)
        for row in rows[shift:] + rows[:shift]:
            asyncio.run(run_backend(row, opts, redis_url))


# --- report --------------------------------------------------------------------------------------


def report(rows: list[Row], skipped: list[str], opts: Opts) -> dict[str, Any]:
    results = []
    for row in rows:
        result: dict[str, Any] = {"backend": row.backend, **{m: row.median(m) for m in METRICS}}
        result["p50_ratio"] = ratio(result["pinned_p50_us"], result["unpinned_p50_us"])
        result["calls_ratio"] = ratio(result["pinned_calls_per_s"], result["unpinned_calls_per_s"])
        result["samples"] = row.samples
        results.append(result)

    print()
    print(
        f"Sessions: pool of {WORKERS} workers, async noop, asyncio host "
        f"(median of {opts['reps']} repetitions)"
    )
    print(
        f"  p50: {opts['latency_calls']} sequential calls each, pinned = one hint session, "
        f"alternating blocks of {BLOCK} │ @{INFLIGHT}: {INFLIGHT} callers x "
        f"{opts['per_caller']} calls, pinned = {INFLIGHT} hint sessions │ create+delete: "
        f"{opts['create_delete']} sequential `async with pool.session(): pass`"
    )
    print()
    print(
        "| backend | p50 unpinned µs | p50 pinned µs | pinned/unpinned | calls/s @64 unpinned "
        "| calls/s @64 pinned | pinned/unpinned | create+delete/s |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for r in results:
        print(
            f"| {r['backend']} | {fmt(r['unpinned_p50_us'], ',.0f', 0)} "
            f"| {fmt(r['pinned_p50_us'], ',.0f', 0)} | {fmt(r['p50_ratio'], '.2f', 0)}x "
            f"| {fmt(r['unpinned_calls_per_s'], ',.0f', 0)} "
            f"| {fmt(r['pinned_calls_per_s'], ',.0f', 0)} | {fmt(r['calls_ratio'], '.2f', 0)}x "
            f"| {fmt(r['create_delete_per_s'], ',.0f', 0)} |"
        )
    print()
    print(
        f"Session variables from the host: p50 of {opts['latency_calls']} sequential get / set "
        f"│ update @{INFLIGHT}: {INFLIGHT} tasks incrementing one variable (compare-and-set)"
    )
    print()
    print("| backend | get p50 µs | set p50 µs | update/s @64 on one variable |")
    print("|---|--:|--:|--:|")
    for r in results:
        print(
            f"| {r['backend']} | {fmt(r['var_get_p50_us'], ',.1f', 0)} "
            f"| {fmt(r['var_set_p50_us'], ',.1f', 0)} "
            f"| {fmt(r['var_update64_per_s'], ',.0f', 0)} |"
        )
    print()
    print(
        "A tool calling the host through the bridge: ctx.call_host of a host function that"
        " returns at once (sync: run in a thread; async), and a variable set (bridge_set);"
        " p50 µs, alternating blocks; the ratios to a plain call (the set's: to a plain call"
        " pinned to the same session)"
    )
    print()
    print(
        "| backend | call | call_host sync | ratio | call_host async | ratio "
        "| pinned call | bridge set | ratio |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in results:
        plain = r["plain_p50_us"]
        sync, async_ = r["call_host_p50_us"], r["call_host_async_p50_us"]
        pinned, set_ = r["pinned_plain_p50_us"], r["bridge_set_p50_us"]
        print(
            f"| {r['backend']} | {fmt(plain, ',.0f', 0)} | {fmt(sync, ',.0f', 0)} "
            f"| {fmt(ratio(sync, plain), '.2f', 0)}x | {fmt(async_, ',.0f', 0)} "
            f"| {fmt(ratio(async_, plain), '.2f', 0)}x | {fmt(pinned, ',.0f', 0)} "
            f"| {fmt(set_, ',.0f', 0)} | {fmt(ratio(set_, pinned), '.2f', 0)}x |"
        )
    print()
    print(
        "Session variables from inside a tool (ctx.session.variables), µs per operation timed"
        " in the worker: a cached read (sync tool, async tool), a read with the worker's cache"
        " emptied first (a round trip to the host), a set; the set's ratio to a pinned call"
    )
    print()
    print("| backend | cached read sync | cached read async | cold read | set | set / call |")
    print("|---|--:|--:|--:|--:|--:|")
    for r in results:
        print(
            f"| {r['backend']} | {fmt(r['tool_cached_read_us'], ',.2f', 0)} "
            f"| {fmt(r['tool_cached_read_async_us'], ',.2f', 0)} "
            f"| {fmt(r['tool_cold_read_us'], ',.0f', 0)} | {fmt(r['tool_set_us'], ',.0f', 0)} "
            f"| {fmt(ratio(r['tool_set_us'], r['pinned_plain_p50_us']), '.2f', 0)}x |"
        )
    for line in skipped:
        print(f"\nskipped: {line}")

    memory = next(r for r in results if r["backend"] == MEMORY)
    p50_ratio = memory["p50_ratio"] or 0.0
    targets = {
        f"pinned_p50_le_{TARGET_PINNED_RATIO:g}x_unpinned_memory": {
            "pinned_us": memory["pinned_p50_us"],
            "unpinned_us": memory["unpinned_p50_us"],
            "ratio": p50_ratio,
            "met": p50_ratio <= TARGET_PINNED_RATIO,
        }
    }
    print()
    print("target")
    print(
        f"  a pinned call costs <= {TARGET_PINNED_RATIO:g}x an unpinned one (p50, memory "
        f"backend): {memory['pinned_p50_us']:,.0f} µs vs {memory['unpinned_p50_us']:,.0f} µs "
        f"= {p50_ratio:.2f}x  →  {verdict(p50_ratio <= TARGET_PINNED_RATIO)}"
    )
    print(
        f"  (for information, calls/s @{INFLIGHT} pinned/unpinned on memory: "
        f"{memory['calls_ratio'] or 0.0:.2f}x)"
    )
    for r in results:
        cached = max(r["tool_cached_read_us"] or 0.0, r["tool_cached_read_async_us"] or 0.0)
        set_ratio = ratio(r["tool_set_us"], r["pinned_plain_p50_us"]) or 0.0
        targets[f"cached_read_le_{TARGET_CACHED_READ_US:g}us_{r['backend']}"] = {
            "us": cached,
            "met": cached <= TARGET_CACHED_READ_US,
        }
        targets[f"tool_set_le_{TARGET_SET_RATIO:g}x_call_{r['backend']}"] = {
            "set_us": r["tool_set_us"],
            "call_us": r["pinned_plain_p50_us"],
            "ratio": set_ratio,
            "met": set_ratio <= TARGET_SET_RATIO,
        }
        print(
            f"  {r['backend']}: a cached read inside a tool <= {TARGET_CACHED_READ_US:g} µs:"
            f" {cached:.2f} µs (the slower of sync and async)"
            f"  →  {verdict(cached <= TARGET_CACHED_READ_US)}"
        )
        print(
            f"  {r['backend']}: a set inside a tool <= {TARGET_SET_RATIO:g}x a pool call:"
            f" {r['tool_set_us'] or 0.0:,.0f} µs vs {r['pinned_plain_p50_us'] or 0.0:,.0f} µs"
            f" = {set_ratio:.2f}x  →  {verdict(set_ratio <= TARGET_SET_RATIO)}"
        )
    return {"rows": results, "targets": targets, "skipped": skipped}


def print_profile(profiles: dict[str, dict[str, float]]) -> None:
    print()
    print("profile (timers on): what a pinned call adds; per timed step: calls, mean / p50 µs")
    for backend, p in profiles.items():
        print(f"  {backend}:")
        phases = (
            ("seq_", "sequential, one hint session"),
            ("hint64_", f"@{INFLIGHT}, {INFLIGHT} hint sessions"),
            ("strict64_", f"@{INFLIGHT}, {INFLIGHT} strict_queue sessions"),
        )
        for prefix, label in phases:
            steps = "; ".join(
                f"{name} {int(p[f'{prefix}{name}_n'])}x {p[f'{prefix}{name}_mean']:.0f} / "
                f"{p[f'{prefix}{name}_p50']:.0f}"
                for name in ("touch", "take_slot", "pin")
                if f"{prefix}{name}_n" in p
            )
            print(f"    {label}: {steps}")
        print(
            f"    sequential call p50: unpinned {p['seq_unpinned_p50']:.0f}, pinned "
            f"{p['seq_pinned_p50']:.0f} µs │ calls/s @{INFLIGHT}: unpinned "
            f"{p['unpinned64_calls_per_s']:,.0f}, hint {p['hint64_calls_per_s']:,.0f}, "
            f"strict_queue {p['strict64_calls_per_s']:,.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write results here")
    parser.add_argument("--reps", type=int, help="repetitions (default 3; 1 with --quick)")
    parser.add_argument(
        "--profile", action="store_true", help="also time touch and take_slot per call"
    )
    args = parser.parse_args()
    opts: Opts = (
        {
            "reps": 1,
            "latency_calls": 300,
            "per_caller": 4,
            "create_delete": 200,
            "warmup_calls": 40,
            "warm_pass": False,
        }
        if args.quick
        else {
            "reps": 3,
            "latency_calls": 2000,
            "per_caller": 30,
            "create_delete": 2000,
            "warmup_calls": 200,
            "warm_pass": True,
        }
    )
    if args.reps is not None:
        opts["reps"] = args.reps

    t0 = time.perf_counter()
    load_before = os.getloadavg()
    rows = [Row(MEMORY)]
    skipped = []
    missing = redis_missing()
    with contextlib.ExitStack() as stack:
        redis_url = None
        if missing is None:
            redis_url = stack.enter_context(redis_server())
            rows.append(Row(REDIS))
        else:
            skipped.append(f"redis: {missing}")
        run(rows, opts, redis_url)
        summary = report(rows, skipped, opts)
        if args.profile:
            profiles = {
                r.backend: asyncio.run(profile_backend(r.backend, redis_url, opts)) for r in rows
            }
            print_profile(profiles)
            summary["profile_us"] = profiles
    wall = time.perf_counter() - t0
    load = [round(x, 2) for x in (load_before[0], os.getloadavg()[0])]
    print(
        f"\nwall time {wall:.1f} s; load average (1 min) {load[0]:.2f} before, "
        f"{load[1]:.2f} after, on {os.cpu_count()} CPUs"
    )
    if args.json is not None:
        meta = {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "versions": versions("snakepit", "grpcio", "protobuf", "anyio", "redis"),
            "quick": args.quick,
            "workers": WORKERS,
            "inflight": INFLIGHT,
            "wall_s": wall,
            "loadavg_1min_before_after": load,
            **opts,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, **summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
