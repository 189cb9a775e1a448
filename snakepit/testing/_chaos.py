"""Chaos helpers: seeded crashes, kill storms, resource exhaustion, injected faults.

Every helper takes its randomness from an ``rng`` (a :class:`random.Random`),
so a failing run replays from its seed (see :func:`make_chaos_rng` and the
``chaos_rng`` fixture). Every wait is
event-driven (a server's exit, ``wait_stable()``, ``wait_ready()``) and has a
deadline; nothing sleeps. A failure raises ``AssertionError`` saying what
broke, in which round, and why.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import inspect
import os
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypeAlias, TypeVar

import anyio
from anyio.abc import Process

from snakepit.errors import (
    ConfigError,
    InvalidArguments,
    PoolDegraded,
    QueueTimeout,
    ReachedMaxRestartIntensity,
    RemoteError,
    ServerExited,
    ToolNotFound,
    WaitTimeout,
    WorkerCrashed,
    WorkerUnavailable,
)
from snakepit.otp import ExitReason, ServerRef, SupervisorRef, is_abnormal
from snakepit.otp._server import unwrapped_task_group
from snakepit.pool import Pool

__all__ = (
    "ChaosOutcome",
    "ChaosReport",
    "ChaosScenario",
    "ChaosSuiteReport",
    "ChildKill",
    "Exhaustion",
    "FaultReport",
    "InjectedCrash",
    "assert_chaos_resilient",
    "chaos_kill_children",
    "chaos_seed",
    "exhaust",
    "inject_crash",
    "inject_random_failures",
    "make_chaos_rng",
    "run_chaos_suite",
)

#: Seconds any one wait of these helpers may take by default.
DEFAULT_DEADLINE: Final = 10.0

#: What the chaos helpers work on: a supervisor, or a pool (its worker supervisor).
T = TypeVar("T", SupervisorRef, Pool)
#: How :func:`inject_crash` ends a server.
CrashHow: TypeAlias = Literal["kill", "crash"]
#: What :func:`exhaust` takes up.
ExhaustKind: TypeAlias = Literal["fds", "tasks", "subprocesses"]


# -- seeds -------------------------------------------------------------------------------


def chaos_seed(base_seed: int, test_id: str) -> int:
    """Derive a 64-bit seed from a run's seed and a test id, the same in every process.

    A stable hash (BLAKE2b), not Python's ``hash()``, which is salted per process::

        seed = chaos_seed(request.config.getoption("randomly_seed"), request.node.nodeid)
    """
    digest = hashlib.blake2b(f"{base_seed}\0{test_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def make_chaos_rng(base_seed: int, test_id: str) -> random.Random:
    """Return a :class:`random.Random` seeded with :func:`chaos_seed`: the fixture's, by hand.

    What the ``chaos_rng`` fixture gives a test (``base_seed`` is then
    pytest-randomly's seed, ``test_id`` the node id), for code outside
    pytest or to derive more generators. In a test, take the fixture::

        rng = make_chaos_rng(1234, "tests/test_x.py::test_storm")
        victim = rng.choice(children)
    """
    return random.Random(chaos_seed(base_seed, test_id))


# -- crashes -----------------------------------------------------------------------------


class InjectedCrash(Exception):
    """The exit reason of a server crashed by :func:`inject_crash` (``how="crash"``).

    ::

        reason = await inject_crash(ref, how="crash")
        assert isinstance(reason, InjectedCrash)
    """


async def inject_crash(
    ref: ServerRef[Any, Any],
    *,
    how: CrashHow | None = None,
    rng: random.Random | None = None,
    reason: BaseException | None = None,
    timeout: float = DEFAULT_DEADLINE,
) -> ExitReason:
    """End a live server abnormally; return its exit reason once it is dead.

    ``how="kill"``: :meth:`ServerRef.kill` (no ``terminate``, reason
    ``"killed"``). ``how="crash"``: it stops with ``reason`` (default an
    :class:`InjectedCrash`) as its exit reason, after ``terminate``; killed if
    that takes over ``timeout`` seconds. Both are abnormal exits, so a
    supervisor restarts a permanent or transient child. Without ``how``:
    ``"crash"`` when ``reason`` is given, else drawn from ``rng``, else ``"kill"``.

    ::

        reason = await inject_crash(sup.child("db"), rng=rng)
        await sup.wait_stable()

    :raises AssertionError: ``ref`` is already dead.
    :raises ConfigError: an unknown ``how``.
    """
    if not ref.alive:
        raise AssertionError(f"cannot inject a crash into {ref!r}: it is already dead")
    if how is None:
        how = "crash" if reason is not None else rng.choice(("kill", "crash")) if rng else "kill"
    if how == "kill":
        await ref.kill()
    elif how == "crash":
        crash = reason if reason is not None else InjectedCrash(f"crash injected into {ref!r}")
        await ref.stop(crash, timeout=timeout)
    else:
        raise ConfigError("how", f"must be 'kill' or 'crash', got {how!r}")
    assert ref.exit_reason is not None
    return ref.exit_reason


@dataclass(frozen=True, slots=True)
class ChildKill:
    """One child killed by :func:`chaos_kill_children`.

    ::

        (kill,) = report.kills
        assert kill.restarted_as == kill.generation + 1
    """

    #: The round it was killed in (1-based).
    round: int
    child_id: Hashable
    #: The generation of the instance that was killed.
    generation: int
    reason: ExitReason
    #: The generation running once the supervisor was stable again, or None.
    restarted_as: int | None


@dataclass(frozen=True, slots=True)
class ChaosReport:
    """What :func:`chaos_kill_children` did, round by round.

    ::

        report = await chaos_kill_children(sup, rounds=5, rng=rng)
        assert len(report.kills) == 5 and report.restarted == 5
    """

    rounds: int
    kills: tuple[ChildKill, ...]

    @property
    def killed(self) -> list[Hashable]:
        """The ids of the killed children, in kill order (repeats included)."""
        return [k.child_id for k in self.kills]

    @property
    def restarted(self) -> int:
        """How many of the killed children were running again after their round."""
        return sum(1 for k in self.kills if k.restarted_as is not None)


def _supervisor_of(target: SupervisorRef | Pool) -> SupervisorRef:
    if isinstance(target, SupervisorRef):
        return target
    workers = target.supervisor.child("workers")
    assert isinstance(workers, SupervisorRef), f"{target!r} has no worker supervisor"
    return workers


def _describe(reason: object) -> str:
    if isinstance(reason, ReachedMaxRestartIntensity):
        return (
            f"{reason} (its restart intensity: raise max_restarts/max_seconds, "
            "or inject less chaos)"
        )
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"
    return repr(reason)


async def _settle(target: SupervisorRef | Pool, timeout: float, when: str) -> None:
    """Wait until ``target`` is stable (a pool: its workers ready); AssertionError if not."""
    sup = _supervisor_of(target)
    try:
        await sup.wait_stable(timeout=timeout)
        if isinstance(target, Pool):
            await target.wait_ready(timeout=timeout)
    except ServerExited as exc:
        raise AssertionError(f"{sup!r} exited {when}: {_describe(exc.reason)}") from exc
    except (WaitTimeout, QueueTimeout) as exc:
        raise AssertionError(f"{target!r} did not settle {when} within {timeout:g}s") from exc
    except PoolDegraded as exc:
        raise AssertionError(f"{target!r} gave up {when}: {exc}") from exc


async def chaos_kill_children(
    target: SupervisorRef | Pool,
    *,
    rounds: int,
    rng: random.Random,
    per_round: int = 1,
    how: CrashHow | None = "kill",
    expect_restart: bool = True,
    timeout: float = DEFAULT_DEADLINE,
) -> ChaosReport:
    """Kill random running children, round after round; check each one comes back.

    Each round picks ``per_round`` of the running children with ``rng``,
    crashes them with :func:`inject_crash` (``how=None``: kill or crash, drawn
    from ``rng``), and waits for :meth:`SupervisorRef.wait_stable` (a pool:
    also :meth:`Pool.wait_ready`) before the next round. For a :class:`Pool`
    the children are its workers. With ``expect_restart`` every killed child
    must be running again, in a newer generation, once the round is stable.

    ::

        report = await chaos_kill_children(sup, rounds=10, rng=rng)
        assert report.restarted == 10

    :raises AssertionError: the supervisor exited (e.g. its restart
        intensity), did not settle within ``timeout``, had no child to kill,
        or a killed child did not come back (named, with its restart type).
    """
    if not isinstance(rounds, int) or rounds < 0:
        raise ConfigError("rounds", f"must be an int >= 0, got {rounds!r}")
    if not isinstance(per_round, int) or per_round < 1:
        raise ConfigError("per_round", f"must be an int >= 1, got {per_round!r}")
    sup = _supervisor_of(target)
    await _settle(target, timeout, "before the chaos")
    kills: list[ChildKill] = []
    for n in range(1, rounds + 1):
        where = f"in chaos round {n} of {rounds}"
        running = [c for c in sup.which_children() if c.alive]
        if not running:
            ids = [c.id for c in sup.which_children()]
            raise AssertionError(f"{sup!r} has no running child to kill {where} (children: {ids})")
        victims = rng.sample(running, min(per_round, len(running)))
        done: list[tuple[Hashable, str, int, ExitReason]] = []
        for info in victims:
            ref = info.ref
            assert ref is not None
            if ref.alive:
                reason = await inject_crash(ref, how=how, rng=rng, timeout=timeout)
            else:  # its supervisor's strategy stopped it after an earlier victim
                reason = await ref.wait()
            done.append((info.id, info.restart, ref.generation, reason))
        await _settle(target, timeout, f"after chaos round {n} of {rounds}")
        now = {c.id: c for c in sup.which_children()}
        for child_id, restart, generation, reason in done:
            after = now.get(child_id)
            restarted_as = (
                after.generation
                if after is not None and after.alive and after.generation > generation
                else None
            )
            back = restarted_as is not None
            kills.append(ChildKill(n, child_id, generation, reason, restarted_as))
            if expect_restart and not back:
                state = (
                    "is no longer among its children"
                    if after is None
                    else f"is not running (generation {after.generation})"
                )
                raise AssertionError(
                    f"child {child_id!r} ({restart}) did not come back {where}: killed at "
                    f"generation {generation} ({_describe(reason)}), it {state}"
                )
    return ChaosReport(rounds, tuple(kills))


# -- resources ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exhaustion:
    """What :func:`exhaust` holds for the duration of its block.

    ::

        async with exhaust("fds", 100) as held:
            assert held.count == 100 and len(held.fds) == 100
    """

    kind: ExhaustKind
    #: How many are held (fewer than asked for fds when the table filled up).
    count: int
    #: The file descriptors held ("fds").
    fds: tuple[int, ...] = ()
    #: The idle child processes, each its own process group ("subprocesses").
    pids: tuple[int, ...] = ()


@asynccontextmanager
async def exhaust(
    kind: ExhaustKind, n: int, *, timeout: float = DEFAULT_DEADLINE
) -> AsyncIterator[Exhaustion]:
    """Hold ``n`` file descriptors, tasks or child processes for an ``async with`` block.

    ``"fds"`` opens ``os.devnull`` ``n`` times (stopping early, with the
    table full, at EMFILE: ``count`` says how many). ``"tasks"`` starts ``n``
    tasks that wait on an event; the block runs once all of them are waiting.
    ``"subprocesses"`` starts ``n`` idle processes, each in its own process
    group. On exit everything is released: fds closed, tasks ended, processes
    told to exit (stdin closed), their groups killed after ``timeout``, reaped.

    ::

        async with exhaust("subprocesses", 5) as held:
            await check_it_still_works()

    :raises ConfigError: an unknown ``kind``, or ``n`` < 0.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ConfigError("n", f"must be an int >= 0, got {n!r}")
    if kind == "fds":
        held: AbstractAsyncContextManager[Exhaustion] = _hold_fds(n)
    elif kind == "tasks":
        held = _hold_tasks(n, timeout)
    elif kind == "subprocesses":
        held = _hold_processes(n, timeout)
    else:
        raise ConfigError("kind", f"must be 'fds', 'tasks' or 'subprocesses', got {kind!r}")
    async with held as exhaustion:
        yield exhaustion


@asynccontextmanager
async def _hold_fds(n: int) -> AsyncIterator[Exhaustion]:
    fds: list[int] = []
    try:
        for _ in range(n):
            try:
                fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE):
                    raise
                break  # the table is full: that is what exhaustion means
        yield Exhaustion("fds", len(fds), fds=tuple(fds))
    finally:
        for fd in fds:
            os.close(fd)


