"""snakepit.errors: the fields a handler reads, pickling, and the shared checks and descriptions."""

from __future__ import annotations

import pickle
import signal

import anyio
import pytest

from snakepit import errors
from snakepit.errors import (
    ArgumentTypeError,
    ConfigError,
    QueueFull,
    SnakepitError,
    WorkerCrashed,
    WorkerStartError,
    check_int,
    exit_status,
    is_int,
    is_number,
    signal_name,
)
from snakepit.otp import GenServer, NoReply


class TestExitDescriptions:
    def test_a_signal_python_has_no_name_for(self) -> None:
        # Regression (issue #12): signal 35 (SIGRTMIN+n) has no signal.Signals
        # member, and describing the crash raised ValueError itself.
        crashed = WorkerCrashed("w1", pid=7, returncode=-35, stderr_tail="")
        assert str(crashed) == "worker 'w1' (pid 7) crashed: killed by signal 35"
        assert crashed.returncode == -35
        assert signal_name(35) == "signal 35"

    def test_named_signals_and_exit_codes(self) -> None:
        assert signal_name(signal.SIGTERM) == "SIGTERM"
        assert exit_status(-signal.SIGTERM) == "killed by SIGTERM"
        assert exit_status(3) == "exit code 3"
        assert exit_status(0) == "exit code 0"

    def test_sigkill_is_noted_as_a_possible_out_of_memory_kill(self) -> None:
        crashed = WorkerCrashed("w1", pid=7, returncode=-signal.SIGKILL, stderr_tail="boom")
        assert "killed by SIGKILL (a possible out-of-memory kill)" in str(crashed)
        assert str(crashed).endswith("--- stderr (last lines) ---\nboom")

    def test_a_reason_or_a_broken_connection(self) -> None:
        by_pool = WorkerCrashed("w1", pid=None, returncode=-9, stderr_tail="", reason="unhealthy")
        assert str(by_pool) == "worker 'w1' (pid None) crashed: unhealthy"
        broken = WorkerCrashed("w1", pid=1, returncode=None, stderr_tail="")
        assert str(broken) == "worker 'w1' (pid 1) crashed: its connection broke"

    def test_start_error_keeps_its_fields(self) -> None:
        error = WorkerStartError("w2", "no ready line", returncode=-35, stderr_tail="tb")
        assert (error.worker_id, error.returncode, error.stderr_tail) == ("w2", -35, "tb")


class TestIntChecks:
    @pytest.mark.parametrize("value", [0, 1, 10**30, -1])
    def test_ints_are_ints(self, value: int) -> None:
        assert is_int(value)
        assert is_number(value)

    @pytest.mark.parametrize("value", [True, False, 1.0, "1", None])
    def test_a_bool_is_not_an_int(self, value: object) -> None:
        assert not is_int(value)

    def test_numbers(self) -> None:
        assert is_number(0.5)
        assert not is_number(True)
        assert not is_number("0.5")

    def test_check_int(self) -> None:
        check_int("n", 0, 0)
        check_int("n", None, 0, allow_none=True)
        with pytest.raises(ArgumentTypeError, match=r"^n: must be an int >= 1, got True$"):
            check_int("n", True, 1)
        with pytest.raises(ArgumentTypeError, match=r"^n: must be an int >= 0 or None, got 1\.5$"):
            check_int("n", 1.5, 0, allow_none=True)
        with pytest.raises(ConfigError, match=r"^n: must be an int >= 1, got 0$") as info:
            check_int("n", 0, 1)
        assert type(info.value) is ConfigError
        assert info.value.field == "n"
        with pytest.raises(ArgumentTypeError):
            check_int("n", None, 0)


def test_queue_full_names_its_limit() -> None:
    error = QueueFull(3)
    assert error.max_queue == 3
    assert str(error) == "3 calls are already waiting for a worker"


