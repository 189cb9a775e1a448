"""The pytest plugin: otp_sandbox, the otp marker, chaos_rng, snakepit_pool, pool_events.

What the sandbox does at teardown is checked by running one small test file
with pytester (in-process: one run, so the module stays fast), including
tests that must fail there with a clear message.
"""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from snakepit.errors import WorkerCrashed
from snakepit.pool import Pool, RequestStopped, WorkerExited, WorkerReady, WorkerStarting
from snakepit.testing import chaos_seed, make_chaos_rng
from snakepit.testing._plugin import DEFAULT_SEED, PoolEvents, _randomly_seed

pytest_plugins = ["pytester"]

INNER = """
import subprocess

import anyio
import pytest

from snakepit.otp import ChildSpec, GenServer

PROCS = []
SEEN = {}


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


@pytest.fixture(autouse=True)
def reaper():  # set up before the sandbox, so torn down after its check
    yield
    while PROCS:
        proc = PROCS.pop()
        proc.kill()
        proc.stdin.close()
        proc.wait()


class Counter(GenServer):
    async def init(self, start):
        return start

    async def handle_call(self, request, state):
        return state, state


class Stubborn(GenServer):
    async def init(self, arg):
        return None

    async def terminate(self, reason, state):
        await anyio.Event().wait()  # never stops by itself


@pytest.mark.anyio
async def test_a_sandbox(otp_sandbox, anyio_backend):
    ref = await otp_sandbox.start_server(Counter, 5, name=otp_sandbox.unique_name("c"))
    assert await ref.call("get") == 5
    sup = await otp_sandbox.start_supervisor(
        [ChildSpec("a", Counter, 1), ChildSpec("b", Counter, 2)], strategy="rest_for_one"
    )
    assert sup.strategy == "rest_for_one" and sup.count_children().active == 2
    order = []
    otp_sandbox.on_cleanup(lambda: order.append(("cleanup", ref.alive, sup.alive)))
    first, second = otp_sandbox.unique_name("x"), otp_sandbox.unique_name("x")
    assert first != second and first.startswith("x-")
    assert otp_sandbox.test_id.endswith(f"test_a_sandbox[{anyio_backend}]")
    otp_sandbox.start_soon(anyio.Event().wait, name="left running")  # cancelled at teardown
    SEEN[anyio_backend] = (ref, sup, sup.which_children(), order)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_b_sandbox_stopped_everything(backend):
    ref, sup, children, order = SEEN[backend]
    assert order == [("cleanup", True, True)]  # cleanups run first: in reverse
    assert not ref.alive and not sup.alive and ref.exit_reason == "shutdown"
    assert all(not c.ref.alive for c in children)


@pytest.mark.anyio
@pytest.mark.otp(strict_leaks=True)
async def test_c_strict_clean(otp_sandbox):
    await otp_sandbox.start_server(Counter, 0)
    proc = await anyio.open_process(["true"])
    await proc.wait()
    await proc.aclose()


@pytest.mark.anyio
@pytest.mark.otp(strict_leaks=True, leak_grace=0.05)
async def test_d_leaks_a_process(otp_sandbox):
    PROCS.append(subprocess.Popen(["cat"], stdin=subprocess.PIPE))


@pytest.mark.anyio
@pytest.mark.otp(strict_leaks=True, stop_timeout=0.05)
async def test_e_stubborn_strict(otp_sandbox):
    await otp_sandbox.start_server(Stubborn)


@pytest.mark.anyio
@pytest.mark.otp(stop_timeout=0.05)
@pytest.mark.filterwarnings("error::snakepit.testing._plugin.SandboxWarning")
async def test_f_stubborn_warns(otp_sandbox):
    await otp_sandbox.start_server(Stubborn)


@pytest.mark.anyio
async def test_g_task_error(otp_sandbox):
    async def boom():
        raise KeyError("boom")

    otp_sandbox.start_soon(boom)


@pytest.mark.anyio
@pytest.mark.otp(strict=True)
async def test_h_typo(otp_sandbox):
    pass
"""


