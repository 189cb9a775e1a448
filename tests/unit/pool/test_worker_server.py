"""WorkerServer's state machine: the table, the legal and illegal transitions, the methods."""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import re
from typing import Any, cast, get_args

import anyio
import pytest

from snakepit.otp import Broadcast
from snakepit.pool import PoolConfig, WorkerArgs, WorkerServer, WorkerState
from snakepit.pool._worker_server import TRANSITIONS, IllegalTransition

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)  # no I/O: the backend does not matter

STATES: tuple[WorkerState, ...] = get_args(WorkerState)
LEGAL = sorted((old, new) for old in STATES for new in TRANSITIONS[old])
ILLEGAL = sorted(
    (old, new) for old, new in itertools.product(STATES, STATES) if new not in TRANSITIONS[old]
)
#: States in which the worker takes no calls: drain() and retire() do nothing there.
OUT_OF_SERVICE: tuple[WorkerState, ...] = ("draining", "retired", "stopping", "killed")


def server_in(state: WorkerState) -> WorkerServer:
    """A WorkerServer that has no process, put in ``state`` (as its transitions would)."""
    server = WorkerServer()
    server.args = WorkerArgs(
        PoolConfig(adapter="tests.unit.pool._adapters:Controlled"),
        launcher=cast(Any, None),
        worker_id="w0",
        run_id="run",
        on_ready=lambda _worker: None,
        on_failed=lambda _worker, _error: None,
        events=Broadcast(),
    )
    server._state = state  # as if its transitions had brought it there
    return server


def documented_table() -> dict[str, frozenset[str]]:
    """The table of transitions drawn in WorkerServer's docstring."""
    table: dict[str, frozenset[str]] = {}
    for line in inspect.getdoc(WorkerServer).splitlines():  # type: ignore[union-attr]
        row = re.fullmatch(r"\s*(\w+)\s+->\s+(.+)", line)
        if row is not None:
            old, targets = row.groups()
            final = targets.strip() == "(final)"
            table[old] = frozenset() if final else frozenset(t.strip() for t in targets.split("|"))
    return table


def test_the_table_in_the_docstring_is_the_one_the_code_checks() -> None:
    assert documented_table() == TRANSITIONS


def test_every_state_has_a_row_and_every_target_is_a_state() -> None:
    assert set(TRANSITIONS) == set(STATES)
    assert set().union(*TRANSITIONS.values()) <= set(STATES)


async def test_a_new_worker_server_is_booting_and_not_usable() -> None:
    server = WorkerServer()
    assert server.state == "booting"
    assert not server.usable


@pytest.mark.parametrize(("old", "new"), LEGAL)
async def test_a_legal_transition_changes_the_state(old: WorkerState, new: WorkerState) -> None:
    server = server_in(old)
    server._enter(new)
    assert server.state == new


@pytest.mark.parametrize(("old", "new"), ILLEGAL)
async def test_an_illegal_transition_raises_and_keeps_the_state(
    old: WorkerState, new: WorkerState
) -> None:
    server = server_in(old)
    with pytest.raises(IllegalTransition, match=f"'w0': {old} -> {new}"):
        server._enter(new)
    assert server.state == old
    assert issubclass(IllegalTransition, AssertionError)  # a bug of ours, not the worker's


@pytest.mark.parametrize("state", STATES)
async def test_usable_means_ready_or_recycling(state: WorkerState) -> None:
    assert server_in(state).usable == (state in ("ready", "recycling"))


@pytest.mark.parametrize("state", ["ready", "recycling", "exited"])
async def test_drain_takes_a_worker_out_of_rotation(state: WorkerState) -> None:
    server = server_in(state)
    server.drain()
    assert server.state == "draining"
    assert not server.usable


@pytest.mark.parametrize("state", ["ready", "recycling", "exited"])
async def test_retire_records_its_reason(state: WorkerState) -> None:
    server = server_in(state)
    server.retire("a call to 'x' timed out", failed=False)
    assert server.state == "retired"
    assert server.retired_reason == "a call to 'x' timed out"


async def test_retire_without_report_keeps_no_reason() -> None:
    server = server_in("ready")
    server.retire("its connection broke", report=False)
    assert server.state == "retired"
    assert server.retired_reason is None


class _Handle:
    """Counts kills (the only part of a WorkerHandle retire() uses)."""

    pid = 4242
    kills = 0

    def kill(self) -> None:
        self.kills += 1


@pytest.mark.parametrize("state", ["draining", "stopping", "killed"])
async def test_retire_still_kills_the_process_of_a_worker_out_of_service(
    state: WorkerState,
) -> None:
    # A call on a worker that takes no calls any more broke or timed out: its
    # process goes, as before the state machine (a flaky chaos test found the
    # killed-server case: the process then exited 0 on its SIGTERM, not -9).
    server = server_in(state)
    handle = _Handle()
    server.handle = cast(Any, handle)
    server.retire("its connection broke", report=False)
    assert (server.state, handle.kills) == (state, 1)