def _every_error() -> list[SnakepitError]:
    return [
        errors.ConfigError("size", "must be an int >= 1, got 0"),
        errors.InvalidChildSpec("shutdown", "must be seconds"),
        errors.ArgumentTypeError("tool", "must be a str"),
        errors.CallTimeout("no reply", server="ref", timeout=1.5),
        errors.WaitTimeout("not ready", timeout=2.0),
        errors.ServerExited("ref", "shutdown"),
        errors.NameTaken("a", "ref"),
        errors.NameNotFound("a"),
        errors.DuplicateChild("c"),
        errors.ChildNotFound("c"),
        errors.MaxChildrenReached(3),
        errors.ChildStartError("c", RuntimeError("boom")),
        errors.ReachedMaxRestartIntensity("sup", 3, 5.0),
        errors.WorkerStartError("w0", "no ready line", returncode=1, stderr_tail="tb"),
        errors.WorkerCrashed("w0", pid=5, returncode=-35, stderr_tail="tb"),
        errors.WorkerUnavailable("gone"),
        errors.WorkerStopping("stopping"),
        errors.ExecutionTimeout("late", tool="t", timeout=0.5, worker_id="w1"),
        errors.PayloadTooLarge("big", size=10, limit=5),
        errors.PayloadError("bad", path='args["x"]', type_name="set"),
        errors.RemoteError("ValueError", "boom", "Traceback..."),
        errors.ToolNotFound("ToolNotFound", "nope"),
        errors.InvalidArguments("InvalidArguments", "x"),
        errors.PoolStartError("no start", worker_id="w0"),
        errors.PoolClosed("closed"),
        errors.PoolDegraded("gave up", "reason"),
        errors.QueueFull(7),
        errors.QueueTimeout("no worker", timeout=0.25),
        errors.WrongEventLoop("other loop"),
        errors.SessionNotFound("s1", "it expired"),
        errors.SessionExists("s1"),
        errors.SessionLimitReached(10),
        errors.SessionBackendError("redis unix:///tmp/r.sock", "ConnectionError: refused"),
        errors.WorkerBusy("s1", "w0.0@run"),
        errors.SessionWorkerLost("s1", "w0.0@run", "its process exited with code 1"),
        errors.VariableError("a variable"),
        errors.VariableNotFound("s1", "counter"),
        errors.VariableExists("s1", "counter"),
        errors.VariableValidationError("counter", "max", "11 > 10"),
        errors.BridgeError("a bridge call"),
        errors.HostToolNotFound("no host tool 'x'"),
        errors.HostToolFailed("host tool 'x' raised KeyError: 'k'", "KeyError"),
        errors.BridgeUnavailable("no bridge"),
        errors.BridgeSessionNotFound("s1", "not this worker's"),
        errors.BridgeVariableNotFound("s1", "counter"),
        errors.BridgeVariableExists("s1", "counter"),
        errors.BridgeValidationError("counter", "max", "11 > 10"),
    ]


def test_every_error_pickles_with_its_fields() -> None:
    # Most constructors take more than the message: Exception's own pickling
    # called them with the message alone (a TypeError, or QueueFull misread).
    made = _every_error()
    assert {type(e).__name__ for e in made} >= set(errors.__all__) - {
        "SnakepitError",
        "OTPError",
        "WorkerError",
        "PoolError",
        "SessionError",
    }
    for error in made:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)
        assert vars(copy).keys() == vars(error).keys(), type(error)
        for name, value in vars(error).items():
            if isinstance(value, BaseException):
                assert repr(getattr(copy, name)) == repr(value)
            else:
                assert getattr(copy, name) == value, (type(error), name)


class _Silent(GenServer[str, None, None]):
    """Never answers a call (NoReply, and no handle is kept)."""

    async def init(self, arg: object) -> None:
        return None

    async def handle_call(self, request: str, state: None) -> NoReply[None]:
        return NoReply(state)


@pytest.mark.anyio
async def test_errors_that_hold_a_server_ref_pickle_with_its_repr() -> None:
    # CallTimeout.server and ServerExited's ref live in one event loop and do
    # not pickle; the error did not either (found by review of issue #12).
    async with anyio.create_task_group() as tg:
        ref = await _Silent.start(tg, None)
        with pytest.raises(errors.CallTimeout) as timed_out:
            await ref.call("x", timeout=0)
        await ref.stop()
        with pytest.raises(errors.ServerExited) as exited:
            await ref.call("x")
    for error in (timed_out.value, exited.value):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)
        assert repr(ref) in vars(copy).values()
