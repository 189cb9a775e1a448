"""The pytest plugin (entry point ``pytest11``): fixtures and the ``otp`` marker.

Fixtures: ``otp_sandbox`` (servers and supervisors owned by the test, all
stopped and checked dead at teardown), ``chaos_rng`` (a ``random.Random``
that replays with pytest-randomly's seed), ``snakepit_pool`` (pools on the
in-process launcher) and ``pool_events`` (a pool's telemetry, recorded).
Marker: ``@pytest.mark.otp(strict_leaks=True)``.

Every run of pytest imports this module once the package is installed, so it
imports nothing heavier than pytest at the top: the OTP core, pools and grpc
load inside the fixtures that use them.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import random
import warnings
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import pytest

from snakepit.errors import is_int, is_number

if TYPE_CHECKING:
    from anyio.abc import TaskGroup, TaskStatus
    from anyio.streams.memory import MemoryObjectReceiveStream

    from snakepit.otp import ChildSpec, GenServer, Registry, ServerRef, SupervisorRef
    from snakepit.pool import Pool, PoolEvent, SharedForkServers

    from ._leaks import LeakCheck

__all__ = ("OTPSandbox", "PoolEvents", "SandboxWarning")

#: The seed base of ``chaos_rng`` when pytest-randomly is not active.
DEFAULT_SEED = 0
#: Seconds a sandboxed server gets to stop at teardown before it is killed.
DEFAULT_STOP_TIMEOUT = 5.0


def _check_flag(value: object) -> str | None:
    return None if isinstance(value, bool) else f"must be True or False, got {value!r}"


def _check_seconds(value: object) -> str | None:
    if is_number(value) and value >= 0:
        return None  # NaN fails >= 0
    return f"must be seconds, a number >= 0, got {value!r}"


#: The options of the ``otp`` marker and their checks (an error message, or None).
_OTP_OPTIONS: dict[str, Callable[[object], str | None]] = {
    "strict_leaks": _check_flag,
    "stop_timeout": _check_seconds,
    "leak_grace": _check_seconds,
}


#: The ini option that shares fork servers between the pools of a test run.
SHARE_FORK_SERVERS = "snakepit_share_fork_servers"
#: The marker of a test whose pools start fork servers of their own even then.
OWN_FORK_SERVER = "snakepit_own_fork_server"
#: The ini option naming the variables that do not count in a shared server's key.
FORK_SERVER_IGNORE_ENV = "snakepit_fork_server_ignore_env"
#: The ini option naming the modules each shared server imports at its start.
FORK_SERVER_PRELOAD = "snakepit_fork_server_preload"
#: The run's shared fork servers, and the default they replaced.
_shared_key: pytest.StashKey[tuple[SharedForkServers, SharedForkServers | None]] = pytest.StashKey()


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``snakepit_share_fork_servers`` ini option, and those of the shared servers."""
    parser.addini(
        SHARE_FORK_SERVERS,
        type="bool",
        default=False,
        help="pools fork their workers from fork servers shared by the whole run "
        "(snakepit.pool.SharedForkServers) instead of starting one each (~0.1 s of CPU "
        f"per pool); a test marked {OWN_FORK_SERVER} gets its own",
    )
    parser.addini(
        FORK_SERVER_IGNORE_ENV,
        type="linelist",
        default=[],
        help=f"with {SHARE_FORK_SERVERS}: environment variables that do not count in a "
        "shared server's key (besides PYTEST_CURRENT_TEST), for variables the workers "
        "read only after the fork (in their adapter's import, setup() or tools): pools "
        "that differ in them fork from one server, each worker with its pool's values",
    )
    parser.addini(
        FORK_SERVER_PRELOAD,
        type="linelist",
        default=[],
        help=f"with {SHARE_FORK_SERVERS}: modules each shared server imports at its start "
        "(adapters' modules whose import starts no thread, loop or process): their "
        "workers do not import them again",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers; share fork servers if ``snakepit_share_fork_servers`` is set."""
    config.addinivalue_line(
        "markers",
        "otp(strict_leaks=False, stop_timeout=5.0, leak_grace=1.0): options of the "
        "otp_sandbox fixture; strict_leaks=True fails the test on leaked tasks, child "
        "processes or fds, and on a server that had to be killed at teardown",
    )
    config.addinivalue_line(
        "markers",
        f"{OWN_FORK_SERVER}: the pools of this test start their own fork servers, "
        f"even with {SHARE_FORK_SERVERS} set (a test that stops or kills one)",
    )
    if config.getini(SHARE_FORK_SERVERS) and not _is_xdist_controller(config):
        from snakepit.pool import SharedForkServers, set_default_fork_servers

        ignore = ("PYTEST_CURRENT_TEST", *config.getini(FORK_SERVER_IGNORE_ENV))
        shared = SharedForkServers(ignore_env=ignore, preload=config.getini(FORK_SERVER_PRELOAD))
        config.stash[_shared_key] = (shared, set_default_fork_servers(shared))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the shared fork servers (and put back the default there was)."""
    found = config.stash.get(_shared_key, None)
    if found is not None:
        from snakepit.pool import set_default_fork_servers

        shared, previous = found
        del config.stash[_shared_key]
        set_default_fork_servers(previous)
        shared.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """Run a test marked ``snakepit_own_fork_server`` (its fixtures too) with no shared servers."""
    if item.get_closest_marker(OWN_FORK_SERVER) is None:
        return (yield)
    from snakepit.pool import set_default_fork_servers

    previous = set_default_fork_servers(None)
    try:
        return (yield)
    finally:
        set_default_fork_servers(previous)


def _is_xdist_controller(config: pytest.Config) -> bool:
    # The controller of ``pytest -n N`` runs no test: its workers share their own.
    return not hasattr(config, "workerinput") and bool(getattr(config.option, "numprocesses", 0))


class SandboxWarning(UserWarning):
    """A sandboxed server ignored its stop at teardown and was killed (without strict_leaks).

    ::

        @pytest.mark.filterwarnings("error::snakepit.testing.SandboxWarning")
        async def test_stops_cleanly(otp_sandbox): ...
    """


class OTPSandbox:
    """What the ``otp_sandbox`` fixture gives a test: everything it starts is owned.

    ::

        @pytest.mark.anyio
        async def test_counter(otp_sandbox):
            ref = await otp_sandbox.start_server(Counter, 0, name=otp_sandbox.unique_name("c"))
            sup = await otp_sandbox.start_supervisor([ChildSpec("a", Counter, 0)])
            otp_sandbox.on_cleanup(lambda: print("done"))

    At teardown, in reverse order of starting: each server and supervisor is
    stopped (reason ``"shutdown"``, ``stop_timeout`` seconds, then killed),
    each cleanup runs, tasks left in :attr:`task_group` are cancelled, and
    every server started (with the children of supervisors) is checked dead.
    A server that had to be killed is reported: a failure with
    ``strict_leaks``, else a :class:`SandboxWarning`.
    """

    def __init__(self, test_id: str, stack: AsyncExitStack, tg: TaskGroup, stop_timeout: float):
        #: The test's node id.
        self.test_id = test_id
        #: The test's own task group (tasks left running at teardown are cancelled).
        #: A task that raises here cancels the test: prefer :meth:`start_soon`.
        self.task_group = tg
        self.stop_timeout = stop_timeout
        #: Reports of servers killed at teardown because they did not stop in time.
        self.killed: list[str] = []
        self._stack = stack
        self._refs: list[ServerRef[Any, Any]] = []
        self._errors: list[BaseException] = []
        self._names = itertools.count(1)
        self._tag = f"{zlib.crc32(test_id.encode()):08x}"

    def unique_name(self, prefix: str = "proc") -> str:
        """A name no other test (nor another call in this one) gets: ``prefix-<test hash>-<n>``.

        ::

            name = otp_sandbox.unique_name("cache")  # e.g. "cache-1a2b3c4d-1"
        """
        return f"{prefix}-{self._tag}-{next(self._names)}"

    async def start_server(
        self,
        cls: type[GenServer[Any, Any, Any]],
        arg: Any = None,
        *,
        name: str | None = None,
        registry: Registry | None = None,
    ) -> ServerRef[Any, Any]:
        """Start ``cls`` (a GenServer subclass) in the sandbox; return once ``init`` is done.

        ::

            ref = await otp_sandbox.start_server(Counter, 0)
            assert await ref.call("get") == 0

        :raises Exception: whatever ``init`` raised.
        """
        ref = await cls.start(self.task_group, arg, name=name, registry=registry)
        self._own(ref)
        return ref

    async def start_supervisor(
        self,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: str = "one_for_one",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        registry: Registry | None = None,
        name: str | None = None,
    ) -> SupervisorRef:
        """Start a :class:`~snakepit.otp.Supervisor` of ``children`` in the sandbox.

        ::

            sup = await otp_sandbox.start_supervisor(
                [ChildSpec("a", Worker), ChildSpec("b", Worker)], strategy="rest_for_one"
            )

        :raises ConfigError: a bad strategy or intensity.
        :raises ChildStartError: a child's ``init`` raised.
        """
        from snakepit.otp import Supervisor, SupervisorSpec

        spec = SupervisorSpec(
            children,
            strategy=strategy,  # type: ignore[arg-type]  # checked by SupervisorSpec
            max_restarts=max_restarts,
            max_seconds=max_seconds,
            registry=registry,
        )
        ref = await Supervisor.start(self.task_group, spec, name=name, registry=registry)
        self._own(ref)
        return ref

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str = "") -> None:
        """Run ``fn(*args)`` in the sandbox's task group; an error it raises fails the test.

        ::

            otp_sandbox.start_soon(feed, ref, 100, name="feeder")

        The error is reported at teardown (it does not cancel the test);
        the task is cancelled at teardown if it is still running.
        """

        async def guarded() -> None:
            try:
                await fn(*args)
            except Exception as exc:
                self._errors.append(exc)

        self.task_group.start_soon(guarded, name=name or getattr(fn, "__qualname__", None))

    def on_cleanup(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` (sync or async) at teardown, in reverse order with the stops.

        ::

            otp_sandbox.on_cleanup(lambda: tmp_file.unlink(missing_ok=True))
        """

        async def run() -> None:
            result = fn()
            if inspect.isawaitable(result):
                await result

        self._stack.push_async_callback(run)

    def _own(self, ref: ServerRef[Any, Any]) -> None:
        self._refs.append(ref)
        self._stack.push_async_callback(self._stop, ref)

    async def _stop(self, ref: ServerRef[Any, Any]) -> None:
        import anyio

        if not ref.alive:
            return
        with anyio.CancelScope(shield=True):
            await ref.stop("shutdown", timeout=self.stop_timeout)
        if ref.exit_reason == "killed":
            self.killed.append(f"{ref!r} did not stop within {self.stop_timeout:g}s and was killed")

    def _descendants(self) -> list[ServerRef[Any, Any]]:
        from snakepit.otp import SupervisorRef

        found: list[ServerRef[Any, Any]] = []
        todo = list(self._refs)
        while todo:
            ref = todo.pop()
            found.append(ref)
            if isinstance(ref, SupervisorRef) and ref.alive:
                todo.extend(c.ref for c in ref.which_children() if c.ref is not None)
        return found


def _otp_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    options: dict[str, Any] = {
        "strict_leaks": False,
        "stop_timeout": DEFAULT_STOP_TIMEOUT,
        "leak_grace": 1.0,
    }
    marker = request.node.get_closest_marker("otp")
    if marker is not None:
        if marker.args:
            pytest.fail("@pytest.mark.otp takes keyword arguments only", pytrace=False)
        for key, value in marker.kwargs.items():
            if key not in _OTP_OPTIONS:
                pytest.fail(
                    f"@pytest.mark.otp got an unknown option {key!r} "
                    f"(known: {', '.join(_OTP_OPTIONS)})",
                    pytrace=False,
                )
            problem = _OTP_OPTIONS[key](value)
            if problem is not None:
                pytest.fail(f"@pytest.mark.otp({key}={value!r}): {key} {problem}", pytrace=False)
            options[key] = value
    return options


@pytest.fixture
async def otp_sandbox(
    request: pytest.FixtureRequest, anyio_backend: Any
) -> AsyncIterator[OTPSandbox]:
    """An isolated OTP sandbox: start servers and supervisors owned by this test.

    ``.test_id``, ``.unique_name(prefix)``, ``await .start_server(cls, arg)``,
    ``await .start_supervisor(children, strategy=...)``, ``.start_soon(fn)``,
    ``.on_cleanup(fn)``, ``.task_group``. Teardown stops everything (stop,
    then kill after ``stop_timeout``) and fails if anything is still alive.
    ``@pytest.mark.otp(strict_leaks=True)`` also fails on leaked tasks,
    child processes and fds (``assert_no_leaks`` around the test) and on a
    server that had to be killed. Runs on asyncio and trio (anyio plugin).
    List it before fixtures whose resources should count as the test's.
    """
    import anyio

    from ._leaks import LeakCheck

    options = _otp_options(request)
    check: LeakCheck | None = None
    if options["strict_leaks"]:
        check = await LeakCheck.snapshot(grace=options["leak_grace"])
    stack = AsyncExitStack()
    async with anyio.create_task_group() as tg:
        sandbox = OTPSandbox(request.node.nodeid, stack, tg, options["stop_timeout"])
        try:
            yield sandbox
        finally:
            with anyio.CancelScope(shield=True):
                everything = sandbox._descendants()
                try:
                    await stack.aclose()
                finally:
                    tg.cancel_scope.cancel()
    problems: list[str] = []
    alive = [ref for ref in everything if ref.alive]
    if alive:
        problems.append("still alive after teardown: " + ", ".join(map(repr, alive)))
    for error in sandbox._errors:
        problems.append(f"a sandbox task raised {type(error).__name__}: {error}")
    if sandbox.killed:
        if options["strict_leaks"]:
            problems.extend(sandbox.killed)
        else:
            for line in sandbox.killed:
                warnings.warn(f"{sandbox.test_id}: {line}", SandboxWarning, stacklevel=1)
    if check is not None:
        leaks = await check.leaks()
        if leaks:
            problems.append(
                f"leaked (strict_leaks; still there {check.grace:g}s after the test):\n"
                + "\n".join(f"    {item}" for item in leaks)
            )
    if problems:
        # Only the message: the traceback would show the plugin, not the test.
        pytest.fail(
            f"otp_sandbox of {sandbox.test_id}:\n" + "\n".join(f"  {p}" for p in problems),
            pytrace=False,
        )


def _randomly_seed(config: pytest.Config) -> int:
    value = config.getoption("randomly_seed", None)
    if is_int(value):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return DEFAULT_SEED


@pytest.fixture
def chaos_rng(request: pytest.FixtureRequest) -> random.Random:
    """A ``random.Random`` for chaos and workloads that replays with the run's seed.

    Seeded with ``chaos_seed(<randomly seed>, <node id>)`` (pytest-randomly's
    ``--randomly-seed``; 0 without pytest-randomly): each test gets its own
    stream, the same in every process, and a failure replays with
    ``-p randomly --randomly-seed=<n>``. The seed is printed (shown with a
    failure) and kept in the report's ``user_properties`` as ``chaos_rng_seed``.
    Outside pytest, ``make_chaos_rng(base_seed, test_id)`` makes the same one.
    """
    from ._seeds import chaos_seed

    base = _randomly_seed(request.config)
    nodeid = request.node.nodeid
    seed = chaos_seed(base, nodeid)
    print(f"chaos_rng seed {seed} (replay: -p randomly --randomly-seed={base} {nodeid!r})")
    request.node.user_properties.append(("chaos_rng_seed", seed))
    return random.Random(seed)


def _matches(event: object, kind: type | tuple[type, ...] | None, fields: dict[str, Any]) -> bool:
    if kind is not None and not isinstance(event, kind):
        return False
    for name, want in fields.items():
        if not hasattr(event, name):
            return False
        have = getattr(event, name)
        if callable(want) and not isinstance(want, type):
            if not want(have):
                return False
        elif have != want:
            return False
    return True


def _what(kind: type | tuple[type, ...] | None, fields: dict[str, Any]) -> str:
    if kind is None:
        name = "any event"
    elif isinstance(kind, tuple):
        name = " | ".join(k.__name__ for k in kind)
    else:
        name = kind.__name__
    return name + (f" with {fields!r}" if fields else "")


class PoolEvents:
    """A pool's telemetry (``Pool.subscribe()``), recorded for assertions.

    ::

        async def test_startup(snakepit_pool, pool_events):
            pool = await snakepit_pool("snakepit.testing.adapters:Echo", size=2)
            pool_events.assert_event(WorkerReady, count=2)
            await pool.execute("ping")
            pool_events.assert_event(RequestStopped, tool="ping", outcome="ok")
            pool_events.refute_event(WorkerExited)

    Pools made by ``snakepit_pool`` are attached before they start; attach
    others with :meth:`attach` (before ``async with pool`` to see startup).
    A field filter is a value (compared with ``==``) or a predicate.
    Reading never waits, except :meth:`wait_for`; no task runs in the background.
    """

    def __init__(self) -> None:
        self._streams: list[MemoryObjectReceiveStream[PoolEvent]] = []
        self._events: list[PoolEvent] = []

    def attach(self, pool: Pool) -> None:
        """Record ``pool``'s events from now on."""
        self._streams.append(pool.subscribe(max_buffer=None))  # a record drops nothing

    def _drain(self) -> None:
        import anyio

        for stream in list(self._streams):
            while True:
                try:
                    self._events.append(stream.receive_nowait())
                except anyio.WouldBlock:
                    break
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    self._streams.remove(stream)
                    stream.close()
                    break

    @property
    def events(self) -> list[PoolEvent]:
        """Every event recorded so far, in arrival order."""
        self._drain()
        return list(self._events)

    def of(self, kind: type | tuple[type, ...] | None = None, **fields: Any) -> list[Any]:
        """The recorded events of ``kind`` (a class or tuple; None: any) matching ``fields``."""
        return [e for e in self.events if _matches(e, kind, fields)]

    def count(self, kind: type | tuple[type, ...] | None = None, **fields: Any) -> int:
        """How many recorded events match (see :meth:`of`)."""
        return len(self.of(kind, **fields))

    def assert_event(
        self,
        kind: type | tuple[type, ...] | None = None,
        *,
        count: int | None = None,
        **fields: Any,
    ) -> Any:
        """Raise AssertionError unless an event matches (``count``: exactly); return the first.

        ::

            stopped = pool_events.assert_event(RequestStopped, outcome="ok")
        """
        found = self.of(kind, **fields)
        if (count is None and not found) or (count is not None and len(found) != count):
            wanted = "at least 1" if count is None else f"exactly {count}"
            raise AssertionError(
                f"expected {wanted} {_what(kind, fields)}, recorded {len(found)}; "
                f"all events: {self._summary()}"
            )
        return found[0] if found else None

    def refute_event(self, kind: type | tuple[type, ...] | None = None, **fields: Any) -> None:
        """Raise AssertionError if an event matches.

        ::

            pool_events.refute_event(WorkerExited, crashed=True)
        """
        found = self.of(kind, **fields)
        if found:
            raise AssertionError(
                f"expected no {_what(kind, fields)}, recorded {len(found)}: {found!r}"
            )

    async def wait_for(
        self,
        kind: type | tuple[type, ...] | None = None,
        *,
        timeout: float = 5.0,
        **fields: Any,
    ) -> Any:
        """Wait until an event matches (or one recorded already does) and return it.

        ::

            exited = await pool_events.wait_for(WorkerExited, crashed=True)

        Event-driven: woken by each new event.

        :raises AssertionError: none within ``timeout`` seconds, or every
            attached pool's stream ended first.
        """
        import anyio

        seen = 0
        with anyio.move_on_after(timeout):
            while True:
                events = self.events
                for event in events[seen:]:
                    if _matches(event, kind, fields):
                        return event
                seen = len(events)
                if not self._streams:
                    break
                await self._next()
        raise AssertionError(
            f"no {_what(kind, fields)} within {timeout:g}s; all events: {self._summary()}"
        )

    async def _next(self) -> None:
        """Wait for the next event on any attached stream and record it."""
        import anyio

        async def one(stream: MemoryObjectReceiveStream[PoolEvent], tg: TaskGroup) -> None:
            try:
                self._events.append(await stream.receive())
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                if stream in self._streams:
                    self._streams.remove(stream)
                    stream.close()
            tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            for stream in self._streams:
                tg.start_soon(one, stream, tg)

    def clear(self) -> None:
        """Forget the events recorded so far (later ones are still recorded)."""
        self._drain()
        self._events.clear()

    def close(self) -> None:
        """Stop recording (the fixture does this at teardown)."""
        streams, self._streams = self._streams, []
        for stream in streams:
            stream.close()

    def _summary(self) -> str:
        names = [type(e).__name__ for e in self._events]
        return ", ".join(names[:40]) + (" ..." if len(names) > 40 else "") if names else "none"


@pytest.fixture
def pool_events() -> Iterator[PoolEvents]:
    """Records pools' telemetry events: ``assert_event``, ``refute_event``, ``count``, ``wait_for``.

    Pools made with ``snakepit_pool`` in the same test are attached before
    they start; attach others with ``pool_events.attach(pool)``.
    """
    events = PoolEvents()
    yield events
    events.close()


def _refuse_process_enders(adapter: str) -> None:
    """An adapter whose tools end their process would end the test run in-process."""
    from snakepit.testing.adapters import Crash

    module, _, name = adapter.partition(":")
    try:
        cls: Any = importlib.import_module(module)
        for part in name.split("."):
            cls = getattr(cls, part)
    except (ImportError, AttributeError):
        return  # the pool reports it, as for any pool
    if isinstance(cls, type) and issubclass(cls, Crash):
        raise pytest.UsageError(
            f"snakepit_pool({adapter!r}): {name} ends its worker process (os._exit, "
            "signals); in this process it would end the test run. Pass "
            'launcher="local" to run it in worker processes.'
        )


@pytest.fixture
async def snakepit_pool(
    request: pytest.FixtureRequest, anyio_backend: Any, otp_sandbox: OTPSandbox
) -> AsyncIterator[Callable[..., Awaitable[Pool]]]:
    """A factory of running pools on ``InProcessLauncher`` (fast tests of your adapter).

    ``pool = await snakepit_pool("myapp.adapters:Model", size=2, **pool_options)``:
    the adapter runs in this process behind the real channel, so a pool
    starts in milliseconds; ``launcher="local"`` runs it in worker processes
    (the fixture closes that launcher too), as an adapter that ends its
    process (``Crash``) needs: in-process it is refused with a
    ``pytest.UsageError``. Every pool runs in a task of the fixture and is
    closed at teardown, before the test's ``otp_sandbox`` (which it uses, so
    ``otp(strict_leaks=True)`` sees the pools come and go); the sessions a
    test left are deleted first (``cleanup_sessions``), so their workers run
    ``on_session_end``. asyncio only (grpc.aio): skipped on trio.
    """
    from ._leaks import _on_asyncio

    if not _on_asyncio():
        pytest.skip("snakepit_pool runs pools on asyncio only (grpc.aio)")
    import anyio

    from snakepit.pool import InProcessLauncher, LocalLauncher, Pool

    from ._sessions import cleanup_sessions

    events: PoolEvents | None = None
    if "pool_events" in request.fixturenames:
        events = request.getfixturevalue("pool_events")
    done = anyio.Event()
    closers: list[Callable[[], Awaitable[None]]] = []

    async def hold(pool: Pool, *, task_status: TaskStatus[Pool]) -> None:
        # Each pool lives in a task of its own: its task groups are entered and
        # left there, whatever the test and the other fixtures nest around it.
        async with pool:
            task_status.started(pool)
            await done.wait()
            await cleanup_sessions(pool)  # while its workers run their on_session_end

    async with anyio.create_task_group() as tg:

        async def make(adapter: str, *, size: int = 1, **options: Any) -> Pool:
            launcher = options.pop("launcher", None)
            own = launcher is None or launcher == "local"
            if launcher == "local":
                launcher = LocalLauncher()
            elif launcher is None:
                _refuse_process_enders(adapter)
                launcher = InProcessLauncher()
            pool = Pool(adapter, launcher=launcher, size=size, **options)
            if events is not None:
                events.attach(pool)
            try:
                started: Pool = await tg.start(hold, pool)
            except BaseException:
                if own:
                    with anyio.CancelScope(shield=True):
                        await launcher.aclose()
                raise
            if own:
                closers.append(launcher.aclose)
            return started

        try:
            yield make
        finally:
            done.set()
    with anyio.CancelScope(shield=True):
        for close in closers:
            await close()