@asynccontextmanager
async def _hold_tasks(n: int, timeout: float) -> AsyncIterator[Exhaustion]:
    release = anyio.Event()
    waiting = anyio.Event()
    count = 0

    async def idle() -> None:
        nonlocal count
        count += 1
        if count == n:
            waiting.set()
        await release.wait()

    async with unwrapped_task_group() as tg:
        try:
            for _ in range(n):
                tg.start_soon(idle)
            if n:
                with anyio.fail_after(timeout):
                    await waiting.wait()
            yield Exhaustion("tasks", n)
        finally:
            release.set()


def _idle_command() -> list[str]:
    cat = shutil.which("cat")  # reads stdin until it is closed: idle, and starts in ~1 ms
    return [cat] if cat else [sys.executable, "-c", "import sys; sys.stdin.buffer.read()"]


@asynccontextmanager
async def _hold_processes(n: int, grace: float) -> AsyncIterator[Exhaustion]:
    procs: list[Process] = []
    try:
        command = _idle_command()
        for _ in range(n):
            procs.append(
                await anyio.open_process(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        yield Exhaustion("subprocesses", n, pids=tuple(p.pid for p in procs))
    finally:
        with anyio.CancelScope(shield=True):
            for proc in procs:
                await _reap(proc, grace)


async def _reap(proc: Process, grace: float) -> None:
    if proc.stdin is not None:
        with contextlib.suppress(OSError, anyio.BrokenResourceError):
            await proc.stdin.aclose()  # EOF: it exits on its own
    with anyio.move_on_after(grace):
        await proc.wait()
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # unreaped, so the group id is still ours
        await proc.wait()


# -- resilience ----------------------------------------------------------------------------


def _is_alive(target: SupervisorRef | Pool) -> bool:
    if isinstance(target, SupervisorRef):
        return target.alive
    try:
        return target.supervisor.alive and target.stats().degraded is None
    except Exception:  # closed
        return False


async def _check(check: Callable[[T], object] | None, target: T, timeout: float) -> None:
    if check is None:
        return
    with anyio.fail_after(timeout):
        result = check(target)
        if inspect.isawaitable(result):
            result = await result
    if result is False:
        raise AssertionError(f"the check {_name(check)}() returned False")


def _name(fn: object) -> str:
    return getattr(fn, "__name__", None) or repr(fn)


async def assert_chaos_resilient(
    target: T,
    chaos: Callable[[T], Awaitable[object]],
    check: Callable[[T], object] | None = None,
    *,
    timeout: float = DEFAULT_DEADLINE,
) -> None:
    """Apply ``chaos`` to ``target``, then assert it recovered and ``check`` holds.

    Recovered means: a supervisor is alive, stable, and every permanent child
    is running; a pool is not degraded and all its workers are ready. Then
    ``check(target)`` (sync or async) must not raise nor return ``False``.
    ``chaos`` and ``check`` each get ``timeout`` seconds, and so does each wait.

    ::

        await assert_chaos_resilient(
            sup,
            lambda s: chaos_kill_children(s, rounds=3, rng=rng),
            lambda s: s.count_children().active == 3,
        )

    :raises AssertionError: what broke: the chaos itself (its message), the
        target's exit or timeout, a permanent child left down, the check.
    """
    label = f"{target!r} is not resilient to the chaos {_name(chaos)}()"
    try:
        with anyio.fail_after(timeout):
            await chaos(target)
    except AssertionError as exc:
        raise AssertionError(f"{label}: {exc}") from exc
    except TimeoutError as exc:
        raise AssertionError(f"{label}: the chaos did not finish within {timeout:g}s") from exc
    try:
        await _settle(target, timeout, "after the chaos")
        if isinstance(target, SupervisorRef):
            down = [
                c.id for c in target.which_children() if c.restart == "permanent" and not c.alive
            ]
            if down:
                raise AssertionError(f"permanent children not running after the chaos: {down}")
        await _check(check, target, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{label}: {exc}") from exc
    except TimeoutError as exc:
        raise AssertionError(f"{label}: the check did not finish within {timeout:g}s") from exc


async def _assert_gives_up(
    target: T, chaos: Callable[[T], Awaitable[object]], timeout: float
) -> None:
    sup = target if isinstance(target, SupervisorRef) else target.supervisor
    with contextlib.suppress(AssertionError):  # a helper's "the supervisor exited"
        with anyio.fail_after(timeout):
            await chaos(target)
    try:
        await sup.wait_stable(timeout=timeout)
    except ServerExited:
        pass
    except WaitTimeout as exc:
        raise AssertionError(f"{sup!r} neither gave up nor settled within {timeout:g}s") from exc
    if sup.alive:
        raise AssertionError(f"{target!r} did not give up: it is alive and stable after the chaos")
    reason = await sup.wait()
    if not is_abnormal(reason):
        raise AssertionError(f"{sup!r} exited normally ({reason!r}), it did not give up")


@dataclass(frozen=True, slots=True)
class ChaosScenario(Generic[T]):
    """One scenario of :func:`run_chaos_suite`: its chaos and its pass criterion.

    ``expect="recovers"`` (the default) passes when
    :func:`assert_chaos_resilient` does: the target recovers and ``check``
    holds. ``expect="gives_up"`` passes when the target's supervisor exits
    abnormally (e.g. restart intensity reached; a pool is degraded); the
    chaos may raise ``AssertionError`` on the way (it is expected to break).

    ::

        ChaosScenario("three kills", lambda s: chaos_kill_children(s, rounds=3, rng=rng))
    """

    name: str
    chaos: Callable[[T], Awaitable[object]]
    check: Callable[[T], object] | None = None
    expect: Literal["recovers", "gives_up"] = "recovers"


@dataclass(frozen=True, slots=True)
class ChaosOutcome:
    """How one scenario of :func:`run_chaos_suite` went.

    ::

        assert report.outcomes[0].passed, report.outcomes[0].error
    """

    name: str
    passed: bool
    #: Why it failed, or None.
    error: str | None
    #: Seconds it took.
    seconds: float


@dataclass(frozen=True, slots=True)
class ChaosSuiteReport:
    """The outcome of every scenario of :func:`run_chaos_suite`, in order.

    ::

        report = await run_chaos_suite(sup, scenarios)
        assert report.passed == len(scenarios)
    """

    outcomes: tuple[ChaosOutcome, ...]

    @property
    def passed(self) -> int:
        """How many scenarios passed."""
        return sum(1 for o in self.outcomes if o.passed)

    @property
    def failed(self) -> list[ChaosOutcome]:
        """The scenarios that failed."""
        return [o for o in self.outcomes if not o.passed]

    def __str__(self) -> str:
        """One line per scenario: PASS/FAIL, name, seconds, the error."""
        return "\n".join(
            f"{'PASS' if o.passed else 'FAIL'} {o.name} ({o.seconds:.3f}s)"
            + (f": {o.error}" if o.error else "")
            for o in self.outcomes
        )


async def run_chaos_suite(
    target: T | Callable[[], AbstractAsyncContextManager[T]],
    scenarios: Sequence[ChaosScenario[T]],
    *,
    timeout: float = DEFAULT_DEADLINE,
) -> ChaosSuiteReport:
    """Run every scenario against ``target`` and judge each by its ``expect``.

    ``target`` is a running supervisor or pool, shared by the scenarios in
    order (one that ends it fails every later one: put ``gives_up`` last), or
    a factory of an async context manager (``lambda: Supervisor.running(spec)``,
    ``lambda: Pool(...)``) that gives each scenario a fresh one. Every
    scenario runs, even after a failure; then the failures are raised together.

    ::

        report = await run_chaos_suite(
            lambda: Supervisor.running(spec),
            [ChaosScenario("kills", kill_three), ChaosScenario("storm", storm, expect="gives_up")],
        )

    :raises AssertionError: one or more scenarios failed (the report is in
        the message, the first failure chained).
    """
    outcomes: list[ChaosOutcome] = []
    first: BaseException | None = None
    for scenario in scenarios:
        started = anyio.current_time()
        error: BaseException | None = None
        try:
            async with AsyncExitStack() as stack:
                if isinstance(target, SupervisorRef | Pool):
                    subject = target
                else:
                    subject = await stack.enter_async_context(target())
                if not _is_alive(subject):
                    raise AssertionError(f"{subject!r} was dead before the chaos")
                if scenario.expect == "gives_up":
                    await _assert_gives_up(subject, scenario.chaos, timeout)
                else:
                    await assert_chaos_resilient(
                        subject, scenario.chaos, scenario.check, timeout=timeout
                    )
        except Exception as exc:  # a scenario's failure, or a bug in its code: reported
            error = exc
            first = first or exc
        message = None if error is None else str(error) or type(error).__name__
        outcomes.append(
            ChaosOutcome(scenario.name, error is None, message, anyio.current_time() - started)
        )
    report = ChaosSuiteReport(tuple(outcomes))
    if first is not None:
        failed = len(report.failed)
        raise AssertionError(
            f"{failed} of {len(outcomes)} chaos scenarios failed:\n{report}"
        ) from first
    return report


# -- injected faults -------------------------------------------------------------------------


#: The seed of the rng :func:`inject_random_failures` draws the faults with when given none.
DEFAULT_FAULT_SEED: Final = 0


@dataclass(frozen=True, slots=True)
class FaultReport:
    """The counts of :func:`inject_random_failures`.

    ::

        report = await inject_random_failures(pool, rate=0.5, rng=rng, retries=2)
        report.assert_success_rate(0.75)
    """

    calls: int
    #: Calls that succeeded (on some attempt) and those that failed every attempt.
    ok: int
    failed: int
    #: Attempts made, and attempts that failed (injected faults, crashed workers).
    attempts: int
    faults: int
    #: The fault rate asked for (None: the workers' own), and the retries allowed.
    rate: float | None
    retries: int
    #: The seed of the default rng (``random.Random(seed)``) that drew the faults;
    #: None when the caller passed ``rng=``, or the workers decided (``rate=None``).
    seed: int | None = None

    @property
    def success_rate(self) -> float:
        """``ok / calls`` (1.0 for no calls)."""
        return self.ok / self.calls if self.calls else 1.0

    def assert_success_rate(self, at_least: float = 0.75) -> None:
        """Raise ``AssertionError`` unless at least ``at_least`` of the calls succeeded.

        The message has the counts and, for the default rng, its seed.
        """
        if self.success_rate < at_least:
            rate = "the workers' own" if self.rate is None else f"{self.rate:g}"
            raise AssertionError(
                f"only {self.ok} of {self.calls} calls ({self.success_rate:.1%}) succeeded "
                f"at fault rate {rate} with {self.retries} retries; expected >= {at_least:.0%} "
                f"({self.faults} of {self.attempts} attempts failed{_drawn_by(self.seed)})"
            )


def _drawn_by(seed: int | None) -> str:
    if seed is None:
        return ""
    return f"; faults drawn by the default rng, random.Random({seed}): pass rng= to vary them"


async def inject_random_failures(
    pool: Pool,
    *,
    rate: float | None = 0.5,
    rng: random.Random | None = None,
    calls: int = 100,
    tool: str = "maybe_fail",
    retries: int = 2,
    concurrency: int = 8,
    timeout: float = 30.0,
) -> FaultReport:
    """Run ``calls`` calls of ``tool`` on a pool of fault-injecting workers; count outcomes.

    Each call is ``tool(value=i, fail=...)``, tried up to ``1 + retries``
    times; an attempt fails on an injected fault (the tool raised) or a
    crashed worker. With a ``rate``, ``rng`` decides every attempt up front
    (a :class:`~snakepit.testing.adapters.DirectedFaults` pool): the counts
    depend on the seed alone. Without ``rng`` that is ``random.Random(0)``,
    the same faults on every run; its seed is in the report (``seed``) and
    in the failure messages. Pass the
    ``chaos_rng`` fixture to vary them with pytest-randomly's seed. With
    ``rate=None`` the workers decide (stock ``FaultInjecting``, whose rate is
    ``SNAKEPIT_FAULT_RATE``), ``fail`` is not passed, and ``rng`` must not be
    given. Up to ``concurrency`` calls run at once.

    ::

        report = await inject_random_failures(pool, rate=0.5, rng=rng, calls=200, retries=2)
        report.assert_success_rate(0.75)  # the seed's bar

    :raises ConfigError: a bad option, an ``rng`` with ``rate=None``, or a
        ``tool`` the pool's adapter lacks or that takes no ``fail``.
    :raises AssertionError: the calls did not finish within ``timeout``.
    :raises PoolError: the pool stopped or gave up meanwhile.
    """
    if rate is not None and not 0.0 <= rate <= 1.0:
        raise ConfigError("rate", f"must be None or within 0..1, got {rate!r}")
    if rate is None and rng is not None:
        raise ConfigError("rng", "is not used with rate=None (the workers decide the faults)")
    for name, value, low in (
        ("calls", calls, 0),
        ("retries", retries, 0),
        ("concurrency", concurrency, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(name, f"must be an int >= {low}, got {value!r}")
    seed: int | None = None
    plan: list[list[bool]] = []
    if rate is not None:
        if rng is None:
            seed = DEFAULT_FAULT_SEED
            rng = random.Random(seed)
        plan = [[rng.random() < rate for _ in range(retries + 1)] for _ in range(calls)]
    counts = {"ok": 0, "failed": 0, "attempts": 0, "faults": 0}
    next_call = iter(range(calls))

    async def one(i: int) -> None:
        for attempt in range(retries + 1):
            args: dict[str, Any] = {"value": i}
            if plan:
                args["fail"] = plan[i][attempt]
            counts["attempts"] += 1
            try:
                result = await pool.execute(tool, args)
            except (ToolNotFound, InvalidArguments) as exc:
                hint = "" if rate is None else "; use adapters.DirectedFaults, or rate=None"
                raise ConfigError("tool", f"{tool!r} cannot be called so: {exc}{hint}") from exc
            except (RemoteError, WorkerCrashed, WorkerUnavailable):
                counts["faults"] += 1
                continue
            assert result == i, f"call {i} of {tool!r} returned {result!r}"
            counts["ok"] += 1
            return
        counts["failed"] += 1

    async def caller() -> None:
        for i in next_call:
            await one(i)

    try:
        with anyio.fail_after(timeout):
            async with anyio.create_task_group() as tg:
                for _ in range(min(concurrency, calls)):
                    tg.start_soon(caller)
    except TimeoutError as exc:
        raise AssertionError(
            f"{calls} calls of {tool!r} did not finish within {timeout:g}s "
            f"({counts}{_drawn_by(seed)})"
        ) from exc
    except ExceptionGroup as group:
        first = group.exceptions[0]
        while isinstance(first, ExceptionGroup):
            first = first.exceptions[0]
        raise first  # noqa: B904 - its own cause (if any) is kept
    return FaultReport(
        calls,
        counts["ok"],
        counts["failed"],
        counts["attempts"],
        counts["faults"],
        rate,
        retries,
        seed,
    )
