"""Where the suite's CPU goes: per test, the test process's and its child processes' CPU.

The suite is CPU-bound on a 2-core machine (its wall time is about its CPU
time over 2), and a shared machine makes wall times (``--durations``) move
by 50% from run to run with what the other tenants run. CPU seconds move
much less, and they count what ``--durations`` misses: the workers, fork
servers and interpreters a test starts. ::

    PYTHONPATH=$PWD:scripts python -m pytest -p suite_cpu -p randomly -n 3 -q tests
    python scripts/suite_cpu.py            # the summary (by file, by test, fixed costs)

Each pytest process appends to ``$SUITE_CPU_DIR/<xdist worker id>.tsv``
(default ``/tmp/suite-cpu``; delete it between runs): per test, the CPU of
the process itself (all threads), of its children reaped during the test,
and the growth of its live children's CPU (theirs and what they reaped:
workers forked by a shared fork server); plus ``START``, ``COLLECTED`` and
``END`` lines with the running totals (start-up and collection costs).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, TextIO

import pytest

_DIR = Path(os.environ.get("SUITE_CPU_DIR", "/tmp/suite-cpu"))
_TICK = os.sysconf("SC_CLK_TCK")
_out: TextIO | None = None


def _live_children_cpu() -> float:
    """The CPU of this process's live children: theirs and what they reaped (Linux /proc)."""
    pids: set[int] = set()
    me = os.getpid()
    try:
        tasks = os.listdir(f"/proc/{me}/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/{me}/task/{tid}/children") as f:
                pids.update(int(p) for p in f.read().split())
        except OSError:
            pass
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += sum(int(x) for x in fields[11:15])
    return total / _TICK


def _snapshot() -> tuple[float, float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (
        own.ru_utime + own.ru_stime,
        reaped.ru_utime + reaped.ru_stime,
        _live_children_cpu(),
    )


def _write(label: str, values: tuple[float, ...]) -> None:
    if _out is not None:
        _out.write(label + "".join(f"\t{v:.3f}" for v in values) + "\n")
        _out.flush()


def pytest_configure(config: Any) -> None:
    """Open this process's file and record the start-up cost."""
    global _out
    worker = getattr(config, "workerinput", {}).get("workerid", "controller")
    _DIR.mkdir(parents=True, exist_ok=True)
    _out = open(_DIR / f"{worker}.tsv", "a")  # noqa: SIM115 (open for the whole run)
    _write("START", _snapshot())


def pytest_collection_finish(session: Any) -> None:
    """Record the running totals once collection is done."""
    _write("COLLECTED", _snapshot())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: Any, nextitem: Any) -> Any:
    """Record one test's CPU (setup, call and teardown) and wall time."""
    before, started = _snapshot(), time.monotonic()
    try:
        return (yield)
    finally:
        after = _snapshot()
        deltas = tuple(a - b for a, b in zip(after, before, strict=True))
        _write(item.nodeid, (*deltas, time.monotonic() - started))


def pytest_sessionfinish(session: Any) -> None:
    """Record the running totals at the end."""
    _write("END", _snapshot())


def summarize(directory: Path, top: int = 40) -> None:
    """Print the fixed costs per process, then the costliest files and tests."""
    by_file: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    by_test: list[tuple[float, float, str]] = []
    for path in sorted(directory.glob("*.tsv")):
        for line in path.read_text().splitlines():
            name, *rest = line.split("\t")
            values = [float(v) for v in rest]
            if name in ("START", "COLLECTED", "END"):
                children = values[1] + values[2]
                print(
                    f"{path.stem:>10} {name:<9} own {values[0]:6.2f} s, children {children:6.2f} s"
                )
                continue
            cpu = values[0] + values[1] + values[2]
            entry = by_file[name.split("::")[0]]
            entry[0] += cpu
            entry[1] += values[3]
            entry[2] += 1
            by_test.append((cpu, values[3], name))
    total = sum(cpu for cpu, _, _ in by_test)
    print(f"\n{len(by_test)} tests, {total:.1f} CPU-s in tests\n\nCPU-s  wall-s  tests  file")
    for name, (cpu, wall, count) in sorted(by_file.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"{cpu:5.2f}  {wall:6.2f}  {int(count):5d}  {name}")
    print("\nCPU-s  wall-s  test")
    for cpu, wall, name in sorted(by_test, reverse=True)[:top]:
        print(f"{cpu:5.2f}  {wall:6.2f}  {name}")


if __name__ == "__main__":
    summarize(Path(sys.argv[1]) if len(sys.argv) > 1 else _DIR)