def test_sandbox_teardown_stops_checks_and_reports(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under CI=true pytest repeats each error's message in its short summary:
    # the counts below are of the report as a developer sees it.
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("BUILD_NUMBER", raising=False)
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest("-p", "no:randomly", "--strict-markers", "--tb=native")
    out = result.stdout.str()
    # Each test twice (asyncio, trio). The calls of a to g pass; d, e, f and g
    # then fail at teardown, h at setup.
    result.assert_outcomes(passed=14, errors=10)
    for name in "defgh":
        for backend in ("asyncio", "trio"):
            assert f"ERROR at {'setup' if name == 'h' else 'teardown'} of test_{name}_" in out
            assert re.search(rf"ERROR test_inner.py::test_{name}_\w+\[{backend}\]", out), out
    # A leaked child process: pid, state and command line; and its pipe.
    result.stdout.fnmatch_lines(
        [
            "*otp_sandbox of test_inner.py::test_d_leaks_a_process[[]asyncio[]]:",
            "*leaked (strict_leaks; still there 0.05s after the test):",
            "*pid * [[]S[]] cat",
            "*fd * -> pipe:*",
        ]
    )
    # A server that ignores its stop: killed, and reported (strict: a failure;
    # else a SandboxWarning, an error here by the test's filterwarnings).
    killed = re.findall(r"<Stubborn#\d+ gen=0 dead: 'killed'> did not stop within 0.05s", out)
    assert len(killed) == 4, out
    assert "SandboxWarning: test_inner.py::test_f_stubborn_warns[asyncio]" in out
    assert out.count("a sandbox task raised KeyError: 'boom'") == 2
    assert "unknown option 'strict' (known: strict_leaks, stop_timeout, leak_grace)" in out


MARKERS = """
import math

import pytest


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.otp(strict_leaks=False, stop_timeout=1, leak_grace=math.inf)
async def test_good(otp_sandbox):
    assert otp_sandbox.stop_timeout == 1
"""
SECONDS = "must be seconds, a number >= 0, got"
FLAG = "must be True or False, got"
#: An option as written in the marker, and the error at setup that names it.
BAD_OPTIONS = [
    ('stop_timeout="x"', f"@pytest.mark.otp(stop_timeout='x'): stop_timeout {SECONDS} 'x'"),
    ("stop_timeout=True", f"@pytest.mark.otp(stop_timeout=True): stop_timeout {SECONDS} True"),
    ("stop_timeout=-1", f"@pytest.mark.otp(stop_timeout=-1): stop_timeout {SECONDS} -1"),
    ("leak_grace=math.nan", f"@pytest.mark.otp(leak_grace=nan): leak_grace {SECONDS} nan"),
    ("leak_grace=None", f"@pytest.mark.otp(leak_grace=None): leak_grace {SECONDS} None"),
    ('strict_leaks="yes"', f"@pytest.mark.otp(strict_leaks='yes'): strict_leaks {FLAG} 'yes'"),
    ("strict_leaks=1", f"@pytest.mark.otp(strict_leaks=1): strict_leaks {FLAG} 1"),
]


def test_the_otp_markers_options_are_checked_at_setup(pytester: pytest.Pytester) -> None:
    tests = [
        f"@pytest.mark.anyio\n@pytest.mark.otp({option})\nasync def test_bad_{i}(otp_sandbox):\n"
        "    pass\n"
        for i, (option, _) in enumerate(BAD_OPTIONS)
    ]
    pytester.makepyfile(test_markers="\n\n".join([MARKERS, *tests]))
    result = pytester.runpytest("-p", "no:randomly", "--strict-markers")
    result.assert_outcomes(passed=1, errors=len(BAD_OPTIONS))
    out = result.stdout.str()
    for i, (_, message) in enumerate(BAD_OPTIONS):
        assert f"ERROR at setup of test_bad_{i} " in out, out
        assert message in out, out


def test_chaos_rng_is_seeded_from_randomly_and_the_test_id(
    chaos_rng: random.Random, request: pytest.FixtureRequest
) -> None:
    base = _randomly_seed(request.config)
    seed = chaos_seed(base, request.node.nodeid)
    assert ("chaos_rng_seed", seed) in request.node.user_properties
    assert chaos_rng.random() == make_chaos_rng(base, request.node.nodeid).random()


@pytest.mark.parametrize(
    ("value", "expected"), [(5, 5), ("7", 7), (None, DEFAULT_SEED), ("last", DEFAULT_SEED)]
)
def test_chaos_rng_base_seed(value: object, expected: int) -> None:
    config = SimpleNamespace(getoption=lambda name, default=None: value)
    assert _randomly_seed(config) == expected  # type: ignore[arg-type]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # pools run on asyncio (grpc.aio)
@pytest.mark.otp(strict_leaks=True)  # the pools and grpc's poller leave nothing behind
async def test_snakepit_pool_and_pool_events(
    anyio_backend: str,
    snakepit_pool: Callable[..., Awaitable[Pool]],
    pool_events: PoolEvents,
) -> None:
    pool = await snakepit_pool("snakepit.testing.adapters:Echo", size=2)
    assert isinstance(pool, Pool)
    assert pool.stats().ready == 2
    pool_events.assert_event(WorkerReady, count=2)
    pool_events.assert_event(WorkerStarting, generation=0, worker_id=lambda w: w != "")
    assert await pool.execute("echo", {"value": 7}) == 7
    stopped: Any = await pool_events.wait_for(RequestStopped, tool="echo")
    assert stopped.outcome == "ok"
    assert pool_events.count(RequestStopped, outcome="ok") == 1
    pool_events.refute_event(WorkerExited)

    with pytest.raises(AssertionError, match=r"expected exactly 3 WorkerReady, recorded 2"):
        pool_events.assert_event(WorkerReady, count=3)
    with pytest.raises(AssertionError, match=r"expected no WorkerReady, recorded 2"):
        pool_events.refute_event(WorkerReady)
    with pytest.raises(AssertionError, match=r"no WorkerExited within 0.05s; all events: "):
        await pool_events.wait_for(WorkerExited, timeout=0.05)
    pool_events.clear()
    assert pool_events.events == []


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # pools run on asyncio (grpc.aio)
async def test_snakepit_pool_refuses_a_process_ender_in_process_and_runs_it_local(
    anyio_backend: str,
    snakepit_pool: Callable[..., Awaitable[Pool]],
    pool_events: PoolEvents,
) -> None:
    with pytest.raises(pytest.UsageError, match=r'ends its worker process.*launcher="local"'):
        await snakepit_pool("snakepit.testing.adapters:Crash")
    pool = await snakepit_pool("snakepit.testing.adapters:Crash", launcher="local")
    with pytest.raises(WorkerCrashed, match="exit code 3"):
        await pool.execute("exit", {"code": 3})
    await pool_events.wait_for(WorkerReady, generation=1)  # replaced; the fixture closes it all


SHARED = """
import pytest

from snakepit import Pool
from snakepit.pool import default_fork_servers

PARENTS = []
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


async def forked_from():
    async with Pool("snakepit.testing.adapters:Echo", size=1) as pool:
        (worker,) = pool.workers()
        return parent_of(worker.pid)


@pytest.mark.parametrize("n", [1, 2])
async def test_shared(n):
    PARENTS.append(await forked_from())
    assert PARENTS[-1] in default_fork_servers().pids


@pytest.mark.snakepit_own_fork_server
async def test_own():
    assert default_fork_servers() is None
    assert await forked_from() not in PARENTS


def test_one_server_for_both():
    assert len(set(PARENTS)) == 1
"""


def test_share_fork_servers_ini_option(pytester: pytest.Pytester) -> None:
    from snakepit.pool import default_fork_servers

    outer = default_fork_servers()
    pytester.makeini("[pytest]\nsnakepit_share_fork_servers = true\n")
    pytester.makepyfile(test_shared=SHARED)
    result = pytester.runpytest("-p", "no:randomly", "--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    assert default_fork_servers() is outer  # the inner run's are closed, the default put back


IGNORED_ENV = """
import pytest

from snakepit import Pool
from snakepit.errors import RemoteError
from snakepit.pool import default_fork_servers

PARENTS = {}
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize("rate", ["0", "1"])
async def test_pool(rate):
    env = {"SNAKEPIT_FAULT_RATE": rate}
    async with Pool("snakepit.testing.adapters:FaultInjecting", size=1, env=env) as pool:
        (worker,) = pool.workers()
        PARENTS[rate] = parent_of(worker.pid)
        assert PARENTS[rate] in default_fork_servers().pids
        if rate == "0":  # each worker has its pool's value, whatever its server started with
            assert await pool.execute("maybe_fail", {"value": 1}) == 1
        else:
            with pytest.raises(RemoteError, match="injected fault"):
                await pool.execute("maybe_fail", {"value": 1})


def test_servers():
    assert len(PARENTS) == 2
    assert (PARENTS["0"] == PARENTS["1"]) == IGNORED
"""


@pytest.mark.parametrize("ignored", [True, False])
def test_fork_server_ignore_env_ini_option(pytester: pytest.Pytester, ignored: bool) -> None:
    ini = "[pytest]\nsnakepit_share_fork_servers = true\n"
    if ignored:
        ini += "snakepit_fork_server_ignore_env =\n"
        ini += "    SNAKEPIT_FAULT_SEED\n    SNAKEPIT_FAULT_RATE\n"
    pytester.makeini(ini)
    pytester.makepyfile(test_ignored=IGNORED_ENV + f"\nIGNORED = {ignored}\n")
    result = pytester.runpytest("-p", "no:randomly", "--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_fork_server_preload_ini_option(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\nsnakepit_share_fork_servers = true\n"
        "snakepit_fork_server_preload =\n    json\n    snakepit.testing.adapters\n"
    )
    pytester.makepyfile(
        test_preload="""
from snakepit.pool import default_fork_servers


def test_preload():
    assert default_fork_servers().preload == ("json", "snakepit.testing.adapters")
"""
    )
    result = pytester.runpytest("-p", "no:randomly", "--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