async def test_retire_kills_once() -> None:
    server = server_in("ready")
    handle = _Handle()
    server.handle = cast(Any, handle)
    server.retire("a call to 'x' timed out", failed=False)
    server.retire("again")
    assert (server.state, handle.kills) == ("retired", 1)


@pytest.mark.parametrize("state", OUT_OF_SERVICE)
async def test_drain_and_retire_do_nothing_once_it_takes_no_calls(state: WorkerState) -> None:
    server = server_in(state)
    server.drain()
    server.retire("too late")
    assert server.state == state
    assert server.retired_reason is None


@pytest.mark.parametrize("state", ["booting", "failed"])
async def test_drain_or_retire_of_a_worker_that_never_served_is_a_bug(state: WorkerState) -> None:
    with pytest.raises(IllegalTransition):
        server_in(state).drain()
    with pytest.raises(IllegalTransition):
        server_in(state).retire("never served")


async def test_recycling_starts_once_from_ready() -> None:
    server = server_in("ready")
    server.start_recycling()
    assert server.state == "recycling"
    assert server.usable  # it serves until its replacement is ready
    with pytest.raises(IllegalTransition):
        server.start_recycling()


@pytest.mark.parametrize(
    ("state", "after"),
    [
        ("ready", "exited"),
        ("recycling", "exited"),
        ("draining", "draining"),
        ("retired", "retired"),
        ("stopping", "stopping"),
    ],
)
async def test_a_process_exit_ends_service_only(state: WorkerState, after: WorkerState) -> None:
    server = server_in(state)
    server._process_exited(-9)
    assert server.state == after


@pytest.mark.parametrize(
    ("state", "after"),
    [
        ("booting", "killed"),
        ("ready", "killed"),
        ("recycling", "killed"),
        ("exited", "killed"),
        ("failed", "killed"),
        ("draining", "draining"),
        ("retired", "retired"),
        ("stopping", "stopping"),
    ],
)
async def test_a_server_that_ends_without_terminate_was_killed(
    state: WorkerState, after: WorkerState
) -> None:
    server = server_in(state)
    server._server_ended()
    assert server.state == after


@pytest.mark.parametrize("state", ["booting", "ready", "recycling", "exited", "draining", "failed"])
async def test_terminate_makes_it_stopping(state: WorkerState) -> None:
    server = server_in(state)
    await server.terminate("shutdown", None)  # no process: nothing to release
    assert server.state == "stopping"


async def test_terminate_waits_for_the_calls_in_flight_and_a_call_builds_no_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = server_in("ready")
    made: list[anyio.Event] = []
    real_event = anyio.Event

    def counting_event() -> anyio.Event:
        made.append(real_event())
        return made[-1]

    monkeypatch.setattr(anyio, "Event", counting_event)
    for _ in range(3):  # calls that end with nobody waiting build nothing
        server.call_started()
        server.call_ended()
    assert made == []
    server.call_started()
    server.call_started()
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.terminate, "shutdown", None)
        await anyio.wait_all_tasks_blocked()
        assert server.state == "stopping"
        assert len(made) == 1  # waiting for the two calls
        server.call_ended()
        await anyio.wait_all_tasks_blocked()
        assert not made[0].is_set()  # one call still runs
        server.call_ended()
    assert made[0].is_set()
    assert server.in_flight == 0


async def test_a_worker_retired_with_a_reason_stays_retired_when_terminated() -> None:
    reported = server_in("ready")
    reported.retire("missed 3 health checks in a row (UNREACHABLE)")
    await reported.terminate("shutdown", None)
    assert reported.state == "retired"  # its exit is reported with that reason
    unreported = server_in("ready")
    unreported.retire("its connection broke", report=False)
    await unreported.terminate("shutdown", None)
    assert unreported.state == "stopping"


@pytest.mark.parametrize("state", ["stopping", "failed", "killed", "ready"])
async def test_a_boot_that_ends_late_leaves_the_state_of_a_stop(state: WorkerState) -> None:
    # _boot reports ready/failed; a stop that came first (or a repeat) is kept.
    ready, failed = server_in(state), server_in(state)
    ready._became_ready()
    failed._boot_failed()
    assert (ready.state, failed.state) == (state, state)
    booting = server_in("booting")
    booting._became_ready()
    assert booting.state == "ready"


@pytest.mark.parametrize("state", ["ready", "recycling"])
async def test_a_worker_handed_its_last_call_is_full_and_takes_no_more(state: WorkerState) -> None:
    left: list[WorkerServer] = []
    server = server_in(state)
    server.args = dataclasses.replace(
        server.args,
        config=dataclasses.replace(server.args.config, max_requests_per_worker=7),
        on_leaving=left.append,
    )
    server.exhaust()
    assert (server.full, server.usable, server.state) == (True, False, state)
    assert server.left_because == "it was handed its max_requests_per_worker=7 calls"
    assert left == [server]  # its slots are dropped, strict sessions lose it
    server.exhaust()
    assert left == [server]  # once
